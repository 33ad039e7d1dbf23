/**
 * memoryControl.discardRanges (the batched discard ballooning uses) and ramUsage: every pair
 * is checked before any page is discarded, bad calls are typed errors, and on KVM the host
 * memory behind the discarded pages really goes (the memfd's allocated blocks drop) while the
 * pages read as zero. MSHV and WHPX run on their fake layers (zero-fill, usage = region size).
 */
import { describe, expect, it } from 'vitest';
import { MshvPartition } from '../src/backends/mshv/partition.js';
import { WhpxPartition } from '../src/backends/whpx/partition.js';
import { KvmPartition } from '../src/backends/kvm/partition.js';
import type { AccelPartition } from '../src/backends/types.js';
import type { NativePartition } from '../src/native/addon.js';
import { AccelUsageError } from '../src/errors.js';
import { FakeMshvSys, FakeWhpxApi, whpxCapabilities } from '../src/testing/index.js';
import { describeKvm, MiB } from './helpers/harness.js';
import { expectRows, type Row } from '../../../test/api-edges.js';

const PAGE = 4096;

const makers: [string, () => AccelPartition][] = [
  ['MSHV', () => MshvPartition.create({ memory: [{ gpa: 0, size: 4 * MiB }] }, new FakeMshvSys())],
  [
    'WHPX',
    () =>
      WhpxPartition.create(
        { arch: 'x64', memory: [{ gpa: 0, size: 4 * MiB }] },
        new FakeWhpxApi({ arch: 'x64', capabilities: whpxCapabilities('x64') }),
      ),
  ],
];

const BAD_ROWS: Row<AccelPartition>[] = [
  ['not a typed array', (p) => p.memoryControl!.discardRanges([0, PAGE] as never), AccelUsageError, /Float64Array/],
  ['a Uint32Array', (p) => p.memoryControl!.discardRanges(new Uint32Array([0, PAGE]) as never), AccelUsageError, /Float64Array/],
  ['null', (p) => p.memoryControl!.discardRanges(null as never), AccelUsageError, /Float64Array.*null/],
  ['empty', (p) => p.memoryControl!.discardRanges(new Float64Array(0)), AccelUsageError, /not 0 numbers/],
  ['odd length', (p) => p.memoryControl!.discardRanges(new Float64Array(3)), AccelUsageError, /not 3 numbers/],
  ['absurd length', (p) => p.memoryControl!.discardRanges(new Float64Array(2 ** 21 + 2)), AccelUsageError, /pairs, not/],
  ['NaN gpa', (p) => p.memoryControl!.discardRanges(Float64Array.of(NaN, PAGE)), AccelUsageError, /pair 0 .*not a non-empty/],
  ['negative gpa', (p) => p.memoryControl!.discardRanges(Float64Array.of(-PAGE, PAGE)), AccelUsageError, /pair 0/],
  ['fractional size', (p) => p.memoryControl!.discardRanges(Float64Array.of(0, PAGE + 0.5)), AccelUsageError, /pair 0/],
  ['zero size', (p) => p.memoryControl!.discardRanges(Float64Array.of(0, 0)), AccelUsageError, /pair 0/],
  ['Infinity size', (p) => p.memoryControl!.discardRanges(Float64Array.of(0, Infinity)), AccelUsageError, /pair 0/],
  ['unaligned', (p) => p.memoryControl!.discardRanges(Float64Array.of(0, PAGE, 0x800, PAGE)), AccelUsageError, /pair 1 .*page-aligned/],
  ['outside RAM', (p) => p.memoryControl!.discardRanges(Float64Array.of(0, PAGE, 2 ** 40, PAGE)), AccelUsageError, /pair 1 .*RAM region/],
  [
    'past the end',
    (p) => {
      const r = p.memoryControl!.ramUsage()[0];
      p.memoryControl!.discardRanges(Float64Array.of(r.gpa + r.size - PAGE, 2 * PAGE));
    },
    AccelUsageError,
    /RAM region/,
  ],
  [
    'after close',
    (p) => {
      p.close();
      p.memoryControl!.discardRanges(Float64Array.of(0, PAGE));
    },
    AccelUsageError,
    /closed/,
  ],
  [
    'ramUsage after close',
    (p) => {
      p.close();
      p.memoryControl!.ramUsage();
    },
    AccelUsageError,
    /closed/,
  ],
];

function fillPages(p: AccelPartition, gpa: number, pages: number, value: number): void {
  p.memory.write(gpa, new Uint8Array(pages * PAGE).fill(value));
}

function allBytes(p: AccelPartition, gpa: number, len: number): Set<number> {
  const out = new Uint8Array(len);
  p.memory.read(gpa, out);
  return new Set(out);
}

