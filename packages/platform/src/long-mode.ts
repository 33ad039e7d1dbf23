/**
 * Puts a partition's vCPUs straight into 64-bit long mode, the way a firmware-less loader
 * does: identity-mapped page tables for the low 4 GiB (2 MiB pages), a GDT with 64-bit code,
 * data and a TSS, and per-vCPU registers (RIP = entry, RSP = own stack, RDI = vCPU index).
 *
 * Low-memory layout it owns (the image must not overlap it):
 *   0x1000 PML4, 0x2000 PDPT, 0x3000-0x6fff four page directories,
 *   0x7000 GDT, 0x7100 TSS, stacks: 16 KiB per vCPU growing down from 0x80000.
 */
import type { GuestMemory } from '@hvemu/memory';
import { AccelUsageError, registersWith, type AccelPartition, type AccelVcpu, type Segment, type SpecialRegisters } from '@hvemu/accel';
import { checkPartitionLike } from './platform.js';

/** What the loader needs: RAM, and vCPUs whose registers it sets; `makeRunnable` where APs must be released (KVM). */
export interface LoadablePartition {
  readonly memory: AccelPartition['memory'];
  readonly vcpus: readonly (AccelVcpu & { makeRunnable?(): void })[];
}

export const PML4_GPA = 0x1000;
const PDPT_GPA = 0x2000;
const PD_GPA = 0x3000;
export const GDT_GPA = 0x7000;
const TSS_GPA = 0x7100;
const STACK_TOP = 0x80000;
const STACK_SIZE = 0x4000;
export const LOADER_RESERVED_END = STACK_TOP;
export const MAX_LOADER_VCPUS = (STACK_TOP - 0x8000) / STACK_SIZE;

export const SELECTOR_CODE64 = 0x08;
export const SELECTOR_DATA = 0x10;
export const SELECTOR_TSS = 0x18;

const PTE_PRESENT = 1n;
const PTE_WRITE = 2n;
const PTE_LARGE = 0x80n;
const PTE_PCD = 0x10n; // uncached: the 3-4 GiB window is MMIO (LAPIC, IOAPIC, device BARs)

const CR0_PE = 1n;
const CR0_MP = 2n;
const CR0_ET = 0x10n;
const CR0_NE = 0x20n;
const CR0_WP = 0x10000n;
const CR0_PG = 0x80000000n;
const CR4_PAE = 0x20n;
const CR4_OSFXSR = 0x200n;
const CR4_OSXMMEXCPT = 0x400n;
const EFER_SCE = 1n;
const EFER_LME = 0x100n;
const EFER_LMA = 0x400n;
const EFER_NXE = 0x800n;

/** Writes page tables, GDT and TSS into guest memory. */
export function writeLongModeTables(memory: GuestMemory): void {
  if (memory === null || typeof memory !== 'object' || typeof memory.contains !== 'function') {
    throw new AccelUsageError('writeLongModeTables: memory must be a GuestMemory');
  }
  if (!memory.contains(0, LOADER_RESERVED_END)) {
    throw new AccelUsageError(`long-mode loader needs guest RAM at [0, 0x${LOADER_RESERVED_END.toString(16)})`);
  }
  writeIdentityPageTables(memory);
  writeGdtAndTss(memory);
}

/** The pages [0x1000, 0x7000) the identity map occupies (PML4, PDPT, four page directories). */
export const PAGE_TABLES_END = 0x7000;

/**
 * Writes the identity map of the low 4 GiB at [0x1000, 0x7000): 2 MiB pages, writable, the
 * 3-4 GiB window uncached; CR3 = PML4_GPA. The Linux loader uses it with its own GDT.
 */
export function writeIdentityPageTables(memory: GuestMemory): void {
  if (memory === null || typeof memory !== 'object' || typeof memory.contains !== 'function') {
    throw new AccelUsageError('writeIdentityPageTables: memory must be a GuestMemory');
  }
  if (!memory.contains(PML4_GPA, PAGE_TABLES_END - PML4_GPA)) {
    throw new AccelUsageError(`the identity map needs guest RAM at [0x${PML4_GPA.toString(16)}, 0x${PAGE_TABLES_END.toString(16)})`);
  }
  memory.bytes(PML4_GPA, PAGE_TABLES_END - PML4_GPA).fill(0);
  memory.writeU64(PML4_GPA, BigInt(PDPT_GPA) | PTE_PRESENT | PTE_WRITE);
  for (let gib = 0; gib < 4; gib++) {
    const pd = PD_GPA + gib * 0x1000;
    memory.writeU64(PDPT_GPA + gib * 8, BigInt(pd) | PTE_PRESENT | PTE_WRITE);
    for (let i = 0; i < 512; i++) {
      const phys = BigInt(gib) * 0x40000000n + BigInt(i) * 0x200000n;
      const flags = PTE_PRESENT | PTE_WRITE | PTE_LARGE | (gib === 3 ? PTE_PCD : 0n);
      memory.writeU64(pd + i * 8, phys | flags);
    }
  }
}

