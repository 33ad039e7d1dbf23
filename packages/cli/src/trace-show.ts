/**
 * `hvemu trace show TRACE`: a readable timeline of a trace, with channel messages and IC
 * messages decoded and ring packets summarized; `--json` for machines (JSON Lines: one object
 * per record, then a summary); filters by channel (relid), direction and time. It streams:
 * each record is printed as it is read, so memory does not grow with the trace.
 *
 * The VMBus version: a trace's header is written before the guest negotiates, so the header
 * usually says 0; the footer records the version negotiated (since it has the field), and for
 * older traces show takes it from the recorded INITIATE_CONTACT the host accepted.
 */
import { HostUsageError } from '@hvemu/common';
import { parseIcMessage, ICMSG_HDR } from '@hvemu/util';
import {
  CHANNELMSG_INITIATE_CONTACT,
  CHANNELMSG_VERSION_RESPONSE,
  channelMessageName,
  parseChannelMessage,
  vmpacket_descriptor,
} from '@hvemu/vmbus';
import { eventRelid, TraceReader, type Trace, type TraceDropped, type TraceEvent, type TracePassSummary } from '@hvemu/trace';

export interface ShowFilter {
  relid?: number;
  direction?: 'guest-to-host' | 'host-to-guest';
  /** Reference time bounds, 100 ns units. */
  from?: bigint;
  to?: bigint;
}

const IC_TYPES = ['negotiate', 'heartbeat', 'kvp', 'shutdown', 'timesync', 'vss'];

export function versionText(v: number): string {
  return `${v >>> 16}.${v & 0xffff}`;
}

function timeText(t: bigint): string {
  return `${(t / 10_000_000n).toString().padStart(4)}.${((t % 10_000_000n) / 10n).toString().padStart(6, '0')}`;
}

function channelMessageText(payload: Uint8Array): string {
  const m = parseChannelMessage(payload);
  if (m instanceof Error) return `malformed channel message (${m.message})`;
  const fields = Object.entries(m)
    .filter(([k, v]) => k !== 'msgtype' && !(v instanceof Uint8Array))
    .slice(0, 6)
    .map(([k, v]) => `${k}=${typeof v === 'bigint' ? `0x${v.toString(16)}` : String(v)}`);
  return `${channelMessageName(m.msgtype)} ${fields.join(' ')}`;
}

function packetText(packet: Uint8Array): string {
  if (packet.length < 16) return `${packet.length}-byte fragment`;
  const d = vmpacket_descriptor.decode(packet);
  let text = `pkt type ${d.type} len ${d.len8 * 8} tid ${d.trans_id}`;
  const payload = packet.subarray(d.offset8 * 8);
  if (payload.length >= ICMSG_HDR) {
    try {
      const { header } = parseIcMessage(payload);
      text += ` | IC ${IC_TYPES[header.messageType] ?? header.messageType} ${header.flags & 4 ? 'response' : 'request'} status 0x${header.status.toString(16)}`;
    } catch {
      // not an IC message: leave the summary
    }
  }
  return text;
}

