/**
 * Argument checks at the accel API edge. Every public entry point checks what it is given
 * before it sizes, loops over or hands anything to a backend: a wrong type, NaN, a negative,
 * non-integer or absurd value is an AccelUsageError naming the argument, never a TypeError
 * from deep inside, a silently truncated value, or a native call with garbage.
 */
import { MAX_GPA } from '@hvemu/memory';
import { AccelUsageError } from './errors.js';
import { REG_NAMES, type Registers, type SpecialRegisters } from './registers.js';
import type { CpuidEntry } from './cpuid.js';

/** Guest-physical addresses are JS numbers below GuestMemory's MAX_GPA (2^52). */
export { MAX_GPA };
export const U32_MAX = 0xffffffff;
const U64_MAX = (1n << 64n) - 1n;
const I64_MIN = -(1n << 63n);

/** A value for an error message: short, and safe for any type. */
export function describeValue(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v);
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'function') return 'a function';
  if (typeof v === 'symbol') return 'a symbol';
  if (Array.isArray(v)) return 'an array';
  if (v !== null && typeof v === 'object') return 'an object';
  return String(v);
}

function fail(what: string, expected: string, v: unknown): never {
  throw new AccelUsageError(`${what} must be ${expected}, not ${describeValue(v)}`);
}

/** A plain object (not null, not an array). */
export function checkObject(v: unknown, what: string): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(what, 'an object', v);
  return v as Record<string, unknown>;
}

/** An integer Number in [min, max]. */
export function checkInt(v: unknown, what: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    fail(what, `an integer in ${min}..${max >= 2 ** 32 ? `0x${max.toString(16)}` : max}`, v);
  }
  return v;
}

/** An optional integer: `fallback` when undefined. */
export function optInt(v: unknown, what: string, min: number, max: number, fallback: number): number {
  return v === undefined ? fallback : checkInt(v, what, min, max);
}

/** A finite Number in [min, max]. */
export function checkFinite(v: unknown, what: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) fail(what, `a finite number in ${min}..${max}`, v);
  return v;
}

export function optBool(v: unknown, what: string): boolean | undefined {
  if (v !== undefined && typeof v !== 'boolean') fail(what, 'a boolean', v);
  return v;
}

export function optFunction(v: unknown, what: string): void {
  if (v !== undefined && typeof v !== 'function') fail(what, 'a function', v);
}

export function checkFunction(v: unknown, what: string): void {
  if (typeof v !== 'function') fail(what, 'a function', v);
}

/** An array of at most `maxLength` elements (checked before anything iterates it). */
export function checkArray(v: unknown, what: string, maxLength: number): readonly unknown[] {
  if (!Array.isArray(v)) fail(what, 'an array', v);
  if (v.length > maxLength) throw new AccelUsageError(`${what} has ${v.length} entries; at most ${maxLength}`);
  return v;
}

/** A 64-bit register value: a bigint in -(2^63)..2^64-1 (negatives are two's complement). */
export function checkU64(v: unknown, what: string): bigint {
  if (typeof v !== 'bigint' || v < I64_MIN || v > U64_MAX) fail(what, 'a bigint in -(2^63)..2^64-1', v);
  return v;
}

/** A register bag with every general register a bigint. */
export function checkRegisters(v: unknown, what = 'registers'): Registers {
  const o = checkObject(v, what);
  for (const name of REG_NAMES) checkU64(o[name], `${what}.${name}`);
  return v as Registers;
}

const SEGMENTS = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'] as const;
const CONTROL = ['cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer', 'apicBase'] as const;
const SEGMENT_FLAGS = ['present', 'db', 's', 'l', 'g', 'avl', 'unusable'] as const;

/** Special registers with every field present and in its field's range. */
export function checkSpecialRegisters(v: unknown, what = 'special registers'): SpecialRegisters {
  const o = checkObject(v, what);
  for (const name of SEGMENTS) {
    const s = checkObject(o[name], `${what}.${name}`);
    checkU64(s['base'], `${what}.${name}.base`);
    checkInt(s['limit'], `${what}.${name}.limit`, 0, U32_MAX);
    checkInt(s['selector'], `${what}.${name}.selector`, 0, 0xffff);
    checkInt(s['type'], `${what}.${name}.type`, 0, 15);
    checkInt(s['dpl'], `${what}.${name}.dpl`, 0, 3);
    for (const f of SEGMENT_FLAGS) {
      if (typeof s[f] !== 'boolean') fail(`${what}.${name}.${f}`, 'a boolean', s[f]);
    }
  }
  for (const name of ['gdt', 'idt'] as const) {
    const t = checkObject(o[name], `${what}.${name}`);
    checkU64(t['base'], `${what}.${name}.base`);
    checkInt(t['limit'], `${what}.${name}.limit`, 0, 0xffff);
  }
  for (const name of CONTROL) checkU64(o[name], `${what}.${name}`);
  return v as SpecialRegisters;
}

