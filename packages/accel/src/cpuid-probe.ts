/**
 * What CPUID a guest really sees, measured. KVM_SET_CPUID2 is a request: KVMs of this project's
 * kind honour the hypervisor leaves and pass host values through for many basic ones (an AMD
 * EPYC host showed POPCNT, MOVBE, XSAVE and AVX whatever the model said; KVM-NOTES.md). A VMM
 * that boots Linux must know, since the kernel then patches in instructions the emulator cannot
 * run. So: a throwaway one-vCPU partition with the same model runs a few hundred bytes of
 * real-mode code that executes CPUID for every programmed (leaf, subleaf) and stores the four
 * registers, and the readings are compared with what was programmed.
 */
import type { Logger } from '@hvemu/common';
import type { CpuidEntry } from './cpuid.js';
import { AccelUsageError } from './errors.js';
import { KvmPartition, type KvmPartitionOptions } from './backends/kvm/partition.js';
import type { AccelPartition } from './backends/types.js';

export type CpuidRegister = 'eax' | 'ebx' | 'ecx' | 'edx';
const REGISTERS: readonly CpuidRegister[] = ['eax', 'ebx', 'ecx', 'edx'];

export interface CpuidDifference {
  readonly function: number;
  readonly index: number;
  readonly register: CpuidRegister;
  readonly programmed: number;
  readonly seen: number;
  /** Bits the guest sees set although the model cleared them. */
  readonly addedBits: number;
  /** Bits the model set that the guest does not see. */
  readonly removedBits: number;
}

export interface CpuidProbeResult {
  /** vCPU 0's list as hvemu programmed it. */
  readonly programmed: readonly CpuidEntry[];
  /** The same (leaf, subleaf) pairs as the guest read them. */
  readonly seen: readonly CpuidEntry[];
  /** Every register that differs. */
  readonly differences: readonly CpuidDifference[];
}

export type CpuidProbeOptions = Pick<KvmPartitionOptions, 'hypervisorLeaves' | 'customizeCpuid'>;

/** Guest layout: code at CODE, one 16-byte record per probed leaf at RESULTS, RAM below 64 KiB. */
const CODE = 0x1000;
const RESULTS = 0x8000;
const RAM_SIZE = 0x10000;
const DONE_PORT = 0xe9;
const MAX_LEAVES = (RAM_SIZE - RESULTS) / 16;

/**
 * Real-mode code: for each leaf `mov eax, fn; mov ecx, index; cpuid;` then store EAX, EBX, ECX,
 * EDX at its record (32-bit operands by the 0x66 prefix, 16-bit absolute addresses); finally an
 * OUT to DONE_PORT, which stops the vCPU.
 */
export function cpuidProbeCode(leaves: readonly { function: number; index: number }[]): Uint8Array {
  if (leaves.length > MAX_LEAVES) throw new AccelUsageError(`a CPUID probe takes at most ${MAX_LEAVES} leaves, not ${leaves.length}`);
  const out: number[] = [];
  const u16 = (v: number): number[] => [v & 0xff, (v >>> 8) & 0xff];
  const u32 = (v: number): number[] => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];
  leaves.forEach((leaf, i) => {
    const at = RESULTS + i * 16;
    out.push(0x66, 0xb8, ...u32(leaf.function)); // mov eax, imm32
    out.push(0x66, 0xb9, ...u32(leaf.index)); // mov ecx, imm32
    out.push(0x0f, 0xa2); // cpuid
    out.push(0x66, 0xa3, ...u16(at)); // mov [at], eax
    out.push(0x66, 0x89, 0x1e, ...u16(at + 4)); // mov [at+4], ebx
    out.push(0x66, 0x89, 0x0e, ...u16(at + 8)); // mov [at+8], ecx
    out.push(0x66, 0x89, 0x16, ...u16(at + 12)); // mov [at+12], edx
  });
  out.push(0xe6, DONE_PORT); // out DONE_PORT, al
  out.push(0xf4, 0xeb, 0xfd); // hlt; jmp back to hlt (never reached: the OUT stops the vCPU)
  return Uint8Array.from(out);
}