export function describeEvent(e: TraceEvent): string {
  switch (e.kind) {
    case 'postMessage':
      return `guest HvPostMessage conn ${e.postMessage.connectionId}: ${channelMessageText(e.postMessage.payload)}`;
    case 'signalEvent':
      return `guest HvSignalEvent${e.signalEvent.fast ? ' (fast)' : ''} conn ${e.signalEvent.connectionId} flag ${e.signalEvent.flagNumber}`;
    case 'msrWrite':
      return `guest wrmsr 0x${e.msrWrite.msr.toString(16)} = 0x${e.msrWrite.value.toString(16)}`;
    case 'hypercallResult':
      return `host  hypercall 0x${e.hypercallResult.callCode.toString(16)} -> status 0x${e.hypercallResult.status.toString(16)}`;
    case 'synicMessage':
      return `host  SINT${e.synicMessage.sint} message: ${channelMessageText(e.synicMessage.payload)}`;
    case 'synicEventFlag':
      return `host  SINT${e.synicEventFlag.sint} event flag ${e.synicEventFlag.flag}`;
    case 'interrupt':
      return `host  interrupt vector 0x${e.interrupt.vector.toString(16)}${e.interrupt.autoEoi ? ' (AutoEOI)' : ''}`;
    case 'eom':
      return 'guest EOM';
    case 'gpadlCreated':
      return `host  GPADL 0x${e.gpadlCreated.gpadl.toString(16)} created for relid ${e.gpadlCreated.relid}: ${e.gpadlCreated.pfns.length} pages`;
    case 'gpadlTorndown':
      return `host  GPADL 0x${e.gpadlTorndown.gpadl.toString(16)} torn down (relid ${e.gpadlTorndown.relid})`;
    case 'ringPacket':
      return `${e.ringPacket.direction === 'GUEST_TO_HOST' ? 'guest' : 'host '} relid ${e.ringPacket.relid} ${e.ringPacket.direction === 'GUEST_TO_HOST' ? '->' : '<-'} ${packetText(e.ringPacket.packet)}`;
    case 'channelState':
      return `host  relid ${e.channelState.relid} ${e.channelState.state}${e.channelState.classId ? ` class ${e.channelState.classId}` : ''}`;
    case 'hostCall':
      return `vmm   ${e.hostCall.device}.${e.hostCall.method}(${e.hostCall.argsJson.slice(1, -1)}) on relid ${e.hostCall.relid}`;
    case 'hostInput': {
      const i = e.hostInput;
      const value = i.source === 'referenceTime' ? `reference time ${i.referenceTime}` : `wall clock ${i.wallClockMs} ms`;
      return `input ${i.device} on relid ${i.relid} read ${value}`;
    }
  }
}

/** Whether an event passes the filter. */
export function showsEvent(e: TraceEvent, f: ShowFilter): boolean {
  if (f.from !== undefined && e.time < f.from) return false;
  if (f.to !== undefined && e.time > f.to) return false;
  if (f.relid !== undefined && eventRelid(e) !== f.relid) return false;
  if (f.direction && e.kind === 'ringPacket' && (e.ringPacket.direction === 'GUEST_TO_HOST') !== (f.direction === 'guest-to-host'))
    return false;
  if (f.direction && e.kind !== 'ringPacket') return false;
  return true;
}

export function filterEvents(trace: Trace, f: ShowFilter): TraceEvent[] {
  return trace.events.filter((e) => showsEvent(e, f));
}

/** The VMBus version a trace's own messages negotiated: an INITIATE_CONTACT the host answered with version_supported. */
class NegotiationWatcher {
  private requested = 0;
  version = 0;
  see(e: TraceEvent): void {
    if (e.kind === 'postMessage') {
      const m = parseChannelMessage(e.postMessage.payload);
      if (!(m instanceof Error) && m.msgtype === CHANNELMSG_INITIATE_CONTACT) this.requested = m.vmbus_version_requested;
    } else if (e.kind === 'synicMessage') {
      const m = parseChannelMessage(e.synicMessage.payload);
      if (!(m instanceof Error) && m.msgtype === CHANNELMSG_VERSION_RESPONSE && m.version_supported && this.requested)
        this.version = this.requested;
    }
  }
}

export interface ShowSummary extends TracePassSummary {
  /** Events printed (after the filter). */
  shown: number;
}

const jsonReplacer = (_k: string, v: unknown): unknown =>
  typeof v === 'bigint' ? v.toString() : v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v;

/**
 * Shows a trace as it reads it (see the module comment), line by line to `print`. A trace cut
 * inside a record throws TraceFormatError after the records before the cut were printed; one
 * without a footer ends with a line saying it is truncated.
 */
