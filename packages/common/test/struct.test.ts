import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { defineStruct, formatGuid, HostUsageError, parseGuid, StructBoundsError } from '@hvemu/common';

const sample = defineStruct('sample', 24, [
  [0, 'a', 'u8'],
  [1, 'b', 'u8'],
  [2, 'c', 'u16'],
  [4, 'd', 'u32'],
  [8, 'e', 'u64'],
  [16, 'f', { bytes: 8 }],
]);

describe('defineStruct', () => {
  it('records field offsets from the table', () => {
    expect(sample.offsetOf).toEqual({ a: 0, b: 1, c: 2, d: 4, e: 8, f: 16 });
    expect(sample.size).toBe(24);
  });

  it('rejects a gap, an overlap and a size mismatch when the structure is declared', () => {
    expect(() =>
      defineStruct('gap', 8, [
        [0, 'x', 'u32'],
        [6, 'y', 'u16'],
      ]),
    ).toThrow(HostUsageError);
    expect(() =>
      defineStruct('overlap', 8, [
        [0, 'x', 'u32'],
        [2, 'y', 'u32'],
      ]),
    ).toThrow(/previous field ends at 4/);
    expect(() => defineStruct('short', 12, [[0, 'x', 'u64']])).toThrow(/sizeof is 12/);
    expect(() =>
      defineStruct('dup', 8, [
        [0, 'x', 'u32'],
        [4, 'x', 'u32'],
      ]),
    ).toThrow(/twice/);
  });

  it('encodes little-endian at the declared offsets', () => {
    const bytes = sample.encodeNew({ a: 1, b: 2, c: 0x0403, d: 0x08070605, e: 0x100f0e0d0c0b0a09n });
    expect(Array.from(bytes.subarray(0, 16))).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
  });

  it('round-trips any value through encode and decode', () => {
    fc.assert(
      fc.property(
        fc.record({
          a: fc.integer({ min: 0, max: 0xff }),
          b: fc.integer({ min: 0, max: 0xff }),
          c: fc.integer({ min: 0, max: 0xffff }),
          d: fc.integer({ min: 0, max: 0xffffffff }),
          e: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
          f: fc.uint8Array({ minLength: 8, maxLength: 8 }),
        }),
        fc.nat(16),
        (value, offset) => {
          const buf = new Uint8Array(offset + sample.size);
          sample.encode(value, buf, offset);
          expect(sample.decode(buf, offset)).toEqual(value);
        },
      ),
    );
  });

  it('refuses values that do not fit their field', () => {
    expect(() => sample.encodeNew({ a: 256 })).toThrow(HostUsageError);
    expect(() => sample.encodeNew({ d: -1 })).toThrow(HostUsageError);
    expect(() => sample.encodeNew({ e: 1n << 64n })).toThrow(HostUsageError);
    expect(() => sample.encodeNew({ f: new Uint8Array(9) })).toThrow(HostUsageError);
  });

  it('reports truncated input as StructBoundsError with the sizes', () => {
    const err = (() => {
      try {
        sample.decode(new Uint8Array(23));
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(StructBoundsError);
    expect(err).toMatchObject({ needed: 24, available: 23, outcome: 'message-dropped' });
  });
});

describe('GUIDs', () => {
  it('uses the Microsoft mixed-endian wire layout', () => {
    // The VMBus heartbeat IC class id, as Linux declares it in HV_HEART_BEAT_GUID bytes.
    const wire = Uint8Array.from([0x39, 0x4f, 0x16, 0x57, 0x15, 0x91, 0x78, 0x4e, 0xab, 0x55, 0x38, 0x2f, 0x3b, 0xd5, 0x42, 0x2d]);
    expect(formatGuid(wire)).toBe('57164f39-9115-4e78-ab55-382f3bd5422d');
    expect(Array.from(parseGuid('57164f39-9115-4e78-ab55-382f3bd5422d'))).toEqual(Array.from(wire));
  });

  it('round-trips any 16 bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (b) => {
        expect(Array.from(parseGuid(formatGuid(b)))).toEqual(Array.from(b));
      }),
    );
  });
});