/** Runs the probe on a throwaway KVM partition (milliseconds; no effect on other partitions). */
export async function probeGuestCpuid(options: CpuidProbeOptions = {}): Promise<CpuidProbeResult> {
  let programmed: CpuidEntry[] = [];
  const partition = KvmPartition.create({
    vcpuCount: 1,
    memory: [{ gpa: 0, size: RAM_SIZE }],
    hypervisorLeaves: options.hypervisorLeaves,
    customizeCpuid: (entries, vp) => {
      const list = options.customizeCpuid ? options.customizeCpuid(entries, vp) : entries;
      if (vp === 0) programmed = list.map((e) => ({ ...e }));
      return list;
    },
  });
  try {
    const leaves = programmed.slice(0, MAX_LEAVES);
    partition.memory.write(CODE, cpuidProbeCode(leaves));
    enterFlatRealMode(partition, CODE);
    partition.addIoDevice({ port: DONE_PORT, count: 1, write: () => ({ stop: true }) });
    await partition.run([0]);
    const seen = leaves.map((leaf, i): CpuidEntry => {
      const at = RESULTS + i * 16;
      const m = partition.memory;
      return { ...leaf, eax: m.readU32(at), ebx: m.readU32(at + 4), ecx: m.readU32(at + 8), edx: m.readU32(at + 12) };
    });
    return { programmed: leaves, seen, differences: compareCpuid(leaves, seen) };
  } finally {
    partition.close();
  }
}

/** Flat real mode at `rip` on vCPU 0: CS, DS, ES, SS based at 0 (tiny probes and test guests). */
export function enterFlatRealMode(partition: Pick<AccelPartition, 'vcpus'>, rip: number): void {
  const vcpu = partition.vcpus[0];
  const sregs = vcpu.getSpecialRegisters();
  for (const name of ['cs', 'ds', 'es', 'ss'] as const) sregs[name] = { ...sregs[name], base: 0n, selector: 0 };
  vcpu.setSpecialRegisters(sregs);
  vcpu.setRegisters({ ...vcpu.getRegisters(), rip: BigInt(rip), rsp: 0x7000n, rflags: 2n });
}

/** Register-by-register differences between what was programmed and what was read. */
export function compareCpuid(programmed: readonly CpuidEntry[], seen: readonly CpuidEntry[]): CpuidDifference[] {
  const out: CpuidDifference[] = [];
  programmed.forEach((p, i) => {
    const s = seen[i];
    for (const register of REGISTERS) {
      if (p[register] >>> 0 === s[register] >>> 0) continue;
      out.push({
        function: p.function,
        index: p.index,
        register,
        programmed: p[register] >>> 0,
        seen: s[register] >>> 0,
        addedBits: (s[register] & ~p[register]) >>> 0,
        removedBits: (p[register] & ~s[register]) >>> 0,
      });
    }
  });
  return out;
}

/** Feature bits whose presence matters to a kernel on an instruction-emulating KVM (KVM-NOTES.md). */
const NAMED_BITS: Record<string, Record<number, string>> = {
  '1.ecx': {
    0: 'SSE3',
    9: 'SSSE3',
    12: 'FMA',
    19: 'SSE4.1',
    20: 'SSE4.2',
    22: 'MOVBE',
    23: 'POPCNT',
    26: 'XSAVE',
    27: 'OSXSAVE',
    28: 'AVX',
    29: 'F16C',
    30: 'RDRAND',
  },
  '7.ebx': { 0: 'FSGSBASE', 3: 'BMI1', 5: 'AVX2', 7: 'SMEP', 8: 'BMI2', 16: 'AVX512F', 18: 'RDSEED', 19: 'ADX', 20: 'SMAP' },
};

function bitNames(d: CpuidDifference, bits: number): string {
  const names = NAMED_BITS[`${d.function.toString(16)}.${d.register}`] ?? {};
  const list: string[] = [];
  for (let b = 0; b < 32; b++) if ((bits >>> b) & 1) list.push(names[b] ? `${b} (${names[b]})` : String(b));
  return list.join(', ');
}

/** One line per difference, for logs: `leaf 0x1.0 ecx: 0x80202001 programmed, 0xf6f83203 seen (+bits 23 (POPCNT), ...)`. */
export function describeCpuidDifferences(differences: readonly CpuidDifference[]): string[] {
  return differences.map((d) => {
    const parts = [
      `leaf 0x${d.function.toString(16)}.${d.index} ${d.register}: 0x${d.programmed.toString(16)} programmed, 0x${d.seen.toString(16)} seen`,
    ];
    if (d.addedBits) parts.push(`+bits ${bitNames(d, d.addedBits)}`);
    if (d.removedBits) parts.push(`-bits ${bitNames(d, d.removedBits)}`);
    return parts.join('; ');
  });
}

/** Logs a warning naming each register the guest sees differently from the model; returns the count. */
export function warnCpuidDifferences(result: CpuidProbeResult, logger: Logger): number {
  const lines = describeCpuidDifferences(result.differences);
  if (lines.length > 0) {
    logger.warn(`this KVM does not honour ${lines.length} CPUID register(s) of hvemu's model; the guest sees host values there`, {
      differences: lines,
    });
  }
  return lines.length;
}
