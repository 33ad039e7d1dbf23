/**
 * Loads an unmodified Linux x86-64 kernel into a partition and sets vCPU 0 at its entry:
 *
 * - an uncompressed ELF64 `vmlinux` with a PVH note: PT_LOAD segments at their physical
 *   addresses, `hvm_start_info` in EBX, 32-bit protected mode with paging off at the note's
 *   entry (pvh_start_xen, arch/x86/platform/pvh/head.S). No decompressor runs in the guest.
 * - a bzImage: the protected-mode kernel at 1 MiB, a zero page (`boot_params`) in RSI, 64-bit
 *   mode with identity-mapped page tables at load address + 0x200 (startup_64 of the
 *   decompressor; Documentation/arch/x86/boot.rst, "64-bit Boot Protocol").
 *
 * The kind is detected from the file (`parseLinuxKernel`). Everything is checked before the
 * first write, and every write goes through GuestMemory, so a hostile file ends in a
 * LinuxBootError, not in a write outside guest RAM.
 *
 * Low-memory layout it owns (RAM must cover it; the kernel, initrd and reserved ranges must not
 * overlap it):
 *   0x1000-0x6fff identity page tables (4 GiB, 2 MiB pages; bzImage only)
 *   0x7000 GDT (0x10 __BOOT_CS, 0x18 __BOOT_DS, 0x20 TSS), 0x7100 TSS
 *   0x8000 hvm_start_info, 0x8040 hvm_modlist_entry, 0x8080 memmap (PVH)
 *   0x9000 boot_params (bzImage)
 *   0x20000 command line (at most 4095 bytes and NUL)
 * The kernel zeroes nothing of it that it still needs: it copies the zero page, start_info and
 * command line early, so this area may stay RAM in the e820 map.
 */
import type { GuestMemory } from '@hvemu/memory';
import { registersWith, type Segment, type SpecialRegisters } from '@hvemu/accel';
import { LinuxBootError } from './errors.js';
import { buildE820Map, type E820Entry, type E820Range } from './e820.js';
import { parseLinuxKernel, type BzImageKernel, type LinuxKernel, type PvhKernel } from './image.js';
import {
  BOOT_E820_ENTRY,
  BOOT_PARAMS,
  E820_MAX_ENTRIES_ZEROPAGE,
  HVM_MEMMAP_TABLE_ENTRY,
  HVM_MODLIST_ENTRY,
  HVM_START_INFO,
  KASLR_FLAG,
  SETUP_HEADER,
  XEN_HVM_START_MAGIC_VALUE,
} from './structs.js';
import { busyTss, PML4_GPA, writeIdentityPageTables, type LoadablePartition } from '../long-mode.js';

export const LINUX_GDT_GPA = 0x7000;
export const LINUX_TSS_GPA = 0x7100;
export const PVH_START_INFO_GPA = 0x8000;
export const PVH_MODLIST_GPA = 0x8040;
export const PVH_MEMMAP_GPA = 0x8080;
export const BOOT_PARAMS_GPA = 0x9000;
export const LINUX_CMDLINE_GPA = 0x20000;
/** The command line area holds at most this many bytes plus the terminating NUL. */
export const LINUX_CMDLINE_MAX = 0xfff;
/** End of the loader's low-memory area. */
export const LINUX_LOADER_END = LINUX_CMDLINE_GPA + LINUX_CMDLINE_MAX + 1;
/** Where the bzImage protected-mode kernel goes (the protocol's traditional code32_start). */
export const BZIMAGE_LOAD_GPA = 0x100000;
/** startup_64 is 0x200 bytes into the protected-mode kernel. */
export const STARTUP_64_OFFSET = 0x200;
/** Boot GDT selectors: __BOOT_CS and __BOOT_DS of boot.rst, and a TSS. */
export const BOOT_CS = 0x10;
export const BOOT_DS = 0x18;
export const BOOT_TSS = 0x20;
/** type_of_loader for a boot loader without an assigned ID. */
export const LOADER_TYPE_UNDEFINED = 0xff;

