/**
 * `hvemu trace show TRACE`: a readable timeline of a trace, with channel messages and IC
 * messages decoded and ring packets summarized; `--json` for machines; filters by channel
 * (relid), direction and time.
 */
import { parseIcMessage, ICMSG_HDR } from '@hvemu/util';
import { channelMessageName, parseChannelMessage, vmpacket_descriptor } from '@hvemu/vmbus';
import { eventRelid, type Trace, type TraceEvent } from '@hvemu/trace';

export interface ShowFilter {
  relid?: number;
  direction?: 'guest-to-host' | 'host-to-guest';
  /** Reference time bounds, 100 ns units. */
  from?: bigint;
  to?: bigint;
}

const IC_TYPES = ['negotiate', 'heartbeat', 'kvp', 'shutdown', 'timesync', 'vss'];

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
  }
}

export function filterEvents(trace: Trace, f: ShowFilter): TraceEvent[] {
  return trace.events.filter((e) => {
    if (f.from !== undefined && e.time < f.from) return false;
    if (f.to !== undefined && e.time > f.to) return false;
    if (f.relid !== undefined && eventRelid(e) !== f.relid) return false;
    if (f.direction && e.kind === 'ringPacket' && (e.ringPacket.direction === 'GUEST_TO_HOST') !== (f.direction === 'guest-to-host')) return false;
    if (f.direction && e.kind !== 'ringPacket') return false;
    return true;
  });
}

export function showTrace(trace: Trace, f: ShowFilter, json: boolean, print: (line: string) => void): void {
  const events = filterEvents(trace, f);
  if (json) {
    const replacer = (_k: string, v: unknown) => (typeof v === 'bigint' ? v.toString() : v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v);
    print(JSON.stringify({ header: trace.header, events, dropped: trace.dropped, footer: trace.footer }, replacer));
    return;
  }
  const h = trace.header;
  print(`trace schema ${h.schemaVersion}, VMBus ${h.vmbusVersion >>> 16}.${h.vmbusVersion & 0xffff}, producer ${h.producer}`);
  for (const d of h.devices) print(`  device ${d.name} relid ${d.relid} class ${d.classId}`);
  for (const e of events) print(`${timeText(e.time)} vp${e.vp} #${e.seq} ${describeEvent(e)}`);
  for (const d of trace.dropped) print(`(${d.count} events dropped from #${d.firstSeq})`);
  print(trace.footer ? `${trace.footer.events} events, ${trace.footer.dropped} dropped` : '(no footer: the recorder did not close cleanly)');
}
