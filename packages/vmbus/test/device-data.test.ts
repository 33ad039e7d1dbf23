/** GuestData (the guest memory a packet or GPADL names) and PacketQueue (a device's view of its rings). */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { HostUsageError } from '@hvemu/common';
import { GuestMemory, GuestMemoryError, PAGE_SIZE } from '@hvemu/memory';
import {
  encodeGpaDirectHeader,
  GuestData,
  GuestDataLease,
  GuestDataRevokedError,
  PacketQueue,
  RingClosedError,
  RingWriter,
  VM_PKT_COMP,
  VM_PKT_DATA_INBAND,
  VM_PKT_DATA_USING_GPA_DIRECT,
  VM_PKT_DATA_USING_XFER_PAGES,
  type PacketView,
  type PageRange,
} from '@hvemu/vmbus';
import { createTestRing, type TestRing } from '@hvemu/vmbus/testing';
import { fuzzRuns } from '../../../test/helpers.js';

const PAGES = 64;

/** Ranges over scattered pages of a 64-page memory: any first-page offset, any length, 1-4 ranges. */
const rangesArb = fc.array(
  fc
    .record({ byteOffset: fc.integer({ min: 0, max: PAGE_SIZE - 1 }), byteCount: fc.integer({ min: 0, max: 3 * PAGE_SIZE }) })
    .chain(({ byteOffset, byteCount }) =>
      fc
        .uniqueArray(fc.integer({ min: 0, max: PAGES - 1 }), {
          minLength: Math.ceil((byteOffset + byteCount) / PAGE_SIZE),
          maxLength: Math.ceil((byteOffset + byteCount) / PAGE_SIZE),
        })
        .map((pfns): PageRange => ({ byteOffset, byteCount, pfns })),
    ),
  { minLength: 1, maxLength: 4 },
);

/** Where byte i of the sequence `ranges` name lives in guest memory (the reference model). */
function gpaOf(ranges: readonly PageRange[], i: number): number {
  for (const r of ranges) {
    if (i < r.byteCount) {
      const pos = r.byteOffset + i;
      return r.pfns[Math.floor(pos / PAGE_SIZE)] * PAGE_SIZE + (pos % PAGE_SIZE);
    }
    i -= r.byteCount;
  }
  throw new Error('outside');
}

