/**
 * The two guest buffers of a netvsc session. The receive buffer is the transfer-page set
 * (id 0xCAFE) the host writes frames into: one section of `sub_alloc_size` bytes per RNDIS
 * message, handed out here and taken back when the guest completes the transfer-page packet
 * that named it. The send buffer is sections the guest fills with RNDIS messages and names by
 * index. Both are GuestData of the GPADL the guest gave, revoked with it.
 */
import type { GuestData } from '@hvemu/vmbus';

/** Most sections the host manages in one receive buffer (16 MiB of 256-byte sections). */
export const MAX_RECV_SECTIONS = 1 << 16;

export class ReceiveBuffer {
  readonly count: number;
  /** Free section indexes, a stack (the most recently freed is reused first: warm in cache). */
  private readonly free: Int32Array;
  private freeCount: number;
  /** Per section: the queue (subchannel index) it was sent on, or -1 while free. */
  private readonly owner: Int16Array;
  /** The whole buffer as one host view, when its pages are contiguous in host memory (the fast path). */
  private readonly flat: Uint8Array | null;

  constructor(
    readonly gpadl: number,
    readonly data: GuestData,
    readonly sectionSize: number,
  ) {
    this.flat = contiguousView(data);
    this.count = Math.min(MAX_RECV_SECTIONS, Math.floor(data.length / sectionSize));
    this.free = new Int32Array(this.count);
    for (let i = 0; i < this.count; i++) this.free[i] = this.count - 1 - i;
    this.freeCount = this.count;
    this.owner = new Int16Array(this.count).fill(-1);
  }

  get available(): number {
    return this.freeCount;
  }

  /**
   * Copies `header[0, headerLength)` then `frame` to `offset` (a section's start): through the
   * plain view when the buffer is contiguous in host memory (the lease checked first), else
   * through the GuestData. GuestDataRevokedError once the guest tore the buffer down.
   */
  /**
   * writeFrame for a frame whose 802.1Q tag (bytes 12-15) goes into a PPI: the frame is written
   * without it, straight from the backend's bytes (no untagged copy first).
   */
  writeFrameUntagged(offset: number, header: Uint8Array, headerLength: number, frame: Uint8Array): void {
    const at = offset + headerLength;
    this.writeFrame(offset, header, headerLength, frame.subarray(0, 12));
    if (frame.length > 16) this.writeAt(at + 12, frame.subarray(16));
  }

  private writeAt(offset: number, bytes: Uint8Array): void {
    const flat = this.flat;
    if (flat && !this.data.revoked && offset + bytes.length <= flat.length) flat.set(bytes, offset);
    else this.data.write(offset, bytes);
  }

  writeFrame(offset: number, header: Uint8Array, headerLength: number, frame: Uint8Array): void {
    const flat = this.flat;
    if (flat && !this.data.revoked && offset + headerLength + frame.length <= flat.length) {
      for (let i = 0; i < headerLength; i++) flat[offset + i] = header[i];
      flat.set(frame, offset + headerLength);
      return;
    }
    this.data.write(offset, header, 0, headerLength);
    this.data.write(offset + headerLength, frame);
  }

  /** A free section for queue `owner`, or -1 when all are with the guest. */
  allocate(owner: number): number {
    if (this.freeCount === 0) return -1;
    const index = this.free[--this.freeCount];
    this.owner[index] = owner;
    return index;
  }

  /** Takes `index` back from queue `owner`; false (nothing changes) if it is not out on that queue. */
  release(index: number, owner: number): boolean {
    if (!(index >= 0 && index < this.count) || this.owner[index] !== owner) return false;
    this.owner[index] = -1;
    this.free[this.freeCount++] = index;
    return true;
  }
}

export class SendBuffer {
  readonly count: number;
  /** The whole buffer as one host view, when its pages are contiguous in host memory (the fast path). */
  private readonly flat: Uint8Array | null;

  constructor(
    readonly gpadl: number,
    readonly data: GuestData,
    readonly sectionSize: number,
  ) {
    this.count = Math.floor(data.length / sectionSize);
    this.flat = contiguousView(data);
  }

  /** Bytes [0, length) of section `index`, or null when the guest named a section that is not there. */
  section(index: number, length: number): GuestData | null {
    if (!(index >= 0 && index < this.count) || length > this.sectionSize) return null;
    return this.data.slice(index * this.sectionSize, length);
  }

