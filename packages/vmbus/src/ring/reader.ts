/**
 * RingReader: the consumer end of one ring (the host's inbound ring, or a guest's
 * host-to-guest ring). Mirrors Linux hv_pkt_iter_first/next/close and hv_begin_read/
 * hv_end_read:
 *
 * - `peek()` parses and validates the packet at the private read index without consuming it;
 *   `advance()` consumes it; `commit()` publishes read_index once for everything consumed and
 *   signals the writer only on the transition of free space across its pending_send_sz;
 * - `mask()` / `unmask()` set interrupt_mask while draining; `unmask()` re-checks for data
 *   after a full barrier, closing the race with a writer that saw the mask set;
 * - `drain()` does the whole dance.
 *
 * Every field the writer controls (write_index, each descriptor, GPA and transfer-page range
 * lists) is validated before use; a violation is a RingCorruptError that marks the ring
 * broken. Each packet consumes at least 24 bytes, so no loop can run forever.
 */
import { HostUsageError } from '@hvemu/common';
import { PAGE_SIZE } from '@hvemu/memory';
import type { RingFault } from './errors.js';
import {
  FEAT_PENDING_SEND_SZ,
  RING_FEATURE_BITS,
  RING_INTERRUPT_MASK,
  RING_PENDING_SEND_SZ,
  RING_PACKET_TYPE_MASK,
  RING_READ_INDEX,
  RING_WRITE_INDEX,
  VM_PKT_DATA_USING_GPA_DIRECT,
  VM_PKT_DATA_USING_XFER_PAGES,
  VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED,
  VMBUS_PKT_TRAILER,
  VMPACKET_DESCRIPTOR_SIZE,
} from './protocol.js';
import { bytesToRead, bytesToWrite, type RingBuffer } from './ring-buffer.js';
import { RingEnd, type RingEndOptions } from './ring-end.js';

/** Offset of the range list in GPA-direct and transfer-page packets (after a 16-byte descriptor and 8-byte header). */
const RANGES_OFFSET = 24;
const TWO_POW_32 = 2 ** 32;

/** One range of a GPA-direct packet: `byteCount` bytes from `byteOffset` into the first of `pfns`. */
export interface GpaRange {
  byteCount: number;
  byteOffset: number;
  pfns: number[];
}

/** One range of a transfer-page packet: bytes of the transfer page set (receive buffer). */
export interface TransferPageRange {
  byteCount: number;
  byteOffset: number;
}

/**
 * The packet at the reader's position. One instance per reader, refilled by each `peek()`:
 * valid until the next peek/advance. Reading it allocates nothing except where a method says so.
 */
export class PacketView {
  /** VM_PKT_* */
  type = 0;
  flags = 0;
  /** Low and high halves of trans_id (no bigint on the hot path). */
  transactionIdLow = 0;
  transactionIdHigh = 0;
  /** Packet length in bytes (len8 * 8), descriptor included, trailer excluded. */
  length = 0;
  /** Offset of the payload from the descriptor start (offset8 * 8). */
  payloadOffset = 0;
  /** Offset of the descriptor in the data area. */
  ringOffset = 0;

  constructor(private readonly reader: RingReader) {}

  get payloadLength(): number {
    return this.length - this.payloadOffset;
  }
  get completionRequested(): boolean {
    return (this.flags & VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED) !== 0;
  }
  /** trans_id as a bigint (allocates). */
  get transactionId(): bigint {
    return (BigInt(this.transactionIdHigh) << 32n) | BigInt(this.transactionIdLow);
  }
  /**
   * trans_id to echo back in a completion: a number when it is a safe integer (the guests'
   * request ids; no allocation), else the bigint.
   */
  get transactionIdEcho(): number | bigint {
    return this.transactionIdHigh < 0x20_0000 ? this.transactionIdHigh * TWO_POW_32 + this.transactionIdLow : this.transactionId;
  }
  /** trans_id as a number when it is a safe integer (the guest's small request ids), else NaN. */
  get transactionIdNumber(): number {
    return this.transactionIdHigh < 0x20_0000 ? this.transactionIdHigh * TWO_POW_32 + this.transactionIdLow : NaN;
  }

