/**
 * The host caller's side of GuestMemory and GuestBuffer, tried as a careless or hostile caller
 * would: every wrong value is a HostUsageError that names it, and nothing is written.
 */
import { describe, expect, it } from 'vitest';
import { HostUsageError } from '@hvemu/common';
import { GuestMemory, GuestMemoryError, PAGE_SIZE } from '@hvemu/memory';

const memory = (): GuestMemory => GuestMemory.createShared(4 * PAGE_SIZE);
const anyValue = (v: unknown): never => v as never;

describe('GuestMemory at its API edge', () => {
  it.each([-1, NaN, 1.5, Infinity, -Infinity, 2 ** 53])('a GPA of %s is a HostUsageError naming it, not "GPA 0x-1"', (gpa) => {
    const m = memory();
    for (const access of [
      () => m.readU8(gpa),
      () => m.readU32(gpa),
      () => m.writeU16(gpa, 1),
      () => m.bytes(gpa, 1),
      () => m.read(gpa, new Uint8Array(1)),
      () => m.u32Array(gpa, 1),
    ]) {
      expect(access).toThrow(HostUsageError);
      expect(access).toThrow(`GPA ${gpa} is not a non-negative integer`);
    }
  });

  it('a length or count that is no integer is named too', () => {
    const m = memory();
    expect(() => m.bytes(0, -1)).toThrow('length -1 is not a non-negative integer');
    expect(() => m.u32Array(0, NaN)).toThrow('count NaN is not a non-negative integer');
  });

  it('a real address outside RAM stays a guest request refused (GuestMemoryError)', () => {
    expect(() => memory().readU8(4 * PAGE_SIZE)).toThrow(GuestMemoryError);
  });

  it.each([
    ['writeU8', 256],
    ['writeU8', -1],
    ['writeU16', 0x1_0000],
    ['writeU32', 2 ** 40],
    ['writeU32', 2 ** 32],
    ['writeU32', -1],
    ['writeU32', 0.5],
    ['writeU32', NaN],
  ] as const)('%s(0, %s) is refused and writes nothing (a typed array would wrap it)', (method, value) => {
    const m = memory();
    m.writeU32(0, 0x11223344);
    expect(() => m[method](0, value)).toThrow(HostUsageError);
    expect(() => m[method](0, value)).toThrow(`GuestMemory.${method}: value ${value}`);
    expect(m.readU32(0)).toBe(0x11223344);
  });

  it.each([5, '5', 2n ** 64n, -1n, undefined])('writeU64(0, %s) is refused: a u64 is a bigint in [0, 2^64)', (value) => {
    const m = memory();
    expect(() => m.writeU64(0, anyValue(value))).toThrow(HostUsageError);
    expect(m.readU64(0)).toBe(0n);
  });

  it('read and write take Uint8Arrays only, and say so', () => {
    const m = memory();
    expect(() => m.read(0, anyValue('abc'))).toThrow('GuestMemory.read target must be a Uint8Array, got "abc"');
    expect(() => m.write(0, anyValue([1, 2, 3]))).toThrow('GuestMemory.write source must be a Uint8Array, got an object');
    expect(() => m.write(0, anyValue(null))).toThrow(HostUsageError);
  });

  it('accepts the edges of every range', () => {
    const m = memory();
    m.writeU8(0, 255);
    m.writeU16(2, 0xffff);
    m.writeU32(4, 0xffff_ffff);
    m.writeU64(8, 2n ** 64n - 1n);
    expect([m.readU8(0), m.readU16(2), m.readU32(4), m.readU64(8)]).toEqual([255, 0xffff, 0xffff_ffff, 2n ** 64n - 1n]);
  });
});

describe('GuestBuffer at its API edge (flat and paged)', () => {
  const buffers = () => {
    const m = memory();
    return [m.range(0, 64), m.pageList([2, 0], PAGE_SIZE - 8, 64)];
  };

  it('an offset that is NaN, fractional or negative is refused, not read as byte 0', () => {
    for (const b of buffers()) {
      b.setU8(0, 0x5a);
      b.setU8(1, 0xa5);
      for (const offset of [NaN, 0.5, 1.5, -1, b.length]) {
        expect(() => b.getU8(offset), `${b.flat ? 'flat' : 'paged'} getU8(${offset})`).toThrow(HostUsageError);
        expect(() => b.setU8(offset, 1)).toThrow(HostUsageError);
      }
      expect([b.getU8(0), b.getU8(1)]).toEqual([0x5a, 0xa5]);
    }
  });

  it('values that would wrap are refused', () => {
    for (const b of buffers()) {
      expect(() => b.setU32(4, 2 ** 32)).toThrow(HostUsageError);
      expect(() => b.setU16(4, -1)).toThrow(HostUsageError);
      expect(() => b.setU64(8, anyValue(1))).toThrow(HostUsageError);
      expect(() => b.setU64(8, 2n ** 64n)).toThrow(HostUsageError);
      expect(b.getU64(0)).toBe(0n);
      expect(b.getU64(8)).toBe(0n);
    }
  });
});