  /**
   * Where section `index` starts in the plain view of the whole buffer (flatBytes), when the
   * buffer is contiguous in host memory; -1 when it is not (use section()) or the guest named a
   * section that is not there. The lease is checked here, so the view is only used while the
   * GPADL lives; the caller uses it within the packet's synchronous handling only.
   */
  sectionStart(index: number, length: number): number {
    if (!this.flat || !(index >= 0 && index < this.count) || length > this.sectionSize) return -1;
    this.data.assertLive();
    return index * this.sectionSize;
  }

  /** The whole buffer as one plain view, or null when its pages are not contiguous in host memory. */
  get flatBytes(): Uint8Array | null {
    return this.flat;
  }
}

/**
 * The bytes one SEND_RNDIS_PKT names, as one sequence: its send-buffer section (if any), then
 * the packet's GPA-direct page buffers (if any). Linux puts whole messages in a section, whole
 * messages in page buffers, or (cp_partial) batched messages plus the last one's header in the
 * section and that message's frame in page buffers: one sequence covers all three.
 */
export class TxSource {
  private readonly parts: GuestData[] = [];
  /**
   * Set instead of parts when the bytes are one plain view: [flatBase, flatBase + length) of
   * `flat` (a section of a contiguous send buffer, in the view of the whole buffer, so a packet
   * costs no view of its own).
   */
  private flat: Uint8Array | null = null;
  private base = 0;
  length = 0;

  reset(first: GuestData | null, second: GuestData | null): void {
    this.parts.length = 0;
    this.flat = null;
    this.base = 0;
    this.length = 0;
    this.add(first);
    this.add(second);
  }

  /**
   * The plain view the bytes are in, from flatBase on (guest memory: read each field once), or
   * null when they are in parts.
   */
  get flatView(): Uint8Array | null {
    return this.flat;
  }

  /** Where the bytes start in flatView. */
  get flatBase(): number {
    return this.base;
  }

  /** The bytes are [base, base + length) of `view` alone. */
  resetFlat(view: Uint8Array, base = 0, length = view.length - base): void {
    checkFlatRange(view, base, length);
    this.parts.length = 0;
    this.flat = view;
    this.base = base;
    this.length = length;
  }

  private add(part: GuestData | null): void {
    if (!part || part.length === 0) return;
    this.parts.push(part);
    this.length += part.length;
  }

  /** Copies [offset, offset + length) into `target` at 0. */
  read(offset: number, target: Uint8Array, length: number): void {
    const flat = this.flat;
    if (flat) {
      this.checkRange(offset, length);
      const from = this.base + offset;
      for (let i = 0; i < length; i++) target[i] = flat[from + i]; // short headers: a loop beats set() on a fresh subarray
      return;
    }
    let done = 0;
    this.each(offset, length, (p, at, n) => {
      p.read(at, target, done, n);
      done += n;
    });
  }

  /** A zero-copy view of [offset, offset + length) when the bytes are one plain view; else null (use views()). */
  view(offset: number, length: number): Uint8Array | null {
    const flat = this.flat;
    if (!flat) return null;
    this.checkRange(offset, length);
    return new Uint8Array(flat.buffer, flat.byteOffset + this.base + offset, length);
  }

  /** Callers validated the range against the message already: a miss here is a bug, not guest input. */
  private checkRange(offset: number, length: number): void {
    if (!(offset >= 0 && length >= 0 && offset + length <= this.length))
      throw new RangeError(`tx bytes [${offset}, +${length}) outside ${this.length}`);
  }

  /** Zero-copy views of [offset, offset + length), appended to `out`. */
  views(offset: number, length: number, out: Uint8Array[]): void {
    const view = this.view(offset, length);
    if (view) return void out.push(view);
    this.each(offset, length, (p, at, n) => {
      for (const v of p.views(at, n)) out.push(v);
    });
  }

  private each(offset: number, length: number, fn: (p: GuestData, at: number, n: number) => void): void {
    let base = 0;
    for (const p of this.parts) {
      if (length === 0) return;
      if (offset < base + p.length) {
        const at = offset - base;
        const n = Math.min(p.length - at, length);
        fn(p, at, n);
        offset += n;
        length -= n;
      }
      base += p.length;
    }
  }
}

/** All of `data` as one host view when its pages are contiguous in host memory (the fast path), else null. */
function contiguousView(data: GuestData): Uint8Array | null {
  const views = data.views(0, data.length);
  return views.length === 1 ? views[0] : null;
}

function checkFlatRange(flat: Uint8Array, offset: number, length: number): void {
  if (!(offset >= 0 && length >= 0 && offset + length <= flat.length))
    throw new RangeError(`tx bytes [${offset}, +${length}) outside ${flat.length}`);
}