  /** A u8/u16/u32 at `offset` bytes from the descriptor start (must be < length). */
  u8(offset: number): number {
    return this.reader.packetByte(this, offset, 1);
  }
  u16(offset: number): number {
    return this.reader.packetByte(this, offset, 2);
  }
  u32(offset: number): number {
    return this.reader.packetByte(this, offset, 4);
  }

  /**
   * The payload: a zero-copy view of the ring when it does not wrap, else a copy in a scratch
   * buffer owned by the reader. Valid until the next peek.
   */
  payload(): Uint8Array {
    return this.reader.packetBytes(this, this.payloadOffset, this.payloadLength);
  }
  /** Copies the payload into `target` at `targetOffset`; returns the bytes copied. */
  copyPayload(target: Uint8Array, targetOffset = 0): number {
    const n = Math.min(this.payloadLength, target.length - targetOffset);
    this.reader.copyPacketBytes(this, this.payloadOffset, target, targetOffset, n);
    return n;
  }
  /** The bytes between the descriptor and the payload (a copy). */
  header(): Uint8Array {
    const out = new Uint8Array(this.payloadOffset - VMPACKET_DESCRIPTOR_SIZE);
    this.reader.copyPacketBytes(this, VMPACKET_DESCRIPTOR_SIZE, out, 0, out.length);
    return out;
  }
  /** The whole packet, descriptor included (a copy; for traces). */
  bytes(): Uint8Array {
    const out = new Uint8Array(this.length);
    this.reader.copyPacketBytes(this, 0, out, 0, out.length);
    return out;
  }

  /** The GPA ranges of a VM_PKT_DATA_USING_GPA_DIRECT packet (validated at peek; allocates). */
  gpaRanges(): GpaRange[] {
    if (this.type !== VM_PKT_DATA_USING_GPA_DIRECT) return [];
    const ranges: GpaRange[] = [];
    const count = this.u32(20);
    let at = RANGES_OFFSET;
    for (let i = 0; i < count; i++) {
      const byteCount = this.u32(at);
      const byteOffset = this.u32(at + 4);
      const pfnCount = pfnsSpanned(byteOffset, byteCount);
      const pfns: number[] = new Array(pfnCount);
      for (let p = 0; p < pfnCount; p++) {
        const lo = this.u32(at + 8 + p * 8);
        const hi = this.u32(at + 12 + p * 8);
        pfns[p] = hi * TWO_POW_32 + lo;
      }
      ranges.push({ byteCount, byteOffset, pfns });
      at += 8 + pfnCount * 8;
    }
    return ranges;
  }

  /** The transfer-page set id and ranges of a VM_PKT_DATA_USING_XFER_PAGES packet (allocates). */
  transferPages(): { pageSetId: number; senderOwnsSet: boolean; ranges: TransferPageRange[] } | null {
    if (this.type !== VM_PKT_DATA_USING_XFER_PAGES) return null;
    const count = this.u32(20);
    const ranges: TransferPageRange[] = [];
    for (let i = 0; i < count; i++) {
      ranges.push({ byteCount: this.u32(RANGES_OFFSET + i * 8), byteOffset: this.u32(RANGES_OFFSET + i * 8 + 4) });
    }
    return { pageSetId: this.u16(16), senderOwnsSet: this.u8(18) !== 0, ranges };
  }
}

/** Number of PFNs a range of `byteCount` bytes from `byteOffset` into its first page spans. */
export function pfnsSpanned(byteOffset: number, byteCount: number): number {
  return Math.ceil((byteOffset + byteCount) / PAGE_SIZE);
}

export class RingReader extends RingEnd {
  private readonly signalWriter: () => void;
  private readonly view: PacketView;
  /** Next byte to read (private; never read back from the control page). */
  private readIndex: number;
  /** The read index the writer can see. */
  private publishedRead: number;
  /** The writer's write_index as last validated: available data may only grow. */
  private lastWrite: number;
  /** Where the current peeked packet ends (trailer included), or -1 if nothing is peeked. */
  private peekedEnd = -1;
  private scratch = new Uint8Array(256);
  /** The data area's host buffer and offset when it is contiguous in host memory (the fast path), else null. */
  private readonly flatBuffer: ArrayBufferLike | null;
  private readonly flatBase: number;
  packetsRead = 0;
  signals = 0;
  /** The last readBatch stopped because its callback returned false. */
  stopped = false;

