/**
 * The trace schema (proto/trace.proto), loaded with protobufjs when this module loads, and the
 * TypeScript shapes of its messages. 64-bit fields are bigints.
 */
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { HostUsageError } from '@hvemu/common';
import { describe } from './errors.js';

export const TRACE_SCHEMA_VERSION = 3;
/** The first schema version with HostInput events (a device's clock reads, replayed from the trace). */
export const TRACE_SCHEMA_HOST_INPUTS = 3;
/** Oldest schema version the reader accepts (1 lacks HostCall events, so its host-initiated requests cannot be replayed). */
export const TRACE_SCHEMA_MIN_VERSION = 1;
/** The 8 bytes every trace file starts with. */
export const TRACE_MAGIC = new TextEncoder().encode('HVTRACE1');

const protoPath = fileURLToPath(new URL('../proto/trace.proto', import.meta.url));
const root = protobuf.loadSync(protoPath);
/** hvemu.trace.v1.Record */
export const RecordType = root.lookupType('hvemu.trace.v1.Record');

export type Direction = 'GUEST_TO_HOST' | 'HOST_TO_GUEST';
export type ChannelStateKind = 'OFFERED' | 'OPENED' | 'CLOSED' | 'RESCINDED';

export interface TraceDevice {
  name: string;
  classId: string;
  instanceId: string;
  relid: number;
}

export interface TraceHeader {
  schemaVersion: number;
  vmbusVersion: number;
  devices: TraceDevice[];
  producer: string;
  createdUnixMs: bigint;
}

export interface GpaRangeData {
  byteOffset: number;
  pfns: bigint[];
  data: Uint8Array;
}

/** One event's payload, by kind (the protobuf oneof). */
export type TraceEventBody =
  | { kind: 'postMessage'; postMessage: { connectionId: number; messageType: number; payload: Uint8Array } }
  | { kind: 'signalEvent'; signalEvent: { connectionId: number; flagNumber: number; fast: boolean } }
  | { kind: 'hypercallResult'; hypercallResult: { callCode: number; status: number } }
  | { kind: 'msrWrite'; msrWrite: { msr: number; value: bigint } }
  | { kind: 'synicMessage'; synicMessage: { sint: number; messageType: number; payload: Uint8Array } }
  | { kind: 'synicEventFlag'; synicEventFlag: { sint: number; flag: number } }
  | { kind: 'interrupt'; interrupt: { vector: number; autoEoi: boolean } }
  | { kind: 'eom'; eom: Record<string, never> }
  | {
      kind: 'gpadlCreated';
      gpadlCreated: { relid: number; gpadl: number; byteOffset: number; byteCount: number; pfns: bigint[]; status: number };
    }
  | { kind: 'gpadlTorndown'; gpadlTorndown: { relid: number; gpadl: number } }
  | { kind: 'ringPacket'; ringPacket: { relid: number; direction: Direction; packet: Uint8Array; ranges: GpaRangeData[] } }
  | {
      kind: 'channelState';
      channelState: { relid: number; state: ChannelStateKind; classId: string; instanceId: string; subchannelIndex: number };
    }
  | { kind: 'hostCall'; hostCall: { relid: number; device: string; method: string; argsJson: string } }
  | { kind: 'hostInput'; hostInput: HostInput };

/** What a device read from outside the emulation: the reference time (100 ns) or the host wall clock (Unix ms). */
export type HostInputSource = 'referenceTime' | 'wallClockMs';

export interface HostInput {
  relid: number;
  device: string;
  source: HostInputSource;
  /** Set when source is referenceTime (0 otherwise). */
  referenceTime: bigint;
  /** Set when source is wallClockMs (0 otherwise). */
  wallClockMs: number;
}

export type TraceEventKind = TraceEventBody['kind'];

/** An event as recorded: sequence number, reference time, vCPU, body. */
export type TraceEvent = { seq: bigint; time: bigint; vp: number } & TraceEventBody;

export interface TraceDropped {
  count: bigint;
  firstSeq: bigint;
}

export interface TraceFooter {
  events: bigint;
  dropped: bigint;
  /** The VMBus version the guest negotiated during the capture (0: none; traces before it have 0). */
  vmbusVersion: number;
}

/**
 * What replay drives: the guest's events, and the VMM's calls on device APIs (hostCall).
 * Everything else is the host's doing, which replay reproduces and compares.
 */
