/**
 * GPADL assembly: a GPADL_HEADER announces `range_buflen` bytes of gpa_range records (each a
 * {byte_count, byte_offset} header and its PFNs); the header carries the first part and
 * GPADL_BODY messages the rest. Pure functions over plain data, used by the server core.
 */
import { PAGE_SIZE } from '@hvemu/memory';
import { GPADL_BODY_MAX_PFNS } from '../protocol/constants.js';

/** PFNs above this would put the GPA past 2^52, beyond any guest RAM hvemu models. */
const MAX_PFN = 2 ** 40;

/** One range of a GPADL: `byteCount` bytes from `byteOffset` into its first page. */
export interface GpadlRange {
  readonly byteCount: number;
  readonly byteOffset: number;
  readonly pfns: readonly number[];
}

/** A GPADL being received: the range buffer fills up over the header and bodies. */
export interface GpadlAssembly {
  readonly handle: number;
  readonly relid: number;
  readonly rangecount: number;
  readonly buffer: Uint8Array;
  received: number;
}

/** What the server checks a page against: only "is this page guest RAM". */
export interface GuestRamMap {
  contains(gpa: number, length: number): boolean;
}

export interface GpadlLimits {
  /** Ranges per GPADL. */
  maxRanges: number;
  /** Pages per GPADL. */
  maxPages: number;
}

/** Decodes and validates a complete range buffer. Returns the ranges or the reason it is refused. */
export function decodeGpadlRanges(buffer: Uint8Array, rangecount: number, ram: GuestRamMap, limits: GpadlLimits): GpadlRange[] | string {
  if (rangecount === 0) return 'rangecount is 0';
  if (rangecount > limits.maxRanges) return `rangecount ${rangecount} exceeds the limit of ${limits.maxRanges}`;
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  const ranges: GpadlRange[] = [];
  let at = 0;
  let pages = 0;
  for (let r = 0; r < rangecount; r++) {
    if (at + 8 > buffer.length) return `range ${r} header lies past range_buflen`;
    const byteCount = view.getUint32(at, true);
    const byteOffset = view.getUint32(at + 4, true);
    at += 8;
    if (byteCount === 0) return `range ${r} is empty`;
    if (byteOffset >= PAGE_SIZE) return `range ${r} byte_offset ${byteOffset} is outside its first page`;
    const count = Math.ceil((byteOffset + byteCount) / PAGE_SIZE);
    pages += count;
    if (pages > limits.maxPages) return `more than ${limits.maxPages} pages`;
    if (at + 8 * count > buffer.length) return `range ${r} needs ${count} PFNs past range_buflen`;
    const pfns: number[] = new Array(count);
    for (let i = 0; i < count; i++, at += 8) {
      const low = view.getUint32(at, true);
      const high = view.getUint32(at + 4, true);
      const pfn = high * 2 ** 32 + low;
      if (pfn >= MAX_PFN) return `PFN 0x${pfn.toString(16)} is beyond any guest-physical address`;
      if (!ram.contains(pfn * PAGE_SIZE, PAGE_SIZE)) return `PFN 0x${pfn.toString(16)} is not guest RAM`;
      pfns[i] = pfn;
    }
    ranges.push({ byteCount, byteOffset, pfns });
  }
  if (at !== buffer.length) return `${buffer.length - at} bytes of range_buflen left over after ${rangecount} ranges`;
  return ranges;
}

/** The range buffer size Linux would announce for `pageCount` pages in one range. */
export function rangeBufferLength(pageCount: number): number {
  return 8 + 8 * pageCount;
}

/** Messages a GPADL of `pageCount` one-range pages takes (header + bodies), as Linux splits it. */
export function gpadlMessageCount(pageCount: number, headerPfns: number): number {
  return 1 + Math.ceil(Math.max(0, pageCount - headerPfns) / GPADL_BODY_MAX_PFNS);
}

/** Total pages of a GPADL. */
export function gpadlPageCount(ranges: readonly GpadlRange[]): number {
  let n = 0;
  for (const r of ranges) n += r.pfns.length;
  return n;
}
