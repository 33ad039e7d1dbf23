/**
 * CPUID programming. KVM offers what the host and its emulator can do; hvemu shows guests a
 * small, old CPU model instead (KVM-NOTES: this KVM's instruction emulator lacks XSAVE state
 * handling, AVX-512, clac/stac, popcnt, ...), with x2APIC on, and the hypervisor leaves
 * (0x40000000-0x400000FF) replaced by the caller's.
 */
import { AccelUsageError } from './errors.js';

export interface CpuidEntry {
  function: number;
  index: number;
  /** KVM_CPUID_FLAG_SIGNIFCANT_INDEX (1) when `index` selects a subleaf. */
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

export const CPUID_FLAG_SIGNIFICANT_INDEX = 1;
const WORDS = 7;

export function decodeCpuid(words: Uint32Array): CpuidEntry[] {
  const out: CpuidEntry[] = [];
  for (let i = 0; i + WORDS <= words.length; i += WORDS) {
    out.push({
      function: words[i],
      index: words[i + 1],
      flags: words[i + 2],
      eax: words[i + 3],
      ebx: words[i + 4],
      ecx: words[i + 5],
      edx: words[i + 6],
    });
  }
  return out;
}

export function encodeCpuid(entries: readonly CpuidEntry[]): Uint32Array {
  const w = new Uint32Array(entries.length * WORDS);
  entries.forEach((e, i) =>
    w.set(
      [e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx].map((x) => x >>> 0),
      i * WORDS,
    ),
  );
  return w;
}

const bits = (...n: number[]): number => n.reduce((m, b) => (m | (1 << b)) >>> 0, 0);

/** Leaf 1 ECX: SSE3, CX16 (kvm64); x2APIC and "hypervisor present" are forced on. */
const LEAF1_ECX_KEEP = bits(0, 13);
const LEAF1_ECX_FORCE = bits(21, 31);
/** Leaf 1 EDX: the x86-64 baseline (FPU..SSE2, no HTT/PBE/...). */
const LEAF1_EDX_KEEP = bits(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 19, 23, 24, 25, 26);
/** Leaf 0x80000001 ECX: LAHF/SAHF in long mode. EDX: SYSCALL, NX, LM, and AMD's copies of leaf 1 bits. */
const EXT1_ECX_KEEP = bits(0);
const EXT1_EDX_KEEP = (bits(11, 20, 29) | (LEAF1_EDX_KEEP & 0x0183f3ff)) >>> 0;

/** Leaves kept (with masking below); every other leaf is dropped and reads as zeros. */
const KEPT_LEAVES = new Set([
  0x0, 0x1, 0x2, 0x4, 0x7, 0xb, 0x1f, 0x80000000, 0x80000001, 0x80000002, 0x80000003, 0x80000004, 0x80000005, 0x80000006, 0x80000007,
  0x80000008,
]);

export const HYPERVISOR_LEAF_FIRST = 0x40000000;
export const HYPERVISOR_LEAF_LAST = 0x400000ff;

export interface CpuidModelOptions {
  /** This vCPU's APIC id (CPUID.1:EBX[31:24], CPUID.0xB/0x1F:EDX). */
  apicId: number;
  /** Replaces every 0x40000000-0x400000FF leaf the hypervisor reported. */
  hypervisorLeaves?: readonly CpuidEntry[];
  /** A last say over the finished list (widen a feature a test proved works, add leaves). */
  customize?: (entries: CpuidEntry[]) => CpuidEntry[];
}

function isHypervisorLeaf(fn: number): boolean {
  return fn >= HYPERVISOR_LEAF_FIRST && fn <= HYPERVISOR_LEAF_LAST;
}

function conservative(e: CpuidEntry, apicId: number): CpuidEntry | undefined {
  const r = { ...e };
  switch (e.function) {
    case 0x1:
      r.ecx = ((e.ecx & LEAF1_ECX_KEEP) | LEAF1_ECX_FORCE) >>> 0;
      r.edx = (e.edx & LEAF1_EDX_KEEP) >>> 0;
      r.ebx = ((e.ebx & 0x00ffffff) | ((apicId & 0xff) << 24)) >>> 0;
      return r;
    case 0x7:
      // No structured extended features at all (SMAP, SMEP, AVX2, BMI, FSGSBASE, ...).
      return e.index === 0 ? { ...r, eax: 0, ebx: 0, ecx: 0, edx: 0 } : undefined;
    case 0xb:
    case 0x1f:
      r.edx = apicId >>> 0;
      return r;
    case 0x80000001:
      r.ecx = (e.ecx & EXT1_ECX_KEEP) >>> 0;
      r.edx = (e.edx & EXT1_EDX_KEEP) >>> 0;
      return r;
    case 0x80000008:
      r.ebx = 0; // AMD speculation-control and misc feature bits
      return r;
    default:
      return r;
  }
}

/**
 * The CPUID list for one vCPU: the conservative model over what the hypervisor supports,
 * with the hypervisor leaves replaced (never appended: KVM ignores a duplicate leaf).
 */
export function buildCpuidModel(supported: readonly CpuidEntry[], opts: CpuidModelOptions): CpuidEntry[] {
  if (!Array.isArray(supported)) throw new AccelUsageError('buildCpuidModel: supported must be an array of CPUID entries');
  if (opts === null || typeof opts !== 'object' || !Number.isInteger(opts.apicId) || opts.apicId < 0 || opts.apicId > 0xffffffff) {
    throw new AccelUsageError(`buildCpuidModel: opts.apicId must be an integer APIC id, not ${String(opts?.apicId)}`);
  }
  if (opts.hypervisorLeaves !== undefined && !Array.isArray(opts.hypervisorLeaves))
    throw new AccelUsageError('buildCpuidModel: opts.hypervisorLeaves must be an array');
  const out: CpuidEntry[] = [];
  for (const e of supported) {
    if (isHypervisorLeaf(e.function) || !KEPT_LEAVES.has(e.function)) continue;
    const m = conservative(e, opts.apicId);
    if (m) out.push(m);
  }
  for (const h of opts.hypervisorLeaves ?? []) {
    if (!isHypervisorLeaf(h.function)) {
      throw new AccelUsageError(`hypervisor leaf 0x${h.function.toString(16)} is outside 0x40000000-0x400000ff`);
    }
    out.push({ ...h });
  }
  return opts.customize ? opts.customize(out) : out;
}

/** Encodes a 12-byte vendor string the way CPUID returns it in EBX, ECX, EDX. */
export function vendorWords(vendor: string): [number, number, number] {
  if (typeof vendor !== 'string') throw new AccelUsageError(`vendor must be a string, not ${vendor === null ? 'null' : typeof vendor}`);
  const bytes = new TextEncoder().encode(vendor.padEnd(12, '\0').slice(0, 12));
  if (bytes.length !== 12) throw new AccelUsageError('vendor string must be 12 ASCII characters or fewer');
  const v = new DataView(bytes.buffer);
  return [v.getUint32(0, true), v.getUint32(4, true), v.getUint32(8, true)];
}

/** The hypervisor vendor leaf 0x40000000: max leaf in EAX, vendor in EBX:ECX:EDX. */
export function hypervisorVendorLeaf(vendor: string, maxLeaf: number): CpuidEntry {
  const [ebx, ecx, edx] = vendorWords(vendor);
  return { function: HYPERVISOR_LEAF_FIRST, index: 0, flags: 0, eax: maxLeaf >>> 0, ebx, ecx, edx };
}
