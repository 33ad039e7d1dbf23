/**
 * GuestMemory: the one bounds-checked interface for guest-physical memory.
 *
 * Guest RAM is a sorted list of page-aligned regions (holes between them are MMIO or unbacked
 * space). Each region is a host ArrayBuffer or SharedArrayBuffer: a SharedArrayBuffer for the
 * simulated partition, an external buffer over a memfd mapping for the native backends. Callers
 * never see which: they read and write by GPA, take zero-copy views of ranges that lie in one
 * region, and build page-list buffers (GPADLs) from PFNs. Every GPA or PFN is checked against
 * the RAM map first; a miss is a GuestMemoryError and touches nothing.
 */
import { HostUsageError } from '@hvemu/common';
import { MAX_GPA, PAGE_SIZE } from './constants.js';
import { FlatGuestBuffer, PagedGuestBuffer, type GuestBuffer } from './buffer.js';
import { GuestMemoryError } from './errors.js';
import { badAddress, checkBytes, checkU64, checkUint, isAddressLike } from './values.js';

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  // Every wire format hvemu speaks is little-endian and ring code relies on typed-array views.
  throw new Error('hvemu requires a little-endian host');
}

/** One region of guest RAM as the caller provides it. */
export interface RamRegionSpec {
  /** First guest-physical address; page-aligned. */
  readonly gpa: number;
  /** Size in bytes; a non-zero multiple of PAGE_SIZE. */
  readonly size: number;
  /** Host backing; the region occupies `[byteOffset, byteOffset+size)` of it. */
  readonly buffer: ArrayBufferLike;
  readonly byteOffset?: number;
}

/** A validated region with its host view. */
export interface RamRegion {
  readonly gpa: number;
  readonly size: number;
  readonly end: number;
  readonly bytes: Uint8Array;
}

/** Where a range of guest RAM lives on the host. */
interface HostLocation {
  readonly region: RamRegion;
  readonly offset: number;
}

/** What changed in the RAM map (dynamic memory: hot add, removal). */
export interface RamChange {
  readonly kind: 'added' | 'removed';
  readonly region: RamRegion;
}

export class GuestMemory {
  /** The RAM map now, sorted by GPA (a new frozen array after each change). */
  regions: readonly RamRegion[];
  private views: readonly DataView[];
  private readonly listeners = new Set<(change: RamChange) => void>();

  constructor(specs: readonly RamRegionSpec[]) {
    if (!Array.isArray(specs)) throw new HostUsageError('GuestMemory takes a list of RAM regions');
    const regions = specs.map((s) => GuestMemory.validateRegion(s));
    if (regions.length === 0) throw new HostUsageError('guest memory needs at least one RAM region');
    this.regions = [];
    this.views = [];
    this.install(regions);
  }

  /** Checks that `regions` do not overlap and makes them the RAM map. */
  private install(regions: RamRegion[]): void {
    const sorted = [...regions].sort((a, b) => a.gpa - b.gpa);
    for (let i = 1; i < sorted.length; i++) {
      if (sorted[i].gpa < sorted[i - 1].end) {
        throw new HostUsageError(`RAM regions overlap at GPA 0x${sorted[i].gpa.toString(16)}`);
      }
    }
    this.regions = Object.freeze(sorted);
    this.views = sorted.map((r) => new DataView(r.bytes.buffer, r.bytes.byteOffset, r.bytes.byteLength));
  }

  /**
   * Adds a RAM region while the guest runs (memory hot add). It must not overlap RAM already
   * there. Listeners hear of it after the map has changed.
   */
  addRegion(spec: RamRegionSpec): RamRegion {
    const region = GuestMemory.validateRegion(spec);
    this.install([...this.regions, region]);
    this.notify({ kind: 'added', region });
    return region;
  }

  /**
   * Removes the RAM region that starts at `gpa` (exactly one region; the last one stays). Every
   * later access to it is a GuestMemoryError; views taken before stay valid host memory only
   * as long as their backing does (the accelerator that unmaps it detaches them).
   */
  removeRegion(gpa: number): RamRegion {
    const region = this.regions.find((r) => r.gpa === gpa);
    if (!region) throw new HostUsageError(`no RAM region starts at GPA 0x${safeHex(gpa)}`);
    if (this.regions.length === 1) throw new HostUsageError('the last RAM region cannot be removed');
    this.install(this.regions.filter((r) => r !== region));
    this.notify({ kind: 'removed', region });
    return region;
  }

