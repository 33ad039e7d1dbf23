/**
 * `hvemu replay TRACE [--device NAME] [--json]`: replays a trace against a fresh host (see
 * @hvemu/vm replay.ts) and prints either "match" or the first divergence: the recorded
 * event's number and channel, the expected and actual events decoded field by field (channel
 * messages, packet descriptors, IC headers, then the bytes that differ), and the events
 * leading up to it. Exit code 0 only when the whole trace matches.
 */
import { icmsg_hdr, vmbuspipe_hdr } from '@hvemu/util';
import { channelMessageName, parseChannelMessage, vmpacket_descriptor } from '@hvemu/vmbus';
import { replayTrace, type ReplayDivergence, type ReplayOptions } from '@hvemu/vm';
import type { Trace, TraceEvent, TraceReader } from '@hvemu/trace';
import { describeEvent } from './trace-show.js';

export interface ReplayReport {
  matched: boolean;
  lines: string[];
  json: Record<string, unknown>;
}

const jsonReplacer = (_k: string, v: unknown): unknown =>
  typeof v === 'bigint' ? v.toString() : v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v;

/** Replays `trace` (streamed when it is a TraceReader) and reports; warnings (a truncated or empty trace) follow the first line. */
export function runReplay(trace: Trace | TraceReader, options: ReplayOptions = {}): ReplayReport {
  const started = performance.now();
  const result = replayTrace(trace, options);
  const ms = performance.now() - started;
  const scope = options.device ? `device ${options.device}` : 'all devices';
  const summary = `${result.compared} recorded events compared (${scope}), ${result.driven} guest events and VMM calls driven, ${ms.toFixed(1)} ms`;
  const warnings = result.warnings.map((w) => `warning: ${w}`);
  const common = { compared: result.compared, driven: result.driven, truncated: result.truncated, warnings: result.warnings };
  if (!result.divergence) {
    return {
      matched: true,
      lines: [`match${warnings.length ? ' (with warnings)' : ''}: ${summary}`, ...warnings],
      json: { matched: true, ...common },
    };
  }
  const d = result.divergence;
  const lines = [`DIVERGENCE: ${summary}`, ...warnings, ...describeDivergence(d)];
  return {
    matched: false,
    lines,
    json: JSON.parse(JSON.stringify({ matched: false, ...common, divergence: d }, jsonReplacer)) as Record<string, unknown>,
  };
}

function describeDivergence(d: ReplayDivergence): string[] {
  const where = d.recordedSeq !== undefined ? `recorded event #${d.recordedSeq}` : `after the last recorded event`;
  const lines = [`first divergence at ${where} (compared event ${d.index})${d.relid !== undefined ? `, channel relid ${d.relid}` : ''}`];
  lines.push(`  expected: ${d.expected ? describeEvent(d.expected) : '(no event: the replay did more than the recording)'}`);
  lines.push(`  actual:   ${d.actual ? describeEvent(d.actual) : '(no event: the replay stopped short of the recording)'}`);
  if (d.expected && d.actual) {
    const expected = decodeFields(d.expected);
    const actual = decodeFields(d.actual);
    const names = [...new Set([...Object.keys(expected), ...Object.keys(actual)])];
    lines.push('  field                           expected                          actual');
    for (const name of names) {
      const e = expected[name] ?? '-';
      const a = actual[name] ?? '-';
      lines.push(`${e === a ? '   ' : ' * '}${name.padEnd(30)}  ${e.padEnd(32)}  ${a}`);
    }
  }
  lines.push('  leading up to it:');
  for (const e of d.context) lines.push(`    #${e.seq} vp${e.vp} ${describeEvent(e)}`);
  return lines;
}

/** An event's fields as name -> text, with payloads decoded as far as the protocol allows. */
export function decodeFields(e: TraceEvent): Record<string, string> {
  const out: Record<string, string> = { kind: e.kind, vp: String(e.vp) };
  const body = (e as unknown as Record<string, Record<string, unknown>>)[e.kind];
  for (const [k, v] of Object.entries(body)) {
    if (!(v instanceof Uint8Array) && !Array.isArray(v)) out[k] = text(v);
  }
  if (e.kind === 'synicMessage') addChannelMessage(out, e.synicMessage.payload);
  if (e.kind === 'postMessage') addChannelMessage(out, e.postMessage.payload);
  if (e.kind === 'ringPacket') addPacket(out, e.ringPacket.packet);
  if (e.kind === 'gpadlCreated') out.pfns = e.gpadlCreated.pfns.map((p) => `0x${p.toString(16)}`).join(',');
  return out;
}

function text(v: unknown): string {
  return typeof v === 'bigint' ? `0x${v.toString(16)}` : String(v);
}

function addChannelMessage(out: Record<string, string>, payload: Uint8Array): void {
  const m = parseChannelMessage(payload);
  if (m instanceof Error) {
    out.message = `malformed (${m.message})`;
  } else {
    out.message = channelMessageName(m.msgtype);
    for (const [k, v] of Object.entries(m)) if (!(v instanceof Uint8Array) && k !== 'msgtype') out[`message.${k}`] = text(v);
  }
  addBytes(out, 'payload', payload);
}

function addPacket(out: Record<string, string>, packet: Uint8Array): void {
  if (packet.length >= vmpacket_descriptor.size) {
    const d = vmpacket_descriptor.decode(packet);
    for (const [k, v] of Object.entries(d)) out[`descriptor.${k}`] = text(v);
    const payload = packet.subarray(Math.min(d.offset8 * 8, packet.length));
    if (payload.length >= vmbuspipe_hdr.size + icmsg_hdr.size) {
      const h = icmsg_hdr.decode(payload, vmbuspipe_hdr.size);
      for (const [k, v] of Object.entries(h)) out[`icmsg_hdr.${k}`] = text(v);
    }
  }
  addBytes(out, 'packet', packet);
}

/** Bytes as 16-byte hex rows, one field per row, so a changed byte shows its row. */
function addBytes(out: Record<string, string>, name: string, bytes: Uint8Array): void {
  out[`${name}.length`] = String(bytes.length);
  for (let at = 0; at < bytes.length; at += 16) {
    out[`${name}[${at.toString().padStart(3)}..]`] = Buffer.from(bytes.subarray(at, at + 16)).toString('hex');
  }
}
