/**
 * Hostile rings: a well-formed packet is written, then the other end (a hostile guest)
 * corrupts one thing the protocol lets it write. Each corruption names the RingFault a
 * correct implementation must report; `applyCorruption` picks a value that is invalid for the
 * ring's actual state, so every generated case is a real violation.
 */
import fc from 'fast-check';
import { PAGE_SIZE } from '@hvemu/memory';
import type { RingFault } from '../ring/errors.js';
import {
  RING_READ_INDEX,
  RING_WRITE_INDEX,
  RING_PACKET_TYPES,
  VM_PKT_DATA_INBAND,
  VM_PKT_DATA_USING_GPA_DIRECT,
  VM_PKT_DATA_USING_XFER_PAGES,
} from '../ring/protocol.js';
import { bytesToRead } from '../ring/ring-buffer.js';
import type { OutgoingPacket } from '../ring/writer.js';
import type { TestRing, RingGeometry } from './test-ring.js';
import { ringGeometry } from './arbitraries.js';

export type CorruptionKind =
  | 'write-index-out-of-range'
  | 'write-index-misaligned'
  | 'write-index-backwards'
  | 'truncated'
  | 'len8-too-small'
  | 'len8-beyond-available'
  | 'offset8-too-small'
  | 'offset8-beyond-len8'
  | 'unknown-type'
  | 'gpa-range-count'
  | 'gpa-byte-count'
  | 'gpa-byte-offset'
  | 'xfer-range-count'
  | 'read-index-out-of-range'
  | 'read-index-misaligned'
  | 'read-index-backwards';

export interface HostileRing {
  geometry: RingGeometry;
  kind: CorruptionKind;
  /** Free entropy used to choose the bad value. */
  entropy: number;
  /** Payload bytes of the packet written before corrupting. */
  payloadLength: number;
}

/** Which end must detect it, and the fault it must report. */
export const EXPECTED_FAULT: Readonly<Record<CorruptionKind, { end: 'reader' | 'writer'; fault: RingFault }>> = {
  'write-index-out-of-range': { end: 'reader', fault: 'write-index-out-of-range' },
  'write-index-misaligned': { end: 'reader', fault: 'write-index-out-of-range' },
  'write-index-backwards': { end: 'reader', fault: 'index-went-backwards' },
  truncated: { end: 'reader', fault: 'truncated-packet' },
  'len8-too-small': { end: 'reader', fault: 'descriptor-length' },
  'len8-beyond-available': { end: 'reader', fault: 'descriptor-length' },
  'offset8-too-small': { end: 'reader', fault: 'descriptor-offset' },
  'offset8-beyond-len8': { end: 'reader', fault: 'descriptor-offset' },
  'unknown-type': { end: 'reader', fault: 'unknown-packet-type' },
  'gpa-range-count': { end: 'reader', fault: 'range-list-overrun' },
  'gpa-byte-count': { end: 'reader', fault: 'range-list-overrun' },
  'gpa-byte-offset': { end: 'reader', fault: 'bad-gpa-range' },
  'xfer-range-count': { end: 'reader', fault: 'range-list-overrun' },
  'read-index-out-of-range': { end: 'writer', fault: 'read-index-out-of-range' },
  'read-index-misaligned': { end: 'writer', fault: 'read-index-out-of-range' },
  'read-index-backwards': { end: 'writer', fault: 'index-went-backwards' },
};

export const CORRUPTION_KINDS = Object.keys(EXPECTED_FAULT) as CorruptionKind[];

export function hostileRing(): fc.Arbitrary<HostileRing> {
  return fc.record({
    // Room for a GPA-direct packet with a small range list.
    geometry: ringGeometry({ minDataSize: 256 }),
    kind: fc.constantFrom(...CORRUPTION_KINDS),
    entropy: fc.nat(),
    payloadLength: fc.integer({ min: 0, max: 64 }),
  });
}

/** The packet written before corrupting, chosen so the corruption has a field to act on. */
export function basePacket(h: HostileRing): OutgoingPacket {
  const payload = new Uint8Array(h.payloadLength).map((_, i) => i);
  if (h.kind.startsWith('gpa-')) {
    // One range: 100 bytes at offset 8 of one page.
    const header = new Uint8Array(8 + 8 + 8);
    const dv = new DataView(header.buffer);
    dv.setUint32(4, 1, true);
    dv.setUint32(8, 100, true);
    dv.setUint32(12, 8, true);
    dv.setBigUint64(16, 0x1234n, true);
    return { type: VM_PKT_DATA_USING_GPA_DIRECT, header, payload };
  }
  if (h.kind === 'xfer-range-count') {
    const header = new Uint8Array(16);
    const dv = new DataView(header.buffer);
    dv.setUint16(0, 0xcafe, true);
    dv.setUint32(4, 1, true);
    dv.setUint32(8, 64, true);
    return { type: VM_PKT_DATA_USING_XFER_PAGES, header, payload };
  }
  return { type: VM_PKT_DATA_INBAND, transactionId: 7n, payload };
}

