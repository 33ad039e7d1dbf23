/**
 * The trace schema (proto/trace.proto), loaded with protobufjs when this module loads, and the
 * TypeScript shapes of its messages. 64-bit fields are bigints.
 */
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';

export const TRACE_SCHEMA_VERSION = 1;
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
  | { kind: 'gpadlCreated'; gpadlCreated: { relid: number; gpadl: number; byteOffset: number; byteCount: number; pfns: bigint[]; status: number } }
  | { kind: 'gpadlTorndown'; gpadlTorndown: { relid: number; gpadl: number } }
  | { kind: 'ringPacket'; ringPacket: { relid: number; direction: Direction; packet: Uint8Array; ranges: GpaRangeData[] } }
  | { kind: 'channelState'; channelState: { relid: number; state: ChannelStateKind; classId: string; instanceId: string; subchannelIndex: number } };

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
}

/** Events originated by the guest (replay drives these) vs by the host (replay compares these). */
export const GUEST_ORIGINATED: ReadonlySet<TraceEventKind> = new Set(['postMessage', 'signalEvent', 'eom', 'msrWrite']);

export function isGuestOriginated(e: TraceEvent): boolean {
  if (e.kind === 'ringPacket') return e.ringPacket.direction === 'GUEST_TO_HOST';
  if (e.kind === 'gpadlCreated' || e.kind === 'gpadlTorndown' || e.kind === 'channelState') return false;
  return GUEST_ORIGINATED.has(e.kind);
}
