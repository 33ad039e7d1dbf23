/**
 * Trace replay: rebuild the devices a trace names on a fresh host (HyperV, hypercall
 * dispatcher, VMBus host, IC devices, all with trace capture on), drive it with the
 * recorded guest events and the VMM's recorded device calls, and compare everything the
 * host does with the recording, event by event. No guest RAM is needed: replay memory holds
 * only the pages the trace names (SynIC pages, GPADL pages, monitor pages) and one scratch
 * page for hypercall input.
 *
 * What the replay plays of the guest beyond its recorded events is a prompt guest: before
 * each guest event it has consumed everything the host gave it (SIMP slots freed, event
 * flags cleared, host-to-guest rings drained), as Linux does in its interrupt handlers
 * before it makes its next call. Guest-to-host packets are written into their ring just
 * before the guest event after which the host read them. Guest memory writes that leave no
 * trace (a monitor-page bit without a signal) are not replayed.
 */
import { HvemuError, ManualClock, silentLogger, type Logger } from '@hvemu/common';
import { GuestMemory, PAGE_SIZE } from '@hvemu/memory';
import { HypercallDispatcher } from '@hvemu/hypercalls';
import { HyperV, HV_X64_MSR_EOM, HV_X64_MSR_REFERENCE_TSC, HV_X64_MSR_SIEFP, HV_X64_MSR_SIMP } from '@hvemu/synic';
import {
  CHANNELMSG_CLOSECHANNEL,
  attachDevice,
  CHANNELMSG_INITIATE_CONTACT,
  CHANNELMSG_OPENCHANNEL,
  openRingEndpoint,
  parseChannelMessage,
  ringPairFromPages,
  vmpacket_descriptor,
  VmbusHost,
  type Channel,
  type ChannelHandler,
  type RingEndpoint,
} from '@hvemu/vmbus';
import type { IcDevice, IcHostService, IcKind } from '@hvemu/util';
import {
  decodeHostCallArgs,
  eventRelid,
  firstDivergence,
  isGuestOriginated,
  type Divergence,
  type Trace,
  type TraceEvent,
  type TraceEventBody,
  type TraceSink,
} from '@hvemu/trace';
import { createIcDevice, IC_KINDS } from './ic-devices.js';
import { SIMULATED_WALL_CLOCK_MS } from './sim.js';
import { restoreRangeData, traceHooks } from './trace-capture.js';

const HVCALL_POST_MESSAGE = 0x5cn;
const HVCALL_SIGNAL_EVENT = 0x5dn;
const HV_HYPERCALL_FAST_BIT = 1n << 16n;
const SINT_COUNT = 16;
const MESSAGE_SLOT_SIZE = 256;
/** Replay memory is the pages a trace names; more than this (1 GiB) is refused as hostile. */
const MAX_REPLAY_PAGES = 1 << 18;
const MAX_GPA = 2 ** 52;
/** Hyper-V's own limit on virtual processors per partition is in the low thousands. */
const MAX_REPLAY_VPS = 1024;
const HV_MESSAGE_PAYLOAD_MAX = 240;

/** A trace that cannot be replayed at all (unknown device, dropped events, absurd page lists). */
export class ReplayError extends HvemuError {
  readonly outcome = 'host-error' as const;
}

export interface ReplayOptions {
  /** Replay one device alone (its name in the trace header): only its channel's events are compared. */
  device?: string;
  /** Wall clock the timesync service reports (default: the simulated VM's fixed clock). */
  wallClockMs?: () => number;
  /** Events of context before a divergence (default 5). */
  context?: number;
  logger?: Logger;
}

export interface ReplayDivergence extends Divergence {
  /** Sequence number of the recorded event where the replay first differs (when there is one). */
  recordedSeq: bigint | undefined;
  /** The channel the differing event is about, when it names one. */
  relid: number | undefined;
}

export interface ReplayResult {
  matched: boolean;
  /** Recorded events compared with the replay's (all of them, or one device's). */
  compared: number;
  /** Guest events and device calls the replay drove. */
  driven: number;
  divergence: ReplayDivergence | null;
  /** Everything the replayed host recorded. */
  events: TraceEvent[];
}

