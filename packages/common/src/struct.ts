/**
 * Protocol structures declared once, as data.
 *
 * A structure is a list of `[offset, name, type]` rows in the order of the spec's table, plus
 * the size the guest drivers use (`sizeof(struct ...)`). `defineStruct` checks at definition
 * time that the rows tile the structure exactly (no gap, no overlap, nothing past the end), so
 * a wrong offset or a forgotten reserved field fails when the module loads, not on the wire.
 * From the rows it derives the decoder, the encoder and a table of field offsets that hot
 * paths use for allocation-free access.
 *
 * All integers are little-endian, as on the wire.
 */
import { HostUsageError, HvemuError } from './errors.js';

/** Scalar field types. `u64` decodes to a bigint; `guid` to the canonical lower-case string. */
export type ScalarType = 'u8' | 'u16' | 'u32' | 'u64' | 'guid';
/** A byte array field of fixed length (reserved areas, fixed-size names, user data). */
export interface BytesType {
  readonly bytes: number;
}
export type FieldType = ScalarType | BytesType;

/** One row of a structure table: byte offset, field name, type. */
export type FieldRow = readonly [offset: number, name: string, type: FieldType];

type ValueOf<T extends FieldType> = T extends 'u64' ? bigint : T extends 'guid' ? string : T extends BytesType ? Uint8Array : number;

/** The decoded object type of a structure with the given rows. */
export type StructValue<Rows extends readonly FieldRow[]> = {
  -readonly [R in Rows[number] as R[1]]: ValueOf<R[2]>;
};

export interface StructLayout<Rows extends readonly FieldRow[]> {
  readonly name: string;
  /** Total size in bytes, as `sizeof` in the guest driver. */
  readonly size: number;
  readonly rows: Rows;
  /** Byte offset of each field. */
  readonly offsetOf: { readonly [R in Rows[number] as R[1]]: number };
  /** Decode from `bytes` at `offset`. Throws StructBoundsError when the bytes are too short. */
  decode(bytes: Uint8Array, offset?: number): StructValue<Rows>;
  /** Encode `value` into `bytes` at `offset`; fields missing from `value` are written as zero. */
  encode(value: Partial<StructValue<Rows>>, bytes: Uint8Array, offset?: number): void;
  /** Encode into a new buffer of exactly `size` bytes. */
  encodeNew(value: Partial<StructValue<Rows>>): Uint8Array;
}

/** Input shorter than the structure it should hold: a truncated guest message. */
export class StructBoundsError extends HvemuError {
  readonly outcome = 'message-dropped' as const;
  constructor(
    readonly struct: string,
    readonly needed: number,
    readonly available: number,
  ) {
    super(`${struct}: needs ${needed} bytes, only ${available} available`);
  }
}

function fieldSize(type: FieldType): number {
  switch (type) {
    case 'u8':
      return 1;
    case 'u16':
      return 2;
    case 'u32':
      return 4;
    case 'u64':
      return 8;
    case 'guid':
      return 16;
    default:
      return type.bytes;
  }
}

/**
 * Declares a structure. Throws HostUsageError at definition time if the rows do not tile
 * `[0, size)` exactly.
 */
export function defineStruct<const Rows extends readonly FieldRow[]>(name: string, size: number, rows: Rows): StructLayout<Rows> {
  checkTiling(name, size, rows);
  const offsetOf: Record<string, number> = {};
  for (const [offset, fieldName] of rows) offsetOf[fieldName] = offset;

  const decode = (bytes: Uint8Array, offset = 0): StructValue<Rows> => {
    if (offset < 0 || bytes.length - offset < size) {
      throw new StructBoundsError(name, size, Math.max(0, bytes.length - offset));
    }
    const view = new DataView(bytes.buffer, bytes.byteOffset + offset, size);
    const out: Record<string, unknown> = {};
    for (const [at, fieldName, type] of rows) out[fieldName] = readField(view, at, type);
    return out as StructValue<Rows>;
  };

  const encode = (value: Partial<StructValue<Rows>>, bytes: Uint8Array, offset = 0): void => {
    if (offset < 0 || bytes.length - offset < size) {
      throw new StructBoundsError(name, size, Math.max(0, bytes.length - offset));
    }
    const view = new DataView(bytes.buffer, bytes.byteOffset + offset, size);
    const record = value as Record<string, unknown>;
    for (const [at, fieldName, type] of rows) writeField(view, at, type, record[fieldName], name, fieldName);
  };

  return Object.freeze({
    name,
    size,
    rows,
    offsetOf: Object.freeze(offsetOf) as StructLayout<Rows>['offsetOf'],
    decode,
    encode,
    encodeNew(value: Partial<StructValue<Rows>>): Uint8Array {
      const bytes = new Uint8Array(size);
      encode(value, bytes, 0);
      return bytes;
    },
  });
}