export const GUEST_ORIGINATED: ReadonlySet<TraceEventKind> = new Set(['postMessage', 'signalEvent', 'eom', 'msrWrite', 'hostCall']);

export function isGuestOriginated(e: TraceEvent): boolean {
  if (e.kind === 'ringPacket') return e.ringPacket.direction === 'GUEST_TO_HOST';
  if (e.kind === 'gpadlCreated' || e.kind === 'gpadlTorndown' || e.kind === 'channelState') return false;
  return GUEST_ORIGINATED.has(e.kind);
}

/** The channel an event is about, when it names one (ring packets, GPADLs, channel state, host calls). */
export function eventRelid(e: TraceEvent): number | undefined {
  switch (e.kind) {
    case 'ringPacket':
      return e.ringPacket.relid;
    case 'channelState':
      return e.channelState.relid;
    case 'gpadlCreated':
      return e.gpadlCreated.relid;
    case 'gpadlTorndown':
      return e.gpadlTorndown.relid;
    case 'hostCall':
      return e.hostCall.relid;
    case 'hostInput':
      return e.hostInput.relid;
    default:
      return undefined;
  }
}

/**
 * HostCall arguments as JSON: bigints as {"$bigint": "<decimal>"}, byte arrays as
 * {"$bytes": "<hex>"}, everything else as JSON has it.
 */
export function encodeHostCallArgs(args: readonly unknown[]): string {
  return JSON.stringify(args, (_key, value: unknown) => {
    if (typeof value === 'bigint') return { $bigint: value.toString() };
    if (value instanceof Uint8Array) return { $bytes: Buffer.from(value).toString('hex') };
    return value;
  });
}

/** The inverse of encodeHostCallArgs; throws SyntaxError on malformed JSON or a non-array (HostUsageError when `json` is not a string). */
export function decodeHostCallArgs(json: string): unknown[] {
  if (typeof json !== 'string') throw new HostUsageError(`decodeHostCallArgs: json must be a string, got ${describe(json)}`);
  const value: unknown = JSON.parse(json, (_key, v: unknown) => {
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      const o = v as Record<string, unknown>;
      if (typeof o.$bigint === 'string' && Object.keys(o).length === 1) return BigInt(o.$bigint);
      if (typeof o.$bytes === 'string' && Object.keys(o).length === 1) return Uint8Array.from(Buffer.from(o.$bytes, 'hex'));
    }
    return v;
  });
  if (!Array.isArray(value)) throw new SyntaxError('host call arguments must be a JSON array');
  return value;
}

type FieldType = 'u32' | 'u64' | 'f64' | 'bool' | 'bytes' | 'string' | 'u64[]' | 'ranges' | 'direction' | 'state' | 'input-source';
/** The fields of each event body and their types (the schema's, as the TypeScript shapes have them). */
const BODY_FIELDS: Record<TraceEventKind, Record<string, FieldType>> = {
  postMessage: { connectionId: 'u32', messageType: 'u32', payload: 'bytes' },
  signalEvent: { connectionId: 'u32', flagNumber: 'u32', fast: 'bool' },
  hypercallResult: { callCode: 'u32', status: 'u32' },
  msrWrite: { msr: 'u32', value: 'u64' },
  synicMessage: { sint: 'u32', messageType: 'u32', payload: 'bytes' },
  synicEventFlag: { sint: 'u32', flag: 'u32' },
  interrupt: { vector: 'u32', autoEoi: 'bool' },
  eom: {},
  gpadlCreated: { relid: 'u32', gpadl: 'u32', byteOffset: 'u32', byteCount: 'u32', pfns: 'u64[]', status: 'u32' },
  gpadlTorndown: { relid: 'u32', gpadl: 'u32' },
  ringPacket: { relid: 'u32', direction: 'direction', packet: 'bytes', ranges: 'ranges' },
  channelState: { relid: 'u32', state: 'state', classId: 'string', instanceId: 'string', subchannelIndex: 'u32' },
  hostCall: { relid: 'u32', device: 'string', method: 'string', argsJson: 'string' },
  hostInput: { relid: 'u32', device: 'string', source: 'input-source', referenceTime: 'u64', wallClockMs: 'f64' },
};

function isU64(v: unknown): boolean {
  return typeof v === 'bigint' && v >= 0n && v < 1n << 64n;
}