/** CPUID entries: u32 fields, at most `max` entries. */
export function checkCpuidEntries(v: unknown, what: string, max = 1024): readonly CpuidEntry[] {
  const list = checkArray(v, what, max);
  list.forEach((e, i) => {
    const o = checkObject(e, `${what}[${i}]`);
    for (const f of ['function', 'index', 'flags', 'eax', 'ebx', 'ecx', 'edx'] as const) checkInt(o[f], `${what}[${i}].${f}`, 0, U32_MAX);
  });
  return v as readonly CpuidEntry[];
}

/**
 * A RAM map: a non-empty array of {gpa, size} with page-granular safe integers below 2^52.
 * Alignment, overlaps and holes are the backend's to judge (MemoryMapError); this is the shape.
 */
export function checkMemoryMap(v: unknown, what = 'memory', maxRegions = 1024): readonly { gpa: number; size: number }[] {
  const list = checkArray(v, what, maxRegions);
  list.forEach((r, i) => {
    const o = checkObject(r, `${what}[${i}]`);
    const gpa = checkInt(o['gpa'], `${what}[${i}].gpa`, 0, MAX_GPA - 1);
    checkInt(o['size'], `${what}[${i}].size`, 0, MAX_GPA - gpa);
  });
  return v as readonly { gpa: number; size: number }[];
}

/** Options every backend's create() takes: memory, vcpuCount, userMsrs, logger. */
export function checkCommonOptions(v: unknown, what: string, maxVcpus: number): Record<string, unknown> {
  if (v === undefined) throw new AccelUsageError(`${what}: options are required (at least { memory: [{ gpa, size }] })`);
  const o = checkObject(v, `${what}: options`);
  checkMemoryMap(o['memory'], `${what}: options.memory`);
  optInt(o['vcpuCount'], `${what}: options.vcpuCount`, 1, maxVcpus, 1);
  if (o['userMsrs'] !== undefined) {
    checkArray(o['userMsrs'], `${what}: options.userMsrs`, 1024).forEach((m, i) =>
      checkInt(m, `${what}: options.userMsrs[${i}]`, 0, U32_MAX),
    );
  }
  if (o['logger'] !== undefined) checkObject(o['logger'], `${what}: options.logger`);
  return o;
}

/**
 * Node 20 makes no typed array (and Node-API no external buffer) beyond 2^32 bytes, and every
 * backend views guest RAM through one per host buffer: a larger RAM region is mapped as
 * several adjacent pieces of at most this size (one GuestMemory region each).
 */
export const MAX_RAM_CHUNK = 2 ** 32;

/** The pieces of a RAM region, each at most MAX_RAM_CHUNK bytes, by offset into the region. */
export function ramChunks(region: { size: number }): { offset: number; size: number }[] {
  const out: { offset: number; size: number }[] = [];
  for (let offset = 0; offset < region.size; offset += MAX_RAM_CHUNK)
    out.push({ offset, size: Math.min(MAX_RAM_CHUNK, region.size - offset) });
  return out;
}

/** An optional array of u32 values (MSR indices, CPUID leaves). */
export function optU32List(v: unknown, what: string, max = 1024): void {
  if (v === undefined) return;
  checkArray(v, what, max).forEach((x, i) => checkInt(x, `${what}[${i}]`, 0, U32_MAX));
}

/** An optional array of names, each a key of `known`. */
export function optNames(v: unknown, what: string, known: object): void {
  if (v === undefined) return;
  checkArray(v, what, 256).forEach((x, i) => {
    if (typeof x !== 'string' || !Object.hasOwn(known, x))
      throw new AccelUsageError(`${what}[${i}] ${describeValue(x)} is not one of ${Object.keys(known).join(', ')}`);
  });
}
