/**
 * SCSI structures (CDBs, parameter data, sense) declared as data. SCSI is big-endian, so these
 * are not @hvemu/common's little-endian `defineStruct`: the same idea (rows of offset, name,
 * type; tiling checked when the module loads), with big-endian fields. 64-bit fields decode to
 * bigint (an LBA may be anything a guest writes); the disk range-checks them.
 */
import { HostUsageError } from '@hvemu/common';

export type BeType = 'u8' | 'be16' | 'be24' | 'be32' | 'be64' | { readonly bytes: number };
export type BeRow = readonly [offset: number, name: string, type: BeType];

type BeValue<T extends BeType> = T extends 'be64' ? bigint : T extends { bytes: number } ? Uint8Array : number;
export type BeStructValue<Rows extends readonly BeRow[]> = { -readonly [R in Rows[number] as R[1]]: BeValue<R[2]> };

export interface BeLayout<Rows extends readonly BeRow[]> {
  readonly name: string;
  readonly size: number;
  readonly offsetOf: { readonly [R in Rows[number] as R[1]]: number };
  /** Decodes `bytes` from `offset`; bytes past the end read as zero (a short CDB or allocation length). */
  decode(bytes: Uint8Array, offset?: number): BeStructValue<Rows>;
  /** Encodes into a new buffer of `size` bytes; missing fields are zero. */
  encodeNew(value: Partial<BeStructValue<Rows>>): Uint8Array;
  encode(value: Partial<BeStructValue<Rows>>, out: Uint8Array, offset?: number): void;
}

function width(t: BeType): number {
  if (typeof t === 'object') return t.bytes;
  return { u8: 1, be16: 2, be24: 3, be32: 4, be64: 8 }[t];
}

export function defineBeStruct<const Rows extends readonly BeRow[]>(name: string, size: number, rows: Rows): BeLayout<Rows> {
  let at = 0;
  const offsetOf: Record<string, number> = {};
  for (const [offset, field, type] of rows) {
    if (offset !== at) throw new HostUsageError(`${name}.${field}: at ${offset}, the previous field ends at ${at}`);
    offsetOf[field] = offset;
    at += width(type);
  }
  if (at !== size) throw new HostUsageError(`${name}: fields cover ${at} bytes, size is ${size}`);

  const decode = (bytes: Uint8Array, offset = 0): BeStructValue<Rows> => {
    // A copy padded with zeros: CDBs shorter than their layout are refused earlier, but
    // parameter lists may legitimately end early.
    const padded = new Uint8Array(size);
    padded.set(bytes.subarray(offset, Math.min(bytes.length, offset + size)));
    const out: Record<string, unknown> = {};
    for (const [o, field, type] of rows) out[field] = readBe(padded, o, type);
    return out as BeStructValue<Rows>;
  };
  const encode = (value: Partial<BeStructValue<Rows>>, out: Uint8Array, offset = 0): void => {
    const record = value as Record<string, unknown>;
    for (const [o, field, type] of rows) writeBe(out, offset + o, type, record[field], `${name}.${field}`);
  };
  return Object.freeze({
    name,
    size,
    offsetOf: Object.freeze(offsetOf) as BeLayout<Rows>['offsetOf'],
    decode,
    encode,
    encodeNew: (value: Partial<BeStructValue<Rows>>) => {
      const out = new Uint8Array(size);
      encode(value, out);
      return out;
    },
  });
}

function readBe(b: Uint8Array, o: number, type: BeType): number | bigint | Uint8Array {
  if (typeof type === 'object') return b.slice(o, o + type.bytes);
  switch (type) {
    case 'u8':
      return b[o];
    case 'be16':
      return (b[o] << 8) | b[o + 1];
    case 'be24':
      return (b[o] << 16) | (b[o + 1] << 8) | b[o + 2];
    case 'be32':
      return ((b[o] << 24) >>> 0) + ((b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]);
    case 'be64':
      return new DataView(b.buffer, b.byteOffset).getBigUint64(o, false);
  }
}

function writeBe(b: Uint8Array, o: number, type: BeType, value: unknown, what: string): void {
  if (typeof type === 'object') {
    b.fill(0, o, o + type.bytes);
    if (value === undefined) return;
    if (!(value instanceof Uint8Array) || value.length > type.bytes) throw new HostUsageError(`${what}: does not fit ${type.bytes} bytes`);
    b.set(value, o);
    return;
  }
  if (type === 'be64') {
    const v = value === undefined ? 0n : BigInt(value as number | bigint);
    if (v < 0n || v > 0xffff_ffff_ffff_ffffn) throw new HostUsageError(`${what}: ${v} does not fit 64 bits`);
    new DataView(b.buffer, b.byteOffset).setBigUint64(o, v, false);
    return;
  }
  const n = width(type);
  const v = value === undefined ? 0 : (value as number);
  if (!Number.isInteger(v) || v < 0 || v >= 2 ** (8 * n)) throw new HostUsageError(`${what}: ${String(value)} does not fit ${n} bytes`);
  for (let i = 0; i < n; i++) b[o + i] = Math.floor(v / 2 ** (8 * (n - 1 - i))) & 0xff;
}