/** The fields of the other records (header devices are checked one by one). */
const RECORD_FIELDS: Record<'header' | 'dropped' | 'footer', [string, FieldType][]> = {
  header: [
    ['schemaVersion', 'u32'],
    ['vmbusVersion', 'u32'],
    ['producer', 'string'],
    ['createdUnixMs', 'u64'],
  ],
  dropped: [
    ['count', 'u64'],
    ['firstSeq', 'u64'],
  ],
  footer: [
    ['events', 'u64'],
    ['dropped', 'u64'],
  ],
};

/** What is wrong with a header, Dropped or footer record's body, naming the field, or null. */
export function recordBodyProblem(kind: 'header' | 'dropped' | 'footer', body: Record<string, unknown>): string | null {
  for (const [name, type] of RECORD_FIELDS[kind])
    if (!fieldOk(type, body[name])) return `${kind}.${name} must be ${type}, got ${describe(body[name])}`;
  if (kind === 'footer' && body.vmbusVersion !== undefined && !isU32(body.vmbusVersion))
    return `footer.vmbusVersion must be u32, got ${describe(body.vmbusVersion)}`;
  if (kind === 'header') {
    if (!Array.isArray(body.devices)) return `header.devices must be an array, got ${describe(body.devices)}`;
    for (const [i, d] of (body.devices as unknown[]).entries()) {
      const dev = d as Record<string, unknown> | null;
      if (
        typeof dev !== 'object' ||
        dev === null ||
        typeof dev.name !== 'string' ||
        typeof dev.classId !== 'string' ||
        typeof dev.instanceId !== 'string' ||
        !isU32(dev.relid)
      ) {
        return `header.devices[${i}] must be { name, classId, instanceId: string; relid: u32 }, got ${describe(d)}`;
      }
    }
  }
  return null;
}

/** BODY_FIELDS as lists, made once (the recorder checks every event). */
const BODY_FIELD_LIST = Object.fromEntries(Object.entries(BODY_FIELDS).map(([k, f]) => [k, Object.entries(f)])) as Record<
  TraceEventKind,
  [string, FieldType][]
>;

function fieldOk(type: FieldType, v: unknown): boolean {
  switch (type) {
    case 'u32':
      return isU32(v);
    case 'u64':
      return isU64(v);
    case 'f64':
      return typeof v === 'number' && Number.isFinite(v);
    case 'input-source':
      return v === 'referenceTime' || v === 'wallClockMs';
    case 'bool':
      return typeof v === 'boolean';
    case 'bytes':
      return v instanceof Uint8Array;
    case 'string':
      return typeof v === 'string';
    case 'u64[]':
      return Array.isArray(v) && v.every(isU64);
    case 'direction':
      return v === 'GUEST_TO_HOST' || v === 'HOST_TO_GUEST';
    case 'state':
      return v === 'OFFERED' || v === 'OPENED' || v === 'CLOSED' || v === 'RESCINDED';
    case 'ranges':
      return (
        Array.isArray(v) &&
        v.every((r: unknown) => {
          const x = r as { byteOffset?: unknown; pfns?: unknown; data?: unknown } | null;
          return typeof x === 'object' && x !== null && isU32(x.byteOffset) && fieldOk('u64[]', x.pfns) && x.data instanceof Uint8Array;
        })
      );
  }
}

function isU32(v: unknown): boolean {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
}

/**
 * What is wrong with an event body ({ kind, [kind]: {...} }), naming the field, or null when
 * it has the schema's shape: the recorder and replay refuse wrong-typed events at the edge.
 */
export function eventBodyProblem(body: unknown): string | null {
  if (typeof body !== 'object' || body === null) return `the event is ${describe(body)}`;
  const kind = (body as { kind?: unknown }).kind;
  if (typeof kind !== 'string' || !Object.hasOwn(BODY_FIELDS, kind))
    return `unknown kind ${describe(kind)} (known: ${Object.keys(BODY_FIELDS).join(', ')})`;
  const fields = (body as Record<string, unknown>)[kind] as Record<string, unknown> | null;
  if (typeof fields !== 'object' || fields === null) return `${kind} must be an object, got ${describe(fields)}`;
  for (const [name, type] of BODY_FIELD_LIST[kind as TraceEventKind]) {
    if (!fieldOk(type, fields[name])) return `${kind}.${name} must be ${type}, got ${describe(fields[name])}`;
  }
  return null;
}
