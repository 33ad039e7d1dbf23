/** GuestMemory.zeroRanges: the simulated partition's discard (ballooning), all pairs checked before any is zeroed. */
import { expect, it } from 'vitest';
import { HostUsageError } from '@hvemu/common';
import { GuestMemory, GuestMemoryError } from '@hvemu/memory';

const mem = (): GuestMemory => {
  const m = GuestMemory.createShared([
    { gpa: 0, size: 0x10000 },
    { gpa: 0x10_0000, size: 0x10000 },
  ]);
  m.write(0, new Uint8Array(0x10000).fill(0xab));
  m.write(0x10_0000, new Uint8Array(0x10000).fill(0xcd));
  return m;
};

const bytesAt = (m: GuestMemory, gpa: number, n: number): Set<number> => {
  const b = new Uint8Array(n);
  m.read(gpa, b);
  return new Set(b);
};

it('zeroes every pair, in any region, and nothing else', () => {
  const m = mem();
  expect(m.zeroRanges(Float64Array.of(0x1000, 0x2000, 0x10_f000, 0x1000))).toBe(0x3000);
  expect(bytesAt(m, 0x1000, 0x2000)).toEqual(new Set([0]));
  expect(bytesAt(m, 0x10_f000, 0x1000)).toEqual(new Set([0]));
  expect(bytesAt(m, 0, 0x1000)).toEqual(new Set([0xab]));
  expect(bytesAt(m, 0x3000, 0xd000)).toEqual(new Set([0xab]));
  expect(bytesAt(m, 0x10_0000, 0xf000)).toEqual(new Set([0xcd]));
  expect(m.zeroRanges(new Float64Array(0))).toBe(0);
});

it('a pair outside RAM (or across the hole) zeroes nothing; bad arguments are host errors', () => {
  const m = mem();
  expect(() => m.zeroRanges(Float64Array.of(0, 0x1000, 0xf000, 0x2000))).toThrow(GuestMemoryError);
  expect(() => m.zeroRanges(Float64Array.of(0, 0x1000, 0x20_0000, 0x1000))).toThrow(GuestMemoryError);
  expect(bytesAt(m, 0, 0x10000)).toEqual(new Set([0xab]));
  expect(() => m.zeroRanges(Float64Array.of(0, 0x1000, -1, 0x1000))).toThrow(HostUsageError);
  expect(() => m.zeroRanges(Float64Array.of(NaN, 1))).toThrow(HostUsageError);
  expect(() => m.zeroRanges(Float64Array.of(0))).toThrow(HostUsageError);
  expect(() => m.zeroRanges([0, 1] as never)).toThrow(HostUsageError);
  expect(bytesAt(m, 0, 0x10000)).toEqual(new Set([0xab]));
});
