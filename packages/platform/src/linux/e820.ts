/**
 * The e820 memory map a Linux loader hands over (boot_params.e820_table, or the PVH memmap):
 * every RAM region of the partition as type 1 (E820_TYPE_RAM), minus the ranges the caller
 * declares with another type (ACPI tables as 3, ACPI NVS as 4, reserved as 2), which are listed
 * with that type whether or not they lie in RAM (a reserved MMIO window is fine).
 */
import type { GuestMemory } from '@hvemu/memory';
import { LinuxBootError } from './errors.js';
import { E820_TYPE_RAM } from './structs.js';

export interface E820Entry {
  readonly addr: number;
  readonly size: number;
  readonly type: number;
}

/** A range the map must show with `type` (not RAM). */
export interface E820Range {
  readonly gpa: number;
  readonly size: number;
  /** e820 type: 2 reserved, 3 ACPI, 4 ACPI NVS, 5 unusable, 7 PMEM (not 1: RAM comes from the memory). */
  readonly type: number;
}

/** The largest address a range may end at (the map is 64-bit, but GPAs here are JS numbers). */
const MAX_GPA = Number.MAX_SAFE_INTEGER;

function checkRange(r: unknown, i: number): E820Range {
  const v = r as Partial<E820Range> | null;
  const bad = (why: string): never => {
    throw new LinuxBootError(`e820: reserved range ${i} ${why}`);
  };
  if (v === null || typeof v !== 'object') return bad('must be an object {gpa, size, type}');
  const { gpa, size, type } = v;
  if (!Number.isSafeInteger(gpa) || (gpa as number) < 0) bad(`gpa must be a non-negative integer, not ${String(gpa)}`);
  if (!Number.isSafeInteger(size) || (size as number) <= 0) bad(`size must be a positive integer, not ${String(size)}`);
  if ((gpa as number) + (size as number) > MAX_GPA) bad('ends past the largest supported address');
  if (!Number.isInteger(type) || (type as number) < 2 || (type as number) > 0xffffffff)
    bad(`type must be an e820 type other than RAM (2..), not ${String(type)}`);
  return { gpa: gpa as number, size: size as number, type: type as number };
}

/**
 * Builds the map, sorted by address: RAM regions with the declared ranges cut out, plus the
 * declared ranges. Declared ranges must not overlap each other.
 */
export function buildE820Map(memory: GuestMemory, reserved: readonly E820Range[] = []): E820Entry[] {
  if (memory === null || typeof memory !== 'object' || !Array.isArray(memory.regions))
    throw new LinuxBootError('buildE820Map: memory must be a GuestMemory');
  if (!Array.isArray(reserved)) throw new LinuxBootError('buildE820Map: reserved must be an array of {gpa, size, type}');
  const declared = reserved.map(checkRange).sort((a, b) => a.gpa - b.gpa);
  for (let i = 1; i < declared.length; i++) {
    const prev = declared[i - 1];
    if (declared[i].gpa < prev.gpa + prev.size)
      throw new LinuxBootError(`e820: reserved ranges overlap at 0x${declared[i].gpa.toString(16)}`);
  }
  const out: E820Entry[] = declared.map((r) => ({ addr: r.gpa, size: r.size, type: r.type }));
  for (const region of memory.regions) {
    // Walk the region, skipping every declared range that intersects it.
    let at = region.gpa;
    const end = region.gpa + region.size;
    for (const r of declared) {
      if (r.gpa + r.size <= at || r.gpa >= end) continue;
      if (r.gpa > at) out.push({ addr: at, size: r.gpa - at, type: E820_TYPE_RAM });
      at = Math.max(at, r.gpa + r.size);
    }
    if (at < end) out.push({ addr: at, size: end - at, type: E820_TYPE_RAM });
  }
  return out.sort((a, b) => a.addr - b.addr);
}
