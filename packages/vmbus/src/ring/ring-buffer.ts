/**
 * RingBuffer: one VMBus ring as it sits in guest memory, a 4 KiB control page (struct
 * hv_ring_buffer) and a data area. It holds no state of either end; RingWriter and RingReader
 * each keep their own private index and read the other end's index from the control page,
 * validating it, because that page is writable by the guest.
 */
import { HostUsageError } from '@hvemu/common';
import { GuestMemory, PAGE_SIZE, type GuestBuffer } from '@hvemu/memory';
import {
  FEAT_PENDING_SEND_SZ,
  HV_RING_HEADER_SIZE,
  RING_FEATURE_BITS,
  RING_INTERRUPT_MASK,
  RING_PENDING_SEND_SZ,
  RING_READ_INDEX,
  RING_WRITE_INDEX,
} from './protocol.js';

/** Smallest data area that holds one minimal packet (descriptor + trailer) and keeps a gap. */
export const MIN_RING_DATA_SIZE = 32;

export class RingBuffer {
  /** The control page as u32s, for Atomics. */
  readonly control: Uint32Array;
  /** The data area. */
  readonly data: GuestBuffer;
  /** Bytes in the data area. */
  readonly dataSize: number;

  constructor(control: Uint32Array, data: GuestBuffer) {
    if (control.length * 4 < HV_RING_HEADER_SIZE) throw new HostUsageError('ring control page must be 4096 bytes');
    // Data sizes are multiples of 8 so 8-byte packet fields never straddle the wrap point.
    if (data.length < MIN_RING_DATA_SIZE || data.length % 8 !== 0 || data.length > 0x7fff_fff8) {
      throw new HostUsageError(`ring data area of ${data.length} bytes: need a multiple of 8, >= ${MIN_RING_DATA_SIZE}`);
    }
    this.control = control;
    this.data = data;
    this.dataSize = data.length;
  }

  /**
   * The ring in `pageCount` pages of a page list, starting at `firstPage`: the first page is the
   * control page, the rest the data area (the layout of one half of a channel's ring GPADL).
   * Every PFN is bounds-checked (GuestMemoryError if one is not RAM).
   */
  static fromPages(memory: GuestMemory, pfns: ArrayLike<number>, firstPage: number, pageCount: number): RingBuffer {
    if (!Number.isInteger(pageCount) || pageCount < 2 || firstPage < 0 || firstPage + pageCount > pfns.length) {
      throw new HostUsageError(`a ring needs >= 2 pages inside the page list (got ${pageCount} at ${firstPage})`);
    }
    const control = memory.u32Array(pfns[firstPage] * PAGE_SIZE, PAGE_SIZE / 4);
    const dataPfns = Array.from({ length: pageCount - 1 }, (_, i) => pfns[firstPage + 1 + i]);
    const data = memory.pageList(dataPfns, 0, (pageCount - 1) * PAGE_SIZE);
    return new RingBuffer(control, data);
  }

  /**
   * Resets the control page as a guest does before it opens a channel: indices and masks zero,
   * feat_pending_send_sz set (Linux sets it on both rings) unless told otherwise.
   */
  initialize(options: { pendingSendSize?: boolean; startIndex?: number } = {}): void {
    const start = options.startIndex ?? 0;
    if (!Number.isInteger(start) || start < 0 || start >= this.dataSize || start % 8 !== 0) {
      throw new HostUsageError(`start index ${start} is not an 8-aligned offset in the data area`);
    }
    Atomics.store(this.control, RING_WRITE_INDEX, start);
    Atomics.store(this.control, RING_READ_INDEX, start);
    Atomics.store(this.control, RING_INTERRUPT_MASK, 0);
    Atomics.store(this.control, RING_PENDING_SEND_SZ, 0);
    Atomics.store(this.control, RING_FEATURE_BITS, options.pendingSendSize === false ? 0 : FEAT_PENDING_SEND_SZ);
  }

  /** A snapshot of the control page fields (diagnostics, tests). */
  snapshot(): { writeIndex: number; readIndex: number; interruptMask: number; pendingSendSize: number; featureBits: number } {
    return {
      writeIndex: Atomics.load(this.control, RING_WRITE_INDEX),
      readIndex: Atomics.load(this.control, RING_READ_INDEX),
      interruptMask: Atomics.load(this.control, RING_INTERRUPT_MASK),
      pendingSendSize: Atomics.load(this.control, RING_PENDING_SEND_SZ),
      featureBits: Atomics.load(this.control, RING_FEATURE_BITS),
    };
  }
}

/** Free bytes for a writer at `write` when the reader is at `read` (Linux hv_get_bytes_to_write). */
export function bytesToWrite(write: number, read: number, size: number): number {
  return write >= read ? size - (write - read) : read - write;
}

/** Bytes a reader at `read` can consume up to `write` (Linux hv_get_bytes_to_read). */
export function bytesToRead(write: number, read: number, size: number): number {
  return write >= read ? write - read : size - (read - write);
}