/** Replays `trace`; see the module comment for what is driven and what is compared. */
export function replayTrace(trace: Trace, options: ReplayOptions = {}): ReplayResult {
  if (trace.dropped.length > 0) {
    const lost = trace.dropped.reduce((n, d) => n + d.count, 0n);
    throw new ReplayError(`the trace dropped ${lost} events while it was captured; replay needs every event`);
  }
  const session = new ReplaySession(trace, options);
  const driven = session.run();
  const focus = session.focusRelid;
  const keep = (e: TraceEvent): boolean => focus === undefined || eventRelid(e) === focus;
  const expected = trace.events.filter(keep);
  const actual = session.recorded.filter(keep);
  const d = firstDivergence(expected, actual, { context: options.context ?? 5 });
  const divergence: ReplayDivergence | null = d && {
    ...d,
    recordedSeq: d.expected?.seq,
    relid: (d.expected && eventRelid(d.expected)) ?? (d.actual && eventRelid(d.actual)),
  };
  return { matched: divergence === null, compared: expected.length, driven, divergence, events: session.recorded };
}

/** A device that accepts its channel and ignores it: the other channels of a --device replay. */
class InertDevice implements ChannelHandler {
  onOpen(): void {}
  onSignal(): void {}
  onClose(): void {}
}

/** Collects what the replayed host records, stamped with the replay clock. */
class CollectingSink implements TraceSink {
  readonly enabled = true;
  readonly events: TraceEvent[] = [];
  constructor(private readonly clock: ManualClock) {}
  record(vp: number, body: TraceEventBody): void {
    this.events.push({ seq: BigInt(this.events.length), time: this.clock.now(), vp, ...body } as TraceEvent);
  }
}

class ReplaySession {
  readonly focusRelid: number | undefined;
  private readonly clock: ManualClock;
  private readonly sink: CollectingSink;
  private readonly memory: GuestMemory;
  private readonly scratchGpa: number;
  private readonly hyperv: HyperV;
  private readonly hypercalls: HypercallDispatcher;
  private readonly vmbus: VmbusHost;
  private readonly devices = new Map<number, IcDevice<IcHostService>>();
  private readonly guestRings = new Map<number, RingEndpoint>();
  private readonly vpCount: number;
  private readonly logger: Logger;

  constructor(
    private readonly trace: Trace,
    options: ReplayOptions,
  ) {
    this.logger = options.logger ?? silentLogger;
    const events = trace.events;
    this.clock = new ManualClock(events[0]?.time ?? 0n);
    this.sink = new CollectingSink(this.clock);
    const pages = replayPages(events);
    this.scratchGpa = (pages.length > 0 ? pages[pages.length - 1] + 2 : 1) * PAGE_SIZE;
    this.memory = GuestMemory.createShared(coalesce([...pages, this.scratchGpa / PAGE_SIZE]));
    this.vpCount = replayVpCount(events);
    const hooks = traceHooks(this.sink, this.memory, () => this.vmbus?.server);
    this.hyperv = new HyperV({ memory: this.memory, vpCount: this.vpCount, clock: this.clock, logger: this.logger, observer: hooks.synic, sink: { raise: () => {} } });
    this.hypercalls = new HypercallDispatcher({ memory: this.memory, logger: this.logger, onCall: hooks.onCall, onResult: hooks.onResult });
    this.vmbus = new VmbusHost({
      memory: this.memory,
      synic: this.hyperv,
      connections: this.hypercalls.connections,
      vpCount: this.vpCount,
      logger: this.logger,
      onAction: hooks.onAction,
      onPacket: hooks.onPacket,
    });
    this.focusRelid = this.offerDevices(options, hooks.onHostCall);
  }

  /** Offers the header's devices in relid order; returns the relid of options.device, if named. */
  private offerDevices(options: ReplayOptions, onHostCall: (relid: number, device: string, method: string, args: readonly unknown[]) => void): number | undefined {
    const env = { clock: this.clock, logger: this.logger, wallClockMs: options.wallClockMs ?? (() => SIMULATED_WALL_CLOCK_MS) };
    const devices = [...this.trace.header.devices].sort((a, b) => a.relid - b.relid);
    if (options.device !== undefined && !devices.some((d) => d.name === options.device)) {
      throw new ReplayError(`the trace has no device ${options.device} (it has: ${devices.map((d) => d.name).join(', ') || 'none'})`);
    }
    let focus: number | undefined;
    for (const d of devices) {
      if (!(IC_KINDS as readonly string[]).includes(d.name)) throw new ReplayError(`device ${d.name} (relid ${d.relid}) has no replay factory; known: ${IC_KINDS.join(', ')}`);
      const alone = options.device === undefined || options.device === d.name;
      const ic = createIcDevice(d.name as IcKind, env);
      const channel: Channel = alone ? attachDevice(this.vmbus, ic).channel : this.vmbus.offerChannel(ic.offer, new InertDevice());
      if (channel.relid !== d.relid) throw new ReplayError(`device ${d.name} was offered as relid ${channel.relid}, the trace has ${d.relid}`);
      if (alone) {
        this.devices.set(d.relid, ic);
        ic.observeHostCalls((method, args) => onHostCall(channel.relid, d.name, method, args));
      }
      if (options.device === d.name) focus = d.relid;
    }
    return focus;
  }

