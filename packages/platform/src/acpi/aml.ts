/**
 * A small AML encoder: just the terms the hvemu DSDT needs (ACPI 6.5 §20.2, "AML Grammar
 * Definition", and §6.4, "Resource Data Types for ACPI"). Every function returns the encoded
 * bytes of one term; composite terms take already-encoded children. Nothing here parses AML.
 */
import { AcpiTableError } from '../errors.js';

/** Encoded AML bytes. */
export type Aml = Uint8Array;

/** Opcodes used below (ACPI 6.5 §20.3). */
export const AML = {
  ZeroOp: 0x00,
  OneOp: 0x01,
  NameOp: 0x08,
  BytePrefix: 0x0a,
  WordPrefix: 0x0b,
  DWordPrefix: 0x0c,
  StringPrefix: 0x0d,
  QWordPrefix: 0x0e,
  ScopeOp: 0x10,
  BufferOp: 0x11,
  PackageOp: 0x12,
  MethodOp: 0x14,
  DualNamePrefix: 0x2e,
  MultiNamePrefix: 0x2f,
  ExtOpPrefix: 0x5b,
  DeviceOp: 0x82, // after ExtOpPrefix
  RootChar: 0x5c,
  ParentPrefixChar: 0x5e,
  ReturnOp: 0xa4,
  OnesOp: 0xff,
} as const;

export function concat(...parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function le(value: bigint, bytes: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < bytes; i++) out.push(Number((value >> BigInt(8 * i)) & 0xffn));
  return out;
}

/**
 * PkgLength (§20.2.4) for an object whose contents after the PkgLength are `bodyLength` bytes.
 * The encoded value counts the PkgLength bytes themselves. One byte holds totals up to 63;
 * otherwise the lead byte carries the number of following bytes (bits 7-6) and the low 4 bits
 * of the total, and each following byte 8 more bits.
 */
export function pkgLength(bodyLength: number): Aml {
  if (!Number.isSafeInteger(bodyLength) || bodyLength < 0) throw new AcpiTableError(`PkgLength: bad length ${bodyLength}`);
  if (bodyLength + 1 <= 0x3f) return Uint8Array.of(bodyLength + 1);
  for (let extra = 1; extra <= 3; extra++) {
    const total = bodyLength + 1 + extra;
    if (total < 2 ** (4 + 8 * extra)) {
      const out = [(extra << 6) | (total & 0x0f)];
      for (let i = 0; i < extra; i++) out.push((total >>> (4 + 8 * i)) & 0xff);
      return Uint8Array.from(out);
    }
  }
  throw new AcpiTableError(`PkgLength: ${bodyLength} bytes exceed the 2^28 limit`);
}

/** `prefix PkgLength body`. */
function withPkgLength(prefix: readonly number[], body: Uint8Array): Aml {
  return concat(Uint8Array.from(prefix), pkgLength(body.length), body);
}

const SEG_RE = /^[A-Z_][A-Z0-9_]{0,3}$/;

/** One NameSeg: 1-4 characters (lead A-Z or '_', then A-Z, 0-9, '_'), padded to 4 with '_'. */
export function nameSeg(seg: string): Aml {
  if (!SEG_RE.test(seg)) throw new AcpiTableError(`AML NameSeg "${seg}": 1-4 of A-Z 0-9 _, not starting with a digit`);
  const padded = seg.padEnd(4, '_');
  return Uint8Array.from(padded, (c) => c.charCodeAt(0));
}

/**
 * NameString (§20.2.2): an optional root '\' or parent '^' prefixes, then dot-separated
 * segments: none → NullName, one → NameSeg, two → DualNamePrefix, more → MultiNamePrefix count.
 */
export function nameString(name: string): Aml {
  let i = 0;
  const prefix: number[] = [];
  if (name.startsWith('\\')) {
    prefix.push(AML.RootChar);
    i = 1;
  } else {
    while (name[i] === '^') {
      prefix.push(AML.ParentPrefixChar);
      i++;
    }
  }
  const rest = name.slice(i);
  const segs = rest === '' ? [] : rest.split('.');
  if (segs.length > 255) throw new AcpiTableError(`AML NameString "${name}": more than 255 segments`);
  const encoded = segs.map(nameSeg);
  let head: number[];
  if (segs.length === 0) head = [0x00];
  else if (segs.length === 1) head = [];
  else if (segs.length === 2) head = [AML.DualNamePrefix];
  else head = [AML.MultiNamePrefix, segs.length];
  return concat(Uint8Array.from(prefix), Uint8Array.from(head), ...encoded);
}

