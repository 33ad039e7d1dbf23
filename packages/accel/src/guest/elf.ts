/**
 * A minimal ELF64 loader for test guests and (later) multiboot kernels: copies PT_LOAD
 * segments to their physical addresses and zero-fills the rest of each segment. The image is
 * input we did not produce, so every offset and size is checked before use.
 */
import type { GuestMemory } from '@hvemu/memory';
import { AccelUsageError } from '../errors.js';

const PT_LOAD = 1;
const EM_X86_64 = 62;

export interface LoadedElf {
  entry: number;
  /** [lowest, highest) guest-physical bytes the segments occupy. */
  low: number;
  high: number;
}

export function loadElf64(memory: GuestMemory, image: Uint8Array): LoadedElf {
  const v = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const bad = (why: string): never => {
    throw new AccelUsageError(`not a loadable x86-64 ELF image: ${why}`);
  };
  if (image.length < 64 || v.getUint32(0) !== 0x7f454c46) bad('bad magic');
  if (image[4] !== 2 || image[5] !== 1) bad('not ELF64 little-endian');
  if (v.getUint16(18, true) !== EM_X86_64) bad('not x86-64');
  const entry = Number(v.getBigUint64(24, true));
  const phoff = Number(v.getBigUint64(32, true));
  const phentsize = v.getUint16(54, true);
  const phnum = v.getUint16(56, true);
  if (phentsize < 56 || phoff + phnum * phentsize > image.length) bad('program headers outside the file');
  let low = Infinity;
  let high = 0;
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (v.getUint32(at, true) !== PT_LOAD) continue;
    const offset = Number(v.getBigUint64(at + 8, true));
    const paddr = Number(v.getBigUint64(at + 24, true));
    const filesz = Number(v.getBigUint64(at + 32, true));
    const memsz = Number(v.getBigUint64(at + 40, true));
    if (filesz > memsz || offset + filesz > image.length) bad(`segment ${i} exceeds the file`);
    if (!memory.contains(paddr, memsz)) bad(`segment ${i} [0x${paddr.toString(16)}, +${memsz}) is not in guest RAM`);
    memory.write(paddr, image.subarray(offset, offset + filesz));
    memory.bytes(paddr + filesz, memsz - filesz).fill(0);
    low = Math.min(low, paddr);
    high = Math.max(high, paddr + memsz);
  }
  if (high === 0) bad('no PT_LOAD segments');
  if (!memory.contains(entry, 1)) bad(`entry 0x${entry.toString(16)} is not in guest RAM`);
  return { entry, low, high };
}