  get recorded(): TraceEvent[] {
    return this.sink.events;
  }

  /** Drives every guest event and device call; returns how many. */
  run(): number {
    const events = this.trace.events;
    let driven = 0;
    try {
      for (let i = 0; i < events.length; i++) {
        const e = events[i];
        if (!isGuestOriginated(e) || e.kind === 'ringPacket') continue;
        if (e.time > this.clock.now()) this.clock.set(e.time);
        this.consumeMessagesAndFlags();
        this.consumeRings(events, i);
        this.writeGuestPackets(events, i);
        this.drive(e);
        driven++;
      }
    } finally {
      this.vmbus.dispose();
    }
    return driven;
  }

  private drive(e: TraceEvent): void {
    switch (e.kind) {
      case 'msrWrite':
        try {
          this.hyperv.writeMsr(e.vp, e.msrWrite.msr, e.msrWrite.value);
        } catch (error) {
          this.logger.warn('replay: a recorded MSR write faulted', { msr: e.msrWrite.msr, error: String(error) });
        }
        return;
      case 'eom':
        // The SynIC records an EOM write as this event alone (not as an msrWrite).
        this.hyperv.writeMsr(e.vp, HV_X64_MSR_EOM, 0n);
        return;
      case 'postMessage':
        this.beforePost(e.postMessage.payload);
        this.postMessage(e.vp, e.postMessage.connectionId, e.postMessage.messageType, e.postMessage.payload);
        return;
      case 'signalEvent':
        this.signalEvent(e.vp, e.signalEvent.connectionId, e.signalEvent.flagNumber, e.signalEvent.fast);
        return;
      case 'hostCall':
        this.hostCall(e.hostCall.relid, e.hostCall.method, e.hostCall.argsJson);
        return;
      default:
        return;
    }
  }

  private postMessage(vp: number, connectionId: number, messageType: number, payload: Uint8Array): void {
    // hv_input_post_message holds at most 240 payload bytes; a longer recorded payload keeps
    // its size field (the dispatcher refuses it, as it refused the guest) but not its bytes.
    const input = new Uint8Array(16 + Math.min(payload.length, HV_MESSAGE_PAYLOAD_MAX));
    const view = new DataView(input.buffer);
    view.setUint32(0, connectionId, true);
    view.setUint32(8, messageType, true);
    view.setUint32(12, payload.length, true);
    input.set(payload.subarray(0, input.length - 16), 16);
    this.memory.write(this.scratchGpa, input);
    this.hypercalls.dispatch(vp, { rcx: HVCALL_POST_MESSAGE, rdx: BigInt(this.scratchGpa), r8: 0n });
  }

  private signalEvent(vp: number, connectionId: number, flag: number, fast: boolean): void {
    if (fast) {
      this.hypercalls.dispatch(vp, { rcx: HVCALL_SIGNAL_EVENT | HV_HYPERCALL_FAST_BIT, rdx: BigInt(connectionId) | (BigInt(flag) << 32n), r8: 0n });
      return;
    }
    const input = new Uint8Array(8);
    const view = new DataView(input.buffer);
    view.setUint32(0, connectionId, true);
    view.setUint16(4, flag, true);
    this.memory.write(this.scratchGpa, input);
    this.hypercalls.dispatch(vp, { rcx: HVCALL_SIGNAL_EVENT, rdx: BigInt(this.scratchGpa), r8: 0n });
  }

