/**
 * RingWriter: the producer end of one ring (the host's outbound ring, or a guest's
 * guest-to-host ring). Mirrors Linux hv_ringbuffer_write and hv_signal_on_write:
 *
 * - a packet is written only if it fits with a gap left (free > total), so read == write
 *   always means empty;
 * - the packet bytes are stored, then write_index is published with a sequentially consistent
 *   store, which orders the data before the index for a reader on another thread and is the
 *   full barrier Linux puts between publishing write_index and reading interrupt_mask;
 * - the reader is signalled only when the ring went from empty to non-empty (the old write
 *   index equals the reader's published read_index) and its interrupt_mask is clear;
 * - inside `batch()`, packets are published once at the end and the reader signalled at most
 *   once.
 *
 * The write index is private: the copy in the control page is only ever written. The
 * reader's read_index is guest-writable and is validated on every use.
 */
import { HostUsageError } from '@hvemu/common';
import { RingEnd, type RingEndOptions } from './ring-end.js';
import {
  FEAT_PENDING_SEND_SZ,
  RING_FEATURE_BITS,
  RING_INTERRUPT_MASK,
  RING_PENDING_SEND_SZ,
  RING_READ_INDEX,
  RING_WRITE_INDEX,
  VMBUS_MAX_PACKET_SIZE,
  VMBUS_PKT_TRAILER,
  VMPACKET_DESCRIPTOR_SIZE,
} from './protocol.js';
import { bytesToRead, bytesToWrite, type RingBuffer } from './ring-buffer.js';

/** A packet to write. Reuse one object across calls to keep the hot path allocation-free. */
export interface OutgoingPacket {
  /** VM_PKT_* */
  type: number;
  /** VMBUS_DATA_PACKET_FLAG_* */
  flags?: number;
  /** Echoed in the completion; 0 for unsolicited host packets. */
  transactionId?: bigint | number;
  /** Bytes between the descriptor and the payload (GPA ranges, transfer-page ranges); multiple of 8. */
  header?: Uint8Array;
  /** The payload, one buffer or several gathered in order. */
  payload?: Uint8Array | readonly Uint8Array[];
}

export type { RingEndOptions, RingTap } from './ring-end.js';

const EMPTY = new Uint8Array(0);
const TWO_POW_32 = 2 ** 32;

export class RingWriter extends RingEnd {
  private readonly signalReader: () => void;
  /** Next byte to write (private; never read back from the control page). */
  private writeIndex: number;
  /** The write index the reader can see. */
  private publishedWrite: number;
  /** The reader's read_index as last validated: it may only move forward, up to publishedWrite. */
  private lastRead: number;
  private batchDepth = 0;
  /** The sizes of the packet being written (one reused object: no allocation per packet). */
  private readonly shape = { headerEnd: 0, unpadded: 0, packetLength: 0 };
  /** The data area as one view when it is contiguous in host memory (the fast path), else null. */
  private readonly flatBytes: Uint8Array | null;
  private readonly flatView: DataView | null;
  /** Statistics. */
  packetsWritten = 0;
  signals = 0;

  constructor(ring: RingBuffer, options: RingEndOptions) {
    super(ring, options);
    this.signalReader = options.signal;
    this.flatBytes = ring.data.flat;
    this.flatView = this.flatBytes ? new DataView(this.flatBytes.buffer, this.flatBytes.byteOffset, this.flatBytes.byteLength) : null;
    const write = Atomics.load(this.control, RING_WRITE_INDEX);
    const read = Atomics.load(this.control, RING_READ_INDEX);
    this.writeIndex = this.publishedWrite = 0;
    this.lastRead = 0;
    this.checkIndex(write, 'write-index-out-of-range');
    this.checkIndex(read, 'read-index-out-of-range');
    this.writeIndex = this.publishedWrite = write;
    this.lastRead = read;
  }

  /** Bytes a packet with this header and payload length occupies in the ring, trailer included. */
  static ringSpace(headerLength: number, payloadLength: number): number {
    return ((VMPACKET_DESCRIPTOR_SIZE + headerLength + payloadLength + 7) & ~7) + VMBUS_PKT_TRAILER;
  }

  /** Free bytes now, per the reader's freshly loaded and validated read_index (Linux hv_get_bytes_to_write). */
  freeBytes(): number {
    this.checkUsable();
    return bytesToWrite(this.writeIndex, this.readerIndex(), this.size);
  }

