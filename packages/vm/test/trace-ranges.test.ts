/**
 * GPA-direct packets in traces: the bytes each range referenced are recorded when the host
 * reads the packet (so replay needs no guest RAM) and written back by replay; ranges the
 * guest pointed outside RAM record nothing there and never throw.
 */
import { describe, expect, it } from 'vitest';
import { GuestMemory, PAGE_SIZE } from '@hvemu/memory';
import { encodeGpaRange, VM_PKT_DATA_USING_GPA_DIRECT } from '@hvemu/vmbus';
import { createTestRing } from '@hvemu/vmbus/testing';
import type { TraceEventBody, TraceSink } from '@hvemu/trace';
import { rangeData, restoreRangeData, traceHooks } from '../src/trace-capture.js';

function gpaDirectHeader(ranges: Uint8Array[]): Uint8Array {
  const length = 8 + ranges.reduce((n, r) => n + r.length, 0);
  const header = new Uint8Array(length);
  new DataView(header.buffer).setUint32(4, ranges.length, true); // reserved u32, rangecount u32
  let at = 8;
  for (const r of ranges) {
    header.set(r, at);
    at += r.length;
  }
  return header;
}

describe('GPA-direct range data in traces', () => {
  it('records the bytes a packet referenced across pages and writes them back for replay', () => {
    const t = createTestRing({ dataSize: 8192 });
    const memory = t.memory;
    // Page 0 is free in the test layout (a guard page): put the referenced data there.
    const data = Uint8Array.from({ length: 600 }, (_, i) => (i * 7) & 0xff);
    memory.write(PAGE_SIZE - 300, data.subarray(0, 300)); // end of page 0 ...
    const secondPage = t.guardGpa / PAGE_SIZE; // ... continuing at the start of the next listed PFN (the trailing guard page)
    const saved = memory.bytes(secondPage * PAGE_SIZE, 300).slice();
    memory.write(secondPage * PAGE_SIZE, data.subarray(300));
    const header = gpaDirectHeader([encodeGpaRange(600, PAGE_SIZE - 300, [0, secondPage]), encodeGpaRange(16, 0, [0x7fff_ffff])]);
    t.writer.write({ type: VM_PKT_DATA_USING_GPA_DIRECT, transactionId: 9n, header, payload: Uint8Array.of(1, 2, 3, 4) });
    const recorded: TraceEventBody[] = [];
    const sink: TraceSink = { enabled: true, record: (_vp, body) => void recorded.push(body) };
    const hooks = traceHooks(sink, memory, () => undefined);
    const view = t.reader.peek()!;
    hooks.onPacket(5, 'guest-to-host', view);
    const event = recorded[0] as Extract<TraceEventBody, { kind: 'ringPacket' }>;
    expect(event.ringPacket.ranges).toHaveLength(2);
    const [first, outside] = event.ringPacket.ranges;
    expect(first.byteOffset).toBe(PAGE_SIZE - 300);
    expect(first.pfns).toEqual([0n, BigInt(secondPage)]);
    expect(first.data).toEqual(data);
    expect(outside.pfns).toEqual([0x7fff_ffffn]);
    expect(outside.data).toEqual(new Uint8Array(16)); // outside RAM: nothing read

    // Replay side: a fresh memory gets the same bytes at the same places.
    const fresh = GuestMemory.createShared((secondPage + 1) * PAGE_SIZE);
    restoreRangeData(fresh, event.ringPacket.ranges);
    expect(fresh.bytes(PAGE_SIZE - 300, 300)).toEqual(data.subarray(0, 300));
    expect(fresh.bytes(secondPage * PAGE_SIZE, 300)).toEqual(data.subarray(300));
    memory.write(secondPage * PAGE_SIZE, saved);
  });

  it('caps what one packet records and survives absurd ranges', () => {
    const memory = GuestMemory.createShared(2 * PAGE_SIZE);
    const huge = rangeData(memory, [
      { byteCount: 64 << 20, byteOffset: 0, pfns: Array.from({ length: (64 << 20) / PAGE_SIZE }, (_, i) => i) },
    ]);
    expect(huge[0].data.length).toBe(16 << 20);
    expect(() => rangeData(memory, [{ byteCount: 10, byteOffset: 4090, pfns: [Number.MAX_SAFE_INTEGER, 2 ** 60] }])).not.toThrow();
    expect(() => restoreRangeData(memory, [{ byteOffset: 5, pfns: [2n ** 63n], data: new Uint8Array(100) }])).not.toThrow();
  });
});
