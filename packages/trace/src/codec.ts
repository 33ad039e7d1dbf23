/**
 * Encoding and decoding of length-delimited trace records, with every failure of a corrupt
 * or truncated file reported as a TraceFormatError naming the byte offset.
 */
import { HostUsageError } from '@hvemu/common';
import { describe, TraceFormatError } from './errors.js';
import {
  eventBodyProblem,
  recordBodyProblem,
  RecordType,
  TRACE_MAGIC,
  type TraceDropped,
  type TraceEvent,
  type TraceFooter,
  type TraceHeader,
} from './schema.js';

export type TraceRecord =
  | { kind: 'header'; header: TraceHeader }
  | { kind: 'event'; event: TraceEvent }
  | { kind: 'dropped'; dropped: TraceDropped }
  | { kind: 'footer'; footer: TraceFooter };

/**
 * Encodes one record with its varint length prefix (protobuf's own delimited form, one
 * buffer). A record of the wrong shape is a HostUsageError naming the field.
 */
export function encodeRecord(record: TraceRecord): Uint8Array {
  if (typeof record !== 'object' || record === null)
    throw new HostUsageError(`encodeRecord: record must be { kind, ... }, got ${describe(record)}`);
  if (!['header', 'event', 'dropped', 'footer'].includes(record.kind))
    throw new HostUsageError(`encodeRecord: record.kind must be header, event, dropped or footer, got ${describe(record.kind)}`);
  const body = (record as Record<string, unknown>)[record.kind];
  if (typeof body !== 'object' || body === null)
    throw new HostUsageError(`encodeRecord: record.${record.kind} must be an object, got ${describe(body)}`);
  const problem =
    record.kind === 'event' ? eventBodyProblem(record.event) : recordBodyProblem(record.kind, body as Record<string, unknown>);
  if (problem) throw new HostUsageError(`encodeRecord: record.${record.kind}: ${problem}`);
  try {
    return encodeRecordUnchecked(record);
  } catch (error) {
    throw new HostUsageError(`encodeRecord: the ${record.kind} does not encode: ${(error as Error).message}`);
  }
}

/** encodeRecord without the shape checks, for the recorder (which checked the event already). */
export function encodeRecordUnchecked(record: TraceRecord): Uint8Array {
  return RecordType.encodeDelimited(RecordType.fromObject(toWire(record))).finish();
}

function toWire(record: TraceRecord): Record<string, unknown> {
  switch (record.kind) {
    case 'header':
      return { header: record.header };
    case 'dropped':
      return { dropped: record.dropped };
    case 'footer':
      return { footer: record.footer };
    case 'event': {
      const e = record.event;
      return { event: { seq: e.seq, time: e.time, vp: e.vp, [e.kind]: (e as unknown as Record<string, unknown>)[e.kind] } };
    }
  }
}

const EVENT_KIND_LIST = [
  'postMessage',
  'signalEvent',
  'synicMessage',
  'synicEventFlag',
  'interrupt',
  'eom',
  'gpadlCreated',
  'gpadlTorndown',
  'ringPacket',
  'channelState',
  'hypercallResult',
  'msrWrite',
  'hostCall',
  'hostInput',
] as const;
/** Every event kind the schema has. */
export const EVENT_KINDS: ReadonlySet<string> = new Set(EVENT_KIND_LIST);

/**
 * Largest record the reader accepts, and so the largest the recorder writes (a ring packet:
 * the packet, at most a ring's size, plus at most 16 MiB of GPA-direct data): 64 MiB.
 */
export const MAX_RECORD_BYTES = 64 << 20;

/** Reads every record of a trace file's bytes. Throws TraceFormatError on anything malformed. */
export function* decodeRecords(bytes: Uint8Array): Generator<{ offset: number; record: TraceRecord }> {
  if (!(bytes instanceof Uint8Array)) throw new HostUsageError(`decodeRecords: bytes must be a Uint8Array, got ${describe(bytes)}`);
  if (bytes.length < TRACE_MAGIC.length || !TRACE_MAGIC.every((b, i) => bytes[i] === b)) {
    throw new TraceFormatError(0, 'not an hvemu trace (bad magic)');
  }
  let at = TRACE_MAGIC.length;
  while (at < bytes.length) {
    const start = at;
    let length = 0;
    let shift = 1;
    for (let i = 0; ; i++) {
      if (at >= bytes.length) throw new TraceFormatError(start, 'truncated record length');
      if (i >= 5) throw new TraceFormatError(start, 'record length varint too long');
      const b = bytes[at++];
      length += (b & 0x7f) * shift;
      shift *= 128;
      if ((b & 0x80) === 0) break;
    }
    if (length > MAX_RECORD_BYTES) throw new TraceFormatError(start, `record of ${length} bytes exceeds the limit`);
    if (at + length > bytes.length) throw new TraceFormatError(start, `record of ${length} bytes truncated at ${bytes.length - at}`);
    yield { offset: start, record: decodeRecordBody(bytes.subarray(at, at + length), start) };
    at += length;
  }
}

/** Decodes one record's bytes (without its length prefix); `offset` is where it starts, for errors. */
export function decodeRecordBody(body: Uint8Array, offset: number): TraceRecord {
  let obj: Record<string, unknown>;
  try {
    const message = RecordType.decode(body);
    obj = RecordType.toObject(message, { longs: BigInt, enums: String, defaults: true, arrays: true, oneofs: true }) as Record<
      string,
      unknown
    >;
  } catch (error) {
    throw new TraceFormatError(offset, `undecodable record: ${(error as Error).message}`);
  }
  switch (obj.kind) {
    case 'header':
      return { kind: 'header', header: obj.header as TraceHeader };
    case 'dropped':
      return { kind: 'dropped', dropped: obj.dropped as TraceDropped };
    case 'footer':
      return { kind: 'footer', footer: obj.footer as TraceFooter };
    case 'event':
      return { kind: 'event', event: eventFromWire(obj.event as Record<string, unknown>, offset) };
    default:
      throw new TraceFormatError(offset, 'record of unknown kind');
  }
}

function eventFromWire(e: Record<string, unknown>, offset: number): TraceEvent {
  const kind = e.kind as string | undefined;
  if (!kind || !EVENT_KINDS.has(kind)) throw new TraceFormatError(offset, `event of unknown kind ${kind}`);
  return { seq: e.seq as bigint, time: e.time as bigint, vp: e.vp as number, kind, [kind]: e[kind] } as unknown as TraceEvent;
}