  /**
   * Writes one packet. Returns false (writing nothing) when it does not fit; the caller may then
   * `requestSpace()` and retry when the reader signals. Throws RingCorruptError if the reader
   * broke the ring, HostUsageError for a packet that can never be written.
   */
  write(packet: OutgoingPacket): boolean {
    this.checkUsable();
    const header = packet.header ?? EMPTY;
    const payload = packet.payload ?? EMPTY;
    const payloadLength = payload instanceof Uint8Array ? payload.length : totalLength(payload);
    if (header.length % 8 !== 0) throw new HostUsageError('packet header length must be a multiple of 8');
    RingWriter.checkFields(packet);
    const headerEnd = VMPACKET_DESCRIPTOR_SIZE + header.length;
    const unpadded = headerEnd + payloadLength;
    const packetLength = (unpadded + 7) & ~7;
    if (packetLength > VMBUS_MAX_PACKET_SIZE || headerEnd > VMBUS_MAX_PACKET_SIZE) {
      throw new HostUsageError(`packet of ${unpadded} bytes exceeds the VMBus maximum`);
    }
    const total = packetLength + VMBUS_PKT_TRAILER;
    if (total >= this.size) throw new HostUsageError(`packet of ${total} bytes can never fit a ${this.size}-byte ring`);
    // The cached read index is a safe under-estimate of free space (the reader only frees
    // more); reload it only when the packet does not fit, saving an atomic load per packet.
    if (bytesToWrite(this.writeIndex, this.lastRead, this.size) <= total && this.freeBytes() <= total) return false;

    const start = this.writeIndex;
    const shape = this.shape;
    shape.headerEnd = headerEnd;
    shape.unpadded = unpadded;
    shape.packetLength = packetLength;
    if (this.flatView !== null && start + total <= this.size) this.writeFlat(start, packet, header, payload);
    else this.writeWrapping(start, packet, header, payload);
    this.packetsWritten++;
    this.tap?.written?.(packet);
    if (this.batchDepth === 0) this.publish();
    return true;
  }

  /**
   * The fast path: the data area is one flat view and the packet does not wrap, so it is
   * written with direct DataView stores and one TypedArray.set per buffer (no allocation).
   */
  private writeFlat(start: number, packet: OutgoingPacket, header: Uint8Array, payload: Uint8Array | readonly Uint8Array[]): void {
    const { headerEnd, unpadded, packetLength } = this.shape;
    const dv = this.flatView!;
    const bytes = this.flatBytes!;
    dv.setUint32(start, (packet.type & 0xffff) | (headerEnd << 13), true); // offset8 << 16 == headerEnd / 8 << 16
    dv.setUint32(start + 4, ((packetLength >>> 3) | ((packet.flags ?? 0) << 16)) >>> 0, true);
    const tid = packet.transactionId ?? 0;
    if (typeof tid === 'number') {
      dv.setUint32(start + 8, tid >>> 0, true);
      dv.setUint32(start + 12, (tid - (tid >>> 0)) / TWO_POW_32, true);
    } else {
      dv.setBigUint64(start + 8, tid, true);
    }
    if (header.length > 0) bytes.set(header, start + VMPACKET_DESCRIPTOR_SIZE);
    if (payload instanceof Uint8Array) {
      if (payload.length > 0) bytes.set(payload, start + headerEnd);
    } else {
      let at = start + headerEnd;
      for (const part of payload) {
        bytes.set(part, at);
        at += part.length;
      }
    }
    for (let i = start + unpadded; i < start + packetLength; i++) bytes[i] = 0;
    // Trailer: u64 previous write index << 32 (Linux hv_get_ring_bufferindices).
    dv.setUint32(start + packetLength, 0, true);
    dv.setUint32(start + packetLength + 4, start, true);
    const next = start + packetLength + VMBUS_PKT_TRAILER;
    this.writeIndex = next === this.size ? 0 : next;
  }

  /** The general path: any GuestBuffer, packets that wrap around the end of the data area. */
  private writeWrapping(start: number, packet: OutgoingPacket, header: Uint8Array, payload: Uint8Array | readonly Uint8Array[]): void {
    const { headerEnd, unpadded, packetLength } = this.shape;
    this.writeDescriptor(start, packet, headerEnd >>> 3, packetLength >>> 3);
    let pos = this.advance(start, VMPACKET_DESCRIPTOR_SIZE);
    if (header.length > 0) pos = this.copyIn(pos, header);
    if (payload instanceof Uint8Array) {
      if (payload.length > 0) pos = this.copyIn(pos, payload);
    } else {
      for (const part of payload) if (part.length > 0) pos = this.copyIn(pos, part);
    }
    pos = this.zeroFill(pos, packetLength - unpadded);
    // Trailer: u64 previous write index << 32 (Linux hv_get_ring_bufferindices).
    this.ring.data.setU32(pos, 0);
    this.ring.data.setU32(pos + 4, start);
    this.writeIndex = this.advance(pos, VMBUS_PKT_TRAILER);
  }

  /**
   * Runs `fn` with publishing deferred: every packet it writes becomes visible at once when it
   * returns (or throws), and the reader is signalled at most once.
   */
  batch<T>(fn: (writer: this) => T): T {
    this.checkUsable();
    this.batchDepth++;
    try {
      return fn(this);
    } finally {
      if (--this.batchDepth === 0 && !this.brokenBy && !this.closedBy) this.publish();
    }
  }

