/**
 * AccelPartition.memoryControl on the MSHV and WHPX fake layers (KVM: conformance.test.ts and
 * kvm-memory.test.ts), and the ExitRouter following the RAM map it changes.
 */
import { describe, expect, it } from 'vitest';
import * as mshvAbi from '../src/backends/mshv/abi.js';
import { MshvPartition } from '../src/backends/mshv/partition.js';
import { WhpxPartition } from '../src/backends/whpx/partition.js';
import { AccelUsageError, MemoryMapError } from '../src/errors.js';
import { ExitRouter } from '../src/exit-router.js';
import { GuestMemory } from '@hvemu/memory';
import type { AccelPartition } from '../src/backends/types.js';
import { FakeMshvSys, FakeWhpxApi, whpxCapabilities } from '../src/testing/index.js';

const MiB = 1 << 20;

const whpxFake = (): FakeWhpxApi => new FakeWhpxApi({ arch: 'x64', capabilities: whpxCapabilities('x64') });

const backends: [string, () => { p: AccelPartition; mapped: () => number; unmapped: () => { gpa: bigint; size: bigint }[] }][] = [
  [
    'MSHV',
    () => {
      const sys = new FakeMshvSys();
      const p = MshvPartition.create({ memory: [{ gpa: 0, size: MiB }] }, sys);
      const memIoctls = () =>
        sys.calls
          .filter((c) => c.op === 'ioctl' && c.request === mshvAbi.MSHV_SET_GUEST_MEMORY)
          .map((c) => mshvAbi.MshvUserMemRegion.decode((c as { arg: Uint8Array }).arg));
      return {
        p,
        mapped: () => memIoctls().filter((r) => (r.flags & (1 << mshvAbi.MSHV_SET_MEM_BIT_UNMAP)) === 0).length,
        unmapped: () =>
          memIoctls()
            .filter((r) => (r.flags & (1 << mshvAbi.MSHV_SET_MEM_BIT_UNMAP)) !== 0)
            .map((r) => ({ gpa: r.guestPfn * 4096n, size: r.size })),
      };
    },
  ],
  [
    'WHPX',
    () => {
      const api = whpxFake();
      const p = WhpxPartition.create({ arch: 'x64', memory: [{ gpa: 0, size: MiB }] }, api);
      return {
        p,
        mapped: () => api.named('WHvMapGpaRange').length,
        unmapped: () => api.named('WHvUnmapGpaRange').map((c) => ({ gpa: c.args['gpa'] as bigint, size: c.args['size'] as bigint })),
      };
    },
  ],
];

describe.each(backends)('%s memoryControl', (_name, make) => {
  it('adds RAM that GuestMemory and the hypervisor both see, discards it to zeros, removes it again', () => {
    const { p, mapped, unmapped } = make();
    const mc = p.memoryControl!;
    const changes: string[] = [];
    p.memory.onChange((c) => changes.push(`${c.kind} 0x${c.region.gpa.toString(16)}`));
    mc.addRam({ gpa: 0x1000_0000, size: 2 * MiB });
    expect(mapped()).toBe(2);
    expect(changes).toEqual(['added 0x10000000']);
    p.memory.write(0x1000_0000 + 4096, Uint8Array.of(1, 2, 3));
    mc.discardRam(0x1000_0000, 2 * 4096);
    const back = new Uint8Array(3);
    p.memory.read(0x1000_0000 + 4096, back);
    expect(Array.from(back)).toEqual([0, 0, 0]);
    mc.removeRam(0x1000_0000);
    expect(unmapped()).toEqual([{ gpa: 0x1000_0000n, size: BigInt(2 * MiB) }]);
    expect(changes).toEqual(['added 0x10000000', 'removed 0x10000000']);
    expect(() => p.memory.read(0x1000_0000, new Uint8Array(1))).toThrow();
    p.close();
  });

  it('refuses misuse and changes nothing: unaligned, overlapping RAM or an MMIO device, no such region, the last one, after close', () => {
    const { p, mapped } = make();
    const mc = p.memoryControl!;
    p.addMmioDevice({ gpa: 0xd000_0000, size: 0x1000, read: () => 0n });
    expect(() => mc.addRam({ gpa: 0x1000_0800, size: MiB })).toThrow(MemoryMapError);
    expect(() => mc.addRam({ gpa: 0x8_0000, size: MiB })).toThrow(/overlaps RAM/);
    expect(() => mc.addRam({ gpa: 0xd000_0000, size: MiB })).toThrow(/MMIO device/);
    expect(() => mc.addRam({ gpa: -4096, size: MiB })).toThrow(AccelUsageError);
    expect(() => mc.removeRam(0x1234_0000)).toThrow(/no RAM region/);
    expect(() => mc.removeRam(0)).toThrow(/last RAM region/);
    expect(() => mc.discardRam(0x80_0000, 4096)).toThrow(/not inside one RAM region/);
    expect(() => mc.discardRam(0x800, 4096)).toThrow(/page-aligned/);
    expect(mapped()).toBe(1);
    p.close();
    expect(() => mc.addRam({ gpa: 0x1000_0000, size: MiB })).toThrow(/closed/);
  });

  it('the exit routing follows the RAM map: an MMIO device fits where RAM was removed, not where RAM was added', () => {
    const { p } = make();
    const mc = p.memoryControl!;
    mc.addRam({ gpa: 0x2000_0000, size: MiB });
    expect(() => p.addMmioDevice({ gpa: 0x2000_0000, size: 0x1000 })).toThrow(/overlaps guest RAM/);
    mc.removeRam(0x2000_0000);
    expect(() => p.addMmioDevice({ gpa: 0x2000_0000, size: 0x1000 })).not.toThrow();
    p.close();
  });
});

describe('ExitRouter over a GuestMemory', () => {
  it('checks MMIO devices against the RAM map as it is now', () => {
    const mem = new GuestMemory([{ gpa: 0, size: 0x10000, buffer: new ArrayBuffer(0x10000) }]);
    const router = new ExitRouter(mem);
    mem.addRegion({ gpa: 0x100000, size: 0x1000, buffer: new ArrayBuffer(0x1000) });
    expect(() => router.addMmioDevice({ gpa: 0x100000, size: 0x10 })).toThrow(/overlaps guest RAM/);
    mem.removeRegion(0x100000);
    router.addMmioDevice({ gpa: 0x100000, size: 0x10 });
    expect(() => router.checkRam(0x100000, 0x1000)).toThrow(/MMIO device/);
    router.dispose();
  });
});