/** An Integer constant with the shortest encoding: ZeroOp, OneOp, OnesOp (2^64 - 1) or a prefix. */
export function integer(value: number | bigint): Aml {
  const v = typeof value === 'bigint' ? value : Number.isSafeInteger(value) ? BigInt(value) : -1n;
  if (v < 0n || v > 0xffff_ffff_ffff_ffffn) throw new AcpiTableError(`AML integer ${String(value)} is not a 64-bit unsigned integer`);
  if (v === 0n) return Uint8Array.of(AML.ZeroOp);
  if (v === 1n) return Uint8Array.of(AML.OneOp);
  if (v === 0xffff_ffff_ffff_ffffn) return Uint8Array.of(AML.OnesOp);
  if (v <= 0xffn) return Uint8Array.of(AML.BytePrefix, ...le(v, 1));
  if (v <= 0xffffn) return Uint8Array.of(AML.WordPrefix, ...le(v, 2));
  if (v <= 0xffff_ffffn) return Uint8Array.of(AML.DWordPrefix, ...le(v, 4));
  return Uint8Array.of(AML.QWordPrefix, ...le(v, 8));
}

/** A String constant: StringPrefix, ASCII 0x01-0x7F, NUL. */
export function string(text: string): Aml {
  const bytes = Uint8Array.from(text, (c) => c.charCodeAt(0));
  if (bytes.length !== text.length || bytes.some((b) => b === 0 || b > 0x7f)) {
    throw new AcpiTableError(`AML string ${JSON.stringify(text)}: only ASCII 0x01-0x7F`);
  }
  return concat(Uint8Array.of(AML.StringPrefix), bytes, Uint8Array.of(0));
}

/** Buffer(size) { bytes }: BufferOp PkgLength BufferSize bytes; size defaults to the byte count. */
export function buffer(bytes: Uint8Array): Aml {
  return withPkgLength([AML.BufferOp], concat(integer(bytes.length), bytes));
}

/** Package { elements }: PackageOp PkgLength NumElements (≤ 255) elements. */
export function pkg(...elements: Aml[]): Aml {
  if (elements.length > 255) throw new AcpiTableError(`AML Package: ${elements.length} elements (at most 255)`);
  return withPkgLength([AML.PackageOp], concat(Uint8Array.of(elements.length), ...elements));
}

/** Name(name, object). */
export function name(path: string, object: Aml): Aml {
  return concat(Uint8Array.of(AML.NameOp), nameString(path), object);
}

/** Scope(name) { terms }. */
export function scope(path: string, ...terms: Aml[]): Aml {
  return withPkgLength([AML.ScopeOp], concat(nameString(path), ...terms));
}

/** Device(name) { terms }. */
export function device(path: string, ...terms: Aml[]): Aml {
  return withPkgLength([AML.ExtOpPrefix, AML.DeviceOp], concat(nameString(path), ...terms));
}

export interface MethodFlags {
  /** ArgCount 0-7 (bits 0-2). */
  args?: number;
  /** SerializeFlag (bit 3). */
  serialized?: boolean;
  /** SyncLevel 0-15 (bits 4-7). */
  syncLevel?: number;
}

/** Method(name, args, serialized, syncLevel) { terms }. */
export function method(path: string, flags: MethodFlags, ...terms: Aml[]): Aml {
  const args = flags.args ?? 0;
  const sync = flags.syncLevel ?? 0;
  if (!Number.isInteger(args) || args < 0 || args > 7) throw new AcpiTableError(`AML Method ${path}: ArgCount ${args} not in 0-7`);
  if (!Number.isInteger(sync) || sync < 0 || sync > 15) throw new AcpiTableError(`AML Method ${path}: SyncLevel ${sync} not in 0-15`);
  const f = args | (flags.serialized ? 0x08 : 0) | (sync << 4);
  return withPkgLength([AML.MethodOp], concat(nameString(path), Uint8Array.of(f), ...terms));
}

/** Return(object). */
export function ret(object: Aml): Aml {
  return concat(Uint8Array.of(AML.ReturnOp), object);
}

/**
 * The 32-bit compressed EISA ID of a 7-character PNP ID ("PNP0A03"): three letters A-Z as
 * 5-bit values (letter - 0x40) in bits 14-0 of the first big-endian half, then four hex digits;
 * the two halves stored big-endian, i.e. "PNP0501" → bytes 41 D0 05 01 (value 0x0105D041).
 */