function checkTiling(name: string, size: number, rows: readonly FieldRow[]): void {
  let expected = 0;
  const seen = new Set<string>();
  for (const [offset, fieldName, type] of rows) {
    if (seen.has(fieldName)) throw new HostUsageError(`${name}: field ${fieldName} declared twice`);
    seen.add(fieldName);
    if (offset !== expected) {
      throw new HostUsageError(`${name}.${fieldName}: declared at offset ${offset}, but the previous field ends at ${expected}`);
    }
    const width = fieldSize(type);
    if (!Number.isInteger(width) || width <= 0) throw new HostUsageError(`${name}.${fieldName}: bad width ${width}`);
    expected = offset + width;
  }
  if (expected !== size) {
    throw new HostUsageError(`${name}: fields cover ${expected} bytes, but sizeof is ${size}`);
  }
}

function readField(view: DataView, at: number, type: FieldType): unknown {
  switch (type) {
    case 'u8':
      return view.getUint8(at);
    case 'u16':
      return view.getUint16(at, true);
    case 'u32':
      return view.getUint32(at, true);
    case 'u64':
      return view.getBigUint64(at, true);
    case 'guid':
      return formatGuid(new Uint8Array(view.buffer, view.byteOffset + at, 16));
    default:
      return new Uint8Array(view.buffer.slice(view.byteOffset + at, view.byteOffset + at + type.bytes));
  }
}

function writeField(view: DataView, at: number, type: FieldType, value: unknown, struct: string, field: string): void {
  const bad = (): never => {
    throw new HostUsageError(`${struct}.${field}: value ${String(value)} does not fit ${JSON.stringify(type)}`);
  };
  switch (type) {
    case 'u8':
    case 'u16':
    case 'u32': {
      const v = value === undefined ? 0 : value;
      const max = type === 'u8' ? 0xff : type === 'u16' ? 0xffff : 0xffffffff;
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) bad();
      if (type === 'u8') view.setUint8(at, v as number);
      else if (type === 'u16') view.setUint16(at, v as number, true);
      else view.setUint32(at, v as number, true);
      return;
    }
    case 'u64': {
      const v = value === undefined ? 0n : typeof value === 'number' ? BigInt(value) : value;
      if (typeof v !== 'bigint' || v < 0n || v > 0xffff_ffff_ffff_ffffn) bad();
      view.setBigUint64(at, v as bigint, true);
      return;
    }
    case 'guid': {
      const bytes = value === undefined ? new Uint8Array(16) : parseGuid(String(value));
      new Uint8Array(view.buffer, view.byteOffset + at, 16).set(bytes);
      return;
    }
    default: {
      const target = new Uint8Array(view.buffer, view.byteOffset + at, type.bytes);
      if (value === undefined) {
        target.fill(0);
        return;
      }
      if (!(value instanceof Uint8Array) || value.length > type.bytes) bad();
      target.fill(0);
      target.set(value as Uint8Array);
    }
  }
}

/**
 * GUIDs on the wire are Microsoft GUIDs: the first three groups little-endian, the last two
 * as bytes. Formats as `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
 */
export function formatGuid(b: Uint8Array): string {
  const hex = (i: number): string => b[i].toString(16).padStart(2, '0');
  const group = (idx: number[]): string => idx.map(hex).join('');
  return [group([3, 2, 1, 0]), group([5, 4]), group([7, 6]), group([8, 9]), group([10, 11, 12, 13, 14, 15])].join('-');
}

/** Parses a canonical GUID string into its 16 wire bytes (see formatGuid). */
export function parseGuid(text: string): Uint8Array {
  const m = /^([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})$/i.exec(text.trim());
  if (!m) throw new HostUsageError(`not a GUID: ${text}`);
  const hex = m.slice(1).join('');
  const raw = new Uint8Array(16);
  for (let i = 0; i < 16; i++) raw[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  const out = new Uint8Array(16);
  const order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
  for (let i = 0; i < 16; i++) out[order[i]] = raw[i];
  return out;
}