export function showTrace(trace: Trace | TraceReader, f: ShowFilter, json: boolean, print: (line: string) => void): ShowSummary {
  if (typeof print !== 'function') throw new HostUsageError('showTrace: print must be a function');
  const lines = traceLines(trace, f, json);
  for (let r = lines.next(); ; r = lines.next()) {
    if (r.done) return r.value;
    print(r.value);
  }
}

/** The lines showTrace prints, as a generator: a caller writing to a slow pipe takes the next line when the pipe has room. */
export function* traceLines(trace: Trace | TraceReader, f: ShowFilter, json: boolean): Generator<string, ShowSummary> {
  if (!(trace instanceof TraceReader) && (typeof trace !== 'object' || trace === null || !Array.isArray((trace as Trace).events))) {
    throw new HostUsageError('showTrace: trace must be a Trace or a TraceReader');
  }
  if (typeof f !== 'object' || f === null) throw new HostUsageError('showTrace: filter must be an object');
  const h = trace.header;
  const watcher = new NegotiationWatcher();
  let shown = 0;
  if (json) yield JSON.stringify({ header: h }, jsonReplacer);
  else {
    const version = h.vmbusVersion
      ? `VMBus ${versionText(h.vmbusVersion)}`
      : 'VMBus version not known when the capture started (see the end)';
    yield `trace schema ${h.schemaVersion}, ${version}, producer ${h.producer}`;
    for (const d of h.devices) yield `  device ${d.name} relid ${d.relid} class ${d.classId}`;
  }
  const eventLine = (e: TraceEvent): string | null => {
    watcher.see(e);
    if (!showsEvent(e, f)) return null;
    shown++;
    return json ? JSON.stringify({ event: e }, jsonReplacer) : `${timeText(e.time)} vp${e.vp} #${e.seq} ${describeEvent(e)}`;
  };
  const droppedLine = (d: TraceDropped): string =>
    json ? JSON.stringify({ dropped: d }, jsonReplacer) : `(${d.count} events dropped from #${d.firstSeq})`;
  let summary: TracePassSummary;
  if (trace instanceof TraceReader) {
    const pass = trace.records();
    let r = pass.next();
    for (; !r.done; r = pass.next()) {
      const rec = r.value;
      const line =
        rec.kind === 'event'
          ? eventLine(rec.event)
          : rec.kind === 'dropped'
            ? droppedLine(rec.dropped)
            : json
              ? JSON.stringify({ footer: rec.footer }, jsonReplacer)
              : null;
      if (line !== null) yield line;
    }
    summary = r.value;
  } else {
    for (const e of trace.events) {
      const line = eventLine(e);
      if (line !== null) yield line;
    }
    for (const d of trace.dropped) yield droppedLine(d);
    if (json && trace.footer) yield JSON.stringify({ footer: trace.footer }, jsonReplacer);
    summary = {
      events: trace.events.length,
      droppedEvents: trace.dropped.reduce((n, d) => n + d.count, 0n),
      dropped: trace.dropped,
      footer: trace.footer,
      truncated: trace.footer === null,
      bytes: 0,
      vmbusVersion: h.vmbusVersion || (trace.footer?.vmbusVersion ?? 0),
    };
  }
  const vmbusVersion = summary.vmbusVersion || watcher.version;
  if (json) {
    yield JSON.stringify(
      { summary: { events: summary.events, shown, droppedEvents: summary.droppedEvents, truncated: summary.truncated, vmbusVersion } },
      jsonReplacer,
    );
  } else {
    const negotiated = vmbusVersion ? `VMBus ${versionText(vmbusVersion)} negotiated` : 'no VMBus version negotiated';
    yield summary.truncated
      ? `truncated: no footer (the file was cut, or its recorder did not close); ${summary.events} events read, ${summary.droppedEvents} dropped; ${negotiated}`
      : `${summary.events} events, ${summary.droppedEvents} dropped; ${negotiated}`;
  }
  return { ...summary, vmbusVersion, shown };
}