/** Picks a value in [lo, hi] from the entropy. */
function pick(entropy: number, lo: number, hi: number): number {
  return lo + (entropy % (hi - lo + 1));
}

/**
 * Writes the base packet (the writer side is honest), then applies the corruption as the
 * hostile guest would: by writing guest memory directly.
 */
export function applyCorruption(t: TestRing, h: HostileRing): void {
  const size = t.ring.dataSize;
  const control = t.ring.control;
  const data = t.ring.data;
  const start = Atomics.load(control, RING_WRITE_INDEX);
  if (!h.kind.startsWith('read-index')) {
    if (!t.writer.write(basePacket(h))) throw new Error('base packet did not fit');
  }
  const write = Atomics.load(control, RING_WRITE_INDEX);
  const avail = bytesToRead(write, start, size);
  const desc = (off: number): number => (start + off) % size;
  const e = h.entropy;
  switch (h.kind) {
    case 'write-index-out-of-range':
      Atomics.store(control, RING_WRITE_INDEX, pick(e, size, 0xffff_ffff));
      return;
    case 'write-index-misaligned':
      Atomics.store(control, RING_WRITE_INDEX, (pick(e, 0, size / 8 - 1) * 8 + pick(e >>> 3, 1, 7)) % size);
      return;
    case 'write-index-backwards': {
      // The reader first sees the packet, then the writer "unpublishes" part of it.
      t.reader.available();
      const back = pick(e, 1, avail / 8) * 8;
      Atomics.store(control, RING_WRITE_INDEX, (write - back + size) % size);
      return;
    }
    case 'truncated':
      Atomics.store(control, RING_WRITE_INDEX, (start + pick(e, 1, 2) * 8) % size);
      return;
    case 'len8-too-small':
      data.setU16(desc(4), pick(e, 0, 1));
      return;
    case 'len8-beyond-available':
      data.setU16(desc(4), pick(e, Math.floor((avail - 8) / 8) + 1, 0xffff));
      return;
    case 'offset8-too-small':
      data.setU16(desc(2), pick(e, 0, 1));
      return;
    case 'offset8-beyond-len8':
      data.setU16(desc(2), pick(e, data.getU16(desc(4)) + 1, 0xffff));
      return;
    case 'unknown-type': {
      let type = pick(e, 0, 0xffff);
      while (RING_PACKET_TYPES.has(type)) type = (type + 1) & 0xffff;
      data.setU16(desc(0), type);
      return;
    }
    case 'gpa-range-count':
      data.setU32(desc(20), pick(e, 2, 0x7fff_ffff));
      return;
    case 'gpa-byte-count':
      // More pages than the one PFN slot the header holds.
      data.setU32(desc(24), pick(e, PAGE_SIZE, 0x7fff_ffff));
      return;
    case 'gpa-byte-offset':
      data.setU32(desc(28), pick(e, PAGE_SIZE, 0xffff_ffff));
      return;
    case 'xfer-range-count':
      data.setU32(desc(20), pick(e, 2, 0xffff_ffff));
      return;
    case 'read-index-out-of-range':
      Atomics.store(control, RING_READ_INDEX, pick(e, size, 0xffff_ffff));
      return;
    case 'read-index-misaligned':
      Atomics.store(control, RING_READ_INDEX, (pick(e, 0, size / 8 - 1) * 8 + pick(e >>> 3, 1, 7)) % size);
      return;
    case 'read-index-backwards': {
      // Publish a packet, let the reader consume it, then move read_index back past it:
      // the reader claims unread data it already released.
      if (!t.writer.write(basePacket({ ...h, kind: 'truncated' }))) throw new Error('base packet did not fit');
      t.reader.readBatch(() => {});
      t.writer.freeBytes();
      const back = pick(e, 1, 3) * 8;
      Atomics.store(control, RING_READ_INDEX, (Atomics.load(control, RING_READ_INDEX) - back + size) % size);
      return;
    }
  }
}

/** Runs the detecting end once after the corruption; returns what it threw (or null). */
export function exerciseCorruptedRing(t: TestRing, h: HostileRing): unknown {
  try {
    if (EXPECTED_FAULT[h.kind].end === 'reader') t.reader.readBatch(() => {});
    // A writer reloads read_index when it needs space; freeBytes() asks for it now.
    else t.writer.freeBytes();
    return null;
  } catch (error) {
    return error;
  }
}