describe('GuestData', () => {
  it('reads, writes, fills, slices and views exactly the bytes its ranges name, and nothing else', () => {
    fc.assert(
      fc.property(rangesArb, fc.nat(), fc.nat(), fc.integer({ min: 0, max: 255 }), (ranges, a, b, value) => {
        const memory = GuestMemory.createShared(PAGES * PAGE_SIZE);
        const all = memory.bytes(0, PAGES * PAGE_SIZE);
        for (let i = 0; i < all.length; i++) all[i] = (i * 7) & 0xff;
        const before = new Uint8Array(all);
        const data = GuestData.fromRanges(memory, ranges);
        const total = ranges.reduce((n, r) => n + r.byteCount, 0);
        expect(data.length).toBe(total);
        const offset = total === 0 ? 0 : a % total;
        const length = total === 0 ? 0 : b % (total - offset + 1);
        // read = the model's bytes
        const read = data.toBytes(offset, length);
        expect(
          Buffer.compare(
            read,
            Uint8Array.from({ length }, (_, i) => before[gpaOf(ranges, offset + i)]),
          ),
        ).toBe(0);
        // views cover the same bytes in order
        expect(Buffer.compare(Buffer.concat(data.views(offset, length)), read)).toBe(0);
        // a slice reads the same
        expect(Buffer.compare(data.slice(offset, length).toBytes(), read)).toBe(0);
        // write through a slice: exactly those bytes change
        const source = Uint8Array.from({ length }, (_, i) => (value + i) & 0xff);
        data.slice(offset, length).write(0, source);
        const expected = new Uint8Array(before);
        for (let i = 0; i < length; i++) expected[gpaOf(ranges, offset + i)] = source[i];
        expect(Buffer.compare(all, expected)).toBe(0);
        data.fill(value, offset, length);
        for (let i = 0; i < length; i++) expected[gpaOf(ranges, offset + i)] = value;
        expect(Buffer.compare(all, expected)).toBe(0);
      }),
      { numRuns: fuzzRuns(300) },
    );
  });

  it('refuses pages outside RAM, offsets outside the first page, too much data, and accesses past its end', () => {
    const memory = GuestMemory.createShared(4 * PAGE_SIZE);
    expect(() => GuestData.fromRanges(memory, [{ byteOffset: 0, byteCount: 10, pfns: [4] }])).toThrow(GuestMemoryError);
    expect(() => GuestData.fromRanges(memory, [{ byteOffset: PAGE_SIZE, byteCount: 10, pfns: [0, 1] }])).toThrow(GuestMemoryError);
    expect(() => GuestData.fromRanges(memory, [{ byteOffset: 0, byteCount: PAGE_SIZE + 1, pfns: [0] }])).toThrow(GuestMemoryError);
    expect(() => GuestData.fromRanges(memory, [{ byteOffset: 0, byteCount: 100, pfns: [0] }], { maxBytes: 99 })).toThrow(HostUsageError);
    const d = GuestData.fromRanges(memory, [{ byteOffset: 10, byteCount: 100, pfns: [1] }]);
    for (const bad of [
      () => d.read(95, new Uint8Array(10)),
      () => d.write(-1, new Uint8Array(1)),
      () => d.slice(50, 51),
      () => d.toBytes(0.5, 1),
      () => d.read(0, new Uint8Array(4), 2, 4),
    ]) {
      expect(bad).toThrow(HostUsageError);
    }
  });

  it('a revoked lease ends every access to its data and slices; a child lease goes with its parent', () => {
    const memory = GuestMemory.createShared(4 * PAGE_SIZE);
    const channel = new GuestDataLease();
    const gpadl = new GuestDataLease(channel);
    const d = GuestData.fromRanges(memory, [{ byteOffset: 0, byteCount: 64, pfns: [2] }], { lease: gpadl });
    const s = d.slice(8, 8);
    s.write(0, new Uint8Array([1, 2, 3]));
    channel.revoke('relid 3 closed');
    expect(d.revoked && s.revoked).toBe(true);
    expect(() => s.write(0, new Uint8Array([9]))).toThrow(GuestDataRevokedError);
    expect(() => d.toBytes()).toThrow('relid 3 closed');
    expect(memory.readU8(2 * PAGE_SIZE + 8)).toBe(1);
    expect(memory.readU8(2 * PAGE_SIZE + 9)).toBe(2);
  });
});

function inband(tid: number, bytes: number, fill = tid): { type: number; transactionId: bigint; payload: Uint8Array } {
  return { type: VM_PKT_DATA_INBAND, transactionId: BigInt(tid), payload: new Uint8Array(bytes).fill(fill & 0xff) };
}

/** The host end of a test ring pair: `guest` writes what the host reads; the host writes `toGuest`. */
function queuePair(pendingSendFeature = true): {
  toHost: TestRing;
  toGuest: TestRing;
  queue: PacketQueue;
  received: () => { tid: number; first: number; length: number }[];
} {
  const toHost = createTestRing({ dataSize: 4096 });
  const toGuest = createTestRing({ dataSize: 4096, pendingSendFeature });
  const queue = new PacketQueue({ inbound: toHost.reader, outbound: toGuest.writer }, { memory: toHost.memory, name: 'test' });
  const received = () => {
    const out: { tid: number; first: number; length: number }[] = [];
    toGuest.reader.readBatch((p) => out.push({ tid: Number(p.transactionId), first: p.payload()[0], length: p.payloadLength }));
    return out;
  };
  return { toHost, toGuest, queue, received };
}