  constructor(ring: RingBuffer, options: RingEndOptions) {
    super(ring, options);
    this.signalWriter = options.signal;
    this.view = new PacketView(this);
    this.flatBuffer = ring.data.flat?.buffer ?? null;
    this.flatBase = ring.data.flat?.byteOffset ?? 0;
    this.readIndex = this.publishedRead = this.lastWrite = 0;
    const read = Atomics.load(this.control, RING_READ_INDEX);
    const write = Atomics.load(this.control, RING_WRITE_INDEX);
    this.checkIndex(read, 'read-index-out-of-range');
    this.checkIndex(write, 'write-index-out-of-range');
    this.readIndex = this.publishedRead = read;
    this.lastWrite = write;
  }

  /** Retires this reader; a PacketView it handed out refuses reads too. */
  override close(reason = 'the ring was closed'): void {
    super.close(reason);
    this.peekedEnd = -1;
  }

  /** Bytes the writer has published beyond the private read index (write_index loaded and validated now). */
  available(): number {
    this.checkUsable();
    this.refreshWriteIndex();
    return bytesToRead(this.lastWrite, this.readIndex, this.size);
  }

  /** Loads the writer's write_index and checks it: in range, aligned, available data never shrinking. */
  private refreshWriteIndex(): void {
    const write = Atomics.load(this.control, RING_WRITE_INDEX);
    if (write === this.lastWrite) return;
    this.checkIndex(write, 'write-index-out-of-range');
    const before = bytesToRead(this.lastWrite, this.readIndex, this.size);
    const now = bytesToRead(write, this.readIndex, this.size);
    if (now < before) {
      this.fail('index-went-backwards', `write_index moved from ${this.lastWrite} to ${write} (read ${this.readIndex})`, write);
    }
    this.lastWrite = write;
  }

  /**
   * The next packet, validated, without consuming it; null when the ring is empty. Throws
   * RingCorruptError (and marks the ring broken) if the writer broke the protocol.
   */
  peek(): PacketView | null {
    this.checkUsable();
    this.refreshWriteIndex();
    return this.peekKnown();
  }

  /**
   * peek() against the last validated write_index, reloading it only when everything up to it
   * has been consumed: data below a write_index loaded with Atomics is already visible, so
   * this saves an atomic load per packet inside a batch.
   */
  private peekKnown(): PacketView | null {
    let avail = bytesToRead(this.lastWrite, this.readIndex, this.size);
    if (avail === 0) {
      this.refreshWriteIndex();
      avail = bytesToRead(this.lastWrite, this.readIndex, this.size);
      if (avail === 0) {
        this.peekedEnd = -1;
        return null;
      }
    }
    return this.parsePacket(avail);
  }

  /** Parses and validates the packet at the read index, with `avail` bytes published. */
  private parsePacket(avail: number): PacketView {
    const at = this.readIndex;
    if (avail < VMPACKET_DESCRIPTOR_SIZE + VMBUS_PKT_TRAILER) {
      this.fail('truncated-packet', `${avail} bytes available, a packet needs at least 24`, at);
    }
    const data = this.ring.data;
    const v = this.view;
    v.ringOffset = at;
    // Two u32 loads for the four u16 fields (type, offset8 | len8, flags).
    const typeAndOffset = data.getU32(at);
    const lenAndFlags = data.getU32(at + 4);
    v.type = typeAndOffset & 0xffff;
    const offset8 = typeAndOffset >>> 16;
    const len8 = lenAndFlags & 0xffff;
    v.flags = lenAndFlags >>> 16;
    const second = this.wrapAdd(at, 8);
    v.transactionIdLow = data.getU32(second);
    v.transactionIdHigh = data.getU32(second + 4);
    const length = len8 * 8;
    const payloadOffset = offset8 * 8;
    if (length < VMPACKET_DESCRIPTOR_SIZE || length + VMBUS_PKT_TRAILER > avail) {
      this.fail('descriptor-length', `len8=${len8} with ${avail} bytes available`, at);
    }
    if (payloadOffset < VMPACKET_DESCRIPTOR_SIZE || payloadOffset > length) {
      this.fail('descriptor-offset', `offset8=${offset8} with len8=${len8}`, at);
    }
    if (v.type > 31 || ((RING_PACKET_TYPE_MASK >>> v.type) & 1) === 0) this.fail('unknown-packet-type', `type ${v.type}`, at);
    v.length = length;
    v.payloadOffset = payloadOffset;
    this.peekedEnd = this.wrapAdd(at, length + VMBUS_PKT_TRAILER);
    if (v.type === VM_PKT_DATA_USING_GPA_DIRECT) this.validateGpaRanges(v);
    else if (v.type === VM_PKT_DATA_USING_XFER_PAGES) this.validateTransferRanges(v);
    return v;
  }

