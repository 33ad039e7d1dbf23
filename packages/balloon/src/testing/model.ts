/**
 * A guest's page allocator, as a model: every page of the guest's pool is free, in use, or in
 * the balloon (given to the host). The TypeScript hv_balloon client allocates balloon pages
 * from it the way Linux does (2 MiB runs, aligned, then single pages) and frees what the host
 * gives back. Each page the guest owns carries a stamp in guest memory, so a host that released
 * (zeroed) a page the guest still owns is caught; the model also records a host that gave back
 * a page that was not in the balloon.
 */
import type { GuestMemory } from '@hvemu/memory';

export const FREE = 0;
export const USED = 1;
export const BALLOONED = 2;
const NOT_POOL = 255;
const PAGE = 4096;

export class GuestPageModel {
  private state: Uint8Array;
  private base: number;
  private counts = [0, 0, 0];
  /** Host actions the guest would have crashed on: a page given back that was not in the balloon. */
  readonly violations: string[] = [];

  /** The pool is [firstPfn, firstPfn + pageCount) (more comes with hot add). */
  constructor(
    private readonly memory: GuestMemory | null,
    firstPfn: number,
    pageCount: number,
  ) {
    this.base = firstPfn;
    this.state = new Uint8Array(pageCount);
    this.counts[FREE] = pageCount;
    for (let i = 0; i < pageCount; i++) this.stamp(firstPfn + i);
  }

  get free(): number {
    return this.counts[FREE];
  }
  get used(): number {
    return this.counts[USED];
  }
  get ballooned(): number {
    return this.counts[BALLOONED];
  }
  get poolPages(): number {
    return this.counts[FREE] + this.counts[USED] + this.counts[BALLOONED];
  }

  stateOf(pfn: number): number {
    const i = pfn - this.base;
    return i >= 0 && i < this.state.length ? this.state[i] : NOT_POOL;
  }

  /**
   * Takes `pages` free pages into use (the guest's own allocations), lowest first, every
   * `stride`-th page per pass (a stride > 1 fragments what stays free). Returns how many.
   */
  use(pages: number, stride = 1): number {
    let n = 0;
    for (let phase = 0; phase < stride && n < pages; phase++) {
      for (let i = phase; i < this.state.length && n < pages; i += stride) {
        if (this.state[i] === FREE) {
          this.set(i, USED);
          n++;
        }
      }
    }
    return n;
  }

  /** Frees up to `pages` pages in use, highest first. */
  unuse(pages: number): number {
    let n = 0;
    for (let i = this.state.length - 1; i >= 0 && n < pages; i--) {
      if (this.state[i] === USED) {
        this.set(i, FREE);
        n++;
      }
    }
    return n;
  }

  /**
   * Allocates up to `pages` for the balloon, `unit` pages at a time (aligned runs), falling back
   * to single pages, keeping `floor` pages free. Returns (startPage, pageCount) runs.
   */
  allocBalloon(pages: number, unit: number, floor = 0): number[] {
    const out: number[] = [];
    let want = Math.min(pages, Math.max(0, this.counts[FREE] - floor));
    if (unit > 1) {
      for (let i = 0; i + unit <= this.state.length && want >= unit; i += unit) {
        if ((this.base + i) % unit !== 0) continue;
        let ok = true;
        for (let j = 0; j < unit && ok; j++) ok = this.state[i + j] === FREE;
        if (!ok) continue;
        for (let j = 0; j < unit; j++) this.set(i + j, BALLOONED);
        out.push(this.base + i, unit);
        want -= unit;
      }
    }
    for (let i = 0; i < this.state.length && want > 0; i++) {
      if (this.state[i] !== FREE) continue;
      this.set(i, BALLOONED);
      want--;
      // Coalesce with the previous run when adjacent (Linux sends one range per allocation; so do we for 4 KiB ones).
      out.push(this.base + i, 1);
    }
    return out;
  }

  /** The host gave back [start, start + count): each page must be in the balloon. */
  giveBack(start: number, count: number): void {
    for (let pfn = start; pfn < start + count; pfn++) {
      const i = pfn - this.base;
      if (i < 0 || i >= this.state.length || this.state[i] !== BALLOONED) {
        this.violations.push(
          `page ${pfn} given back while ${i < 0 || i >= this.state.length ? 'outside the pool' : stateName(this.state[i])}`,
        );
        continue;
      }
      this.set(i, FREE);
      this.stamp(pfn);
    }
  }

  /** Hot add: [start, start + count) joins the pool, free. Returns pages added (0 if it overlaps the pool). */
  addPages(start: number, count: number): number {
    if (count <= 0) return 0;
    const end = start + count;
    const oldEnd = this.base + this.state.length;
    if (start < oldEnd && end > this.base) return 0;
    const newBase = Math.min(this.base, start);
    const newEnd = Math.max(oldEnd, end);
    const next = new Uint8Array(newEnd - newBase).fill(NOT_POOL);
    next.set(this.state, this.base - newBase);
    this.state = next;
    this.base = newBase;
    for (let pfn = start; pfn < end; pfn++) {
      this.state[pfn - this.base] = FREE;
      this.stamp(pfn);
    }
    this.counts[FREE] += count;
    return count;
  }

  /** The balloon as (startPage, pageCount) runs in PFN order. */
  balloonRuns(): number[] {
    const out: number[] = [];
    let start = -1;
    for (let i = 0; i <= this.state.length; i++) {
      const b = i < this.state.length && this.state[i] === BALLOONED;
      if (b && start < 0) start = i;
      if (!b && start >= 0) {
        out.push(this.base + start, i - start);
        start = -1;
      }
    }
    return out;
  }

  /** Pages the guest owns (free or in use) whose stamp is gone: the host released them. */
  lostPages(): number[] {
    if (!this.memory) return [];
    const lost: number[] = [];
    const word = new Uint8Array(4);
    for (let i = 0; i < this.state.length; i++) {
      if (this.state[i] !== FREE && this.state[i] !== USED) continue;
      const pfn = this.base + i;
      this.memory.read(pfn * PAGE, word);
      if (new DataView(word.buffer).getUint32(0, true) !== stampOf(pfn)) lost.push(pfn);
    }
    return lost;
  }

  private set(i: number, s: number): void {
    this.counts[this.state[i]]--;
    this.counts[s]++;
    this.state[i] = s;
  }

  private stamp(pfn: number): void {
    if (!this.memory) return;
    const w = new Uint8Array(4);
    new DataView(w.buffer).setUint32(0, stampOf(pfn), true);
    this.memory.write(pfn * PAGE, w);
  }
}

function stampOf(pfn: number): number {
  return ((pfn ^ 0x5a5a_a5a5) | 1) >>> 0;
}

function stateName(s: number): string {
  return s === FREE ? 'free' : s === USED ? 'in use' : s === BALLOONED ? 'ballooned' : 'not in the pool';
}