const FOUR_GIB = 0x1_0000_0000;
const PAGE = 0x1000;
/** The PVH memmap area holds as many entries as the zero page's e820_table. */
const MAX_E820_ENTRIES = E820_MAX_ENTRIES_ZEROPAGE;

export interface LinuxBootOptions {
  /** Kernel command line (ASCII/UTF-8, no NUL); default empty. */
  readonly commandLine?: string;
  /** initrd/initramfs bytes; placed page-aligned at the top of RAM below 4 GiB (and initrd_addr_max). */
  readonly initrd?: Uint8Array;
  /** GPA of the ACPI RSDP, passed as rsdp_paddr (PVH) or acpi_rsdp_addr (bzImage). */
  readonly acpiRsdp?: number;
  /** Non-RAM ranges for the e820 map (ACPI tables as 3, NVS as 4, reserved as 2). */
  readonly reserved?: readonly E820Range[];
}

export interface LinuxBoot {
  readonly kind: LinuxKernel['kind'];
  /** The entry RIP: the PVH note's value, or load address + 0x200. */
  readonly entry: number;
  /** hvm_start_info (PVH, in EBX) or boot_params (bzImage, in RSI). */
  readonly bootInfoGpa: number;
  readonly commandLineGpa: number;
  /** Physical bytes the kernel occupies: PT_LOAD segments, or the bzImage's load and decompression range. */
  readonly kernel: { readonly low: number; readonly high: number };
  readonly initrd?: { readonly gpa: number; readonly size: number };
  readonly e820: readonly E820Entry[];
}

interface Range {
  start: number;
  end: number;
}

const overlaps = (a: Range, b: Range): boolean => a.start < b.end && b.start < a.end;
const hex = (n: number): string => `0x${n.toString(16)}`;

function checkOptions(opts: unknown): LinuxBootOptions {
  if (opts === null || typeof opts !== 'object') throw new LinuxBootError('loadLinux: options must be an object');
  const o = opts as LinuxBootOptions;
  if (o.commandLine !== undefined && typeof o.commandLine !== 'string') throw new LinuxBootError('loadLinux: commandLine must be a string');
  if (o.initrd !== undefined && !(o.initrd instanceof Uint8Array)) throw new LinuxBootError('loadLinux: initrd must be a Uint8Array');
  if (o.acpiRsdp !== undefined && (!Number.isSafeInteger(o.acpiRsdp) || o.acpiRsdp <= 0))
    throw new LinuxBootError(`loadLinux: acpiRsdp must be a positive GPA, not ${String(o.acpiRsdp)}`);
  return o;
}