  /** Consumes the packet returned by the last `peek()`. */
  advance(): void {
    if (this.peekedEnd < 0) throw new HostUsageError('RingReader.advance() without a peeked packet');
    this.readIndex = this.peekedEnd;
    this.peekedEnd = -1;
    this.packetsRead++;
  }

  /**
   * Publishes read_index for everything consumed and signals the writer if this freed the
   * space it is waiting for (Linux hv_pkt_iter_close).
   */
  commit(): void {
    if (this.closedBy) throw this.closedBy;
    if (this.readIndex === this.publishedRead) return;
    const startRead = this.publishedRead;
    // Sequentially consistent store: all reads of the consumed packets happen before the
    // writer can see their space as free, and it orders the pending_send_sz load below.
    Atomics.store(this.control, RING_READ_INDEX, this.readIndex);
    this.publishedRead = this.readIndex;
    if ((Atomics.load(this.control, RING_FEATURE_BITS) & FEAT_PENDING_SEND_SZ) === 0) return;
    const pending = Atomics.load(this.control, RING_PENDING_SEND_SZ);
    if (pending === 0) return;
    const write = Atomics.load(this.control, RING_WRITE_INDEX);
    if (write >= this.size || write % 8 !== 0) return; // caught as corruption by the next peek
    const free = bytesToWrite(write, this.readIndex, this.size);
    const freed = bytesToRead(this.readIndex, startRead, this.size);
    // Signal only on the transition "not enough space" -> "enough space", as Linux does
    // (u32 arithmetic: a writer that wrote meanwhile makes free - freed wrap and not signal).
    if ((free - freed) >>> 0 > pending) return;
    if (free <= pending) return;
    this.signals++;
    this.signalWriter();
  }

  /**
   * Reads up to `max` packets, calling `fn` for each, then commits once. If `fn` throws, the
   * packets before it stay consumed and committed and the error propagates; the throwing
   * packet is not consumed. If `fn` returns false, that packet is consumed and reading stops
   * there (`stopped` is then true until the next batch): a consumer that cannot take more.
   */
  readBatch(fn: (packet: PacketView) => boolean | void, max = Infinity): number {
    let n = 0;
    this.checkUsable();
    this.stopped = false;
    try {
      this.refreshWriteIndex();
      while (n < max) {
        const p = this.peekKnown();
        if (p === null) break;
        this.tap?.read?.(p);
        const go = fn(p);
        this.advance();
        n++;
        if (go === false) {
          this.stopped = true;
          break;
        }
      }
    } finally {
      if (!this.brokenBy && !this.closedBy) this.commit();
    }
    return n;
  }

  /** Sets interrupt_mask: the writer will not signal while this reader drains. */
  mask(): void {
    if (this.closedBy) throw this.closedBy;
    Atomics.store(this.control, RING_INTERRUPT_MASK, 1);
  }

  /**
   * Clears interrupt_mask and re-checks for data after a full barrier (Linux hv_end_read).
   * Returns true when data arrived meanwhile: the caller must keep draining, because the
   * writer may have seen the mask set and not signalled.
   */
  unmask(): boolean {
    this.checkUsable();
    Atomics.store(this.control, RING_INTERRUPT_MASK, 0);
    return this.available() > 0;
  }

  /** Masks, reads until the ring is empty, unmasks and re-checks; returns packets read. */
  drain(fn: (packet: PacketView) => void): number {
    let n = 0;
    for (;;) {
      this.mask();
      n += this.readBatch(fn);
      if (!this.unmask()) return n;
    }
  }

