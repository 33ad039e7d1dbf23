/**
 * Accelerator benchmarks (issue #3), on this machine's KVM:
 *
 * 1. Exit round trip: a guest loop of `rdmsr` on a user-space MSR, each one an exit answered
 *    by a TypeScript MSR device (-> re-entry), against native/bench/exit-baseline.c, the same
 *    guest loop answered by C on the vCPU thread itself, built now with gcc -O2. Both are run
 *    interleaved, several rounds, so the ratio compares things measured side by side.
 * 2. MSI injection rate into a halted guest: interrupts delivered and EOI'd per second, closed
 *    loop (the next interrupt is sent once the guest's handler has counted the previous one),
 *    via KvmPartition.interrupt (KVM_SIGNAL_MSI) and via an irqfd (eventfd write).
 *
 * Where /dev/kvm is unusable, the suite says so and returns only that fact.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KvmPartition, type KvmPartitionOptions } from '@hvemu/accel';
import { TestPlatform, buildLongModeGuest, enterLongMode, loadElf64 } from '@hvemu/platform';

const MiB = 1 << 20;
const EXITS_PER_RUN = 4000;
const CODE_GPA = 0x100000;
const BENCH_MSR = 0x40000020;
const MARK_PORT = 0xe0; // out 0xe0 = start of the timed loop, out 0xe1 = its end

export type Figures = Record<string, number | string>;

const HYPERCALL_PORT = 0x99;

interface Strategy {
  readonly key: string;
  readonly label: string;
  readonly options: Partial<KvmPartitionOptions>;
  /** The guest loop: rdmsr (the measure) or a hypercall-port OUT (RCX/RDX/R8 in, RAX out). */
  readonly loop: 'rdmsr' | 'hypercall';
}

/** The exit channel's wake-up settings; the first row is the default. */
const STRATEGIES: readonly Strategy[] = [
  { key: 'default', label: 'rdmsr, default settings', options: {}, loop: 'rdmsr' },
  { key: 'tsfn', label: 'rdmsr, JS woken per exit (pollMicros 0)', options: { pollMicros: 0 }, loop: 'rdmsr' },
  { key: 'futex', label: 'rdmsr, no spin, no poll (futex + tsfn)', options: { spinIterations: 0, pollMicros: 0 }, loop: 'rdmsr' },
  { key: 'hypercall', label: 'hypercall, sync regs (default)', options: { hypercallPort: HYPERCALL_PORT }, loop: 'hypercall' },
  {
    key: 'hypercall_ioctl',
    label: 'hypercall, register ioctls (syncRegs false)',
    options: { hypercallPort: HYPERCALL_PORT, syncRegs: false },
    loop: 'hypercall',
  },
];

/** The guest loop of exit-baseline.c: out 0xe0; ebx=n; ecx=MSR; 1: rdmsr; dec ebx; jnz 1b; out 0xe1; hlt. */
function loopCode(n: number): Uint8Array {
  const code = new Uint8Array([0xe6, 0xe0, 0xbb, 0, 0, 0, 0, 0xb9, 0, 0, 0, 0, 0x0f, 0x32, 0xff, 0xcb, 0x75, 0xfa, 0xe6, 0xe1, 0xf4]);
  const v = new DataView(code.buffer);
  v.setUint32(3, n, true);
  v.setUint32(8, BENCH_MSR, true);
  return code;
}

interface TsRun {
  /** Wall time per exit between the two marks (µs). */
  us: number;
  /** Per exit: inside KVM_RUN, and waiting for the TS answer (µs, from the vCPU thread). */
  runUs: number;
  waitUs: number;
}

/** out 0xe0; ebx=n; xor ecx,ecx; 1: out 0x99,al (hypercall); dec ebx; jnz 1b; out 0xe1; hlt. */
function hypercallLoopCode(n: number): Uint8Array {
  const code = new Uint8Array([0xe6, 0xe0, 0xbb, 0, 0, 0, 0, 0x31, 0xc9, 0xe6, HYPERCALL_PORT, 0xff, 0xcb, 0x75, 0xfa, 0xe6, 0xe1, 0xf4]);
  new DataView(code.buffer).setUint32(3, n, true);
  return code;
}

