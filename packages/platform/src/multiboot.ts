/**
 * Multiboot (v1) boot, the way kvm-unit-tests expects of QEMU (`-kernel x.flat`):
 *
 *   - the ELF image (ELF32 i386, as kvm-unit-tests' objcopy makes it, or ELF64) is loaded at
 *     its physical link address (4 MiB for kvm-unit-tests);
 *   - a multiboot information structure (memory sizes, command line, memory map) at 0x9000,
 *     where QEMU puts it;
 *   - the bootstrap processor enters in 32-bit protected mode, paging off, flat segments,
 *     EAX = 0x2BADB002, EBX = the info's address, interrupts off (multiboot spec §3.2); the
 *     kernel builds its own GDT, IDT and long mode;
 *   - application processors stay in KVM's "uninitialized" MP state and are started by the
 *     guest with INIT/SIPI through the in-kernel LAPIC;
 *   - host devices: serial at 0x3f8 (transmitter always ready), fw_cfg at 0x510/0x511 (QEMU's
 *     legacy I/O interface: signature, CPU count, RAM size), isa-debug-exit at 0xf4
 *     (exit status = (value << 1) | 1, and the whole partition stops, as QEMU exits).
 *
 * The image and everything the guest writes to the devices is untrusted: header fields and
 * segment addresses are checked before use, and device inputs are masked to their width.
 */
import type { GuestMemory } from '@hvemu/memory';
import { registersWith, type IoDevice, type KvmPartition, type Segment, type SpecialRegisters } from '@hvemu/accel';
import { BootImageError } from './errors.js';
import { loadElf, type LoadedElf } from './elf.js';
import { checkPartitionLike, SerialPort } from './platform.js';

export const MULTIBOOT_HEADER_MAGIC = 0x1badb002;
export const MULTIBOOT_BOOTLOADER_MAGIC = 0x2badb002;
/** The header must sit 32-bit aligned in the first 8 KiB of the image. */
const HEADER_SEARCH_LIMIT = 8192;
/** Header flags bits 0-15 are requirements; we can honour these two. */
const HEADER_PAGE_ALIGN = 1 << 0; // modules page-aligned: trivially true, we load none
const HEADER_MEMORY_INFO = 1 << 1; // mem_lower/mem_upper (and the map): always provided
const HEADER_VIDEO_MODE = 1 << 2;
const HEADER_AOUT_KLUDGE = 1 << 16;

/** Info flags (multiboot spec §3.3). */
const INFO_MEMORY = 1 << 0;
const INFO_CMDLINE = 1 << 2;
const INFO_MEM_MAP = 1 << 6;
const MMAP_RAM = 1;

/** Low-memory layout of what the loader writes (QEMU puts the info at 0x9000 too). */
export const MULTIBOOT_INFO_GPA = 0x9000;
const INFO_SIZE = 0x80;
const MMAP_GPA = MULTIBOOT_INFO_GPA + INFO_SIZE;
const MMAP_MAX_ENTRIES = 8;
const MMAP_ENTRY_SIZE = 24; // u32 size (=20) + u64 base + u64 length + u32 type
const BOOT_GDT_GPA = 0x9200;
const CMDLINE_GPA = 0x9400;
const LOADER_AREA_END = 0xa000;
export const MAX_COMMAND_LINE = LOADER_AREA_END - CMDLINE_GPA - 1;
const ONE_MIB = 0x100000;
const LOW_MEMORY_END = 0xa0000; // 640 KiB: conventional memory below the VGA hole

const SELECTOR_CODE32 = 0x08;
const SELECTOR_DATA32 = 0x10;
const CR0_PE = 1n;
const CR0_ET = 0x10n;

export interface MultibootHeader {
  /** File offset of the header. */
  readonly offset: number;
  readonly flags: number;
}