  private hostCall(relid: number, method: string, argsJson: string): void {
    const device = this.devices.get(relid);
    if (!device) return; // another device's call in a --device replay
    let args: unknown[];
    try {
      args = decodeHostCallArgs(argsJson);
    } catch (error) {
      throw new ReplayError(`host call ${method} on relid ${relid} has malformed arguments: ${(error as Error).message}`);
    }
    const result = device.invokeHostCall(method, args);
    // Answers arrive (or not) as the replay goes on; what they do is compared as events.
    if (result instanceof Promise) result.catch(() => {});
  }

  /** Before the guest's OPENCHANNEL reaches the host, the guest has laid out its rings (as Linux does). */
  private beforePost(payload: Uint8Array): void {
    const m = parseChannelMessage(payload);
    if (m instanceof Error) return;
    if (m.msgtype === CHANNELMSG_OPENCHANNEL) {
      const gpadl = this.vmbus.server.gpadl(m.ringbuffer_gpadlhandle);
      const pfns = gpadl?.ranges[0]?.pfns;
      if (!pfns) return; // the host will refuse the open; that is what gets compared
      try {
        const layout = ringPairFromPages(this.memory, pfns, m.downstream_ringbuffer_pageoffset);
        layout.guestToHost.initialize();
        layout.hostToGuest.initialize();
        this.guestRings.set(m.child_relid, openRingEndpoint(layout, 'guest', () => {}, { logger: this.logger, name: `replay guest relid ${m.child_relid}` }));
      } catch (error) {
        this.logger.warn('replay: the recorded ring layout is unusable', { relid: m.child_relid, error: String(error) });
      }
    } else if (m.msgtype === CHANNELMSG_CLOSECHANNEL) {
      this.guestRings.delete(m.child_relid);
    }
  }

  /** The guest packets the host read between event i and the next driven event, written into their rings now. */
  private writeGuestPackets(events: readonly TraceEvent[], i: number): void {
    for (let j = i + 1; j < events.length; j++) {
      const e = events[j];
      if (e.kind !== 'ringPacket') {
        if (isGuestOriginated(e)) break;
        continue;
      }
      if (e.ringPacket.direction !== 'GUEST_TO_HOST') continue;
      const ring = this.guestRings.get(e.ringPacket.relid);
      if (!ring || !this.devices.has(e.ringPacket.relid)) continue;
      restoreRangeData(this.memory, e.ringPacket.ranges);
      writeRecordedPacket(ring, e.ringPacket.packet);
    }
  }

  /** The guest has taken every SynIC message and event flag the host gave it (Linux does in its ISR). */
  private consumeMessagesAndFlags(): void {
    for (let vp = 0; vp < this.vpCount; vp++) {
      const simp = enabledPage(this.hyperv.readMsr(vp, HV_X64_MSR_SIMP));
      if (simp !== null && this.memory.contains(simp, PAGE_SIZE)) {
        for (let sint = 0; sint < SINT_COUNT; sint++) this.memory.writeU32(simp + sint * MESSAGE_SLOT_SIZE, 0);
      }
      const siefp = enabledPage(this.hyperv.readMsr(vp, HV_X64_MSR_SIEFP));
      if (siefp !== null && this.memory.contains(siefp, PAGE_SIZE)) this.memory.write(siefp, new Uint8Array(PAGE_SIZE));
    }
  }

  /**
   * When a guest reads its inbound ring decides whether the host signals its next write (only
   * into an empty ring), and guests differ (Linux commits each read at once; a guest that
   * answers from inside its read loop does not). So the replay follows the recording: for
   * each channel the host writes to before the next guest event, the guest has drained its
   * ring first if the recorded write was signalled, and not if it was not.
   */
  private consumeRings(events: readonly TraceEvent[], i: number): void {
    const decided = new Set<number>();
    for (let j = i + 1; j < events.length; j++) {
      const e = events[j];
      if (isGuestOriginated(e) && e.kind !== 'ringPacket') break;
      if (e.kind !== 'ringPacket' || e.ringPacket.direction !== 'HOST_TO_GUEST') continue;
      const relid = e.ringPacket.relid;
      if (decided.has(relid)) continue;
      decided.add(relid);
      const ring = this.guestRings.get(relid);
      if (ring && wasSignalled(events, j)) drainQuietly(ring, this.logger);
    }
  }
}

