import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { HostUsageError } from '@hvemu/common';
import { FlatGuestBuffer, GuestMemory, GuestMemoryError, PAGE_SIZE, PagedGuestBuffer } from '@hvemu/memory';
import { fuzzRuns, sameBytes } from '../../../test/helpers.js';

const MiB = 1 << 20;

/** 1 MiB of RAM at 0, a hole, 1 MiB at 4 MiB. */
function holeyMemory(): GuestMemory {
  return GuestMemory.createShared([
    { gpa: 0, size: MiB },
    { gpa: 4 * MiB, size: MiB },
  ]);
}

describe('GuestMemory', () => {
  it('reads back what it wrote, little-endian, in every region', () => {
    const m = holeyMemory();
    m.writeU64(0x1000, 0x1122334455667788n);
    expect(m.readU32(0x1000)).toBe(0x55667788);
    expect(m.readU16(0x1004)).toBe(0x3344);
    expect(m.readU8(0x1007)).toBe(0x11);
    m.writeU32(4 * MiB + 8, 0xdeadbeef);
    expect(m.readU64(4 * MiB + 8)).toBe(0xdeadbeefn);
    expect(m.ramSize).toBe(2 * MiB);
  });

  it('rejects every access that is not entirely inside guest RAM, and touches nothing', () => {
    const m = holeyMemory();
    const snapshot = [new Uint8Array(m.bytes(0, MiB)), new Uint8Array(m.bytes(4 * MiB, MiB))];
    const badGpa = fc.oneof(
      fc.integer({ min: MiB - 7, max: 4 * MiB - 1 }), // in or straddling the hole
      fc.integer({ min: 5 * MiB - 7, max: 2 ** 52 }), // past the end
      fc.constantFrom(-1, -4096, NaN, Infinity, 0.5, 2 ** 53),
    );
    fc.assert(
      fc.property(badGpa, fc.constantFrom(1, 2, 4, 8) as fc.Arbitrary<1 | 2 | 4 | 8>, (gpa, width) => {
        if (m.contains(gpa, width)) return; // a straddling start that happens to fit
        const write = {
          1: () => m.writeU8(gpa, 1),
          2: () => m.writeU16(gpa, 1),
          4: () => m.writeU32(gpa, 1),
          8: () => m.writeU64(gpa, 1n),
        }[width];
        const read = { 1: () => m.readU8(gpa), 2: () => m.readU16(gpa), 4: () => m.readU32(gpa), 8: () => m.readU64(gpa) }[width];
        // A GPA that is no address at all is the host caller's bug; a real address outside RAM
        // is a guest request refused.
        const expected = Number.isSafeInteger(gpa) && gpa >= 0 ? GuestMemoryError : HostUsageError;
        expect(write).toThrow(expected);
        expect(read).toThrow(expected);
        expect(() => m.write(gpa, new Uint8Array(width))).toThrow(expected);
        expect(() => m.bytes(gpa, width)).toThrow(expected);
      }),
      { numRuns: fuzzRuns(300) },
    );
    expect(sameBytes(m.bytes(0, MiB), snapshot[0])).toBe(true);
    expect(sameBytes(m.bytes(4 * MiB, MiB), snapshot[1])).toBe(true);
  });

  it('marks out-of-RAM errors as refused guest requests with the address', () => {
    const m = holeyMemory();
    try {
      m.readU32(2 * MiB);
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(GuestMemoryError);
      expect(e).toMatchObject({ gpa: 2 * MiB, length: 4, outcome: 'request-rejected' });
    }
  });

  it('copies ranges that span two adjacent regions, but never across a hole', () => {
    const m = GuestMemory.createShared([
      { gpa: 0, size: PAGE_SIZE },
      { gpa: PAGE_SIZE, size: PAGE_SIZE },
    ]);
    const src = Uint8Array.from({ length: 100 }, (_, i) => i);
    m.write(PAGE_SIZE - 50, src);
    const back = new Uint8Array(100);
    m.read(PAGE_SIZE - 50, back);
    expect(back).toEqual(src);
    expect(() => holeyMemory().write(MiB - 10, new Uint8Array(20))).toThrow(GuestMemoryError);
  });

  it('gives views that share memory with the guest (zero-copy)', () => {
    const m = holeyMemory();
    const view = m.bytes(0x2000, 16);
    view[3] = 0x7f;
    expect(m.readU8(0x2003)).toBe(0x7f);
    const words = m.u32Array(0x3000, 4);
    Atomics.store(words, 1, 0xabcdef01);
    expect(m.readU32(0x3004)).toBe(0xabcdef01);
    expect(() => m.u32Array(0x3002, 1)).toThrow(GuestMemoryError);
  });

  it('validates the RAM map it is given', () => {
    const buf = new SharedArrayBuffer(2 * PAGE_SIZE);
    expect(() => new GuestMemory([])).toThrow(HostUsageError);
    expect(() => new GuestMemory([{ gpa: 1, size: PAGE_SIZE, buffer: buf }])).toThrow(/page-aligned/);
    expect(() => new GuestMemory([{ gpa: 0, size: 100, buffer: buf }])).toThrow(/multiple/);
    expect(() => new GuestMemory([{ gpa: 0, size: 4 * PAGE_SIZE, buffer: buf }])).toThrow(/does not fit/);
    expect(
      () =>
        new GuestMemory([
          { gpa: 0, size: 2 * PAGE_SIZE, buffer: buf },
          { gpa: PAGE_SIZE, size: PAGE_SIZE, buffer: new SharedArrayBuffer(PAGE_SIZE) },
        ]),
    ).toThrow(/overlap/);
  });
});

