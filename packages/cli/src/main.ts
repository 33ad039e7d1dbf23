#!/usr/bin/env node
/**
 * The `hvemu` command line. Verbs arrive with the layers that implement them
 * (run, replay, trace); today: `demo`, the ring demo that `npm start` runs.
 */
import { runRingDemo } from './ring-demo.js';
import { runVmDemo } from './vm-demo.js';

const USAGE = `usage: hvemu <command>

commands:
  demo        a VM with the integration components and a Linux-like guest (simulated partition),
              printed as a timeline
  ring-demo   a simulated guest and host exchanging packets over one VMBus ring pair
  help        this text
`;

async function main(argv: string[]): Promise<number> {
  const [command = 'help'] = argv;
  switch (command) {
    case 'demo': {
      process.stdout.write('hvemu demo: a VM with heartbeat, shutdown, timesync and KVP integration components\n');
      process.stdout.write('(simulated partition and a Linux-like TypeScript guest; the KVM demo guest arrives with the VMBus issue)\n\n');
      const r = await runVmDemo((line) => process.stdout.write(`${line}\n`));
      return r.shutdownStatus === 0 && r.heartbeats === 3 ? 0 : 1;
    }
    case 'ring-demo': {
      const started = performance.now();
      const print = (line: string): void => {
        const t = (performance.now() - started).toFixed(3).padStart(8);
        process.stdout.write(`[${t} ms] ${line}\n`);
      };
      print('hvemu ring demo (simulated guest; the KVM demo VM arrives with the VMBus issue)');
      const r = runRingDemo({ print });
      print(`done: ${r.requests} requests, ${r.completions} completions`);
      return r.completions === r.requests ? 0 : 1;
    }
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return 0;
    default:
      process.stderr.write(`hvemu: unknown command '${command}'\n${USAGE}`);
      return 2;
  }
}

process.exitCode = await main(process.argv.slice(2));
