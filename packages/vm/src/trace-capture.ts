/**
 * Trace capture: the observers that turn what each layer reports (hypercalls, SynIC
 * deliveries, VMBus server actions, ring packets) into trace events on a TraceSink. Every hook
 * checks `sink.enabled` first; with the disabled sink they cost one property read.
 */
import { HVCALL_POST_MESSAGE, HVCALL_SIGNAL_EVENT } from '@hvemu/hvdef';
import { PAGE_SIZE, type GuestMemory } from '@hvemu/memory';
import type { HypercallRecord } from '@hvemu/hypercalls';
import type { SynicObserver } from '@hvemu/synic';
import { encodeHostCallArgs, type GpaRangeData, type HostInputSource, type TraceSink } from '@hvemu/trace';
import {
  CHANNELMSG_OFFERCHANNEL,
  CHANNELMSG_RESCIND_CHANNELOFFER,
  parseChannelMessage,
  VMPACKET_DESCRIPTOR_SIZE,
  type GpaRange,
  type OutgoingPacket,
  type PacketView,
  type DeviceEnvironment,
  type ServerAction,
  type VmbusServer,
} from '@hvemu/vmbus';

export interface TraceHooks {
  synic: SynicObserver;
  onCall(record: HypercallRecord): void;
  onResult(record: HypercallRecord, status: number): void;
  onAction(action: ServerAction): void;
  onPacket(relid: number, direction: 'guest-to-host' | 'host-to-guest', packet: PacketView | OutgoingPacket): void;
  /**
   * A fast HvSignalEvent (flag 0) that arrived through the doorbell, with no exit: recorded
   * as the exit path would record it (the call, then HV_STATUS_SUCCESS), so a trace reads
   * the same whichever path the guest's signal took.
   */
  onDoorbellSignal(connectionId: number, deliver: () => void): void;
  /** A VMM call on a device's host API (IcDevice.observeHostCalls). */
  onHostCall(relid: number, device: string, method: string, args: readonly unknown[]): void;
  /** A device read a clock (deviceInputs): the value it got, which replay hands back. */
  onHostInput(relid: number, device: string, source: HostInputSource, value: bigint | number): void;
}

/** Hooks writing to `sink`; `server` is read for GPADL page lists. */
export function traceHooks(sink: TraceSink, memory: GuestMemory, server: () => VmbusServer | undefined): TraceHooks {
  return {
    synic: {
      messageDelivered: (vp, sint, messageType, payload) =>
        sink.enabled && sink.record(vp, { kind: 'synicMessage', synicMessage: { sint, messageType, payload: payload.slice() } }),
      eventFlagSet: (vp, sint, flag) => sink.enabled && sink.record(vp, { kind: 'synicEventFlag', synicEventFlag: { sint, flag } }),
      interruptRaised: (vp, vector, autoEoi) => sink.enabled && sink.record(vp, { kind: 'interrupt', interrupt: { vector, autoEoi } }),
      eom: (vp) => sink.enabled && sink.record(vp, { kind: 'eom', eom: {} }),
      msrWritten: (vp, msr, value) => sink.enabled && sink.record(vp, { kind: 'msrWrite', msrWrite: { msr, value } }),
    },
    onCall: (record) => {
      if (sink.enabled) recordHypercall(sink, memory, record);
    },
    onResult: (record, status) => {
      if (sink.enabled && (record.control.code === HVCALL_POST_MESSAGE || record.control.code === HVCALL_SIGNAL_EVENT)) {
        sink.record(record.vp, { kind: 'hypercallResult', hypercallResult: { callCode: record.control.code, status } });
      }
    },
    onAction: (action) => {
      if (sink.enabled) recordAction(sink, action, server());
    },
    onDoorbellSignal: (connectionId, deliver) => {
      if (!sink.enabled) return deliver();
      sink.record(0, { kind: 'signalEvent', signalEvent: { connectionId, flagNumber: 0, fast: true } });
      deliver();
      sink.record(0, { kind: 'hypercallResult', hypercallResult: { callCode: HVCALL_SIGNAL_EVENT, status: 0 } });
    },
    onHostInput: (relid, device, source, value) => {
      if (!sink.enabled) return;
      const referenceTime = source === 'referenceTime' ? (value as bigint) : 0n;
      const wallClockMs = source === 'wallClockMs' ? (value as number) : 0;
      sink.record(0, { kind: 'hostInput', hostInput: { relid, device, source, referenceTime, wallClockMs } });
    },
    onHostCall: (relid, device, method, args) => {
      if (sink.enabled) sink.record(0, { kind: 'hostCall', hostCall: { relid, device, method, argsJson: encodeHostCallArgs(args) } });
    },
    onPacket: (relid, direction, packet) => {
      if (!sink.enabled) return;
      const view = 'bytes' in packet && typeof packet.bytes === 'function' ? (packet as PacketView) : null;
      const bytes = view ? view.bytes() : encodeOutgoing(packet as OutgoingPacket);
      const ranges = view ? rangeData(memory, view.gpaRanges()) : [];
      sink.record(0, {
        kind: 'ringPacket',
        ringPacket: { relid, direction: direction === 'guest-to-host' ? 'GUEST_TO_HOST' : 'HOST_TO_GUEST', packet: bytes, ranges },
      });
    },
  };
}

