/**
 * KVM memoryControl against a running guest: RAM added at run time is a new memslot the guest
 * reads; removed RAM is gone for the guest (its accesses exit as MMIO) and for JS (every
 * buffer over it is detached before it can be unmapped); discarded pages read as zero on both
 * sides (FALLOC_FL_PUNCH_HOLE on the memfd).
 */
import { expect, it } from 'vitest';
import { KvmPartition } from '../src/backends/kvm/partition.js';
import { MemoryMapError } from '../src/errors.js';
import { enterFlatRealMode } from '../src/cpuid-probe.js';
import { describeKvm } from './helpers/harness.js';

const MiB = 1 << 20;
const STOP = 0xf4;

/** Real mode at 0x1000: DS = 0xffff; AL = [DS:0x10] (GPA 0xffff0 + 0x10 = 0x100000); OUT 0x80, AL; OUT 0xf4 (stop). */
const READ_AT_1M = [0xb8, 0xff, 0xff, 0x8e, 0xd8, 0xa0, 0x10, 0x00, 0xe6, 0x80, 0xe6, STOP];

function partition(): KvmPartition {
  const p = KvmPartition.create({ memory: [{ gpa: 0, size: MiB }] });
  p.memory.write(0x1000, Uint8Array.from(READ_AT_1M));
  p.addIoDevice({ port: STOP, count: 1, write: () => ({ stop: true }) });
  return p;
}

describeKvm('KVM memoryControl with a running guest', () => {
  it('the guest reads RAM added at run time; after removal the same load is an MMIO exit and old views are detached', async () => {
    const p = partition();
    try {
      const seen: number[] = [];
      p.addIoDevice({ port: 0x80, count: 1, write: (_port, _size, data) => void seen.push(data) });
      p.memoryControl.addRam({ gpa: MiB, size: 64 * 1024 });
      p.memory.write(MiB, Uint8Array.of(0x77));
      const view = p.memory.bytes(MiB, 0x100);
      enterFlatRealMode(p, 0x1000);
      await p.run([0]);
      expect(seen).toEqual([0x77]);

      p.memoryControl.removeRam(MiB);
      expect(view.byteLength).toBe(0); // detached: no JS view reaches the unmapped pages
      const mmio: number[] = [];
      p.addMmioDevice({ gpa: MiB, size: 0x1000, read: (gpa) => (mmio.push(gpa), 0x33n) });
      enterFlatRealMode(p, 0x1000);
      await p.run([0]);
      expect(mmio).toEqual([MiB]);
      expect(seen).toEqual([0x77, 0x33]);

      // Not over the MMIO device now there; elsewhere, a fresh memslot over a fresh memfd: zeroed.
      expect(() => p.memoryControl.addRam({ gpa: MiB, size: 64 * 1024 })).toThrow(/MMIO device/);
      p.memoryControl.addRam({ gpa: 2 * MiB, size: 64 * 1024 });
      const back = new Uint8Array(1);
      p.memory.read(2 * MiB, back);
      expect(back[0]).toBe(0);
    } finally {
      p.close();
    }
  });

  it('removing a region given at creation detaches the buffers handed out for it', () => {
    const p = KvmPartition.create({
      memory: [
        { gpa: 0, size: MiB },
        { gpa: 0x1000_0000, size: MiB },
      ],
    });
    try {
      const view = p.memory.bytes(0x1000_0000, 0x1000);
      view[0] = 1;
      p.memoryControl.removeRam(0x1000_0000);
      expect(view.byteLength).toBe(0);
      expect(() => p.memory.bytes(0x1000_0000, 1)).toThrow();
    } finally {
      p.close();
    }
  });

  it('discarded pages read as zero for the guest and for JS; misuse is refused', async () => {
    const p = partition();
    try {
      const seen: number[] = [];
      p.addIoDevice({ port: 0x80, count: 1, write: (_port, _size, data) => void seen.push(data) });
      p.memoryControl.addRam({ gpa: MiB, size: 64 * 1024 });
      const view = p.memory.bytes(MiB, 0x1000);
      view[0] = 0x55;
      p.memoryControl.discardRam(MiB, 0x1000);
      expect(view[0]).toBe(0); // the same mapping, its page punched out
      enterFlatRealMode(p, 0x1000);
      await p.run([0]);
      expect(seen).toEqual([0]);
      expect(() => p.memoryControl.addRam({ gpa: MiB + 0x800, size: 0x1000 })).toThrow(MemoryMapError);
      expect(() => p.memoryControl.addRam({ gpa: 0xfee0_0000, size: 0x1000 })).toThrow(/platform hole/);
      expect(() => p.memoryControl.addRam({ gpa: MiB, size: 0x1000 })).toThrow(/overlaps/);
      expect(() => p.memoryControl.discardRam(0x20_0000, 0x1000)).toThrow(/not inside one RAM region/);
      expect(() => p.memoryControl.discardRam(MiB + 1, 0x1000)).toThrow();
    } finally {
      p.close();
    }
  });
});