async function runTs(s: Pick<Strategy, 'options' | 'loop'>, n: number): Promise<TsRun> {
  const p = KvmPartition.create({ memory: [{ gpa: 0, size: 4 * MiB }], ...s.options });
  try {
    p.memory.write(CODE_GPA, s.loop === 'rdmsr' ? loopCode(n) : hypercallLoopCode(n));
    enterLongMode(p, CODE_GPA);
    const marks: number[] = [];
    p.addMsrDevice({ msr: BENCH_MSR, read: () => 3n });
    p.onHypercall(() => ({ value: 0n }));
    p.addIoDevice({
      port: MARK_PORT,
      count: 2,
      write: (port) => {
        marks.push(performance.now());
        return port === MARK_PORT + 1 ? { stop: true } : undefined;
      },
    });
    await p.run();
    if (marks.length !== 2) throw new Error(`exit bench: expected 2 marks, got ${marks.length}`);
    const t = p.vcpus[0].times();
    const exits = p.vcpus[0].exits;
    return { us: ((marks[1] - marks[0]) * 1000) / n, runUs: Number(t.runNs) / exits / 1000, waitUs: Number(t.waitNs) / exits / 1000 };
  } finally {
    p.close();
  }
}

function buildCBaseline(): string {
  const source = fileURLToPath(new URL('../../native/bench/exit-baseline.c', import.meta.url));
  const out = join(mkdtempSync(join(tmpdir(), 'hvemu-bench-')), 'exit-baseline');
  execFileSync('gcc', ['-O2', '-o', out, source]);
  return out;
}