describe('PacketQueue', () => {
  it('reads every packet the guest wrote, in order', () => {
    const { toHost, queue } = queuePair();
    for (let i = 1; i <= 5; i++) toHost.writer.write(inband(i, 24));
    const tids: number[] = [];
    expect(queue.read((p) => tids.push(Number(p.transactionId)))).toBe(5);
    expect(tids).toEqual([1, 2, 3, 4, 5]);
    expect(queue.read(() => {})).toBe(0);
  });

  it('a callback that answers false stops the read after that packet; the rest stays for the next read', () => {
    const { toHost, queue } = queuePair();
    for (let i = 1; i <= 5; i++) toHost.writer.write(inband(i, 24));
    const tids: number[] = [];
    const take = (p: PacketView): boolean => {
      tids.push(Number(p.transactionId));
      return tids.length !== 2; // full after the second
    };
    expect(queue.read(take)).toBe(2);
    expect(tids).toEqual([1, 2]);
    expect(queue.read(take)).toBe(3);
    expect(tids).toEqual([1, 2, 3, 4, 5]);
  });

  it('sends with backpressure: what does not fit waits, in order, and goes when the guest frees space', async () => {
    const { toGuest, queue, received } = queuePair();
    const sent: number[] = [];
    const promises = Array.from({ length: 40 }, (_, i) => queue.send(inband(i + 1, 200)).then(() => sent.push(i + 1)));
    expect(queue.waitingSends).toBeGreaterThan(0);
    // The head packet's size is in pending_send_sz, so the guest will signal when it fits.
    expect(toGuest.ring.snapshot().pendingSendSize).toBe(RingWriter.ringSpace(0, 200));
    const got: number[] = [];
    while (got.length < 40) {
      for (const r of received()) got.push(r.tid);
      queue.onGuestSignal();
      await Promise.resolve();
    }
    await Promise.all(promises);
    expect(got).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    expect(sent).toEqual(got);
    expect(queue.waitingSends).toBe(0);
    expect(toGuest.ring.snapshot().pendingSendSize).toBe(0);
  });

  it('a waiting packet is a copy: the caller may reuse its buffer at once', async () => {
    const { queue, received } = queuePair();
    const p = inband(1, 1000);
    const all: Promise<void>[] = [];
    for (let i = 0; i < 8; i++) {
      p.transactionId = BigInt(i);
      p.payload.fill(i);
      all.push(queue.send(p));
    }
    const got: { tid: number; first: number; length: number }[] = [];
    while (got.length < 8) {
      got.push(...received());
      queue.onGuestSignal();
    }
    await Promise.all(all);
    expect(got.map((g) => [g.tid, g.first])).toEqual(Array.from({ length: 8 }, (_, i) => [i, i]));
  });

  it('without pending_send_sz in the guest ring it polls for space instead of waiting for a signal', async () => {
    const { queue, received } = queuePair(false);
    const all = Array.from({ length: 30 }, (_, i) => queue.send(inband(i, 200)));
    const got: number[] = [];
    while (got.length < 30) {
      for (const r of received()) got.push(r.tid);
      await new Promise((r) => setTimeout(r, 2)); // no onGuestSignal: the poll must find the space
    }
    await Promise.all(all);
    expect(got).toEqual(Array.from({ length: 30 }, (_, i) => i));
  });

  it('close rejects waiting sends with RingClosedError and refuses new ones; a packet too big for the ring is refused', async () => {
    const { queue } = queuePair();
    await expect(queue.send(inband(1, 8000))).rejects.toBeInstanceOf(HostUsageError);
    const waiting = Array.from({ length: 30 }, (_, i) => queue.send(inband(i, 200)));
    queue.close('relid 9 closed');
    const results = await Promise.allSettled(waiting);
    expect(
      results.filter((r) => r.status === 'rejected').every((r) => (r as PromiseRejectedResult).reason instanceof RingClosedError),
    ).toBe(true);
    expect(results.some((r) => r.status === 'rejected')).toBe(true);
    await expect(queue.send(inband(99, 8))).rejects.toBeInstanceOf(RingClosedError);
    expect(() => queue.trySend(inband(99, 8))).toThrow(RingClosedError);
  });

  it('bounds what may wait', async () => {
    const toHost = createTestRing({ dataSize: 4096 });
    const toGuest = createTestRing({ dataSize: 4096 });
    const queue = new PacketQueue({ inbound: toHost.reader, outbound: toGuest.writer }, { memory: toHost.memory, maxWaitingBytes: 2048 });
    const sends = Array.from({ length: 40 }, (_, i) => queue.send(inband(i, 200)));
    const waiting = queue.waitingSends;
    expect(waiting).toBe(Math.floor(2048 / RingWriter.ringSpace(0, 200)));
    const sentAtOnce = queue.stats.packetsSent;
    queue.close(); // settles the ones still waiting
    const results = await Promise.allSettled(sends);
    expect(results.filter((r) => r.status === 'rejected' && r.reason instanceof HostUsageError).length).toBe(40 - sentAtOnce - waiting);
  });

  it('completes requests by transaction id with VM_PKT_COMP', async () => {
    const { toGuest, queue } = queuePair();
    await queue.complete(0x1234_5678_9n, new Uint8Array([7, 7, 7, 7]));
    const got: [number, bigint, number][] = [];
    toGuest.reader.readBatch((p) => got.push([p.type, p.transactionId, p.payload()[0]]));
    expect(got).toEqual([[VM_PKT_COMP, 0x1234_5678_9n, 7]]);
  });

  it('hands out the guest data of GPA-direct packets, bounded, revoked at close', () => {
    const { toHost, queue } = queuePair();
    const memory = toHost.memory;
    const pfns = [0, 2]; // the test ring's guard page and first data page: any RAM will do
    toHost.writer.write({
      type: VM_PKT_DATA_USING_GPA_DIRECT,
      transactionId: 5n,
      header: encodeGpaDirectHeader([{ byteOffset: 4000, byteCount: 200, pfns }]),
      payload: new Uint8Array(8),
    });
    let data: GuestData | undefined;
    queue.read((p: PacketView) => void (data = queue.externalData(p)));
    expect(data!.length).toBe(200);
    expect(data!.toBytes(0, 4)).toEqual(memory.bytes(4000, 4));
    expect(data!.toBytes(96, 4)).toEqual(memory.bytes(2 * PAGE_SIZE, 4));
    let inbandErr: unknown;
    toHost.writer.write(inband(6, 8));
    queue.read((p) => {
      try {
        queue.externalData(p);
      } catch (e) {
        inbandErr = e;
      }
    });
    expect(inbandErr).toBeInstanceOf(HostUsageError);
    queue.close();
    expect(() => data!.toBytes()).toThrow(GuestDataRevokedError);
  });
});