  /** Calls `listener` after each change of the RAM map; returns an unsubscribe. */
  onChange(listener: (change: RamChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private notify(change: RamChange): void {
    for (const listener of [...this.listeners]) listener(change);
  }

  /**
   * Guest RAM backed by SharedArrayBuffers (one per region), as the simulated partition uses.
   * `layout` is a total size (one region at GPA 0) or a list of `{gpa, size}` regions.
   */
  static createShared(layout: number | readonly { gpa: number; size: number }[]): GuestMemory {
    const list = typeof layout === 'number' ? [{ gpa: 0, size: layout }] : layout;
    return new GuestMemory(list.map(({ gpa, size }) => ({ gpa, size, buffer: new SharedArrayBuffer(size) })));
  }

  private static validateRegion(spec: RamRegionSpec): RamRegion {
    if (typeof spec !== 'object' || spec === null || !(spec.buffer instanceof ArrayBuffer || spec.buffer instanceof SharedArrayBuffer)) {
      throw new HostUsageError('a RAM region is { gpa, size, buffer: ArrayBuffer | SharedArrayBuffer, byteOffset? }');
    }
    const byteOffset = spec.byteOffset ?? 0;
    const { gpa, size } = spec;
    if (!Number.isSafeInteger(gpa) || gpa < 0 || gpa % PAGE_SIZE !== 0 || gpa + size > MAX_GPA) {
      throw new HostUsageError(`RAM region GPA ${gpa} is not a page-aligned address below 2^52`);
    }
    if (!Number.isSafeInteger(size) || size <= 0 || size % PAGE_SIZE !== 0) {
      throw new HostUsageError(`RAM region size ${size} is not a non-zero multiple of ${PAGE_SIZE}`);
    }
    if (!Number.isSafeInteger(byteOffset) || byteOffset < 0 || byteOffset % 8 !== 0 || byteOffset + size > spec.buffer.byteLength) {
      throw new HostUsageError(`RAM region [${byteOffset}, +${size}) does not fit its ${spec.buffer.byteLength}-byte buffer`);
    }
    return { gpa, size, end: gpa + size, bytes: new Uint8Array(spec.buffer, byteOffset, size) };
  }

  /** Total bytes of guest RAM. */
  get ramSize(): number {
    let total = 0;
    for (const r of this.regions) total += r.size;
    return total;
  }

  /** True when `[gpa, gpa+length)` lies entirely inside one RAM region. */
  contains(gpa: number, length: number): boolean {
    return this.findRegionIndex(gpa, length) >= 0;
  }

  private findRegionIndex(gpa: number, length: number): number {
    if (!(gpa >= 0 && length >= 0 && gpa + length <= MAX_GPA) || gpa % 1 !== 0 || length % 1 !== 0) return -1;
    const regions = this.regions;
    // Few regions (RAM below and above the MMIO hole): a linear scan beats a binary search.
    for (let i = 0; i < regions.length; i++) {
      const r = regions[i];
      if (gpa >= r.gpa && gpa + length <= r.end) return i;
    }
    return -1;
  }

  private locate(gpa: number, length: number): HostLocation {
    const i = this.findRegionIndex(gpa, length);
    if (i < 0) throw this.missError(gpa, length, `GPA range [0x${safeHex(gpa)}, +${length}) is not guest RAM`);
    const region = this.regions[i];
    return { region, offset: gpa - region.gpa };
  }

  /** Index of the region holding `[gpa, gpa+width)`; throws GuestMemoryError if none does. */
  private regionIndexOrThrow(gpa: number, width: number): number {
    const i = this.findRegionIndex(gpa, width);
    if (i < 0) throw this.missError(gpa, width, `GPA 0x${safeHex(gpa)} (+${width}) is not guest RAM`);
    return i;
  }

  /**
   * Why a lookup failed, worked out only on the failure path: an address or length that is not
   * a non-negative integer is the host caller's bug (HostUsageError); a well-formed range that
   * misses RAM is a GuestMemoryError (the guest named it).
   */
  private missError(gpa: number, length: number, message: string): Error {
    if (!isAddressLike(gpa)) return badAddress('GPA', gpa);
    if (!isAddressLike(length)) return badAddress('length', length);
    return new GuestMemoryError(message, gpa, length);
  }

  readU8(gpa: number): number {
    const i = this.regionIndexOrThrow(gpa, 1);
    return this.views[i].getUint8(gpa - this.regions[i].gpa);
  }
  readU16(gpa: number): number {
    const i = this.regionIndexOrThrow(gpa, 2);
    return this.views[i].getUint16(gpa - this.regions[i].gpa, true);
  }
  readU32(gpa: number): number {
    const i = this.regionIndexOrThrow(gpa, 4);
    return this.views[i].getUint32(gpa - this.regions[i].gpa, true);
  }
  readU64(gpa: number): bigint {
    const i = this.regionIndexOrThrow(gpa, 8);
    return this.views[i].getBigUint64(gpa - this.regions[i].gpa, true);
  }
  writeU8(gpa: number, value: number): void {
    checkUint(value, 8, 'GuestMemory.writeU8');
    const i = this.regionIndexOrThrow(gpa, 1);
    this.views[i].setUint8(gpa - this.regions[i].gpa, value);
  }
  writeU16(gpa: number, value: number): void {
    checkUint(value, 16, 'GuestMemory.writeU16');
    const i = this.regionIndexOrThrow(gpa, 2);
    this.views[i].setUint16(gpa - this.regions[i].gpa, value, true);
  }
  writeU32(gpa: number, value: number): void {
    checkUint(value, 32, 'GuestMemory.writeU32');
    const i = this.regionIndexOrThrow(gpa, 4);
    this.views[i].setUint32(gpa - this.regions[i].gpa, value, true);
  }
  writeU64(gpa: number, value: bigint): void {
    checkU64(value, 'GuestMemory.writeU64');
    const i = this.regionIndexOrThrow(gpa, 8);
    this.views[i].setBigUint64(gpa - this.regions[i].gpa, value, true);
  }

  /** Copies guest bytes at `gpa` into `target`. The range may span RAM regions, not holes. */
  read(gpa: number, target: Uint8Array): void {
    checkBytes(target, 'GuestMemory.read target');
    // The common case, one region: no segment list (this is on every packet's path).
    const i = isAddressLike(gpa) ? this.findRegionIndex(gpa, target.length) : -1;
    if (i >= 0) {
      const r = this.regions[i];
      target.set(r.bytes.subarray(gpa - r.gpa, gpa - r.gpa + target.length));
      return;
    }
    this.forEachSegment(gpa, target.length, (bytes, done) => target.set(bytes, done));
  }

  /** Copies `source` into guest memory at `gpa`. The range may span RAM regions, not holes. */
  write(gpa: number, source: Uint8Array): void {
    checkBytes(source, 'GuestMemory.write source');
    const i = isAddressLike(gpa) ? this.findRegionIndex(gpa, source.length) : -1;
    if (i >= 0) {
      const r = this.regions[i];
      r.bytes.set(source, gpa - r.gpa);
      return;
    }
    this.forEachSegment(gpa, source.length, (bytes, done) => bytes.set(source.subarray(done, done + bytes.length)));
  }

  /** Splits a GPA range into per-region host views, checking all of it before touching any. */
  private forEachSegment(gpa: number, length: number, fn: (bytes: Uint8Array, done: number) => void): void {
    if (!isAddressLike(gpa)) throw badAddress('GPA', gpa);
    const segments: Uint8Array[] = [];
    let at = gpa;
    let left = length;
    while (left > 0) {
      const i = this.findRegionIndex(at, 1);
      if (i < 0) throw this.missError(gpa, length, `GPA range [0x${safeHex(gpa)}, +${length}) is not guest RAM`);
      const r = this.regions[i];
      const chunk = Math.min(left, r.end - at);
      segments.push(r.bytes.subarray(at - r.gpa, at - r.gpa + chunk));
      at += chunk;
      left -= chunk;
    }
    let done = 0;
    for (const s of segments) {
      fn(s, done);
      done += s.length;
    }
  }

  /**
   * The simulated side of a discard (ballooning): every (gpa, size) pair of `pairs` becomes
   * zero. All pairs are checked first (each inside one RAM region); if one is not, nothing is
   * zeroed (GuestMemoryError, or HostUsageError for a value that is no address). Returns the
   * bytes zeroed. Partitions release the host memory too (memoryControl.discardRanges).
   */
  zeroRanges(pairs: Float64Array): number {
    if (!(pairs instanceof Float64Array) || pairs.length % 2 !== 0) {
      throw new HostUsageError('GuestMemory.zeroRanges takes a Float64Array of (gpa, size) pairs');
    }
    const views: Uint8Array[] = [];
    let total = 0;
    for (let i = 0; i < pairs.length; i += 2) {
      const { region, offset } = this.locate(pairs[i], pairs[i + 1]);
      views.push(region.bytes.subarray(offset, offset + pairs[i + 1]));
      total += pairs[i + 1];
    }
    for (const v of views) v.fill(0);
    return total;
  }

  /** A zero-copy view of `[gpa, gpa+length)`, which must lie in one RAM region. */
  bytes(gpa: number, length: number): Uint8Array {
    const { region, offset } = this.locate(gpa, length);
    return region.bytes.subarray(offset, offset + length);
  }

  /**
   * A zero-copy Uint32Array over `[gpa, gpa+4*count)`, for Atomics on shared structures (ring
   * control pages, SynIC pages). `gpa` must be 4-byte aligned.
   */
  u32Array(gpa: number, count: number): Uint32Array {
    if (!isAddressLike(gpa)) throw badAddress('GPA', gpa);
    if (!isAddressLike(count)) throw badAddress('count', count);
    if (gpa % 4 !== 0) throw new GuestMemoryError(`GPA 0x${safeHex(gpa)} is not 4-byte aligned`, gpa, count * 4);
    const { region, offset } = this.locate(gpa, count * 4);
    return new Uint32Array(region.bytes.buffer, region.bytes.byteOffset + offset, count);
  }

  /** A contiguous GPA range as a GuestBuffer (zero-copy). */
  range(gpa: number, length: number): GuestBuffer {
    return new FlatGuestBuffer(this.bytes(gpa, length));
  }

  /** Host view of one guest page, by PFN. */
  page(pfn: number): Uint8Array {
    if (!Number.isSafeInteger(pfn) || pfn < 0) {
      throw new GuestMemoryError(`PFN ${String(pfn)} is not a valid page number`, NaN, PAGE_SIZE);
    }
    return this.bytes(pfn * PAGE_SIZE, PAGE_SIZE);
  }

  /**
   * A GPADL-style buffer: `length` bytes starting `byteOffset` into the first of `pfns`, running
   * through the listed pages in order. Every page is checked against the RAM map before the
   * buffer is made; pages that are consecutive in guest RAM (and so in host memory) are served
   * by one flat view, the fast path.
   */
  pageList(pfns: ArrayLike<number>, byteOffset: number, length: number): GuestBuffer {
    if (!Number.isInteger(byteOffset) || byteOffset < 0 || byteOffset >= PAGE_SIZE) {
      throw new GuestMemoryError(`page-list byte offset ${byteOffset} is outside the first page`, NaN, length);
    }
    if (!Number.isInteger(length) || length < 0) {
      throw new GuestMemoryError(`page-list length ${length} is invalid`, NaN, length);
    }
    const needed = Math.ceil((byteOffset + length) / PAGE_SIZE);
    if (needed > pfns.length) {
      throw new GuestMemoryError(`page list of ${pfns.length} pages cannot hold ${byteOffset}+${length} bytes`, NaN, length);
    }
    if (needed === 0) return new FlatGuestBuffer(new Uint8Array(0));
    // The fast path first (a run of pages checked as one range): no view per page.
    if (this.isHostContiguous(pfns, needed)) {
      const start = pfns[0] * PAGE_SIZE + byteOffset;
      return new FlatGuestBuffer(this.bytes(start, length));
    }
    const pages: Uint8Array[] = [];
    for (let i = 0; i < needed; i++) pages.push(this.page(pfns[i]));
    return new PagedGuestBuffer(pages, byteOffset, length);
  }

  /** True when the first `count` PFNs are valid, consecutive and inside one region. */
  private isHostContiguous(pfns: ArrayLike<number>, count: number): boolean {
    const first = pfns[0];
    if (!Number.isSafeInteger(first) || first < 0) return false;
    for (let i = 1; i < count; i++) if (pfns[i] !== first + i) return false;
    return this.contains(first * PAGE_SIZE, count * PAGE_SIZE);
  }
}

function safeHex(n: number): string {
  return Number.isFinite(n) ? Math.trunc(n).toString(16) : String(n);
}