export function eisaIdValue(id: string): number {
  if (!/^[A-Z]{3}[0-9A-F]{4}$/.test(id)) throw new AcpiTableError(`EISA ID "${id}": 3 letters A-Z and 4 upper-case hex digits`);
  const l = (i: number): number => id.charCodeAt(i) - 0x40;
  const vendor = (l(0) << 10) | (l(1) << 5) | l(2);
  const product = parseInt(id.slice(3), 16);
  const bytes = [vendor >> 8, vendor & 0xff, product >> 8, product & 0xff];
  return (bytes[0] | (bytes[1] << 8) | (bytes[2] << 16) | (bytes[3] << 24)) >>> 0;
}

/** EISAID("PNP0A03") as an AML integer (always DWordPrefix, as iasl emits it). */
export function eisaId(id: string): Aml {
  return Uint8Array.of(AML.DWordPrefix, ...le(BigInt(eisaIdValue(id)), 4));
}

// ---- Resource descriptors (ACPI 6.5 §6.4) --------------------------------------------------

/** IO(Decode16, min, max, alignment, length): small descriptor 0x47, 8 bytes. */
export function ioPort(min: number, max: number, alignment: number, length: number): Aml {
  checkRange('IO min', min, 0xffff);
  checkRange('IO max', max, 0xffff);
  checkRange('IO alignment', alignment, 0xff);
  checkRange('IO length', length, 0xff);
  return Uint8Array.of(0x47, 0x01, min & 0xff, min >> 8, max & 0xff, max >> 8, alignment, length);
}

export interface ExtendedInterruptOptions {
  /** Edge-triggered (default) or level. */
  edge?: boolean;
  /** Active-low (default: active-high). */
  activeLow?: boolean;
  shared?: boolean;
  wake?: boolean;
}

/** Interrupt(ResourceConsumer, ...) { gsis }: large descriptor 0x89. */
export function extendedInterrupt(gsis: readonly number[], options: ExtendedInterruptOptions = {}): Aml {
  if (gsis.length < 1 || gsis.length > 255) throw new AcpiTableError(`ExtendedInterrupt: ${gsis.length} interrupts (1-255)`);
  const flags =
    0x01 | ((options.edge ?? true) ? 0x02 : 0) | (options.activeLow ? 0x04 : 0) | (options.shared ? 0x08 : 0) | (options.wake ? 0x10 : 0);
  const body = [flags, gsis.length];
  for (const g of gsis) {
    checkRange('interrupt number', g, 0xffff_ffff);
    body.push(...le(BigInt(g), 4));
  }
  return Uint8Array.of(0x89, body.length & 0xff, body.length >> 8, ...body);
}

/**
 * QWordMemory(ResourceProducer, PosDecode, MinFixed, MaxFixed, Cacheable, ReadWrite, 0, min,
 * min + length - 1, 0, length): large descriptor 0x8A, 46 bytes. The form VMBus windows use.
 */
export function qwordMemory(min: bigint, length: bigint): Aml {
  if (length <= 0n || min < 0n || min + length - 1n > 0xffff_ffff_ffff_ffffn) {
    throw new AcpiTableError(`QWordMemory [0x${min.toString(16)}, +0x${length.toString(16)}) is not a 64-bit range`);
  }
  const body = [0x00 /* memory */, 0x0c /* MinFixed | MaxFixed, producer */, 0x03 /* RW, cacheable */];
  for (const v of [0n, min, min + length - 1n, 0n, length]) body.push(...le(v, 8));
  return Uint8Array.of(0x8a, body.length, 0x00, ...body);
}

/**
 * End tag (0x79 checksum). With `preceding`, the checksum makes the whole template sum to 0;
 * without, 0 ("treat as summed correctly", what iasl emits).
 */
export function endTag(preceding?: Uint8Array): Aml {
  if (preceding === undefined) return Uint8Array.of(0x79, 0x00);
  return Uint8Array.of(0x79, checksumByte(concat(preceding, Uint8Array.of(0x79))));
}

/** ResourceTemplate() { descriptors }: a Buffer holding the descriptors and an end tag. */
export function resourceTemplate(...descriptors: Aml[]): Aml {
  const body = concat(...descriptors);
  return buffer(concat(body, endTag()));
}

/** The byte that makes `bytes` plus it sum to 0 mod 256. */
export function checksumByte(bytes: Uint8Array): number {
  let sum = 0;
  for (const b of bytes) sum = (sum + b) & 0xff;
  return (0x100 - sum) & 0xff;
}

function checkRange(what: string, v: number, max: number): void {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new AcpiTableError(`${what} ${v} not in [0, 0x${max.toString(16)}]`);
}