/** Finds and checks the multiboot header; throws BootImageError when absent or unsupported. */
export function parseMultibootHeader(image: Uint8Array): MultibootHeader {
  if (!(image instanceof Uint8Array))
    throw new BootImageError(`a multiboot image must be a Uint8Array, not ${image === null ? 'null' : typeof image}`);
  const v = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const end = Math.min(HEADER_SEARCH_LIMIT, image.length) - 12;
  for (let at = 0; at <= end; at += 4) {
    if (v.getUint32(at, true) !== MULTIBOOT_HEADER_MAGIC) continue;
    const flags = v.getUint32(at + 4, true);
    const checksum = v.getUint32(at + 8, true);
    if ((MULTIBOOT_HEADER_MAGIC + flags + checksum) >>> 0 !== 0) continue; // not a header, just the number
    checkHeaderFlags(flags);
    return { offset: at, flags };
  }
  throw new BootImageError(`no multiboot header in the first ${HEADER_SEARCH_LIMIT} bytes of the image`);
}

function checkHeaderFlags(flags: number): void {
  if (flags & HEADER_AOUT_KLUDGE) {
    throw new BootImageError('multiboot header asks for the a.out kludge (flag 16): only ELF images are supported');
  }
  if (flags & HEADER_VIDEO_MODE) throw new BootImageError('multiboot header requires a video mode (flag 2): there is no display');
  const unknown = flags & 0xffff & ~(HEADER_PAGE_ALIGN | HEADER_MEMORY_INFO);
  if (unknown !== 0)
    throw new BootImageError(`multiboot header requires features this loader does not know (flags 0x${unknown.toString(16)})`);
}

/** RAM as the guest should see it, in the map's terms. */
interface RamRange {
  base: number;
  length: number;
}

/** Adjacent regions are merged: a KVM region over 4 GiB is several GuestMemory regions, one RAM range to the guest. */
function ramRanges(memory: GuestMemory): RamRange[] {
  const sorted = memory.regions.map((r) => ({ base: r.gpa, length: r.end - r.gpa })).sort((a, b) => a.base - b.base);
  const out: RamRange[] = [];
  for (const r of sorted) {
    const prev = out[out.length - 1];
    if (prev && prev.base + prev.length === r.base) prev.length += r.length;
    else out.push({ ...r });
  }
  return out;
}

/** KiB of RAM contiguous from `start` (0 if `start` is not RAM). */
function contiguousKib(ranges: RamRange[], start: number, limit = Infinity): number {
  let at = start;
  for (const r of ranges) {
    if (r.base <= at && at < r.base + r.length) at = r.base + r.length;
  }
  return Math.floor((Math.min(at, limit) - start) / 1024);
}

/**
 * Writes the info structure, memory map and command line. Layout (spec §3.3): flags @0,
 * mem_lower @4, mem_upper @8, cmdline @16, mmap_length @44, mmap_addr @48.
 */
export function writeMultibootInfo(memory: GuestMemory, commandLine: string): number {
  if (typeof commandLine !== 'string')
    throw new BootImageError(`the command line must be a string, not ${commandLine === null ? 'null' : typeof commandLine}`);
  const cmd = new TextEncoder().encode(commandLine);
  if (cmd.length > MAX_COMMAND_LINE) throw new BootImageError(`command line is ${cmd.length} bytes; at most ${MAX_COMMAND_LINE}`);
  if (cmd.includes(0)) throw new BootImageError('command line contains a NUL byte');
  const ranges = ramRanges(memory);
  const entries = ranges.slice(0, MMAP_MAX_ENTRIES);
  memory.bytes(MULTIBOOT_INFO_GPA, BOOT_GDT_GPA - MULTIBOOT_INFO_GPA).fill(0);
  memory.writeU32(MULTIBOOT_INFO_GPA, INFO_MEMORY | INFO_CMDLINE | INFO_MEM_MAP);
  memory.writeU32(MULTIBOOT_INFO_GPA + 4, contiguousKib(ranges, 0, LOW_MEMORY_END));
  // mem_upper is a u32 of KiB from 1 MiB to the first hole; clamp so a huge map cannot wrap it.
  memory.writeU32(MULTIBOOT_INFO_GPA + 8, Math.min(contiguousKib(ranges, ONE_MIB), 0xffffffff));
  memory.writeU32(MULTIBOOT_INFO_GPA + 16, CMDLINE_GPA);
  memory.writeU32(MULTIBOOT_INFO_GPA + 44, entries.length * MMAP_ENTRY_SIZE);
  memory.writeU32(MULTIBOOT_INFO_GPA + 48, MMAP_GPA);
  entries.forEach((r, i) => {
    const at = MMAP_GPA + i * MMAP_ENTRY_SIZE;
    memory.writeU32(at, MMAP_ENTRY_SIZE - 4); // `size` does not count itself
    memory.writeU64(at + 4, BigInt(r.base));
    memory.writeU64(at + 12, BigInt(r.length));
    memory.writeU32(at + 20, MMAP_RAM);
  });
  memory.bytes(CMDLINE_GPA, LOADER_AREA_END - CMDLINE_GPA).fill(0);
  memory.write(CMDLINE_GPA, cmd);
  // A GDT the entry state's selectors refer to (the spec lets GDTR be invalid, but a kernel
  // that reloads a segment register before its own lgdt then still works).
  memory.writeU64(BOOT_GDT_GPA, 0n);
  memory.writeU64(BOOT_GDT_GPA + SELECTOR_CODE32, 0x00cf9b000000ffffn);
  memory.writeU64(BOOT_GDT_GPA + SELECTOR_DATA32, 0x00cf93000000ffffn);
  return MULTIBOOT_INFO_GPA;
}