/** Whether the host-to-guest packet at index j was followed by an event flag before anything else on its channel or from the guest. */
function wasSignalled(events: readonly TraceEvent[], j: number): boolean {
  const relid = (events[j] as TraceEvent & { kind: 'ringPacket' }).ringPacket.relid;
  for (let k = j + 1; k < events.length; k++) {
    const e = events[k];
    if (e.kind === 'synicEventFlag') return true;
    if (isGuestOriginated(e) && e.kind !== 'ringPacket') return false;
    if (e.kind === 'ringPacket' && e.ringPacket.relid === relid) return false;
  }
  return false;
}

function drainQuietly(ring: RingEndpoint, logger: Logger): void {
  try {
    ring.inbound.drain(() => {});
  } catch (error) {
    logger.warn('replay: a host-to-guest ring could not be drained', { error: String(error) });
  }
}

/** Writes a recorded packet (descriptor, header area, padded payload) so the ring holds the same bytes. */
function writeRecordedPacket(ring: RingEndpoint, packet: Uint8Array): void {
  if (packet.length < vmpacket_descriptor.size) return;
  const d = vmpacket_descriptor.decode(packet);
  const headerEnd = d.offset8 * 8;
  const end = Math.min(d.len8 * 8, packet.length);
  if (headerEnd < vmpacket_descriptor.size || headerEnd > end) return;
  ring.outbound.write({
    type: d.type,
    flags: d.flags,
    transactionId: d.trans_id,
    header: packet.subarray(vmpacket_descriptor.size, headerEnd),
    payload: packet.subarray(headerEnd, end),
  });
}

function enabledPage(msrValue: bigint): number | null {
  if ((msrValue & 1n) === 0n) return null;
  return Number(msrValue & ~0xfffn);
}

/** vCPUs the replayed host needs: one past the highest the trace names. Hostile traces naming absurd vCPUs are refused. */
function replayVpCount(events: readonly TraceEvent[]): number {
  let count = 1;
  for (const e of events) {
    if (!Number.isInteger(e.vp) || e.vp < 0 || e.vp >= MAX_REPLAY_VPS) throw new ReplayError(`event #${e.seq} names vCPU ${e.vp}; replay supports 0..${MAX_REPLAY_VPS - 1}`);
    count = Math.max(count, e.vp + 1);
  }
  return count;
}

/** Every guest page the trace names, sorted and unique. */
function replayPages(events: readonly TraceEvent[]): number[] {
  const pages = new Set<number>();
  const add = (gpa: bigint | number): void => {
    const pfn = Math.floor(Number(gpa) / PAGE_SIZE);
    if (Number.isSafeInteger(pfn) && pfn >= 0 && pfn * PAGE_SIZE < MAX_GPA) pages.add(pfn);
  };
  for (const e of events) {
    if (e.kind === 'msrWrite' && [HV_X64_MSR_SIMP, HV_X64_MSR_SIEFP, HV_X64_MSR_REFERENCE_TSC].includes(e.msrWrite.msr)) {
      if (e.msrWrite.value & 1n) add(e.msrWrite.value & ~0xfffn);
    } else if (e.kind === 'gpadlCreated') {
      for (const pfn of e.gpadlCreated.pfns) add(pfn * BigInt(PAGE_SIZE));
    } else if (e.kind === 'ringPacket') {
      for (const r of e.ringPacket.ranges) for (const pfn of r.pfns) add(pfn * BigInt(PAGE_SIZE));
    } else if (e.kind === 'postMessage') {
      const m = parseChannelMessage(e.postMessage.payload);
      if (!(m instanceof Error) && m.msgtype === CHANNELMSG_INITIATE_CONTACT) {
        for (const gpa of [m.monitor_page1, m.monitor_page2]) if (gpa !== 0n) add(gpa);
      }
    }
    if (pages.size > MAX_REPLAY_PAGES) throw new ReplayError(`the trace names more than ${MAX_REPLAY_PAGES} guest pages`);
  }
  return [...pages].sort((a, b) => a - b);
}

/** Runs of consecutive PFNs as RAM regions. */
function coalesce(pfns: readonly number[]): { gpa: number; size: number }[] {
  const regions: { gpa: number; size: number }[] = [];
  for (const pfn of pfns) {
    const last = regions[regions.length - 1];
    if (last && last.gpa + last.size === pfn * PAGE_SIZE) last.size += PAGE_SIZE;
    else regions.push({ gpa: pfn * PAGE_SIZE, size: PAGE_SIZE });
  }
  return regions;
}