function writeGdtAndTss(memory: GuestMemory): void {
  // GDT: null, 64-bit code, flat data, then the 16-byte TSS descriptor.
  memory.writeU64(GDT_GPA, 0n);
  memory.writeU64(GDT_GPA + SELECTOR_CODE64, 0x00af9a000000ffffn);
  memory.writeU64(GDT_GPA + SELECTOR_DATA, 0x00cf92000000ffffn);
  const tssLimit = 0x67n;
  const base = BigInt(TSS_GPA);
  const low = tssLimit | ((base & 0xffffffn) << 16n) | (0x89n << 40n) | (((base >> 24n) & 0xffn) << 56n);
  memory.writeU64(GDT_GPA + SELECTOR_TSS, low);
  memory.writeU64(GDT_GPA + SELECTOR_TSS + 8, base >> 32n);
  memory.bytes(TSS_GPA, 0x68).fill(0);
  // I/O map base beyond the limit: no I/O permission bitmap.
  memory.writeU16(TSS_GPA + 0x66, 0x68);
}

function segment(selector: number, type: number, code: boolean, s = true): Segment {
  return {
    base: 0n,
    limit: 0xffffffff,
    selector,
    type,
    present: true,
    dpl: 0,
    db: !code,
    s,
    l: code,
    g: true,
    avl: false,
    unusable: false,
  };
}

/** Special registers for 64-bit long mode over the tables above. */
export function longModeSpecialRegisters(current: SpecialRegisters): SpecialRegisters {
  const data = segment(SELECTOR_DATA, 0x3, false);
  return {
    ...current,
    cs: segment(SELECTOR_CODE64, 0xb, true),
    ds: data,
    es: data,
    fs: data,
    gs: data,
    ss: data,
    tr: busyTss(BigInt(TSS_GPA), SELECTOR_TSS),
    ldt: { ...current.ldt, selector: 0, type: 0x2, present: true, unusable: false, s: false },
    gdt: { base: BigInt(GDT_GPA), limit: 8 * 5 - 1 },
    idt: { base: 0n, limit: 0 },
    cr0: CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG,
    cr3: BigInt(PML4_GPA),
    cr4: CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT,
    efer: EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE,
  };
}

/**
 * Loads tables and starts state for `vps` (default: every vCPU): each enters `entry` in long
 * mode with RDI = its index and its own stack. Application processors are made runnable.
 */
export function enterLongMode(partition: LoadablePartition, entry: number, vps?: readonly number[]): void {
  checkPartitionLike(partition, 'enterLongMode');
  vps ??= partition.vcpus.map((v) => v.index);
  if (!Number.isSafeInteger(entry) || entry < 0)
    throw new AccelUsageError(`enterLongMode: entry must be a non-negative integer address, not ${String(entry)}`);
  if (!Array.isArray(vps)) throw new AccelUsageError('enterLongMode: vps must be an array of vCPU indices');
  if (vps.length > MAX_LOADER_VCPUS) throw new AccelUsageError(`the loader supports at most ${MAX_LOADER_VCPUS} vCPUs`);
  for (const vp of vps) {
    if (typeof vp !== 'number' || !Number.isInteger(vp) || !partition.vcpus[vp])
      throw new AccelUsageError(`enterLongMode: no vCPU ${String(vp)}`);
  }
  writeLongModeTables(partition.memory);
  for (const vp of vps) {
    const vcpu = partition.vcpus[vp];
    vcpu.setSpecialRegisters(longModeSpecialRegisters(vcpu.getSpecialRegisters()));
    const regs = registersWith({
      rdi: BigInt(vp),
      rsp: BigInt(STACK_TOP - vp * STACK_SIZE - 8), // -8: the ABI's call alignment at entry
      rip: BigInt(entry),
    });
    vcpu.setRegisters(regs);
    if (vp !== 0) vcpu.makeRunnable?.();
  }
}

/** A busy 64-bit TSS descriptor of 104 bytes (the minimum; VM entry wants a valid TR). */
export function busyTss(base: bigint, selector: number): Segment {
  return {
    base,
    limit: 0x67,
    selector,
    type: 0xb,
    present: true,
    dpl: 0,
    db: false,
    s: false,
    l: false,
    g: false,
    avl: false,
    unusable: false,
  };
}