function flat32(selector: number, type: number): Segment {
  return {
    base: 0n,
    limit: 0xffffffff,
    selector,
    type,
    present: true,
    dpl: 0,
    db: true,
    s: true,
    l: false,
    g: true,
    avl: false,
    unusable: false,
  };
}

/** The multiboot entry state: protected mode, paging off, flat 4 GiB code and data. */
export function multibootSpecialRegisters(current: SpecialRegisters): SpecialRegisters {
  const data = flat32(SELECTOR_DATA32, 0x3);
  return {
    ...current,
    cs: flat32(SELECTOR_CODE32, 0xb),
    ds: data,
    es: data,
    fs: data,
    gs: data,
    ss: data,
    gdt: { base: BigInt(BOOT_GDT_GPA), limit: 8 * 3 - 1 },
    idt: { base: 0n, limit: 0 },
    cr0: CR0_PE | CR0_ET,
    cr3: 0n,
    cr4: 0n,
    efer: 0n,
  };
}

export interface MultibootBoot extends LoadedElf {
  readonly infoGpa: number;
}

export interface MultibootOptions {
  readonly commandLine?: string;
}

/**
 * Loads `image` into the partition and sets up vCPU 0 at its entry in the multiboot state.
 * The other vCPUs are left alone: in KVM's uninitialized MP state (the default for every vCPU
 * but the first with the in-kernel LAPIC) they wait for the guest's INIT/SIPI once run.
 */
export function bootMultiboot(partition: KvmPartition, image: Uint8Array, opts: MultibootOptions = {}): MultibootBoot {
  parseMultibootHeader(image);
  const memory = partition.memory;
  if (!memory.contains(MULTIBOOT_INFO_GPA, LOADER_AREA_END - MULTIBOOT_INFO_GPA)) {
    throw new BootImageError(`multiboot needs guest RAM at [0x${MULTIBOOT_INFO_GPA.toString(16)}, 0x${LOADER_AREA_END.toString(16)})`);
  }
  let loaded: LoadedElf;
  try {
    loaded = loadElf(memory, image);
  } catch (e) {
    throw new BootImageError((e as Error).message, { cause: e });
  }
  if (loaded.low < LOADER_AREA_END && loaded.high > MULTIBOOT_INFO_GPA) {
    throw new BootImageError(`image [0x${loaded.low.toString(16)}, 0x${loaded.high.toString(16)}) overlaps the multiboot info area`);
  }
  if (loaded.entry > 0xffffffff) throw new BootImageError(`entry 0x${loaded.entry.toString(16)} is not reachable in 32-bit mode`);
  const infoGpa = writeMultibootInfo(memory, opts.commandLine ?? '');
  const bsp = partition.vcpus[0];
  bsp.setSpecialRegisters(multibootSpecialRegisters(bsp.getSpecialRegisters()));
  // ESP is undefined at entry (the kernel sets its own); IF = 0, VM = 0.
  const regs = registersWith({ rax: BigInt(MULTIBOOT_BOOTLOADER_MAGIC), rbx: BigInt(infoGpa), rip: BigInt(loaded.entry) });
  bsp.setRegisters(regs);
  return { ...loaded, infoGpa };
}