/** Most bytes of GPA-direct data one packet records (larger ranges are cut, and say so by their length). */
export const MAX_RANGE_DATA_BYTES = 16 << 20;

/**
 * The bytes each GPA range of a GPA-direct packet referenced when the host read it, so a replay
 * needs no guest RAM. Guest-controlled: a range (or its part) outside RAM records no bytes
 * there, and the total is capped at MAX_RANGE_DATA_BYTES.
 */
export function rangeData(memory: GuestMemory, ranges: readonly GpaRange[]): GpaRangeData[] {
  let budget = MAX_RANGE_DATA_BYTES;
  return ranges.map((r) => {
    const data = new Uint8Array(Math.max(0, Math.min(r.byteCount, budget)));
    budget -= data.length;
    let at = 0;
    let offset = r.byteOffset;
    for (const pfn of r.pfns) {
      if (at >= data.length) break;
      const n = Math.min(PAGE_SIZE - (offset % PAGE_SIZE), data.length - at);
      const gpa = pfn * PAGE_SIZE + (offset % PAGE_SIZE);
      if (Number.isSafeInteger(gpa) && memory.contains(gpa, n)) memory.read(gpa, data.subarray(at, at + n));
      at += n;
      offset = 0;
    }
    return { byteOffset: r.byteOffset, pfns: r.pfns.map(BigInt), data };
  });
}

/** Writes recorded GPA-direct data back where it came from (replay); parts outside `memory` are skipped. */
export function restoreRangeData(memory: GuestMemory, ranges: readonly GpaRangeData[]): void {
  for (const r of ranges) {
    let at = 0;
    let offset = r.byteOffset;
    for (const pfn of r.pfns) {
      if (at >= r.data.length) break;
      const n = Math.min(PAGE_SIZE - (offset % PAGE_SIZE), r.data.length - at);
      const gpa = Number(pfn) * PAGE_SIZE + (offset % PAGE_SIZE);
      if (Number.isSafeInteger(gpa) && memory.contains(gpa, n)) memory.write(gpa, r.data.subarray(at, at + n));
      at += n;
      offset = 0;
    }
  }
}

function recordHypercall(sink: TraceSink, memory: GuestMemory, r: HypercallRecord): void {
  const input = (length: number): DataView | null => {
    if (r.control.fast) {
      const b = new DataView(new ArrayBuffer(16));
      b.setBigUint64(0, BigInt.asUintN(64, r.regs.rdx), true);
      b.setBigUint64(8, BigInt.asUintN(64, r.regs.r8), true);
      return b;
    }
    const gpa = Number(r.regs.rdx);
    if (!Number.isSafeInteger(gpa) || !memory.contains(gpa, length)) return null;
    const bytes = new Uint8Array(length);
    memory.read(gpa, bytes);
    return new DataView(bytes.buffer);
  };
  if (r.control.code === HVCALL_POST_MESSAGE && !r.control.fast) {
    const v = input(16 + 240);
    if (!v) return;
    const size = Math.min(v.getUint32(12, true), 240);
    const payload = new Uint8Array(v.buffer, 16, size).slice();
    sink.record(r.vp, {
      kind: 'postMessage',
      postMessage: { connectionId: v.getUint32(0, true), messageType: v.getUint32(8, true), payload },
    });
  } else if (r.control.code === HVCALL_SIGNAL_EVENT) {
    const v = input(8);
    if (!v) return;
    sink.record(r.vp, {
      kind: 'signalEvent',
      signalEvent: { connectionId: v.getUint32(0, true), flagNumber: v.getUint16(4, true), fast: r.control.fast },
    });
  }
}

