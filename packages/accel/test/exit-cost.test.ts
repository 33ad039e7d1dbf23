/**
 * Measures one exit round trip (guest rdmsr of a user-space MSR -> TS handler -> re-entry)
 * for the exit channel's wake-up strategies, next to native/bench/exit-baseline.c (the same
 * guest loop answered by C on the vCPU thread). Prints the figures; asserts only that the
 * runs work, because these machines are shared and the numbers are noisy.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { enterLongMode } from '../src/guest/long-mode.js';
import { Partition, type PartitionOptions } from '../src/partition.js';
import { describeKvm, MiB } from './helpers/harness.js';

const N = 4000;
const CODE_GPA = 0x100000;
const MSR = 0x40000020;

/** The loop of exit-baseline.c: out 0xe0; ebx=N; ecx=MSR; 1: rdmsr; dec ebx; jnz 1b; out 0xe1; hlt. */
function loopCode(n: number): Uint8Array {
  const code = new Uint8Array([0xe6, 0xe0, 0xbb, 0, 0, 0, 0, 0xb9, 0, 0, 0, 0, 0x0f, 0x32, 0xff, 0xcb, 0x75, 0xfa, 0xe6, 0xe1, 0xf4]);
  const v = new DataView(code.buffer);
  v.setUint32(3, n, true);
  v.setUint32(8, MSR, true);
  return code;
}

async function measureTs(opts: Partial<PartitionOptions>): Promise<{ us: number; runUs: number; waitUs: number }> {
  const p = Partition.create({ memory: [{ gpa: 0, size: 4 * MiB }], ...opts });
  try {
    p.memory.write(CODE_GPA, loopCode(N));
    enterLongMode(p, CODE_GPA);
    const marks: number[] = [];
    p.addMsrDevice({ msr: MSR, read: () => 3n });
    p.addIoDevice({ port: 0xe0, count: 2, write: (port) => (marks.push(performance.now()), port === 0xe1 ? { stop: true } : undefined) });
    await p.run();
    const t = p.vcpus[0].times();
    const exits = p.vcpus[0].exits;
    return { us: ((marks[1] - marks[0]) * 1000) / N, runUs: Number(t.runNs) / exits / 1000, waitUs: Number(t.waitNs) / exits / 1000 };
  } finally {
    p.close();
  }
}

function measureC(): number {
  const src = fileURLToPath(new URL('../../../native/bench/exit-baseline.c', import.meta.url));
  const dir = join(tmpdir(), 'hvemu-accel-guests');
  mkdirSync(dir, { recursive: true });
  const bin = join(dir, `exit-baseline-${process.pid}`);
  execFileSync('gcc', ['-O2', '-o', bin, src]);
  const line = execFileSync(bin, [String(N)], { encoding: 'utf8', timeout: 30_000 });
  return (JSON.parse(line) as { us_per_exit: number }).us_per_exit;
}

describeKvm('exit round-trip cost', () => {
  it('measures rdmsr -> TS handler -> re-entry against the C baseline', async () => {
    const c = measureC();
    const rows: [string, Partial<PartitionOptions>][] = [
      ['default (vCPU spins 4000 pauses, JS polls 50 us)', {}],
      ['JS woken per exit (pollMicros 0)', { pollMicros: 0 }],
      ['futex + threadsafe function only (spin 0, poll 0)', { spinIterations: 0, pollMicros: 0 }],
    ];
    console.log(`exit round trip [C handler on the vCPU thread]: ${c.toFixed(1)} us`);
    for (const [label, opts] of rows) {
      const r = await measureTs(opts);
      console.log(`exit round trip [${label}]: ${r.us.toFixed(1)} us (${(r.us / c).toFixed(2)}x C; in KVM_RUN ${r.runUs.toFixed(1)} us, waiting for TS ${r.waitUs.toFixed(1)} us)`);
      expect(r.us).toBeGreaterThan(0);
    }
  });
});
