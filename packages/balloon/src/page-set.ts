/**
 * The ballooned pages: one bit per guest PFN below a limit that grows with the RAM map (a
 * guest of 4 GiB costs 128 KiB). Ranges are tested and set a word at a time, so a 2 MiB range
 * (Linux's allocation unit) is 16 word operations. Unballoon takes runs back out in PFN order.
 */
import { HostUsageError } from '@hvemu/common';

const FULL = 0xffff_ffff;

export class PageSet {
  private words: Uint32Array;
  private total = 0;

  constructor(pfnLimit = 0) {
    this.words = new Uint32Array(Math.ceil(pfnLimit / 32));
  }

  /** Pages in the set. */
  get size(): number {
    return this.total;
  }

  /** PFNs below this are tracked. */
  get limit(): number {
    return this.words.length * 32;
  }

  /** Tracks PFNs up to `pfnLimit` (never shrinks). */
  grow(pfnLimit: number): void {
    const n = Math.ceil(pfnLimit / 32);
    if (n <= this.words.length) return;
    const next = new Uint32Array(n);
    next.set(this.words);
    this.words = next;
  }

  clear(): void {
    this.words.fill(0);
    this.total = 0;
  }

  /** True when no page of [start, start + count) is in the set (false past the limit). */
  noneIn(start: number, count: number): boolean {
    if (start + count > this.limit) return false;
    let ok = true;
    this.forWords(start, count, (i, mask) => {
      if ((this.words[i] & mask) !== 0) ok = false;
      return ok;
    });
    return ok;
  }

  /** True when every page of [start, start + count) is in the set. */
  allIn(start: number, count: number): boolean {
    if (start + count > this.limit) return false;
    let ok = true;
    this.forWords(start, count, (i, mask) => {
      if ((this.words[i] & mask) >>> 0 !== mask >>> 0) ok = false;
      return ok;
    });
    return ok;
  }

  /** Adds [start, start + count), none of which may be in the set (HostUsageError otherwise, nothing added). */
  add(start: number, count: number): void {
    if (!this.noneIn(start, count)) throw new HostUsageError(`pages ${start}+${count} are in the set already or past its limit`);
    this.addChecked(start, count);
  }

  /**
   * Adds [start, start + count) if none of it is in the set (and it is below the limit), in one
   * pass; false (nothing added) otherwise.
   */
  tryAdd(start: number, count: number): boolean {
    if (!this.noneIn(start, count)) return false;
    this.addChecked(start, count);
    return true;
  }

  private addChecked(start: number, count: number): void {
    this.forWords(start, count, (i, mask) => {
      this.words[i] |= mask;
      return true;
    });
    this.total += count;
  }

  /** Removes [start, start + count), all of which must be in the set. */
  remove(start: number, count: number): void {
    if (!this.allIn(start, count)) throw new HostUsageError(`pages ${start}+${count} are not all in the set`);
    this.forWords(start, count, (i, mask) => {
      this.words[i] &= ~mask;
      return true;
    });
    this.total -= count;
  }

  /**
   * Takes up to `pages` pages out of the set as runs in PFN order, each at most `maxRun` long,
   * at most `maxRuns` of them: (startPage, pageCount) pairs.
   */
  take(pages: number, maxRuns: number, maxRun: number): number[] {
    const out: number[] = [];
    let left = Math.min(pages, this.total);
    for (let pfn = 0; left > 0 && out.length < 2 * maxRuns && pfn < this.limit;) {
      if ((pfn & 31) === 0 && this.words[pfn >>> 5] === 0) {
        pfn += 32;
        continue;
      }
      if (!this.has(pfn)) {
        pfn++;
        continue;
      }
      let n = 1;
      while (n < left && n < maxRun && this.has(pfn + n)) n++;
      out.push(pfn, n);
      this.remove(pfn, n);
      left -= n;
      pfn += n;
    }
    return out;
  }

  /** The set as (startPage, pageCount) runs in PFN order (tests, state). */
  runs(): number[] {
    const out: number[] = [];
    let start = -1;
    for (let pfn = 0; pfn < this.limit; pfn++) {
      if ((pfn & 31) === 0 && start < 0 && this.words[pfn >>> 5] === 0) {
        pfn += 31;
        continue;
      }
      const inSet = this.has(pfn);
      if (inSet && start < 0) start = pfn;
      if (!inSet && start >= 0) {
        out.push(start, pfn - start);
        start = -1;
      }
    }
    if (start >= 0) out.push(start, this.limit - start);
    return out;
  }

  has(pfn: number): boolean {
    return pfn < this.limit && (this.words[pfn >>> 5] & (1 << (pfn & 31))) !== 0;
  }

  /** Calls `fn(wordIndex, mask)` for each word [start, start + count) touches; stops when it returns false. */
  private forWords(start: number, count: number, fn: (i: number, mask: number) => boolean): void {
    let pfn = start;
    const end = start + count;
    while (pfn < end) {
      const i = Math.floor(pfn / 32);
      const bit = pfn - i * 32;
      const n = Math.min(32 - bit, end - pfn);
      const mask = n === 32 ? FULL : (((1 << n) - 1) << bit) >>> 0;
      if (!fn(i, mask | 0)) return;
      pfn += n;
    }
  }
}
