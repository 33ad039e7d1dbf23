/** A closed ring end refuses every operation before touching guest memory. */
import { describe, expect, it } from 'vitest';
import { RingClosedError, RingCorruptError, VM_PKT_DATA_INBAND } from '@hvemu/vmbus';
import { createTestRing } from '@hvemu/vmbus/testing';

const packet = (tid: bigint) => ({ type: VM_PKT_DATA_INBAND, transactionId: tid, payload: new Uint8Array([1, 2, 3, 4]) });

describe('closing a ring end', () => {
  it('a closed reader refuses every call, and a PacketView it handed out refuses reads, with memory untouched', () => {
    const t = createTestRing();
    t.writer.write(packet(1n));
    t.writer.write(packet(2n));
    const view = t.reader.peek()!;
    t.reader.close('relid 7 closed');
    const snapshot = new Uint8Array(t.memory.bytes(0, t.memory.ramSize));
    expect(t.reader.closed).toBe(true);
    for (const call of [
      () => t.reader.peek(),
      () => t.reader.available(),
      () => t.reader.readBatch(() => {}),
      () => t.reader.drain(() => {}),
      () => t.reader.commit(),
      () => t.reader.mask(),
      () => t.reader.unmask(),
      () => view.u32(0),
      () => view.payload(),
      () => view.copyPayload(new Uint8Array(8)),
    ]) {
      expect(call).toThrow(RingClosedError);
    }
    expect(() => t.reader.peek()).toThrow('test reader: relid 7 closed');
    expect(new Uint8Array(t.memory.bytes(0, t.memory.ramSize))).toEqual(snapshot);
  });

  it('a closed writer refuses every call with memory untouched; the other end is unaffected', () => {
    const t = createTestRing();
    t.writer.write(packet(1n));
    t.writer.close();
    const snapshot = new Uint8Array(t.memory.bytes(0, t.memory.ramSize));
    for (const call of [
      () => t.writer.write(packet(2n)),
      () => t.writer.freeBytes(),
      () => t.writer.requestSpace(64),
      () => t.writer.clearPendingSend(),
      () => t.writer.batch(() => 0),
    ]) {
      expect(call).toThrow(RingClosedError);
    }
    expect(new Uint8Array(t.memory.bytes(0, t.memory.ramSize))).toEqual(snapshot);
    expect(t.reader.readBatch(() => {})).toBe(1);
  });

  it('close is idempotent and keeps the first reason; a broken ring still reports its corruption first', () => {
    const t = createTestRing();
    t.ring.control[0] = 0xffff_fff8; // write_index far outside the data area
    expect(() => t.reader.peek()).toThrow(RingCorruptError);
    t.reader.close('first');
    t.reader.close('second');
    expect(() => t.reader.peek()).toThrow(RingCorruptError);
    expect(t.reader.broken).toBeInstanceOf(RingCorruptError);
    const u = createTestRing();
    u.reader.close('first');
    u.reader.close('second');
    expect(() => u.reader.peek()).toThrow('first');
  });
});