function recordAction(sink: TraceSink, action: ServerAction, server: VmbusServer | undefined): void {
  switch (action.kind) {
    case 'send': {
      const m = parseChannelMessage(action.bytes);
      if (m instanceof Error) return;
      if (m.msgtype === CHANNELMSG_OFFERCHANNEL) {
        sink.record(action.vp, {
          kind: 'channelState',
          channelState: {
            relid: m.child_relid,
            state: 'OFFERED',
            classId: m.if_type,
            instanceId: m.if_instance,
            subchannelIndex: m.sub_channel_index,
          },
        });
      } else if (m.msgtype === CHANNELMSG_RESCIND_CHANNELOFFER) {
        sink.record(action.vp, {
          kind: 'channelState',
          channelState: { relid: m.child_relid, state: 'RESCINDED', classId: '', instanceId: '', subchannelIndex: 0 },
        });
      }
      return;
    }
    case 'connected':
      // The header was written before the guest negotiated: the footer carries the version.
      sink.noteVmbusVersion?.(action.version);
      return;
    case 'open':
      sink.record(action.request.targetVp, {
        kind: 'channelState',
        channelState: { relid: action.request.relid, state: 'OPENED', classId: '', instanceId: '', subchannelIndex: 0 },
      });
      return;
    case 'close':
      sink.record(0, {
        kind: 'channelState',
        channelState: { relid: action.relid, state: 'CLOSED', classId: '', instanceId: '', subchannelIndex: 0 },
      });
      return;
    case 'gpadl-created': {
      const g = server?.gpadl(action.gpadl);
      const range = g?.ranges[0];
      sink.record(0, {
        kind: 'gpadlCreated',
        gpadlCreated: {
          relid: action.relid,
          gpadl: action.gpadl,
          byteOffset: range?.byteOffset ?? 0,
          byteCount: range?.byteCount ?? 0,
          pfns: (range?.pfns ?? []).map(BigInt),
          status: 0,
        },
      });
      return;
    }
    case 'gpadl-torndown':
      sink.record(0, { kind: 'gpadlTorndown', gpadlTorndown: { relid: action.relid, gpadl: action.gpadl } });
      return;
    default:
      return;
  }
}

/** The bytes a written packet occupies in the ring (descriptor, header, padded payload), as a reader would see them. */
function encodeOutgoing(p: OutgoingPacket): Uint8Array {
  const header = p.header ?? new Uint8Array(0);
  const parts = p.payload === undefined ? [] : p.payload instanceof Uint8Array ? [p.payload] : p.payload;
  const payloadLength = parts.reduce((n, x) => n + x.length, 0);
  const headerEnd = VMPACKET_DESCRIPTOR_SIZE + header.length;
  const length = (headerEnd + payloadLength + 7) & ~7;
  const out = new Uint8Array(length);
  const dv = new DataView(out.buffer);
  dv.setUint16(0, p.type, true);
  dv.setUint16(2, headerEnd / 8, true);
  dv.setUint16(4, length / 8, true);
  dv.setUint16(6, p.flags ?? 0, true);
  dv.setBigUint64(8, BigInt(p.transactionId ?? 0), true);
  out.set(header, VMPACKET_DESCRIPTOR_SIZE);
  let at = headerEnd;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/**
 * A device's environment whose clock reads are reported to `hooks.onHostInput` (with the
 * device's relid once it has one): what the device makes guest-visible from them (timesync's
 * samples) is then reproducible by replay, which hands the same values back.
 */
export function recordingEnvironment(env: DeviceEnvironment, device: string, relid: () => number, hooks: TraceHooks): DeviceEnvironment {
  return {
    logger: env.logger,
    clock: {
      now: () => {
        const value = env.clock.now();
        hooks.onHostInput(relid(), device, 'referenceTime', value);
        return value;
      },
    },
    wallClockMs: () => {
      const value = env.wallClockMs();
      hooks.onHostInput(relid(), device, 'wallClockMs', value);
      return value;
    },
  };
}
