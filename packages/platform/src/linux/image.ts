/**
 * Recognising a Linux kernel file: an uncompressed ELF64 `vmlinux` with a PVH entry note, or a
 * bzImage for the 64-bit boot protocol. The file is input we did not produce: every length and
 * offset is checked against the file before use, and 64-bit fields are read as bigints so a
 * hostile value cannot lose precision on its way to a range check.
 */
import { LinuxBootError } from './errors.js';
import {
  BOOT_FLAG,
  LOADED_HIGH,
  SETUP_HEADER,
  SETUP_HEADER_MAGIC,
  SETUP_HEADER_OFFSET,
  XEN_ELFNOTE_PHYS32_ENTRY,
  XLF_KERNEL_64,
  type SetupHeaderValue,
} from './structs.js';

/** One PT_LOAD segment: file bytes [offset, +filesz) go to paddr, zero-filled to memsz. */
export interface KernelSegment {
  readonly offset: number;
  readonly paddr: number;
  readonly filesz: number;
  readonly memsz: number;
}

export interface PvhKernel {
  readonly kind: 'pvh';
  /** The XEN_ELFNOTE_PHYS32_ENTRY value: physical 32-bit entry (pvh_start_xen). */
  readonly entry: number;
  readonly segments: readonly KernelSegment[];
  /** [low, high): the physical bytes the segments occupy. */
  readonly low: number;
  readonly high: number;
}

export interface BzImageKernel {
  readonly kind: 'bzimage';
  /** The setup header as the file has it. */
  readonly header: SetupHeaderValue;
  /** File bytes [0x1f1, 0x202 + byte 0x201): what goes into boot_params.hdr. */
  readonly headerBytes: Uint8Array;
  /** The protected-mode kernel: file offset (setup_sects + 1) * 512 to the end of the file. */
  readonly payloadOffset: number;
  readonly payloadSize: number;
}

export type LinuxKernel = PvhKernel | BzImageKernel;

/** Lowest boot protocol version with the 64-bit entry (2.12: xloadflags). */
export const MIN_BOOT_PROTOCOL = 0x020c;

const ELF_MAGIC = 0x464c457f; // "\x7fELF" little-endian
const PT_LOAD = 1;
const PT_NOTE = 4;
const EM_X86_64 = 62;

function view(image: Uint8Array): DataView {
  return new DataView(image.buffer, image.byteOffset, image.byteLength);
}

/** Tells which kind of kernel `image` is and checks it fully; throws LinuxBootError otherwise. */
export function parseLinuxKernel(image: Uint8Array): LinuxKernel {
  if (!(image instanceof Uint8Array))
    throw new LinuxBootError(
      `parseLinuxKernel: image must be a Uint8Array (a kernel file's bytes), not ${image === null ? 'null' : typeof image}`,
    );
  const v = view(image);
  if (image.length >= 4 && v.getUint32(0, true) === ELF_MAGIC) return parsePvh(image, v);
  if (image.length >= 0x206 && v.getUint32(0x202, true) === SETUP_HEADER_MAGIC) return parseBzImage(image, v);
  throw new LinuxBootError(
    'not a Linux kernel: expected an uncompressed ELF64 vmlinux with a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY) ' +
      'or a bzImage (setup header magic "HdrS" at 0x202)',
  );
}

/** A 64-bit field as a number, or an error when it cannot be an address or size in this file or RAM. */
function u64(v: DataView, at: number, what: string): number {
  const value = v.getBigUint64(at, true);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new LinuxBootError(`vmlinux: ${what} 0x${value.toString(16)} is out of range`);
  return Number(value);
}

function parsePvh(image: Uint8Array, v: DataView): PvhKernel {
  const bad = (why: string): never => {
    throw new LinuxBootError(`vmlinux: ${why}`);
  };
  if (image.length < 64) bad('truncated ELF header');
  if (image[4] !== 2 || image[5] !== 1) bad('not an ELF64 little-endian file (the PVH path takes an x86-64 vmlinux)');
  if (v.getUint16(18, true) !== EM_X86_64) bad(`machine ${v.getUint16(18, true)} is not x86-64 (62)`);
  const phoff = u64(v, 32, 'program header offset');
  const phentsize = v.getUint16(54, true);
  const phnum = v.getUint16(56, true);
  if (phnum === 0) bad('no program headers');
  if (phentsize < 56) bad(`program header size ${phentsize} is below 56`);
  if (phoff + phnum * phentsize > image.length) bad('program headers extend past the end of the file');
  let entry: number | undefined;
  const segments: KernelSegment[] = [];
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    const type = v.getUint32(at, true);
    if (type !== PT_LOAD && type !== PT_NOTE) continue;
    const offset = u64(v, at + 8, `segment ${i} offset`);
    const filesz = u64(v, at + 32, `segment ${i} file size`);
    if (offset + filesz > image.length)
      bad(`segment ${i} [0x${offset.toString(16)}, +0x${filesz.toString(16)}) extends past the end of the file`);
    if (type === PT_NOTE) {
      entry ??= findPvhEntry(image, offset, filesz);
      continue;
    }
    const paddr = u64(v, at + 24, `segment ${i} physical address`);
    const memsz = u64(v, at + 40, `segment ${i} memory size`);
    if (filesz > memsz) bad(`segment ${i} file size exceeds its memory size`);
    if (paddr + memsz > Number.MAX_SAFE_INTEGER) bad(`segment ${i} ends past the largest address`);
    if (memsz > 0) segments.push({ offset, paddr, filesz, memsz });
  }
  if (entry === undefined) bad('no PVH entry note (ELF note "Xen" type 18, XEN_ELFNOTE_PHYS32_ENTRY): build the kernel with CONFIG_PVH=y');
  if (segments.length === 0) bad('no PT_LOAD segments');
  const sorted = [...segments].sort((a, b) => a.paddr - b.paddr);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1];
    if (sorted[i].paddr < prev.paddr + prev.memsz) bad(`PT_LOAD segments overlap at physical 0x${sorted[i].paddr.toString(16)}`);
  }
  const low = sorted[0].paddr;
  const last = sorted[sorted.length - 1];
  const high = last.paddr + last.memsz;
  const e = entry as number;
  if (!sorted.some((s) => e >= s.paddr && e < s.paddr + s.memsz)) bad(`PVH entry 0x${e.toString(16)} is not inside a PT_LOAD segment`);
  return { kind: 'pvh', entry: e, segments, low, high };
}