describe.each(makers)('%s memoryControl.discardRanges', (_name, make) => {
  it('zeroes exactly the pages of every pair, returns the bytes, and reports usage per region', () => {
    const p = make();
    try {
      fillPages(p, 0, 1024, 0xaa);
      const n = p.memoryControl!.discardRanges(Float64Array.of(PAGE, 2 * PAGE, 64 * PAGE, PAGE));
      expect(n).toBe(3 * PAGE);
      expect(allBytes(p, PAGE, 2 * PAGE)).toEqual(new Set([0]));
      expect(allBytes(p, 64 * PAGE, PAGE)).toEqual(new Set([0]));
      expect(allBytes(p, 0, PAGE)).toEqual(new Set([0xaa]));
      expect(allBytes(p, 3 * PAGE, 61 * PAGE)).toEqual(new Set([0xaa]));
      expect(allBytes(p, 65 * PAGE, PAGE)).toEqual(new Set([0xaa]));
      expect(p.memoryControl!.ramUsage()).toEqual([{ gpa: 0, size: 4 * MiB, allocatedBytes: 4 * MiB }]);
    } finally {
      p.close();
    }
  });

  it('a batch with one bad pair discards nothing', () => {
    const p = make();
    try {
      fillPages(p, 0, 16, 0x55);
      expect(() => p.memoryControl!.discardRanges(Float64Array.of(0, PAGE, 8 * MiB, PAGE))).toThrow(AccelUsageError);
      expect(allBytes(p, 0, 16 * PAGE)).toEqual(new Set([0x55]));
    } finally {
      p.close();
    }
  });

  it('refuses bad calls with typed errors', () => {
    expectRows(make, BAD_ROWS);
  });
});

describeKvm('KVM memoryControl.discardRanges', () => {
  const make = (): KvmPartition => KvmPartition.create({ memory: [{ gpa: 0, size: 16 * MiB }] });

  it('releases the host memory behind the pages (memfd blocks) and the pages read as zero', () => {
    const p = make();
    try {
      const mc = p.memoryControl;
      const before = mc.ramUsage()[0].allocatedBytes;
      fillPages(p, 0, 2048, 0x11); // 8 MiB touched
      const touched = mc.ramUsage()[0].allocatedBytes;
      expect(touched - before).toBeGreaterThanOrEqual(8 * MiB);
      const pairs = new Float64Array(2 * 512);
      for (let i = 0; i < 512; i++) {
        pairs[2 * i] = (2 * i + 1) * 2 * PAGE; // every other 2-page run of the first 4 MiB... and beyond
        pairs[2 * i + 1] = 2 * PAGE;
      }
      expect(mc.discardRanges(pairs)).toBe(512 * 2 * PAGE);
      const after = mc.ramUsage()[0].allocatedBytes;
      // At least the discarded bytes went back to the host (the kernel may drop more, never less).
      expect(touched - after).toBeGreaterThanOrEqual(512 * 2 * PAGE);
      expect(allBytes(p, 2 * PAGE, 2 * PAGE)).toEqual(new Set([0]));
      expect(allBytes(p, 0, 2 * PAGE)).toEqual(new Set([0x11]));
      // Touched again: the page comes back, zero-filled, and is counted again.
      p.memory.write(2 * PAGE, Uint8Array.of(7));
      const two = new Uint8Array(2);
      p.memory.read(2 * PAGE, two);
      expect(two).toEqual(Uint8Array.of(7, 0));
      expect(mc.ramUsage()[0].allocatedBytes).toBeGreaterThan(after);
      expect(mc.ramUsage()[0]).toMatchObject({ gpa: 0, size: 16 * MiB });
    } finally {
      p.close();
    }
  });

  it('the addon itself checks every pair before punching any', () => {
    const p = make();
    try {
      fillPages(p, 0, 4, 0x22);
      const native = (p as unknown as { nativePartition: NativePartition }).nativePartition;
      expect(() => native.discardRanges(Float64Array.of(0, PAGE, 64 * MiB, PAGE))).toThrow(/not inside one RAM region/);
      expect(() => native.discardRanges(Float64Array.of(0, PAGE, 0x800, PAGE))).toThrow(/page-aligned/);
      expect(() => native.discardRanges(Float64Array.of(0, PAGE, -1, PAGE))).toThrow(/element 2/);
      expect(() => native.discardRanges(new Float64Array(3))).toThrow(/pairs/);
      expect(() => native.discardRanges([0, PAGE] as never)).toThrow(/Float64Array/);
      expect(allBytes(p, 0, 4 * PAGE)).toEqual(new Set([0x22]));
      expect(native.discardRanges(Float64Array.of(0, PAGE))).toBe(PAGE);
      expect(allBytes(p, 0, PAGE)).toEqual(new Set([0]));
    } finally {
      p.close();
    }
  });

  it('refuses bad calls with typed errors', () => {
    expectRows(() => make() as AccelPartition, BAD_ROWS);
  });
});
