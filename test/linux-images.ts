/**
 * Synthetic Linux kernel images for loader and VMM tests: an ELF64 x86-64 `vmlinux` with the
 * PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY) and PT_LOAD segments, built byte by byte.
 */
export interface ElfSegment {
  paddr: number;
  data: Uint8Array;
  memsz?: number;
}

/** An ELF64 x86-64 vmlinux: PT_NOTE (optionally with the PVH entry note) and PT_LOADs. */
export function makeVmlinux(opts: {
  entry: number;
  segments: ElfSegment[];
  note?: boolean;
  descsz?: 4 | 8;
  noteName?: string;
}): Uint8Array {
  const { segments } = opts;
  const phnum = segments.length + 1;
  const noteAt = 64 + phnum * 56;
  const descsz = opts.descsz ?? 8;
  const noteSize = 12 + 4 + descsz;
  let dataAt = noteAt + noteSize + 16;
  const offsets = segments.map((s) => {
    const at = dataAt;
    dataAt += s.data.length;
    return at;
  });
  const out = new Uint8Array(dataAt);
  const v = new DataView(out.buffer);
  out.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  v.setUint16(16, 2, true); // ET_EXEC
  v.setUint16(18, 62, true); // EM_X86_64
  v.setUint32(20, 1, true);
  v.setBigUint64(24, 0xffffffff81000000n, true); // e_entry: a virtual address, unused by PVH
  v.setBigUint64(32, 64n, true); // e_phoff
  v.setUint16(52, 64, true);
  v.setUint16(54, 56, true);
  v.setUint16(56, phnum, true);
  // PT_NOTE
  v.setUint32(64, 4, true);
  v.setBigUint64(64 + 8, BigInt(noteAt), true);
  v.setBigUint64(64 + 32, BigInt(noteSize), true);
  v.setBigUint64(64 + 40, BigInt(noteSize), true);
  v.setUint32(noteAt, 4, true);
  v.setUint32(noteAt + 4, descsz, true);
  v.setUint32(noteAt + 8, opts.note === false ? 17 : 18, true);
  out.set(new TextEncoder().encode(opts.noteName ?? 'Xen\0'), noteAt + 12);
  if (descsz === 8) v.setBigUint64(noteAt + 16, BigInt(opts.entry), true);
  else v.setUint32(noteAt + 16, opts.entry, true);
  segments.forEach((s, i) => {
    const ph = 64 + (i + 1) * 56;
    v.setUint32(ph, 1, true); // PT_LOAD
    v.setUint32(ph + 4, 7, true);
    v.setBigUint64(ph + 8, BigInt(offsets[i]), true);
    v.setBigUint64(ph + 16, 0xffffffff80000000n + BigInt(s.paddr), true);
    v.setBigUint64(ph + 24, BigInt(s.paddr), true);
    v.setBigUint64(ph + 32, BigInt(s.data.length), true);
    v.setBigUint64(ph + 40, BigInt(s.memsz ?? s.data.length), true);
    out.set(s.data, offsets[i]);
  });
  return out;
}