describe('page lists (GPADL buffers)', () => {
  it('uses one flat view when the pages are consecutive, a paged buffer otherwise', () => {
    const m = GuestMemory.createShared(16 * PAGE_SIZE);
    const flat = m.pageList([3, 4, 5], 100, 2 * PAGE_SIZE);
    expect(flat).toBeInstanceOf(FlatGuestBuffer);
    expect(flat.flat?.byteOffset).toBe(3 * PAGE_SIZE + 100);
    const paged = m.pageList([5, 3, 4], 100, 2 * PAGE_SIZE);
    expect(paged).toBeInstanceOf(PagedGuestBuffer);
    expect(paged.flat).toBeNull();
  });

  it('rejects out-of-RAM PFNs, a bad first-page offset and a list too short for the length', () => {
    const m = GuestMemory.createShared(16 * PAGE_SIZE);
    expect(() => m.pageList([1, 16], 0, 2 * PAGE_SIZE)).toThrow(GuestMemoryError);
    expect(() => m.pageList([1, 2 ** 60], 0, 2 * PAGE_SIZE)).toThrow(GuestMemoryError);
    expect(() => m.pageList([1, -1], 0, 2 * PAGE_SIZE)).toThrow(GuestMemoryError);
    expect(() => m.pageList([1], PAGE_SIZE, 1)).toThrow(GuestMemoryError);
    expect(() => m.pageList([1], 1, PAGE_SIZE)).toThrow(GuestMemoryError);
  });

  it('behaves exactly like one contiguous buffer, however the pages are scattered', () => {
    const pages = 8;
    const op = fc.oneof(
      fc.record({ kind: fc.constant('write' as const), at: fc.nat(), bytes: fc.uint8Array({ maxLength: 3 * PAGE_SIZE }) }),
      fc.record({ kind: fc.constant('read' as const), at: fc.nat(), length: fc.nat(3 * PAGE_SIZE) }),
      fc.record({ kind: fc.constant('u32' as const), at: fc.nat(), value: fc.nat(0xffffffff) }),
      fc.record({ kind: fc.constant('u16' as const), at: fc.nat(), value: fc.nat(0xffff) }),
      fc.record({ kind: fc.constant('u64' as const), at: fc.nat(), value: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }) }),
      fc.record({ kind: fc.constant('fill' as const), at: fc.nat(), length: fc.nat(PAGE_SIZE), value: fc.nat(255) }),
    );
    fc.assert(
      fc.property(
        fc.shuffledSubarray([...Array(pages).keys()], { minLength: 4, maxLength: 4 }),
        fc.nat(PAGE_SIZE - 1),
        fc.array(op, { maxLength: 20 }),
        (pfns, byteOffset, ops) => {
          const m = GuestMemory.createShared(pages * PAGE_SIZE);
          const length = 3 * PAGE_SIZE;
          const buf = m.pageList(pfns, byteOffset, length);
          const ref = new Uint8Array(length);
          const refView = new DataView(ref.buffer);
          for (const o of ops) {
            const at = o.at % length;
            if (o.kind === 'write') {
              const n = Math.min(o.bytes.length, length - at);
              buf.write(at, o.bytes, 0, n);
              ref.set(o.bytes.subarray(0, n), at);
            } else if (o.kind === 'read') {
              const n = Math.min(o.length, length - at);
              const out = new Uint8Array(n);
              buf.read(at, out);
              expect(sameBytes(out, ref.subarray(at, at + n))).toBe(true);
              const view = buf.view(at, n);
              if (view) expect(sameBytes(view, ref.subarray(at, at + n))).toBe(true);
            } else if (o.kind === 'fill') {
              const n = Math.min(o.length, length - at);
              buf.fill(o.value, at, n);
              ref.fill(o.value, at, at + n);
            } else if (o.kind === 'u64') {
              const p = Math.min(at, length - 8);
              buf.setU64(p, o.value);
              refView.setBigUint64(p, o.value, true);
              expect(buf.getU64(p)).toBe(refView.getBigUint64(p, true));
            } else {
              const w = o.kind === 'u32' ? 4 : 2;
              const p = Math.min(at, length - w);
              if (w === 4) {
                buf.setU32(p, o.value);
                refView.setUint32(p, o.value, true);
              } else {
                buf.setU16(p, o.value);
                refView.setUint16(p, o.value, true);
              }
              expect(w === 4 ? buf.getU32(p) : buf.getU16(p)).toBe(w === 4 ? refView.getUint32(p, true) : refView.getUint16(p, true));
            }
          }
          // Guest memory outside the listed range is untouched, inside matches the model.
          const all = m.bytes(0, pages * PAGE_SIZE);
          const expectedAll = new Uint8Array(pages * PAGE_SIZE);
          for (let i = 0; i < length; i++) {
            const pos = byteOffset + i;
            expectedAll[pfns[Math.floor(pos / PAGE_SIZE)] * PAGE_SIZE + (pos % PAGE_SIZE)] = ref[i];
          }
          expect(sameBytes(all, expectedAll)).toBe(true);
        },
      ),
      { numRuns: fuzzRuns(150) },
    );
  });

  it('refuses accesses past its own end', () => {
    const m = GuestMemory.createShared(8 * PAGE_SIZE);
    for (const buf of [m.pageList([1, 2], 0, 100), m.pageList([2, 1], 4000, 200)]) {
      expect(() => buf.read(buf.length - 10, new Uint8Array(20))).toThrow();
      expect(() => buf.write(buf.length - 50, new Uint8Array(100))).toThrow();
      expect(() => buf.getU32(buf.length - 2)).toThrow(HostUsageError);
      expect(() => buf.view(-1, 2)).toThrow();
    }
  });
});

