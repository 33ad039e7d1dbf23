/**
 * Lifecycle and resource hardening of the KVM partition: large RAM, teardown from any thread,
 * handles after close, run() misuse. Repros whose failure was a process abort run in a child
 * process (helpers/child.ts).
 */
import { closeSync, fstatSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { AccelUsageError, ExitHandlerError } from '../src/errors.js';
import { KvmPartition } from '../src/backends/kvm/partition.js';
import { enterLongMode } from '@hvemu/platform';
import { describeKvm, MiB } from './helpers/harness.js';
import { describeChild, runChild } from './helpers/child.js';

const opened: KvmPartition[] = [];
afterEach(() => {
  for (const p of opened.splice(0)) p.close();
});

function partition(vcpuCount = 1): KvmPartition {
  const p = KvmPartition.create({ memory: [{ gpa: 0, size: 2 * MiB }], vcpuCount });
  opened.push(p);
  return p;
}

/**
 * Opens files in a scratch directory until one gets file descriptor `fd` (the lowest free
 * number is reused), so a stale handle's fd names an unrelated file. Returns its path, or
 * undefined when the number did not come back (then the test still checks the typed error).
 */
function reuseFd(fd: number, dir: string, content: Uint8Array): { path: string; close: () => void } | undefined {
  const fds: number[] = [];
  let found: string | undefined;
  for (let i = 0; i < 64 && found === undefined; i++) {
    const path = join(dir, `f${i}`);
    const f = openSync(path, 'w+');
    writeSync(f, content, 0, content.length, 0);
    if (f === fd) found = path;
    else fds.push(f);
  }
  for (const f of fds) closeSync(f);
  return found === undefined ? undefined : { path: found, close: () => closeSync(fd) };
}

const GiB = 2 ** 30;

describeKvm('KVM partition hardening', () => {
  it.each([
    [
      'split-3g-6g',
      [
        [0, 3 * GiB],
        [4 * GiB, 4 * GiB],
        [8 * GiB, 2 * GiB],
      ],
    ],
    [
      'just-over-4g',
      [
        [4 * GiB, 4 * GiB],
        [8 * GiB, 4096],
      ],
    ],
    [
      'sparse-8g',
      [
        [0, 16 << 20],
        [4 * GiB, 4 * GiB],
        [8 * GiB, 4 * GiB],
      ],
    ],
  ])('RAM regions over 4 GiB work (%s): served as 4 GiB buffers, written and read near the end and across the seam', (layout, regions) => {
    // memfd RAM is allocated when touched: these sizes cost a few pages.
    const r = runChild('large-ram.mjs', [layout]);
    expect(r.status, describeChild(r)).toBe(0);
    const out = r.json as { regions: number[][]; ramSize: number; tail: number; across: number[]; pastEnd: boolean };
    expect(out.regions).toEqual(regions);
    expect(out.ramSize).toBe(regions.reduce((n, [, size]) => n + size, 0));
    expect(out.tail).toBe(0xfeedf00d);
    expect(out.across).toEqual([1, 2, 3, 4]);
    expect(out.pastEnd).toBe(false);
  });

  // Item: a partition must be safe to tear down from any thread and at environment shutdown.
  const crashed = (r: ReturnType<typeof runChild>): boolean =>
    r.signal !== null || r.status === 134 || r.status === 139 || /terminate called|FATAL ERROR|double free|Segmentation/.test(r.stderr);

  it.each(['exits', 'blocked', 'doorbell', 'quiet'])(
    'a worker that owns a running partition (guest %s) can be terminated; the process and its other partitions go on',
    (kind) => {
      const r = runChild('teardown.mjs', ['terminate', kind]);
      expect(crashed(r), describeChild(r)).toBe(false);
      expect(r.status, describeChild(r)).toBe(0);
      expect(r.json).toEqual({ workerExit: 1, mainOutcomes: ['stop-requested'] });
    },
  );

  it.each(['exits', 'doorbell'])('a worker may process.exit() while its partition runs (guest %s)', (kind) => {
    const r = runChild('teardown.mjs', ['worker-exit', kind]);
    expect(r.status, describeChild(r)).toBe(0);
    expect(r.json).toEqual({ workerExit: 3, mainOutcomes: ['stop-requested'] });
  });

  it.each(['exits', 'blocked', 'doorbell'])('process.exit() while a partition runs exits with its code (guest %s)', (kind) => {
    const r = runChild('teardown.mjs', ['main-exit', kind]);
    expect(crashed(r), describeChild(r)).toBe(false);
    expect(r.status, describeChild(r)).toBe(7);
  });

  it('an uncaught exception while a partition runs ends the process as an uncaught exception, not an abort', () => {
    const r = runChild('teardown.mjs', ['main-throw', 'exits']);
    expect(crashed(r), describeChild(r)).toBe(false);
    expect(r.status, describeChild(r)).toBe(1);
    expect(r.stderr).toMatch(/uncaught while a partition runs/);
  });

  it('a program may end with a stopped, unclosed partition and doorbell watcher (environment cleanup)', () => {
    const r = runChild('teardown.mjs', ['main-end', 'doorbell']);
    expect(crashed(r), describeChild(r)).toBe(false);
    expect(r.status, describeChild(r)).toBe(0);
    expect(r.json).toEqual({ ended: true });
  });

  // Item: handles after close must know it (AccelUsageError) and never touch a released fd.
  it('an irqfd after close() refuses trigger() and writes nothing into the file that now has its fd number', () => {
    const p = partition();
    const irqfd = p.createIrqfd(0, 0x30);
    irqfd.trigger(); // works while open
    p.close();
    const dir = mkdtempSync(join(tmpdir(), 'hvemu-fd-'));
    try {
      const reused = reuseFd(irqfd.fd, dir, new Uint8Array(0));
      expect(() => irqfd.trigger()).toThrow(AccelUsageError);
      expect(() => irqfd.trigger()).toThrow(/irqfd \d+: trigger: the partition is closed/);
      expect(reused, 'the fd number came back').toBeDefined();
      if (reused) {
        expect(fstatSync(irqfd.fd).size).toBe(0);
        reused.close();
      }
    } finally {
      rmSync(dir, { recursive: true });
    }
  });

  it('an ioeventfd after close() or remove() refuses take() and watch() and reads nothing out of a reused fd', () => {
    const p = partition();
    const a = p.createIoeventfd({ space: 'pio', address: 0x90, length: 1 });
    const b = p.createIoeventfd({ space: 'mmio', address: 0xd0000000, length: 4 });
    expect(a.take()).toBe(0n);
    b.remove();
    expect(() => b.take()).toThrow(/ioeventfd \d+: take: the ioeventfd was removed/);
    expect(() => b.watch(() => {})).toThrow(AccelUsageError);
    b.remove(); // again: a no-op
    p.close();
    const dir = mkdtempSync(join(tmpdir(), 'hvemu-fd-'));
    try {
      const content = new Uint8Array(16).fill(0xab);
      const reused = reuseFd(a.fd, dir, content);
      expect(() => a.take()).toThrow(AccelUsageError);
      expect(() => a.take()).toThrow(/ioeventfd \d+: take: the partition is closed/);
      expect(() => a.watch(() => {})).toThrow(AccelUsageError);
      a.remove(); // after close: a no-op
      expect(reused, 'the fd number came back').toBeDefined();
      if (reused) {
        // Nothing read: the file position is still at its start.
        const rest = new Uint8Array(16);
        expect(readFileSync(reused.path).length).toBe(16);
        expect(readSync(a.fd, rest, 0, 16, null)).toBe(16);
        reused.close();
      }
    } finally {
      rmSync(dir, { recursive: true });
    }
  });

  it('a closed partition, its vCPUs and its handles refuse every call with AccelUsageError; guest memory stays valid', () => {
    const p = partition(2);
    const view = p.mapPageList([1, 3]);
    p.memory.writeU32(0x1000, 0x11223344);
    const v = p.vcpus[1];
    const regs = v.getRegisters();
    p.close();
    const calls: [string, () => unknown][] = [
      ['addIoDevice', () => p.addIoDevice({ port: 0x70, count: 1 })],
      ['addMmioDevice', () => p.addMmioDevice({ gpa: 0xd0000000, size: 0x1000 })],
      ['addMsrDevice', () => p.addMsrDevice({ msr: 0x40000010 })],
      ['onHypercall', () => p.onHypercall(() => undefined)],
      ['onExit', () => p.onExit(() => undefined)],
      ['interrupt', () => p.interrupt(0, 0x30)],
      ['signalMsi', () => p.signalMsi(0xfee00000, 0x30)],
      ['setIrqLine', () => p.setIrqLine(4, true)],
      ['createIrqfd', () => p.createIrqfd(0, 0x30)],
      ['createIoeventfd', () => p.createIoeventfd({ space: 'pio', address: 0x90, length: 1 })],
      ['mapPageList', () => p.mapPageList([1])],
      ['getRegisters', () => v.getRegisters()],
      ['setRegisters', () => v.setRegisters(regs)],
      ['getSpecialRegisters', () => v.getSpecialRegisters()],
      ['getXmm', () => v.getXmm()],
      ['setXmm', () => v.setXmm(new Uint8Array(256))],
      ['tscKhz', () => v.tscKhz()],
      ['guestTsc', () => v.guestTsc()],
      ['lapicRegisters', () => v.lapicRegisters()],
      ['makeRunnable', () => v.makeRunnable()],
      ['setCpuid', () => v.setCpuid([])],
    ];
    for (const [name, call] of calls) {
      expect(call, name).toThrow(AccelUsageError);
      expect(call, name).toThrow(new RegExp(`${name}: the partition is closed`));
    }
    p.stop();
    p.close();
    // RAM stays mapped while views of it exist: no access after close reaches unmapped memory.
    expect(p.memory.readU32(0x1000)).toBe(0x11223344);
    p.memory.writeU32(0x3000, 0x55667788);
    expect(new DataView(view.bytes.buffer).getUint32(0x1000, true)).toBe(0x55667788);
    expect(new DataView(view.bytes.buffer).getUint32(0, true)).toBe(0x11223344);
    view.unmap();
    expect(view.bytes.length).toBe(0);
    expect(p.memory.readU32(0x3000)).toBe(0x55667788);
  });

  // Item: run() argument misuse settles, with a typed error, and starts nothing.
  it('run([]) resolves at once with [] (nothing to start), as on MSHV and WHPX', async () => {
    const p = partition(2);
    const settled = await Promise.race([p.run([]), new Promise((r) => setTimeout(() => r('pending'), 500))]);
    expect(settled).toEqual([]);
    expect(p.vcpus.map((v) => v.status)).toEqual(['created', 'created']);
  });

  it('run() with bad vCPU lists, while running and after close rejects with AccelUsageError and starts nothing', async () => {
    const p = partition(2);
    const ENTRY = 0x100000;
    p.memory.write(ENTRY, Uint8Array.of(0xeb, 0xfe)); // jmp $
    enterLongMode(p, ENTRY);
    const bad: [unknown, RegExp][] = [
      [[2], /run\(vps\): 2 names no vCPU \(the partition has vCPUs 0..1\)/],
      [[-1], /-1 names no vCPU/],
      [[0.5], /0.5 names no vCPU/],
      [[NaN], /NaN names no vCPU/],
      [['0'], /"0" names no vCPU/],
      [[0n], /0n names no vCPU/],
      [[0, 1, 0], /names vCPU 0 twice/],
      [0, /vps must be an array of vCPU indices, not 0/],
      ['01', /vps must be an array/],
      [null, /vps must be an array/],
    ];
    for (const [vps, message] of bad) {
      let result: Promise<unknown> | undefined;
      expect(() => (result = p.run(vps as number[])), String(vps)).not.toThrow();
      await expect(result, String(vps)).rejects.toThrow(AccelUsageError);
      await expect(p.run(vps as number[])).rejects.toThrow(message);
    }
    expect(p.vcpus.map((v) => v.status)).toEqual(['created', 'created']);
    const running = p.run([0]);
    await expect(p.run([0])).rejects.toThrow(/vCPU 0 is already running/);
    await expect(p.run()).rejects.toThrow(/vCPU 0 is already running/);
    expect(p.vcpus[1].status).toBe('created');
    p.stop();
    expect((await running).map((o) => [o.vp, o.cause])).toEqual([[0, 'stop-requested']]);
    p.close();
    await expect(p.run()).rejects.toThrow(/run: the partition is closed/);
    await expect(p.run([])).rejects.toThrow(AccelUsageError);
  });

  // An answer that cannot be encoded fails its handler, also when the handler is async.
  it.each([
    ['async NaN', async () => NaN],
    ['async "abc"', async () => 'abc' as never],
    ['sync 2^70 (was silently truncated)', () => (2n ** 70n) as never],
    ['sync 1.5', () => 1.5],
  ])('a device answering %s stops its vCPU with ExitHandlerError instead of hanging or truncating', async (_name, read) => {
    const p = partition();
    const ENTRY = 0x100000;
    p.memory.write(ENTRY, Uint8Array.of(0xe4, 0x81, 0xeb, 0xfe)); // in al, 0x81; jmp $
    enterLongMode(p, ENTRY);
    p.addIoDevice({ port: 0x81, count: 1, read: read as () => number });
    const timeout = new Promise((r) => setTimeout(() => r('timed out'), 10_000));
    const result = await Promise.race([
      p.run().then(
        () => 'resolved',
        (e: unknown) => e,
      ),
      timeout,
    ]);
    if (result === 'timed out') p.stop();
    expect(result).toBeInstanceOf(ExitHandlerError);
    expect((result as Error).message).toMatch(
      /handler for io exit failed: the answer to the io exit has value .*: it must be an integer or a bigint within 64 bits/,
    );
  });

  it('unclosed, unreachable partitions are collected and release their fds; a running one lives until run() settles', () => {
    // Before, the addon's callbacks held each partition strongly: 100 unclosed partitions kept
    // 400+ fds (and their RAM) until the process ended.
    const r = runChild('gc.mjs', [], 60_000, ['--expose-gc']);
    expect(r.status, describeChild(r)).toBe(0);
    const out = r.json as { before: number; created: number; collected: number; outcome: [string, number][] };
    expect(out.created - out.before).toBeGreaterThanOrEqual(400);
    expect(out.collected - out.before, JSON.stringify(out)).toBeLessThanOrEqual(8); // an engine may keep the last one or two
    expect(out.outcome).toEqual([['handler-stop', 3000]]);
  });
});