function runC(binary: string, n: number): number {
  const line = execFileSync(binary, [String(n)], { encoding: 'utf8', timeout: 60_000 });
  return (JSON.parse(line) as { us_per_exit: number }).us_per_exit;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Exit round trip, every strategy and C interleaved per round; medians and bests. */
async function benchExits(rounds: number, log: (line: string) => void): Promise<Figures> {
  const binary = buildCBaseline();
  await runTs(STRATEGIES[0], 500); // warm up the JIT and the page cache
  const c: number[] = [];
  const ts = new Map<string, TsRun[]>(STRATEGIES.map((s) => [s.key, []]));
  for (let r = 0; r < rounds; r++) {
    c.push(runC(binary, EXITS_PER_RUN));
    for (const s of STRATEGIES) ts.get(s.key)!.push(await runTs(s, EXITS_PER_RUN));
  }
  const cMed = median(c);
  const figures: Figures = { exit_c_us: round(cMed), exit_c_best_us: round(Math.min(...c)) };
  log(`exit round trip (guest rdmsr -> handler -> re-entry), ${EXITS_PER_RUN} exits per run, ${rounds} rounds interleaved; median (best)`);
  log(`${'strategy'.padEnd(46)}us/exit          x C (median)  x C (best)  in KVM_RUN  waiting for TS`);
  log(`${'rdmsr, C handler on the vCPU thread'.padEnd(46)}${fmtUs(cMed, Math.min(...c))}  ${'1.00'.padStart(12)}  ${'1.00'.padStart(10)}`);
  for (const s of STRATEGIES) {
    const runs = ts.get(s.key)!;
    const med = median(runs.map((x) => x.us));
    const best = Math.min(...runs.map((x) => x.us));
    const ratio = med / cMed;
    const bestRatio = best / Math.min(...c);
    figures[`exit_ts_${s.key}_us`] = round(med);
    figures[`exit_ts_${s.key}_ratio`] = round(ratio);
    figures[`exit_ts_${s.key}_best_ratio`] = round(bestRatio);
    const runUs = median(runs.map((x) => x.runUs));
    const waitUs = median(runs.map((x) => x.waitUs));
    log(
      `${s.label.padEnd(46)}${fmtUs(med, best)}  ${ratio.toFixed(2).padStart(12)}  ${bestRatio.toFixed(2).padStart(10)}  ${runUs.toFixed(1).padStart(10)}  ${waitUs.toFixed(1).padStart(14)}`,
    );
  }
  figures['exit_target_ratio'] = 1.5;
  return figures;
}

const MSI_GUEST = fileURLToPath(new URL('../accel/msi-rate-guest.c', import.meta.url));
const MSI_VECTOR = 0x50;
const MSI_READY_PORT = 0xe2;
const MSI_WAIT_LIMIT_MS = 2000;

interface MsiRates {
  signalPerSec: number;
  irqfdPerSec: number;
}

/** Sends `n` interrupts with `send`, each after the guest counted the previous one. */
function closedLoop(count: Int32Array, n: number, send: () => void): number {
  const start = Atomics.load(count, 0);
  const t0 = performance.now();
  for (let i = 1; i <= n; i++) {
    send();
    // Spin on guest memory: the guest's handler makes no exit, so nothing else would tell us.
    const deadline = performance.now() + MSI_WAIT_LIMIT_MS;
    for (let k = 0; Atomics.load(count, 0) - start < i; k++) {
      if ((k & 1023) === 0 && performance.now() > deadline)
        throw new Error(`MSI bench: interrupt ${i} not handled within ${MSI_WAIT_LIMIT_MS} ms`);
    }
  }
  return n / ((performance.now() - t0) / 1000);
}

async function runMsi(n: number): Promise<MsiRates> {
  const p = KvmPartition.create({ memory: [{ gpa: 0, size: 16 * MiB }] });
  try {
    const platform = new TestPlatform(p);
    enterLongMode(p, loadElf64(p.memory, buildLongModeGuest(MSI_GUEST)).entry);
    const irqfd = p.createIrqfd(0, MSI_VECTOR);
    let ready: (gpa: number) => void = () => {};
    const readyGpa = new Promise<number>((resolve) => (ready = resolve));
    p.addIoDevice({ port: MSI_READY_PORT, count: 1, write: (_port, _size, value) => ready(value) });
    const done = p.run();
    const gpa = await Promise.race([
      readyGpa,
      done.then(() => Promise.reject(new Error(`MSI guest ended early: ${platform.serial.text()}`))),
    ]);
    // Give the guest time to reach its sti;hlt (a few instructions at ~1 µs each).
    await new Promise((r) => setTimeout(r, 5));
    const block = new Int32Array(p.memory.bytes(gpa, 8).buffer, p.memory.bytes(gpa, 8).byteOffset, 2);
    const signalPerSec = closedLoop(block, n, () => void p.interrupt(0, MSI_VECTOR));
    const irqfdPerSec = closedLoop(block, n, () => irqfd.trigger());
    Atomics.store(block, 1, 1);
    p.interrupt(0, MSI_VECTOR);
    await done;
    const code = platform.debugExit.codes.get(0);
    if (code !== 0) throw new Error(`MSI guest exited with ${code}: ${platform.assertionSummary()} ${platform.serial.text()}`);
    return { signalPerSec, irqfdPerSec };
  } finally {
    p.close();
  }
}

async function benchMsi(rounds: number, n: number, log: (line: string) => void): Promise<Figures> {
  const runs: MsiRates[] = [];
  for (let r = 0; r < rounds; r++) runs.push(await runMsi(n));
  const sig = median(runs.map((x) => x.signalPerSec));
  const fd = median(runs.map((x) => x.irqfdPerSec));
  log(`MSI into a halted guest, delivered + EOI'd, closed loop, ${n} interrupts per run, ${rounds} rounds; median`);
  log(
    `  KvmPartition.interrupt (KVM_SIGNAL_MSI): ${Math.round(sig).toLocaleString('en-US').padStart(8)} /s  (${(1e6 / sig).toFixed(1)} us each)`,
  );
  log(
    `  irqfd (eventfd write):                ${Math.round(fd).toLocaleString('en-US').padStart(8)} /s  (${(1e6 / fd).toFixed(1)} us each)`,
  );
  return { msi_signal_per_s: Math.round(sig), msi_irqfd_per_s: Math.round(fd) };
}

/** The accelerator suite; returns flat figures for the JSON summary line. */
export async function benchAccel(log: (line: string) => void = console.log): Promise<Figures> {
  const probe = KvmPartition.probe();
  if (!probe.ok) {
    log(`accel: skipped, KVM is not usable here (${probe.reason})`);
    return { accel_skipped: probe.reason };
  }
  return { ...(await benchExits(5, log)), ...(await benchMsi(3, 1000, log)) };
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}

function fmtUs(med: number, best: number): string {
  return `${med.toFixed(1).padStart(7)} (${best.toFixed(1).padStart(5)})`;
}