/** Walks the notes in file bytes [offset, +size) for "Xen" XEN_ELFNOTE_PHYS32_ENTRY. */
function findPvhEntry(image: Uint8Array, offset: number, size: number): number | undefined {
  const v = view(image);
  const end = offset + size;
  const align4 = (n: number): number => (n + 3) & ~3;
  let at = offset;
  while (at + 12 <= end) {
    const namesz = v.getUint32(at, true);
    const descsz = v.getUint32(at + 4, true);
    const type = v.getUint32(at + 8, true);
    const name = at + 12;
    const desc = name + align4(namesz);
    const next = desc + align4(descsz);
    if (namesz > end || descsz > end || next > end) throw new LinuxBootError('vmlinux: an ELF note extends past its PT_NOTE segment');
    const isXen = namesz === 4 && image[name] === 0x58 && image[name + 1] === 0x65 && image[name + 2] === 0x6e && image[name + 3] === 0;
    if (isXen && type === XEN_ELFNOTE_PHYS32_ENTRY) {
      // A 32-bit physical address; x86-64 kernels emit it as an 8-byte value (_ASM_PTR).
      if (descsz !== 4 && descsz !== 8) throw new LinuxBootError(`vmlinux: PVH entry note has a ${descsz}-byte value (expected 4 or 8)`);
      if (descsz === 8 && v.getUint32(desc + 4, true) !== 0) throw new LinuxBootError('vmlinux: PVH entry note is above 4 GiB');
      return v.getUint32(desc, true);
    }
    at = next;
  }
  return undefined;
}

function parseBzImage(image: Uint8Array, v: DataView): BzImageKernel {
  const bad = (why: string): never => {
    throw new LinuxBootError(`bzImage: ${why}`);
  };
  const hdrEnd = 0x202 + image[0x201];
  if (image.length < 0x206 + 2) bad('truncated setup header');
  const version = v.getUint16(0x206, true);
  if (version < MIN_BOOT_PROTOCOL)
    bad(`boot protocol ${version >> 8}.${version & 0xff} is older than 2.12, which the 64-bit entry (xloadflags) needs`);
  if (hdrEnd < 0x264) bad(`setup header ends at 0x${hdrEnd.toString(16)}, before init_size (protocol >= 2.12 needs 0x264)`);
  if (hdrEnd > image.length) bad(`setup header (to 0x${hdrEnd.toString(16)}) extends past the end of the file`);
  // Fields past 0x26c (a newer protocol) are kept in the file but not in struct setup_header.
  const headerBytes = new Uint8Array(SETUP_HEADER.size);
  headerBytes.set(image.subarray(SETUP_HEADER_OFFSET, Math.min(hdrEnd, SETUP_HEADER_OFFSET + SETUP_HEADER.size)));
  const header = SETUP_HEADER.decode(headerBytes);
  if (header.boot_flag !== BOOT_FLAG) bad(`boot_flag is 0x${header.boot_flag.toString(16)}, not 0xaa55`);
  if ((header.xloadflags & XLF_KERNEL_64) === 0) bad('xloadflags lacks XLF_KERNEL_64: the kernel has no 64-bit entry');
  if ((header.loadflags & LOADED_HIGH) === 0) bad('loadflags lacks LOADED_HIGH: a zImage cannot be loaded at 1 MiB');
  const setupSects = header.setup_sects === 0 ? 4 : header.setup_sects;
  const payloadOffset = (setupSects + 1) * 512;
  if (payloadOffset >= image.length)
    bad(
      `setup_sects ${header.setup_sects} puts the protected-mode kernel at 0x${payloadOffset.toString(16)}, past the end of the file (${image.length} bytes)`,
    );
  const payloadSize = image.length - payloadOffset;
  if (header.syssize * 16 > payloadSize + 15)
    bad(`syssize says the protected-mode kernel is ${header.syssize * 16} bytes, the file holds only ${payloadSize}`);
  if (header.relocatable_kernel !== 0) {
    const a = header.kernel_alignment;
    if (a === 0 || (a & (a - 1)) !== 0) bad(`kernel_alignment 0x${a.toString(16)} is not a power of two`);
  }
  if (header.init_size === 0) bad('init_size is 0');
  return { kind: 'bzimage', header, headerBytes, payloadOffset, payloadSize };
}
