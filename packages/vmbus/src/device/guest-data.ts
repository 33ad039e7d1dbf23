/**
 * GuestData: the guest memory a packet or a GPADL names, as one byte sequence a device reads
 * and writes by offset. A GPA-direct packet's ranges (each `byteCount` bytes from `byteOffset`
 * into its first PFN, any number of pages), a multi-range GPADL (a receive buffer), or a
 * slice of either: every page is checked against guest RAM when the GuestData is made, every
 * access against its length, and revoking its lease (the channel closed) makes every later access
 * throw, so a request that outlives its channel cannot write into pages the guest took back.
 */
import { HostUsageError, HvemuError } from '@hvemu/common';
import { PAGE_SIZE, type GuestBuffer, type GuestMemory } from '@hvemu/memory';

/** One range as the wire gives it: `byteCount` bytes from `byteOffset` into the first of `pfns`. */
export interface PageRange {
  readonly byteCount: number;
  readonly byteOffset: number;
  readonly pfns: ArrayLike<number>;
}

/** The channel that named this data closed: the device must not touch it any more. */
export class GuestDataRevokedError extends HvemuError {
  readonly outcome = 'host-error' as const;
}

/** A run of one range's buffer: bytes [base, base + length) of `buffer`, at `start` in the sequence. */
interface Piece {
  readonly start: number;
  readonly buffer: GuestBuffer;
  readonly base: number;
  readonly length: number;
  /** Where buffer offset 0 sits in its first guest page (page boundaries for views()). */
  readonly pageOffset: number;
}

/**
 * The right to touch some guest data: shared by every GuestData made under it (a channel's
 * open, one GPADL) and their slices, so one revoke() ends them all. A lease with a parent is
 * revoked with it (a GPADL's data when its channel closes).
 */
export class GuestDataLease {
  private revokedBy: GuestDataRevokedError | null = null;

  constructor(private readonly parent?: GuestDataLease) {}

  get revoked(): boolean {
    return this.reason() !== null;
  }

  revoke(reason = 'the channel closed'): void {
    this.revokedBy ??= new GuestDataRevokedError(`guest data revoked: ${reason}`);
  }

  /** The error every access now throws, or null while the lease holds. */
  reason(): GuestDataRevokedError | null {
    return this.revokedBy ?? this.parent?.reason() ?? null;
  }
}

export interface GuestDataOptions {
  /** Refuse (HostUsageError) data longer than this. */
  maxBytes?: number;
  /** Revocable together with other data (default: a lease of its own). */
  lease?: GuestDataLease;
}

export class GuestData {
  /** Total bytes. */
  readonly length: number;

  private constructor(
    private readonly pieces: readonly Piece[],
    private readonly lease: GuestDataLease,
  ) {
    const last = pieces[pieces.length - 1];
    this.length = last ? last.start + last.length : 0;
  }

  /**
   * The bytes `ranges` name, in order. Throws GuestMemoryError (refuse the request) when a
   * page is outside guest RAM or a range's offset is not inside its first page, and
   * HostUsageError when the total exceeds `maxBytes`.
   */
  static fromRanges(memory: GuestMemory, ranges: readonly PageRange[], options: GuestDataOptions = {}): GuestData {
    const maxBytes = options.maxBytes ?? Number.MAX_SAFE_INTEGER;
    const pieces: Piece[] = [];
    let start = 0;
    for (const r of ranges) {
      if (start + r.byteCount > maxBytes) {
        throw new HostUsageError(`guest data of more than ${maxBytes} bytes (${ranges.length} ranges)`);
      }
      const buffer = memory.pageList(r.pfns, r.byteOffset, r.byteCount);
      if (buffer.length > 0) pieces.push({ start, buffer, base: 0, length: buffer.length, pageOffset: r.byteOffset });
      start += buffer.length;
    }
    return new GuestData(pieces, options.lease ?? new GuestDataLease());
  }

  /** True once its lease was revoked (the channel or GPADL that named it went away). */
  get revoked(): boolean {
    return this.lease.revoked;
  }

  /** Throws the lease's GuestDataRevokedError once it was revoked (before using views() kept from earlier). */
  assertLive(): void {
    const revoked = this.lease.reason();
    if (revoked) throw revoked;
  }

  /** Bytes `[offset, offset + length)` as a GuestData of their own (zero-copy, same lease). */
  slice(offset: number, length: number = this.length - offset): GuestData {
    this.check(offset, length);
    const pieces: Piece[] = [];
    this.forEach(offset, length, (piece, at, done, n) => pieces.push({ ...piece, start: done, base: at, length: n }));
    return new GuestData(pieces, this.lease);
  }