// ---- devices ---------------------------------------------------------------------------

export const FW_CFG_PORT = 0x510;
export const FW_CFG_SIGNATURE = 0x00;
export const FW_CFG_ID = 0x01;
export const FW_CFG_RAM_SIZE = 0x03;
export const FW_CFG_NB_CPUS = 0x05;
export const FW_CFG_MAX_CPUS = 0x0f;
const FW_CFG_ID_TRADITIONAL = 1; // the legacy byte-wise interface only, no DMA

/**
 * QEMU's fw_cfg, legacy I/O interface: a write to 0x510 selects an item and rewinds it; each
 * byte read from 0x511 returns the next byte of the item, 0 past its end or for an unknown key.
 */
export class FwCfg implements IoDevice {
  readonly port = FW_CFG_PORT;
  readonly count = 2;
  private readonly items = new Map<number, Uint8Array>();
  private selected: Uint8Array | undefined;
  private offset = 0;

  constructor(opts: { cpus: number; ramSize: number }) {
    this.set(FW_CFG_SIGNATURE, new TextEncoder().encode('QEMU'));
    this.set(FW_CFG_ID, le(FW_CFG_ID_TRADITIONAL, 4));
    this.set(FW_CFG_RAM_SIZE, le(opts.ramSize, 8));
    this.set(FW_CFG_NB_CPUS, le(opts.cpus, 2));
    this.set(FW_CFG_MAX_CPUS, le(opts.cpus, 2));
  }

  /** Adds or replaces an item (e.g. a test's own keys). */
  set(key: number, bytes: Uint8Array): void {
    this.items.set(key & 0xffff, bytes.slice());
  }

  read(port: number): number {
    if (port !== FW_CFG_PORT + 1 || !this.selected || this.offset >= this.selected.length) return 0;
    return this.selected[this.offset++];
  }

  write(port: number, _size: 1 | 2 | 4, value: number): void {
    if (port !== FW_CFG_PORT) return; // writes to the data port are ignored (read-only items)
    this.selected = this.items.get(value & 0xffff);
    this.offset = 0;
  }
}

function le(value: number, bytes: number): Uint8Array {
  const out = new Uint8Array(bytes);
  let v = BigInt(value);
  for (let i = 0; i < bytes; i++, v >>= 8n) out[i] = Number(v & 0xffn);
  return out;
}

export const ISA_DEBUG_EXIT_PORT = 0xf4;

/**
 * QEMU's isa-debug-exit as kvm-unit-tests configures it (iobase 0xf4, iosize 4): a write of
 * `value` ends the VM with exit status (value << 1) | 1. Here it stops every vCPU.
 */
export class IsaDebugExit implements IoDevice {
  readonly port = ISA_DEBUG_EXIT_PORT;
  readonly count = 4;
  /** The value written and the status QEMU would exit with; undefined until the guest exits. */
  result: { value: number; status: number; vp: number } | undefined;

  constructor(private readonly partition: Pick<KvmPartition, 'stop'>) {}

  write(port: number, _size: 1 | 2 | 4, value: number, vp: number): { stop: boolean } {
    if (port === ISA_DEBUG_EXIT_PORT && this.result === undefined) {
      const v = value >>> 0;
      // QEMU computes this in an int and hands it to exit(); keep the full value, the shell sees & 0xff.
      this.result = { value: v, status: (v * 2 + 1) % 2 ** 32, vp };
    }
    this.partition.stop();
    return { stop: true };
  }
}

/** The devices a kvm-unit-tests kernel expects on a QEMU PC, attached to a partition. */
export class MultibootPlatform {
  readonly serial = new SerialPort();
  readonly fwCfg: FwCfg;
  readonly debugExit: IsaDebugExit;

  constructor(partition: KvmPartition) {
    checkPartitionLike(partition, 'new MultibootPlatform');
    const ramSize = partition.memory.regions.reduce((n, r) => n + (r.end - r.gpa), 0);
    this.fwCfg = new FwCfg({ cpus: partition.vcpus.length, ramSize });
    this.debugExit = new IsaDebugExit(partition);
    partition.addIoDevice(this.serial);
    partition.addIoDevice(this.fwCfg);
    partition.addIoDevice(this.debugExit);
  }
}