describe('PacketQueue transfer pages', () => {
  it('slices the transfer page set by the ranges a xfer-page packet names; a range outside the set is refused', () => {
    const { toHost, queue } = queuePair();
    const set = GuestData.fromRanges(toHost.memory, [{ byteOffset: 0, byteCount: 2 * PAGE_SIZE, pfns: [2, 3] }]);
    set.write(100, new Uint8Array([1, 2, 3]));
    set.write(PAGE_SIZE + 5, new Uint8Array([9, 8]));
    const header = (ranges: [number, number][]) => {
      const h = new Uint8Array(8 + ranges.length * 8);
      const dv = new DataView(h.buffer);
      dv.setUint16(0, 7, true); // pageset id
      dv.setUint32(4, ranges.length, true);
      ranges.forEach(([count, offset], i) => {
        dv.setUint32(8 + i * 8, count, true);
        dv.setUint32(12 + i * 8, offset, true);
      });
      return h;
    };
    toHost.writer.write({
      type: VM_PKT_DATA_USING_XFER_PAGES,
      transactionId: 1n,
      header: header([
        [3, 100],
        [2, PAGE_SIZE + 5],
      ]),
    });
    toHost.writer.write({ type: VM_PKT_DATA_USING_XFER_PAGES, transactionId: 2n, header: header([[10, 2 * PAGE_SIZE - 5]]) });
    const results: unknown[] = [];
    queue.read((p) => {
      try {
        results.push(queue.transferData(p, set).map((d) => [...d.toBytes()]));
      } catch (e) {
        results.push(e);
      }
    });
    expect(results[0]).toEqual([
      [1, 2, 3],
      [9, 8],
    ]);
    expect(results[1]).toBeInstanceOf(GuestMemoryError);
  });
});
