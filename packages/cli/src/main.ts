#!/usr/bin/env node
/**
 * The `hvemu` command line: `demo` (what `npm start` runs), `replay`, `trace show`, `ring-demo`.
 */
import { runRingDemo } from './ring-demo.js';
import { readTraceFile, TraceFormatError } from '@hvemu/trace';
import { showTrace, type ShowFilter } from './trace-show.js';
import { kvmAvailable, runKvmDemo } from './kvm-demo.js';
import { runVmDemo } from './vm-demo.js';
import { runReplay } from './replay.js';

const USAGE = `usage: hvemu <command>

commands:
  demo [--sim] [--trace FILE]
              a VM with the integration components and a Linux-like guest, printed as a timeline:
              a KVM guest where /dev/kvm works, else (or with --sim) the simulated partition;
              --trace captures a VMBus trace
  replay TRACE [--device NAME] [--json]
              rebuilds the trace's devices on a fresh host, drives it with the recorded guest
              events and VMM calls, and compares everything the host does with the recording;
              prints the first divergence; exit code 0 only when the whole trace matches;
              --device replays one device's channel alone
  trace show FILE [--json] [--relid N] [--direction guest-to-host|host-to-guest] [--from T] [--to T]
              a trace as a readable timeline (times in reference-time seconds)
  ring-demo   a simulated guest and host exchanging packets over one VMBus ring pair
  help        this text
`;

async function main(argv: string[]): Promise<number> {
  const [command = 'help'] = argv;
  switch (command) {
    case 'demo': {
      const trace = option(argv, '--trace');
      const kvm = kvmAvailable();
      if (kvm.ok && !argv.includes('--sim')) {
        process.stdout.write('hvemu demo: a KVM guest (C, Linux-like VMBus and IC drivers) with heartbeat, shutdown, timesync and KVP offered\n\n');
        const r = await runKvmDemo((line) => process.stdout.write(`${line}\n`), trace);
        return r.exitCode === 0 && r.shutdownStatus === 0 ? 0 : 1;
      }
      const why = kvm.ok ? '--sim' : `no usable KVM here: ${kvm.reason}`;
      process.stdout.write('hvemu demo: a VM with heartbeat, shutdown, timesync and KVP integration components\n');
      process.stdout.write(`(simulated partition and a Linux-like TypeScript guest; ${why})\n\n`);
      const r = await runVmDemo((line) => process.stdout.write(`${line}\n`), trace);
      return r.shutdownStatus === 0 && r.heartbeats === 3 ? 0 : 1;
    }
    case 'trace':
      return traceCommand(argv.slice(1));
    case 'replay':
      return replayCommand(argv.slice(1));
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

function option(argv: string[], name: string): string | undefined {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
}

function seconds(text: string | undefined): bigint | undefined {
  return text === undefined ? undefined : BigInt(Math.round(Number(text) * 1e7));
}

function replayCommand(argv: string[]): number {
  const [file] = argv;
  if (!file || file.startsWith('--')) {
    process.stderr.write(USAGE);
    return 2;
  }
  try {
    const report = runReplay(readTraceFile(file), { device: option(argv, '--device') });
    if (argv.includes('--json')) process.stdout.write(`${JSON.stringify(report.json)}\n`);
    else for (const line of report.lines) process.stdout.write(`${line}\n`);
    return report.matched ? 0 : 1;
  } catch (error) {
    process.stderr.write(`hvemu replay: ${(error as Error).message ?? String(error)}\n`);
    return 2;
  }
}

function traceCommand(argv: string[]): number {
  const [verb, file] = argv;
  if (verb !== 'show' || !file) {
    process.stderr.write(USAGE);
    return 2;
  }
  try {
    const trace = readTraceFile(file);
    const relid = option(argv, '--relid');
    const direction = option(argv, '--direction');
    if (direction && direction !== 'guest-to-host' && direction !== 'host-to-guest') throw new Error(`--direction ${direction}`);
    const filter: ShowFilter = {
      relid: relid === undefined ? undefined : Number(relid),
      direction: direction as ShowFilter['direction'],
      from: seconds(option(argv, '--from')),
      to: seconds(option(argv, '--to')),
    };
    showTrace(trace, filter, argv.includes('--json'), (line) => process.stdout.write(`${line}\n`));
    return 0;
  } catch (error) {
    process.stderr.write(`hvemu: ${error instanceof TraceFormatError ? error.message : String((error as Error).message ?? error)}\n`);
    return 1;
  }
}

// `hvemu trace show x | head`: a closed pipe is the reader being done, not an error.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(0);
  throw error;
});
process.exitCode = await main(process.argv.slice(2));
