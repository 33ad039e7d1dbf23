/**
 * A ring in a small simulated guest memory, with both ends attached and signals counted.
 * The data area can be flat (contiguous pages) or scattered (pages in reverse order in
 * guest RAM, starting mid-page), so both GuestBuffer paths are exercised.
 */
import { GuestMemory, PAGE_SIZE } from '@hvemu/memory';
import { RingBuffer } from '../ring/ring-buffer.js';
import { RingReader } from '../ring/reader.js';
import { RingWriter } from '../ring/writer.js';
import type { Logger } from '@hvemu/common';

export interface RingGeometry {
  /** Bytes in the data area: a multiple of 8, >= 32. */
  dataSize: number;
  /** Initial read = write index: an 8-aligned offset below dataSize (tests wrap at every offset). */
  startIndex: number;
  /** Data pages scattered in guest RAM (PagedGuestBuffer) instead of contiguous (FlatGuestBuffer). */
  scattered: boolean;
  /** Byte offset of the data area in its first page (multiple of 8). */
  dataOffset: number;
  /** feat_pending_send_sz in the control page. */
  pendingSendFeature: boolean;
}

export interface TestRing {
  memory: GuestMemory;
  ring: RingBuffer;
  writer: RingWriter;
  reader: RingReader;
  /** Signals raised by the writer to the reader ("data available"). */
  readonly signalsToReader: number;
  /** Signals raised by the reader to the writer ("space available"). */
  readonly signalsToWriter: number;
  /** GPA of the first guard page after the ring (filled with GUARD_BYTE; must never change). */
  guardGpa: number;
  guardLength: number;
}

export const GUARD_BYTE = 0xa5;

export const DEFAULT_GEOMETRY: RingGeometry = {
  dataSize: 4096,
  startIndex: 0,
  scattered: false,
  dataOffset: 0,
  pendingSendFeature: true,
};

/** Builds the memory, control page, data area and both ends for `geometry`. */
export function createTestRing(geometry: Partial<RingGeometry> = {}, logger?: Logger): TestRing {
  const g = { ...DEFAULT_GEOMETRY, ...geometry };
  const dataPages = Math.ceil((g.dataOffset + g.dataSize) / PAGE_SIZE);
  // Layout: page 0 guard, page 1 control, pages 2.. data, then a guard page.
  const totalPages = 2 + dataPages + 1;
  const memory = GuestMemory.createShared(totalPages * PAGE_SIZE);
  const all = memory.bytes(0, totalPages * PAGE_SIZE);
  all.fill(GUARD_BYTE);
  const controlGpa = PAGE_SIZE;
  memory.bytes(controlGpa, PAGE_SIZE).fill(0);
  const pfns = Array.from({ length: dataPages }, (_, i) => 2 + i);
  if (g.scattered) pfns.reverse();
  for (const pfn of pfns) memory.bytes(pfn * PAGE_SIZE, PAGE_SIZE).fill(0);
  const data = memory.pageList(pfns, g.dataOffset, g.dataSize);
  const ring = new RingBuffer(memory.u32Array(controlGpa, PAGE_SIZE / 4), data);
  ring.initialize({ pendingSendSize: g.pendingSendFeature, startIndex: g.startIndex });
  // Re-fill the unused tail/head of the data pages with guard bytes, so an access outside the
  // data area (but inside its pages) is detected too.
  fillOutsideDataArea(memory, pfns, g.dataOffset, g.dataSize);
  const counters = { toReader: 0, toWriter: 0 };
  const writer = new RingWriter(ring, { signal: () => counters.toReader++, logger, name: 'test writer' });
  const reader = new RingReader(ring, { signal: () => counters.toWriter++, logger, name: 'test reader' });
  return {
    memory,
    ring,
    writer,
    reader,
    get signalsToReader() {
      return counters.toReader;
    },
    get signalsToWriter() {
      return counters.toWriter;
    },
    guardGpa: (2 + dataPages) * PAGE_SIZE,
    guardLength: PAGE_SIZE,
  };
}

function fillOutsideDataArea(memory: GuestMemory, pfns: number[], offset: number, size: number): void {
  const end = offset + size;
  pfns.forEach((pfn, i) => {
    const page = memory.bytes(pfn * PAGE_SIZE, PAGE_SIZE);
    const pageStart = i * PAGE_SIZE;
    const lo = Math.max(0, offset - pageStart);
    const hi = Math.min(PAGE_SIZE, end - pageStart);
    if (lo > 0) page.fill(GUARD_BYTE, 0, Math.min(lo, PAGE_SIZE));
    if (hi < PAGE_SIZE) page.fill(GUARD_BYTE, Math.max(hi, 0));
  });
}

/**
 * True when no byte outside the ring (guard pages, the parts of data pages outside the data
 * area, page 0) has changed: the ring never wrote outside its memory.
 */
export function guardsIntact(t: TestRing, geometry: Partial<RingGeometry> = {}): boolean {
  const g = { ...DEFAULT_GEOMETRY, ...geometry };
  const check = (bytes: Uint8Array): boolean => bytes.every((b) => b === GUARD_BYTE);
  if (!check(t.memory.bytes(0, PAGE_SIZE))) return false;
  if (!check(t.memory.bytes(t.guardGpa, t.guardLength))) return false;
  const dataPages = Math.ceil((g.dataOffset + g.dataSize) / PAGE_SIZE);
  const pfns = Array.from({ length: dataPages }, (_, i) => 2 + i);
  if (g.scattered) pfns.reverse();
  const end = g.dataOffset + g.dataSize;
  for (let i = 0; i < pfns.length; i++) {
    const page = t.memory.bytes(pfns[i] * PAGE_SIZE, PAGE_SIZE);
    const lo = Math.max(0, g.dataOffset - i * PAGE_SIZE);
    const hi = Math.min(PAGE_SIZE, end - i * PAGE_SIZE);
    if (!check(page.subarray(0, Math.min(lo, PAGE_SIZE)))) return false;
    if (hi < PAGE_SIZE && !check(page.subarray(Math.max(hi, 0)))) return false;
  }
  return true;
}