describe('GuestMemory grows and shrinks (dynamic memory)', () => {
  const MiB = 1 << 20;
  it('a region added at run time is RAM at once; removed, it is not; listeners hear each change in order', () => {
    const m = GuestMemory.createShared(MiB);
    const changes: string[] = [];
    const stop = m.onChange((c) => changes.push(`${c.kind} 0x${c.region.gpa.toString(16)}+${c.region.size}`));
    expect(m.contains(4 * MiB, 8)).toBe(false);
    const added = m.addRegion({ gpa: 4 * MiB, size: 2 * MiB, buffer: new SharedArrayBuffer(2 * MiB) });
    expect(added.end).toBe(6 * MiB);
    m.writeU64(6 * MiB - 8, 0x1122334455667788n);
    expect(m.readU64(6 * MiB - 8)).toBe(0x1122334455667788n);
    expect(m.ramSize).toBe(3 * MiB);
    expect(m.regions.map((r) => r.gpa)).toEqual([0, 4 * MiB]);
    // a copy spanning two regions still needs them to touch; a hole between them is refused
    expect(() => m.read(MiB - 4, new Uint8Array(8))).toThrow(GuestMemoryError);
    m.removeRegion(4 * MiB);
    expect(() => m.readU64(6 * MiB - 8)).toThrow(GuestMemoryError);
    expect(m.ramSize).toBe(MiB);
    stop();
    m.addRegion({ gpa: 8 * MiB, size: PAGE_SIZE, buffer: new SharedArrayBuffer(PAGE_SIZE) });
    expect(changes).toEqual([`added 0x400000+${2 * MiB}`, `removed 0x400000+${2 * MiB}`]);
  });

  it('refuses overlaps, unknown regions, the last region, and malformed specs, leaving the map as it was', () => {
    const m = GuestMemory.createShared(MiB);
    expect(() => m.addRegion({ gpa: MiB - PAGE_SIZE, size: 2 * PAGE_SIZE, buffer: new SharedArrayBuffer(2 * PAGE_SIZE) })).toThrow(
      HostUsageError,
    );
    expect(() => m.addRegion({ gpa: 2 * MiB, size: 100, buffer: new SharedArrayBuffer(100) })).toThrow(HostUsageError);
    expect(() => m.addRegion({ gpa: 2 * MiB, size: PAGE_SIZE, buffer: 'x' as never })).toThrow(HostUsageError);
    expect(() => m.removeRegion(2 * MiB)).toThrow(HostUsageError);
    expect(() => m.removeRegion(0)).toThrow('the last RAM region cannot be removed');
    expect(() => new GuestMemory('x' as never)).toThrow(HostUsageError);
    expect(m.regions.map((r) => [r.gpa, r.size])).toEqual([[0, MiB]]);
  });
});