  // ---- packet byte access for PacketView (wrap-aware) ----

  /** @internal */
  packetByte(p: PacketView, offset: number, width: 1 | 2 | 4): number {
    if (this.closedBy) throw this.closedBy;
    if (!(offset >= 0 && offset + width <= p.length))
      throw new HostUsageError(`packet read [${offset}, +${width}) outside a ${p.length}-byte packet`);
    const data = this.ring.data;
    const start = p.ringOffset + offset;
    if (start + width <= this.size) {
      return width === 4 ? data.getU32(start) : width === 2 ? data.getU16(start) : data.getU8(start);
    }
    let value = 0;
    for (let i = 0; i < width; i++) value |= data.getU8(this.wrapAdd(p.ringOffset, offset + i)) << (8 * i);
    return value >>> 0;
  }

  /** @internal */
  packetBytes(p: PacketView, offset: number, length: number): Uint8Array {
    if (this.closedBy) throw this.closedBy;
    const start = this.wrapAdd(p.ringOffset, offset);
    if (start + length <= this.size) {
      // Fast path: a view straight onto the flat data area (no copy, no method chain).
      if (this.flatBuffer !== null) return new Uint8Array(this.flatBuffer, this.flatBase + start, length);
      const view = this.ring.data.view(start, length);
      if (view) return view;
    }
    if (this.scratch.length < length) this.scratch = new Uint8Array(Math.max(length, this.scratch.length * 2));
    this.copyPacketBytes(p, offset, this.scratch, 0, length);
    return this.scratch.subarray(0, length);
  }

  /** @internal */
  copyPacketBytes(p: PacketView, offset: number, target: Uint8Array, targetOffset: number, length: number): void {
    if (this.closedBy) throw this.closedBy;
    if (!(offset >= 0 && length >= 0 && offset + length <= p.length))
      throw new HostUsageError(`packet copy [${offset}, +${length}) outside a ${p.length}-byte packet`);
    const start = this.wrapAdd(p.ringOffset, offset);
    if (this.flatBuffer !== null && start + length <= this.size) {
      target.set(new Uint8Array(this.flatBuffer, this.flatBase + start, length), targetOffset);
      return;
    }
    const first = Math.min(length, this.size - start);
    this.ring.data.read(start, target, targetOffset, first);
    if (length > first) this.ring.data.read(0, target, targetOffset + first, length - first);
  }

  private validateGpaRanges(p: PacketView): void {
    const end = p.payloadOffset;
    if (end < RANGES_OFFSET) this.fail('range-list-overrun', `GPA-direct header of ${end} bytes`, p.ringOffset);
    const count = p.u32(20);
    let at = RANGES_OFFSET;
    for (let i = 0; i < count; i++) {
      if (at + 8 > end) this.fail('range-list-overrun', `range ${i} of ${count} starts past the header`, p.ringOffset);
      const byteCount = p.u32(at);
      const byteOffset = p.u32(at + 4);
      if (byteOffset >= PAGE_SIZE) this.fail('bad-gpa-range', `range ${i} byte_offset ${byteOffset}`, p.ringOffset);
      at += 8 + pfnsSpanned(byteOffset, byteCount) * 8;
      if (at > end) this.fail('range-list-overrun', `range ${i} of ${count} (${byteCount} bytes) overruns the header`, p.ringOffset);
    }
  }

  private validateTransferRanges(p: PacketView): void {
    const end = p.payloadOffset;
    if (end < RANGES_OFFSET) this.fail('range-list-overrun', `transfer-page header of ${end} bytes`, p.ringOffset);
    const count = p.u32(20);
    if (RANGES_OFFSET + count * 8 > end) {
      this.fail('range-list-overrun', `${count} transfer-page ranges overrun a ${end}-byte header`, p.ringOffset);
    }
  }

  private wrapAdd(pos: number, by: number): number {
    const next = pos + by;
    return next >= this.size ? next - this.size : next;
  }

  protected override fail(fault: RingFault, detail: string, at: number): never {
    this.peekedEnd = -1;
    return super.fail(fault, detail, at);
  }
}
