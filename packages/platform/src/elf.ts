/**
 * A minimal ELF loader for test guests (ELF64) and multiboot kernels (ELF32 or ELF64): copies PT_LOAD
 * segments to their physical addresses and zero-fills the rest of each segment. The image is
 * input we did not produce, so every offset and size is checked before use.
 */
import type { GuestMemory } from '@hvemu/memory';
import { AccelUsageError } from '@hvemu/accel';

function checkImage(image: unknown, what: string): void {
  if (!(image instanceof Uint8Array))
    throw new AccelUsageError(`${what}: image must be a Uint8Array (an ELF file's bytes), not ${image === null ? 'null' : typeof image}`);
}

const PT_LOAD = 1;
const EM_X86_64 = 62;

export interface LoadedElf {
  entry: number;
  /** [lowest, highest) guest-physical bytes the segments occupy. */
  low: number;
  high: number;
}

const EM_386 = 3;

/** One PT_LOAD program header, widened to numbers. */
interface Segment {
  offset: number;
  paddr: number;
  filesz: number;
  memsz: number;
}

interface ElfHeader {
  entry: number;
  segments: Segment[];
}

/** Parses an ELF32 (i386) or ELF64 (x86-64) image's entry and PT_LOAD headers, checked against the file. */
function parseElf(image: Uint8Array, allow: { elf32: boolean }): ElfHeader {
  const bad = (why: string): never => {
    throw new AccelUsageError(`not a loadable x86 ELF image: ${why}`);
  };
  if (image.length < 52 || image[0] !== 0x7f || image[1] !== 0x45 || image[2] !== 0x4c || image[3] !== 0x46) bad('bad magic');
  const v = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const is64 = image[4] === 2;
  if (!(is64 || (allow.elf32 && image[4] === 1)) || image[5] !== 1)
    bad(allow.elf32 ? 'not ELF32/ELF64 little-endian' : 'not ELF64 little-endian');
  if (is64 && image.length < 64) bad('truncated header');
  const machine = v.getUint16(18, true);
  if (is64 ? machine !== EM_X86_64 : machine !== EM_386) bad(is64 ? 'not x86-64' : 'not i386');
  const word = (at: number): number => (is64 ? Number(v.getBigUint64(at, true)) : v.getUint32(at, true));
  const entry = word(24);
  const phoff = is64 ? word(32) : word(28);
  const phentsize = v.getUint16(is64 ? 54 : 42, true);
  const phnum = v.getUint16(is64 ? 56 : 44, true);
  if (phentsize < (is64 ? 56 : 32) || phoff + phnum * phentsize > image.length) bad('program headers outside the file');
  const segments: Segment[] = [];
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (v.getUint32(at, true) !== PT_LOAD) continue;
    const seg = is64
      ? { offset: word(at + 8), paddr: word(at + 24), filesz: word(at + 32), memsz: word(at + 40) }
      : { offset: word(at + 4), paddr: word(at + 12), filesz: word(at + 16), memsz: word(at + 20) };
    if (seg.filesz > seg.memsz || seg.offset + seg.filesz > image.length) bad(`segment ${i} exceeds the file`);
    segments.push(seg);
  }
  if (segments.length === 0) bad('no PT_LOAD segments');
  return { entry, segments };
}

/** Copies the segments to their physical addresses (zero-filling the rest), after checking all of them. */
function placeSegments(memory: GuestMemory, image: Uint8Array, elf: ElfHeader): LoadedElf {
  let low = Infinity;
  let high = 0;
  for (const [i, s] of elf.segments.entries()) {
    if (!memory.contains(s.paddr, s.memsz)) {
      throw new AccelUsageError(`not a loadable x86 ELF image: segment ${i} [0x${s.paddr.toString(16)}, +${s.memsz}) is not in guest RAM`);
    }
    low = Math.min(low, s.paddr);
    high = Math.max(high, s.paddr + s.memsz);
  }
  if (!memory.contains(elf.entry, 1))
    throw new AccelUsageError(`not a loadable x86 ELF image: entry 0x${elf.entry.toString(16)} is not in guest RAM`);
  for (const s of elf.segments) {
    memory.write(s.paddr, image.subarray(s.offset, s.offset + s.filesz));
    memory.bytes(s.paddr + s.filesz, s.memsz - s.filesz).fill(0);
  }
  return { entry: elf.entry, low, high };
}

/** Loads an ELF64 x86-64 image (the long-mode test guests). */
export function loadElf64(memory: GuestMemory, image: Uint8Array): LoadedElf {
  checkImage(image, 'loadElf64');
  return placeSegments(memory, image, parseElf(image, { elf32: false }));
}

/** Loads an ELF32 (i386) or ELF64 (x86-64) image, as a multiboot loader must. */
export function loadElf(memory: GuestMemory, image: Uint8Array): LoadedElf {
  checkImage(image, 'loadElf');
  return placeSegments(memory, image, parseElf(image, { elf32: true }));
}