  /** Copies `length` bytes from `offset` into `target` at `targetOffset`. */
  read(offset: number, target: Uint8Array, targetOffset = 0, length = target.length - targetOffset): void {
    this.check(offset, length);
    checkTarget(target, targetOffset, length);
    this.forEach(offset, length, (p, at, done, n) => p.buffer.read(at, target, targetOffset + done, n));
  }

  /** Copies `length` bytes of `source` (from `sourceOffset`) to `offset`. */
  write(offset: number, source: Uint8Array, sourceOffset = 0, length = source.length - sourceOffset): void {
    this.check(offset, length);
    checkTarget(source, sourceOffset, length);
    this.forEach(offset, length, (p, at, done, n) => p.buffer.write(at, source, sourceOffset + done, n));
  }

  /** Fills `[offset, offset + length)` with `value`. */
  fill(value: number, offset = 0, length = this.length - offset): void {
    this.check(offset, length);
    this.forEach(offset, length, (p, at, _done, n) => p.buffer.fill(value, at, n));
  }

  /** A copy of `[offset, offset + length)`. */
  toBytes(offset = 0, length = this.length - offset): Uint8Array {
    const out = new Uint8Array(length);
    this.read(offset, out, 0, length);
    return out;
  }

  /**
   * Zero-copy views of `[offset, offset + length)`, one per run contiguous in host memory
   * (for scatter/gather I/O). Not revocable: do not keep them past the request.
   */
  views(offset = 0, length = this.length - offset): Uint8Array[] {
    this.check(offset, length);
    const out: Uint8Array[] = [];
    this.forEach(offset, length, (p, at, _done, n) => {
      const whole = p.buffer.view(at, n);
      if (whole) return void out.push(whole);
      // Scattered pages: one view per page-bounded chunk.
      for (let o = 0; o < n;) {
        const inPage = (p.pageOffset + at + o) % PAGE_SIZE;
        const chunk = Math.min(PAGE_SIZE - inPage, n - o);
        out.push(p.buffer.view(at + o, chunk)!);
        o += chunk;
      }
    });
    return out;
  }

  private check(offset: number, length: number): void {
    const revoked = this.lease.reason();
    if (revoked) throw revoked;
    if (!(offset >= 0 && length >= 0 && offset + length <= this.length) || offset % 1 !== 0 || length % 1 !== 0) {
      throw new HostUsageError(`guest data access [${offset}, +${length}) outside its ${this.length} bytes`);
    }
  }

  /** Calls fn(piece, offsetInItsBuffer, doneSoFar, chunkLength) for each piece [offset, offset+length) touches. */
  private forEach(offset: number, length: number, fn: (piece: Piece, at: number, done: number, n: number) => void): void {
    let done = 0;
    for (const p of this.pieces) {
      if (done === length) return;
      const pos = offset + done;
      if (pos >= p.start + p.length) continue;
      const inPiece = pos - p.start;
      const n = Math.min(p.length - inPiece, length - done);
      fn(p, p.base + inPiece, done, n);
      done += n;
    }
  }
}

function checkTarget(bytes: Uint8Array, offset: number, length: number): void {
  if (!(bytes instanceof Uint8Array)) throw new HostUsageError('guest data copies take a Uint8Array');
  if (!(offset >= 0 && offset + length <= bytes.length) || offset % 1 !== 0) {
    throw new HostUsageError(`[${offset}, +${length}) is outside the ${bytes.length}-byte host buffer`);
  }
}

/**
 * The header of a VM_PKT_DATA_USING_GPA_DIRECT packet (Linux vmbus_packet_mpb_array after the
 * descriptor): reserved u32, rangecount u32, then per range byte_count u32, byte_offset u32 and
 * the PFNs (u64 each) it spans. What a guest driver (or a test client) sends to name its data.
 */
export function encodeGpaDirectHeader(
  ranges: readonly { byteCount: number; byteOffset: number; pfns: ArrayLike<number | bigint> }[],
): Uint8Array {
  const length = 8 + ranges.reduce((n, r) => n + 8 + r.pfns.length * 8, 0);
  const out = new Uint8Array(length);
  const dv = new DataView(out.buffer);
  dv.setUint32(4, ranges.length, true);
  let at = 8;
  for (const r of ranges) {
    dv.setUint32(at, r.byteCount, true);
    dv.setUint32(at + 4, r.byteOffset, true);
    for (let i = 0; i < r.pfns.length; i++) dv.setBigUint64(at + 8 + i * 8, BigInt(r.pfns[i]), true);
    at += 8 + r.pfns.length * 8;
  }
  return out;
}