function encodeCommandLine(text: string, limit: number): Uint8Array {
  const bytes = new TextEncoder().encode(text);
  if (bytes.includes(0)) throw new LinuxBootError('loadLinux: the command line must not contain NUL');
  if (bytes.length > limit) throw new LinuxBootError(`loadLinux: command line is ${bytes.length} bytes, the kernel takes at most ${limit}`);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/**
 * Picks the highest page-aligned place for `size` bytes in RAM that ends at or below `limit`
 * and overlaps none of `blocked`.
 */
function placeHigh(memory: GuestMemory, size: number, limit: number, blocked: readonly Range[]): number | undefined {
  const regions = [...memory.regions].sort((a, b) => b.gpa - a.gpa);
  for (const r of regions) {
    let top = Math.min(r.gpa + r.size, limit);
    for (;;) {
      const start = Math.floor((top - size) / PAGE) * PAGE;
      if (start < r.gpa) break;
      const hit = blocked.find((b) => overlaps(b, { start, end: start + size }));
      if (!hit) return start;
      top = hit.start;
    }
  }
  return undefined;
}

interface Plan {
  kernel: LinuxKernel;
  commandLine: Uint8Array;
  e820: E820Entry[];
  initrd?: { gpa: number; size: number };
  kernelRanges: Range[];
  entry: number;
}

/** Checks the whole request against the memory and works out where everything goes. Writes nothing. */
function plan(memory: GuestMemory, image: Uint8Array, opts: LinuxBootOptions): Plan {
  const kernel = parseLinuxKernel(image);
  if (!memory.contains(0, LINUX_LOADER_END))
    throw new LinuxBootError(`the Linux loader needs guest RAM at [0, ${hex(LINUX_LOADER_END)}) for its tables and the command line`);
  const loaderArea: Range = { start: 0, end: LINUX_LOADER_END };
  const reserved = opts.reserved ?? [];
  const e820 = buildE820Map(memory, reserved);
  // PVH: init_pvh_bootparams (arch/x86/platform/pvh/enlighten.c) copies the memmap into the
  // zero page's e820_table unchecked and then appends the ISA hole, so one slot stays free.
  const maxEntries = kernel.kind === 'pvh' ? MAX_E820_ENTRIES - 1 : MAX_E820_ENTRIES;
  if (e820.length > maxEntries) throw new LinuxBootError(`e820 map has ${e820.length} entries, at most ${maxEntries} fit`);
  const reservedRanges = e820.filter((e) => e.type !== 1).map((e) => ({ start: e.addr, end: e.addr + e.size }));
  for (const r of reservedRanges) {
    if (overlaps(r, loaderArea))
      throw new LinuxBootError(`reserved range at ${hex(r.start)} overlaps the loader area [0, ${hex(LINUX_LOADER_END)})`);
  }

  let kernelRanges: Range[];
  let entry: number;
  let cmdlineLimit: number;
  let initrdLimit = FOUR_GIB;
  if (kernel.kind === 'pvh') {
    kernelRanges = kernel.segments.map((s) => ({ start: s.paddr, end: s.paddr + s.memsz }));
    kernel.segments.forEach((s, i) => {
      if (!memory.contains(s.paddr, s.memsz))
        throw new LinuxBootError(`vmlinux: segment ${i} [${hex(s.paddr)}, +${hex(s.memsz)}) is not in guest RAM`);
    });
    entry = kernel.entry;
    cmdlineLimit = 2047; // COMMAND_LINE_SIZE - 1 on x86
  } else {
    const h = kernel.header;
    const payload: Range = { start: BZIMAGE_LOAD_GPA, end: BZIMAGE_LOAD_GPA + kernel.payloadSize };
    // Where the decompressor runs: align_up(load address, kernel_alignment), at least
    // LOAD_PHYSICAL_ADDR (= pref_address), for init_size bytes (compressed/head_64.S).
    const align = h.relocatable_kernel !== 0 ? h.kernel_alignment : 1;
    const aligned = Math.ceil(BZIMAGE_LOAD_GPA / align) * align;
    const prefAddress = h.pref_address > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(h.pref_address);
    const runStart = h.relocatable_kernel !== 0 ? Math.max(aligned, prefAddress) : prefAddress;
    const runtime: Range = { start: runStart, end: runStart + Math.max(h.init_size, kernel.payloadSize) };
    if (!memory.contains(payload.start, payload.end - payload.start))
      throw new LinuxBootError(`bzImage: the ${kernel.payloadSize}-byte kernel does not fit in guest RAM at ${hex(BZIMAGE_LOAD_GPA)}`);
    if (!Number.isSafeInteger(runtime.end) || !memory.contains(runtime.start, runtime.end - runtime.start))
      throw new LinuxBootError(
        `bzImage: the kernel decompresses to [${hex(runtime.start)}, +${hex(h.init_size)}) (pref_address, kernel_alignment, init_size), which is not guest RAM`,
      );
    if (runtime.end > FOUR_GIB) throw new LinuxBootError('bzImage: the decompression range ends above 4 GiB, outside the identity map');
    kernelRanges = [payload, runtime];
    entry = BZIMAGE_LOAD_GPA + STARTUP_64_OFFSET;
    cmdlineLimit = h.version >= 0x0206 ? Math.min(h.cmdline_size, LINUX_CMDLINE_MAX) : 255;
    initrdLimit = Math.min(FOUR_GIB, h.initrd_addr_max + 1);
  }
  for (const k of kernelRanges) {
    if (overlaps(k, loaderArea))
      throw new LinuxBootError(`the kernel at [${hex(k.start)}, ${hex(k.end)}) overlaps the loader area [0, ${hex(LINUX_LOADER_END)})`);
    for (const r of reservedRanges) {
      if (overlaps(k, r))
        throw new LinuxBootError(`the kernel at [${hex(k.start)}, ${hex(k.end)}) overlaps the reserved range at ${hex(r.start)}`);
    }
  }
  const commandLine = encodeCommandLine(opts.commandLine ?? '', cmdlineLimit);

  let initrd: Plan['initrd'];
  if (opts.initrd !== undefined && opts.initrd.length > 0) {
    const size = opts.initrd.length;
    const gpa = placeHigh(memory, size, initrdLimit, [loaderArea, ...kernelRanges, ...reservedRanges]);
    if (gpa === undefined)
      throw new LinuxBootError(`no room for the ${size}-byte initrd in guest RAM below ${hex(initrdLimit)} beside the kernel`);
    initrd = { gpa, size };
  }
  return { kernel, commandLine, e820, initrd, kernelRanges, entry };
}

function writePvh(memory: GuestMemory, image: Uint8Array, kernel: PvhKernel, p: Plan, opts: LinuxBootOptions): number {
  for (const s of kernel.segments) {
    memory.write(s.paddr, image.subarray(s.offset, s.offset + s.filesz));
    memory.bytes(s.paddr + s.filesz, s.memsz - s.filesz).fill(0);
  }
  memory.bytes(PVH_START_INFO_GPA, BOOT_PARAMS_GPA - PVH_START_INFO_GPA).fill(0);
  p.e820.forEach((e, i) => {
    const entry = HVM_MEMMAP_TABLE_ENTRY.encodeNew({ addr: BigInt(e.addr), size: BigInt(e.size), type: e.type, reserved: 0 });
    memory.write(PVH_MEMMAP_GPA + i * HVM_MEMMAP_TABLE_ENTRY.size, entry);
  });
  if (p.initrd) {
    memory.write(PVH_MODLIST_GPA, HVM_MODLIST_ENTRY.encodeNew({ paddr: BigInt(p.initrd.gpa), size: BigInt(p.initrd.size) }));
  }
  const info = HVM_START_INFO.encodeNew({
    magic: XEN_HVM_START_MAGIC_VALUE,
    version: 1,
    flags: 0,
    nr_modules: p.initrd ? 1 : 0,
    modlist_paddr: p.initrd ? BigInt(PVH_MODLIST_GPA) : 0n,
    cmdline_paddr: BigInt(LINUX_CMDLINE_GPA),
    rsdp_paddr: BigInt(opts.acpiRsdp ?? 0),
    memmap_paddr: BigInt(PVH_MEMMAP_GPA),
    memmap_entries: p.e820.length,
  });
  memory.write(PVH_START_INFO_GPA, info);
  return PVH_START_INFO_GPA;
}

function writeBzImage(memory: GuestMemory, image: Uint8Array, kernel: BzImageKernel, p: Plan, opts: LinuxBootOptions): number {
  memory.write(BZIMAGE_LOAD_GPA, image.subarray(kernel.payloadOffset));
  // Only the setup header goes into a zeroed zero page (not the sentinel at 0x1ef).
  const hdr = SETUP_HEADER.decode(kernel.headerBytes);
  hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
  // LOADED_HIGH stays; KASLR_FLAG is the kernel's to set; CAN_USE_HEAP and heap_end_ptr concern
  // the 16-bit setup code, which a 64-bit entry skips.
  hdr.loadflags &= ~KASLR_FLAG;
  hdr.code32_start = BZIMAGE_LOAD_GPA;
  hdr.cmd_line_ptr = LINUX_CMDLINE_GPA;
  hdr.ramdisk_image = p.initrd?.gpa ?? 0;
  hdr.ramdisk_size = p.initrd?.size ?? 0;
  hdr.setup_data = 0n;
  const e820 = new Uint8Array(E820_MAX_ENTRIES_ZEROPAGE * BOOT_E820_ENTRY.size);
  p.e820.forEach((e, i) =>
    BOOT_E820_ENTRY.encode({ addr: BigInt(e.addr), size: BigInt(e.size), type: e.type }, e820, i * BOOT_E820_ENTRY.size),
  );
  const params = BOOT_PARAMS.encodeNew({
    acpi_rsdp_addr: BigInt(opts.acpiRsdp ?? 0),
    e820_entries: p.e820.length,
    e820_table: e820,
    sentinel: 0,
    hdr: SETUP_HEADER.encodeNew(hdr),
  });
  memory.write(BOOT_PARAMS_GPA, params);
  writeIdentityPageTables(memory);
  return BOOT_PARAMS_GPA;
}

/** The boot GDT: null, null, __BOOT_CS, __BOOT_DS, TSS (64-bit: 16 bytes; 32-bit: 8). */
function writeBootGdt(memory: GuestMemory, longMode: boolean): void {
  memory.bytes(LINUX_GDT_GPA, 0x100 + 0x68).fill(0);
  memory.writeU64(LINUX_GDT_GPA + BOOT_CS, longMode ? 0x00af9b000000ffffn : 0x00cf9b000000ffffn);
  memory.writeU64(LINUX_GDT_GPA + BOOT_DS, 0x00cf93000000ffffn);
  const base = BigInt(longMode ? LINUX_TSS_GPA : 0);
  // Present, busy TSS (type 0xb), limit 0x67.
  memory.writeU64(LINUX_GDT_GPA + BOOT_TSS, 0x67n | ((base & 0xffffffn) << 16n) | (0x8bn << 40n) | (((base >> 24n) & 0xffn) << 56n));
  memory.writeU16(LINUX_TSS_GPA + 0x66, 0x68); // I/O map base past the limit
}

/**
 * Loads `image` (a PVH vmlinux or a bzImage, detected from the file) with its command line,
 * initrd, e820 map and RSDP into `memory`. Returns what went where; sets no registers.
 */
export function loadLinux(memory: GuestMemory, image: Uint8Array, opts: LinuxBootOptions = {}): LinuxBoot {
  if (memory === null || typeof memory !== 'object' || typeof memory.contains !== 'function' || !Array.isArray(memory.regions))
    throw new LinuxBootError('loadLinux: memory must be a GuestMemory');
  checkOptions(opts);
  const p = plan(memory, image, opts);
  memory.bytes(LINUX_CMDLINE_GPA, LINUX_CMDLINE_MAX + 1).fill(0);
  memory.write(LINUX_CMDLINE_GPA, p.commandLine);
  if (p.initrd && opts.initrd) memory.write(p.initrd.gpa, opts.initrd);
  const kernel = p.kernel;
  const bootInfoGpa = kernel.kind === 'pvh' ? writePvh(memory, image, kernel, p, opts) : writeBzImage(memory, image, kernel, p, opts);
  writeBootGdt(memory, kernel.kind === 'bzimage');
  const low = Math.min(...p.kernelRanges.map((r) => r.start));
  const high = Math.max(...p.kernelRanges.map((r) => r.end));
  return {
    kind: kernel.kind,
    entry: p.entry,
    bootInfoGpa,
    commandLineGpa: LINUX_CMDLINE_GPA,
    kernel: { low, high },
    ...(p.initrd ? { initrd: p.initrd } : {}),
    e820: p.e820,
  };
}

function flat(selector: number, type: number, opts: { db: boolean; l: boolean }): Segment {
  return {
    base: 0n,
    limit: 0xffffffff,
    selector,
    type,
    present: true,
    dpl: 0,
    db: opts.db,
    s: true,
    l: opts.l,
    g: true,
    avl: false,
    unusable: false,
  };
}

function bootTr(base: bigint): Segment {
  return busyTss(base, BOOT_TSS);
}

const CR0_PE = 1n;
const CR0_ET = 0x10n; // read-only 1 on anything since the 486; KVM keeps it set
const CR0_PG = 0x80000000n;
const CR4_PAE = 0x20n;
const EFER_LME = 0x100n;
const EFER_LMA = 0x400n;

/**
 * The PVH entry state (arch/x86/platform/pvh/head.S, the Xen HVM direct boot ABI): 32-bit
 * protected mode, paging off, CR4 = 0, EFER = 0, flat 32-bit CS (execute/read) and DS/ES/SS
 * (read/write), TR a 32-bit TSS with base 0 and limit 0x67.
 */
export function pvhSpecialRegisters(current: SpecialRegisters): SpecialRegisters {
  const data = flat(BOOT_DS, 0x3, { db: true, l: false });
  return {
    ...current,
    cs: flat(BOOT_CS, 0xb, { db: true, l: false }),
    ds: data,
    es: data,
    fs: data,
    gs: data,
    ss: data,
    tr: bootTr(0n),
    ldt: { ...current.ldt, selector: 0, type: 0x2, present: true, unusable: false, s: false },
    gdt: { base: BigInt(LINUX_GDT_GPA), limit: BOOT_TSS + 8 - 1 },
    idt: { base: 0n, limit: 0 },
    cr0: CR0_PE | CR0_ET,
    cr3: 0n,
    cr4: 0n,
    efer: 0n,
  };
}

/**
 * The 64-bit boot protocol entry state (boot.rst): long mode with paging over the identity map,
 * CS = __BOOT_CS (0x10, 64-bit execute/read), DS/ES/SS = __BOOT_DS (0x18, read/write), flat.
 */
export function linux64SpecialRegisters(current: SpecialRegisters): SpecialRegisters {
  const data = flat(BOOT_DS, 0x3, { db: true, l: false });
  return {
    ...current,
    cs: flat(BOOT_CS, 0xb, { db: false, l: true }),
    ds: data,
    es: data,
    fs: data,
    gs: data,
    ss: data,
    tr: bootTr(BigInt(LINUX_TSS_GPA)),
    ldt: { ...current.ldt, selector: 0, type: 0x2, present: true, unusable: false, s: false },
    gdt: { base: BigInt(LINUX_GDT_GPA), limit: BOOT_TSS + 16 - 1 },
    idt: { base: 0n, limit: 0 },
    cr0: CR0_PE | CR0_ET | CR0_PG,
    cr3: BigInt(PML4_GPA),
    cr4: CR4_PAE,
    efer: EFER_LME | EFER_LMA,
  };
}

/**
 * Loads the kernel (`loadLinux`) and sets vCPU 0 at its entry: PVH with EBX = hvm_start_info,
 * or the 64-bit protocol with RSI = boot_params; RFLAGS = 2 (IF = 0). The other vCPUs are left
 * alone for the kernel's INIT/SIPI (KVM keeps APs in the uninitialized MP state).
 */
export function bootLinux(partition: LoadablePartition, image: Uint8Array, opts: LinuxBootOptions = {}): LinuxBoot {
  const p = partition as Partial<LoadablePartition> | null;
  if (p === null || typeof p !== 'object' || !p.memory || !Array.isArray(p.vcpus) || !p.vcpus[0])
    throw new LinuxBootError('bootLinux: partition must have memory and at least one vCPU');
  const boot = loadLinux(p.memory, image, opts);
  const bsp = p.vcpus[0];
  if (boot.kind === 'pvh') {
    bsp.setSpecialRegisters(pvhSpecialRegisters(bsp.getSpecialRegisters()));
    bsp.setRegisters(registersWith({ rbx: BigInt(boot.bootInfoGpa), rip: BigInt(boot.entry) }));
  } else {
    bsp.setSpecialRegisters(linux64SpecialRegisters(bsp.getSpecialRegisters()));
    bsp.setRegisters(registersWith({ rsi: BigInt(boot.bootInfoGpa), rip: BigInt(boot.entry) }));
  }
  return boot;
}