  /**
   * Asks the reader to signal when more than `bytes` are free (pending_send_sz), then re-checks,
   * closing the race with a reader that drained meanwhile. Returns true if the space is already
   * there (pending_send_sz is cleared again). Without feat_pending_send_sz the reader never
   * signals for space; the caller must poll.
   */
  requestSpace(bytes: number): boolean {
    this.checkUsable();
    if (!Number.isInteger(bytes) || bytes <= 0 || bytes >= this.size) {
      throw new HostUsageError(`cannot wait for ${bytes} free bytes in a ${this.size}-byte ring`);
    }
    if ((Atomics.load(this.control, RING_FEATURE_BITS) & FEAT_PENDING_SEND_SZ) === 0) {
      return this.freeBytes() > bytes;
    }
    Atomics.store(this.control, RING_PENDING_SEND_SZ, bytes);
    if (this.freeBytes() > bytes) {
      Atomics.store(this.control, RING_PENDING_SEND_SZ, 0);
      return true;
    }
    return false;
  }

  /** Clears pending_send_sz (after the reader signalled space). */
  clearPendingSend(): void {
    if (this.closedBy) throw this.closedBy;
    Atomics.store(this.control, RING_PENDING_SEND_SZ, 0);
  }

  /** Makes written packets visible and signals the reader if the protocol calls for it. */
  private publish(): void {
    const oldWrite = this.publishedWrite;
    if (this.writeIndex === oldWrite) return;
    // Sequentially consistent: the packet bytes are ordered before the index, and the index
    // before the interrupt_mask load below (the twin of Linux's virt_mb in hv_signal_on_write).
    Atomics.store(this.control, RING_WRITE_INDEX, this.writeIndex);
    this.publishedWrite = this.writeIndex;
    if (Atomics.load(this.control, RING_INTERRUPT_MASK) !== 0) return;
    if (Atomics.load(this.control, RING_READ_INDEX) === oldWrite) {
      this.signals++;
      this.signalReader();
    }
  }

  /** The reader's read_index, validated: in range, aligned, only moving forward to publishedWrite. */
  private readerIndex(): number {
    const read = Atomics.load(this.control, RING_READ_INDEX);
    if (read === this.lastRead) return read;
    this.checkIndex(read, 'read-index-out-of-range');
    const usedBefore = bytesToRead(this.publishedWrite, this.lastRead, this.size);
    const usedNow = bytesToRead(this.publishedWrite, read, this.size);
    if (usedNow > usedBefore) {
      this.fail('index-went-backwards', `read_index moved from ${this.lastRead} to ${read} (write ${this.publishedWrite})`, read);
    }
    this.lastRead = read;
    return read;
  }

  private writeDescriptor(at: number, packet: OutgoingPacket, offset8: number, len8: number): void {
    const data = this.ring.data;
    // type | offset8 << 16 and len8 | flags << 16: two u32 stores (little-endian) instead of four u16.
    data.setU32(at, (packet.type & 0xffff) | (offset8 << 16));
    data.setU32(at + 4, (len8 | ((packet.flags ?? 0) << 16)) >>> 0);
    const tid = packet.transactionId ?? 0;
    // The second half of the descriptor may wrap to the start of the data area.
    const second = this.advance(at, 8);
    if (typeof tid === 'number') {
      data.setU32(second, tid >>> 0);
      data.setU32(second + 4, (tid - (tid >>> 0)) / TWO_POW_32);
    } else {
      data.setU32(second, Number(tid & 0xffff_ffffn));
      data.setU32(second + 4, Number(tid >> 32n));
    }
  }

  /** Throws HostUsageError for fields that do not fit the descriptor (checked before writing). */
  private static checkFields(packet: OutgoingPacket): void {
    const { type, flags, transactionId: tid } = packet;
    if (!(type >= 0 && type <= 0xffff) || type % 1 !== 0) throw new HostUsageError(`packet type ${type} is not a u16`);
    if (flags !== undefined && (!(flags >= 0 && flags <= 0xffff) || flags % 1 !== 0)) {
      throw new HostUsageError(`packet flags ${flags} are not a u16`);
    }
    if (typeof tid === 'number') {
      if (!(tid >= 0 && tid <= Number.MAX_SAFE_INTEGER) || tid % 1 !== 0) {
        throw new HostUsageError(`transaction id ${tid} is not a safe unsigned integer`);
      }
    } else if (tid !== undefined && (tid < 0n || tid > 0xffff_ffff_ffff_ffffn)) {
      throw new HostUsageError(`transaction id ${tid} is not a u64`);
    }
  }

  private advance(pos: number, by: number): number {
    const next = pos + by;
    return next >= this.size ? next - this.size : next;
  }

  /** Copies `src` into the data area at `pos`, wrapping at the end; returns the next position. */
  private copyIn(pos: number, src: Uint8Array): number {
    const first = this.size - pos;
    if (src.length <= first) {
      this.ring.data.write(pos, src, 0, src.length);
    } else {
      this.ring.data.write(pos, src, 0, first);
      this.ring.data.write(0, src, first, src.length - first);
    }
    return this.advance(pos, src.length);
  }

  private zeroFill(pos: number, length: number): number {
    if (length === 0) return pos;
    const first = Math.min(length, this.size - pos);
    this.ring.data.fill(0, pos, first);
    if (length > first) this.ring.data.fill(0, 0, length - first);
    return this.advance(pos, length);
  }
}

function totalLength(parts: readonly Uint8Array[]): number {
  let n = 0;
  for (const p of parts) n += p.length;
  return n;
}
