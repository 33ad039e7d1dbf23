/**
 * Register files in a backend-neutral shape, and their packing to/from the addon's arrays
 * (native/src/addon.cc: kvm_regs order; segments packed base, limit, attributes).
 */

/** General-purpose registers, RIP and RFLAGS. */
export interface Registers {
  rax: bigint;
  rbx: bigint;
  rcx: bigint;
  rdx: bigint;
  rsi: bigint;
  rdi: bigint;
  rsp: bigint;
  rbp: bigint;
  r8: bigint;
  r9: bigint;
  r10: bigint;
  r11: bigint;
  r12: bigint;
  r13: bigint;
  r14: bigint;
  r15: bigint;
  rip: bigint;
  rflags: bigint;
}

/** The order of the native array (struct kvm_regs). */
export const REG_NAMES = [
  'rax',
  'rbx',
  'rcx',
  'rdx',
  'rsi',
  'rdi',
  'rsp',
  'rbp',
  'r8',
  'r9',
  'r10',
  'r11',
  'r12',
  'r13',
  'r14',
  'r15',
  'rip',
  'rflags',
] as const satisfies readonly (keyof Registers)[];

export interface Segment {
  base: bigint;
  limit: number;
  selector: number;
  /** Descriptor type field (4 bits). */
  type: number;
  present: boolean;
  dpl: number;
  /** Default operation size (D/B). */
  db: boolean;
  /** Code/data (true) or system (false) descriptor. */
  s: boolean;
  /** 64-bit code segment. */
  l: boolean;
  /** Granularity (limit in 4 KiB units). */
  g: boolean;
  avl: boolean;
  unusable: boolean;
}

export interface DescriptorTable {
  base: bigint;
  limit: number;
}

/** Segment, descriptor-table and control registers. */
export interface SpecialRegisters {
  cs: Segment;
  ds: Segment;
  es: Segment;
  fs: Segment;
  gs: Segment;
  ss: Segment;
  tr: Segment;
  ldt: Segment;
  gdt: DescriptorTable;
  idt: DescriptorTable;
  cr0: bigint;
  cr2: bigint;
  cr3: bigint;
  cr4: bigint;
  cr8: bigint;
  efer: bigint;
  apicBase: bigint;
}

const SEGMENT_NAMES = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'] as const;
const CONTROL_NAMES = ['cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer', 'apicBase'] as const;
export const SREG_WORDS = 35;

/** General registers as a loader sets them: every one zero but those given (RFLAGS' reserved bit 1 set). */
export function registersWith(values: Partial<Registers>): Registers {
  const r = Object.fromEntries(REG_NAMES.map((name) => [name, 0n])) as unknown as Registers;
  return { ...r, rflags: 2n, ...values };
}

export function unpackRegisters(a: BigUint64Array): Registers {
  const r = {} as Record<keyof Registers, bigint>;
  REG_NAMES.forEach((name, i) => (r[name] = a[i]));
  return r;
}

export function packRegisters(r: Registers): BigUint64Array {
  return BigUint64Array.from(REG_NAMES, (name) => BigInt.asUintN(64, r[name]));
}

function unpackSegment(a: BigUint64Array, at: number): Segment {
  const attrs = Number(a[at + 2]);
  const bit = (n: number): boolean => ((attrs >>> n) & 1) === 1;
  return {
    base: a[at],
    limit: Number(a[at + 1]),
    selector: attrs & 0xffff,
    type: (attrs >>> 16) & 0xf,
    present: bit(20),
    dpl: (attrs >>> 21) & 3,
    db: bit(23),
    s: bit(24),
    l: bit(25),
    g: bit(26),
    avl: bit(27),
    unusable: bit(28),
  };
}

function packSegment(s: Segment, a: BigUint64Array, at: number): void {
  const b = (v: boolean, n: number): number => (v ? 1 << n : 0);
  const attrs =
    (s.selector & 0xffff) |
    ((s.type & 0xf) << 16) |
    b(s.present, 20) |
    ((s.dpl & 3) << 21) |
    b(s.db, 23) |
    b(s.s, 24) |
    b(s.l, 25) |
    b(s.g, 26) |
    b(s.avl, 27) |
    b(s.unusable, 28);
  a[at] = BigInt.asUintN(64, s.base);
  a[at + 1] = BigInt(s.limit >>> 0);
  a[at + 2] = BigInt(attrs >>> 0);
}

export function unpackSpecialRegisters(a: BigUint64Array): SpecialRegisters {
  const out: Record<string, unknown> = {};
  SEGMENT_NAMES.forEach((name, i) => (out[name] = unpackSegment(a, i * 3)));
  out['gdt'] = { base: a[24], limit: Number(a[25]) };
  out['idt'] = { base: a[26], limit: Number(a[27]) };
  CONTROL_NAMES.forEach((name, i) => (out[name] = a[28 + i]));
  return out as unknown as SpecialRegisters;
}

export function packSpecialRegisters(s: SpecialRegisters): BigUint64Array {
  const a = new BigUint64Array(SREG_WORDS);
  SEGMENT_NAMES.forEach((name, i) => packSegment(s[name], a, i * 3));
  a[24] = s.gdt.base;
  a[25] = BigInt(s.gdt.limit);
  a[26] = s.idt.base;
  a[27] = BigInt(s.idt.limit);
  CONTROL_NAMES.forEach((name, i) => (a[28 + i] = BigInt.asUintN(64, s[name])));
  return a;
}

/** A register dump for error messages. */
export function formatRegisters(r: Registers): string {
  return REG_NAMES.map((n) => `${n}=${typeof r?.[n] === 'bigint' ? `0x${r[n].toString(16)}` : '?'}`).join(' ');
}
