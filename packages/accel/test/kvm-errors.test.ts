import { afterEach, expect, it } from 'vitest';
import { AccelUsageError, ExitHandlerError, GuestFatalError, MemoryMapError } from '../src/errors.js';
import { KvmPartition } from '../src/backends/kvm/partition.js';
import { describeKvm, MiB, runGuest, summary, type GuestRun } from './helpers/harness.js';
import { buildGuest } from './helpers/guest-build.js';
import { enterLongMode, loadElf64, TestPlatform } from '@hvemu/platform';

const opened: KvmPartition[] = [];
afterEach(() => {
  for (const p of opened.splice(0)) p.close();
});

async function run(name: string, opts: Parameters<typeof runGuest>[1] = {}): Promise<GuestRun> {
  const r = await runGuest(name, opts);
  opened.push(r.partition);
  return r;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describeKvm('KVM partition errors and lifecycle', () => {
  it('rejects a memory map that overlaps the LAPIC/IOAPIC hole, overlaps itself or is unaligned', () => {
    expect(() => KvmPartition.create({ memory: [{ gpa: 0xfe000000, size: 0x2000000 }] })).toThrow(MemoryMapError);
    expect(() => KvmPartition.create({ memory: [{ gpa: 0xfe000000, size: 0x2000000 }] })).toThrow(/platform hole 0xfec00000-0xffffffff/);
    expect(() =>
      KvmPartition.create({
        memory: [
          { gpa: 0, size: 2 * MiB },
          { gpa: MiB, size: MiB },
        ],
      }),
    ).toThrow(/overlaps the previous region/);
    expect(() => KvmPartition.create({ memory: [{ gpa: 0x800, size: MiB }] })).toThrow(MemoryMapError);
    expect(() => KvmPartition.create({ memory: [] })).toThrow(MemoryMapError);
  });

  it('exposes each RAM region (below and above a hole) as its own zero-copy buffer', () => {
    const p = KvmPartition.create({
      memory: [
        { gpa: 0, size: 2 * MiB },
        { gpa: 0x100000000, size: MiB },
      ],
    });
    opened.push(p);
    expect(p.memory.regions.map((r) => [r.gpa, r.size])).toEqual([
      [0, 2 * MiB],
      [0x100000000, MiB],
    ]);
    p.memory.writeU32(0x100000000 + 16, 0xabcd);
    expect(p.memory.readU32(0x100000000 + 16)).toBe(0xabcd);
    expect(p.memory.contains(2 * MiB, 1)).toBe(false);
  });

  it('maps a scattered page list (GPADL) into one flat zero-copy view, and refuses non-RAM pages', () => {
    const p = KvmPartition.create({
      memory: [
        { gpa: 0, size: 2 * MiB },
        { gpa: 0x100000000, size: MiB },
      ],
    });
    opened.push(p);
    const pfns = [0x105, 0x103, 0x100000, 0x104];
    const view = p.mapPageList(pfns);
    expect(view.bytes.length).toBe(4 * 4096);
    view.bytes[4096 * 2 + 5] = 0x5a; // lands in the region above 4 GiB
    expect(p.memory.readU8(0x100000005)).toBe(0x5a);
    p.memory.writeU32(0x104000 + 8, 0xfeedf00d); // guest-side write shows in the view
    expect(new DataView(view.bytes.buffer).getUint32(3 * 4096 + 8, true)).toBe(0xfeedf00d);
    view.unmap();
    expect(view.bytes.length).toBe(0);
    expect(() => p.mapPageList([0x200])).toThrow(/PFN 512\) is not guest RAM/);
    expect(() => p.mapPageList([1.5])).toThrow(AccelUsageError);
  });

  it('refuses register access while a vCPU runs, and stops a spinning and a halted vCPU in order', async () => {
    const p = KvmPartition.create({ memory: [{ gpa: 0, size: 16 * MiB }], vcpuCount: 2 });
    opened.push(p);
    new TestPlatform(p);
    enterLongMode(p, loadElf64(p.memory, buildGuest('spin')).entry);
    const done = p.run();
    await sleep(50);
    expect(() => p.vcpus[0].getRegisters()).toThrow(AccelUsageError);
    const counter = p.memory.readU64(0x400000);
    // Really running: the counter moves (polled, since a loaded host may not schedule the vCPU thread within a fixed time).
    for (let waited = 0; waited < 5000 && p.memory.readU64(0x400000) === counter; waited += 10) await sleep(10);
    expect(p.memory.readU64(0x400000)).toBeGreaterThan(counter);
    p.stop();
    const outcomes = await done;
    expect(outcomes.map((o) => [o.vp, o.cause])).toEqual([
      [0, 'stop-requested'],
      [1, 'stop-requested'],
    ]);
    expect(p.vcpus.map((v) => v.status)).toEqual(['stopped', 'stopped']);
    // Parked now: registers are readable, and RIP is inside the guest image.
    expect(p.vcpus[0].getRegisters().rip).toBeGreaterThanOrEqual(0x100000n);
    // And a stopped vCPU can run again from where it was.
    const before = p.memory.readU64(0x400000);
    const again = p.run([0]);
    for (let waited = 0; waited < 5000 && p.memory.readU64(0x400000) === before; waited += 10) await sleep(10);
    p.stop();
    await again;
    expect(p.memory.readU64(0x400000)).toBeGreaterThan(before);
  });

  it('keeps other vCPUs running while one waits for an async handler', async () => {
    let countWhileWaiting = 0n;
    const r = await run('async', {
      vcpuCount: 2,
      setup: (p) =>
        p.addIoDevice({
          port: 0x530,
          count: 1,
          read: async () => {
            const before = p.memory.readU64(0x400000);
            await sleep(100);
            countWhileWaiting = p.memory.readU64(0x400000) - before;
            return 0x42;
          },
        }),
    });
    expect(r.error, summary(r)).toBeUndefined();
    expect(Object.fromEntries(r.platform.debugExit.codes)).toEqual({ 0: 0x42, 1: 0 });
    expect(countWhileWaiting).toBeGreaterThan(100n);
  });

  it('stops a vCPU whose handler throws, with ExitHandlerError', async () => {
    const r = await run('throwing', {
      setup: (p) =>
        p.addIoDevice({
          port: 0x540,
          count: 1,
          write: () => {
            throw new Error('device exploded');
          },
        }),
    });
    expect(r.error).toBeInstanceOf(ExitHandlerError);
    expect((r.error as Error).message).toMatch(/vCPU 0: handler for io exit failed: device exploded/);
  });

  it('reports an instruction the host cannot finish with its bytes and registers', async () => {
    const r = await run('badinsn', { int3Fixup: false });
    expect(r.error, summary(r)).toBeInstanceOf(GuestFatalError);
    const e = r.error as GuestFatalError;
    expect(e.reason).toBe('emulation-failure');
    expect(e.instructionBytes?.[0]).toBe(0xcc);
    expect(e.message).toMatch(/instruction bytes at RIP: cc/);
    expect(e.registers?.rip).toBeGreaterThan(0x100000n);
  });
});
