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
 *
 * Replay streams: it reads the trace twice, event by event (a TraceReader over a file, or a
 * Trace in memory). The first pass checks every event and collects the pages and vCPUs the
 * host needs (replay memory must exist before the first event); the second drives and
 * compares as it reads. What it holds is a window: the events from the one being driven to
 * the next driven event (the guest's ring reads and writes are decided by what the host did
 * before that next event), at most MAX_WINDOW_EVENTS events and MAX_WINDOW_BYTES of event
 * data; the comparison holds the recorded and replayed events not yet compared (the same
 * bounds) and the context events before them. A trace needing a larger window is refused
 * (ReplayError); a replay that falls a whole window behind or ahead of the recording has
 * diverged there.
 */
import {
  HV_X64_MSR_EOM,
  HV_X64_MSR_REFERENCE_TSC,
  HV_X64_MSR_SIEFP,
  HV_X64_MSR_SIMP,
  encodeControl,
  HVCALL_POST_MESSAGE,
  HVCALL_SIGNAL_EVENT,
  HV_MESSAGE_PAYLOAD_BYTE_COUNT,
  HV_MESSAGE_SIZE,
  HV_SYNIC_SINT_COUNT,
} from '@hvemu/hvdef';
import { HostUsageError, HvemuError, ManualClock, silentLogger, type Logger } from '@hvemu/common';
import { GuestMemory, PAGE_SIZE } from '@hvemu/memory';
import { HypercallDispatcher } from '@hvemu/hypercalls';
import { HyperV } from '@hvemu/synic';
import {
  CHANNELMSG_CLOSECHANNEL,
  attachDevice,
  isHostCallable,
  DeviceRegistry,
  type VmbusDevice,
  CHANNELMSG_INITIATE_CONTACT,
  CHANNELMSG_OPENCHANNEL,
  openRingEndpoint,
  parseChannelMessage,
  ringPairFromPages,
  vmpacket_descriptor,
  VmbusHost,
  type Channel,
  type ChannelHandler,
  type DeviceEnvironment,
  type RingEndpoint,
} from '@hvemu/vmbus';
import {
  decodeHostCallArgs,
  eventBodyProblem,
  eventDifferences,
  eventRelid,
  isGuestOriginated,
  TraceReader,
  type Divergence,
  type HostInput,
  TRACE_SCHEMA_HOST_INPUTS,
  type Trace,
  type TraceEvent,
  type TraceEventBody,
  type TraceHeader,
  type TraceSink,
} from '@hvemu/trace';
import { defaultDevices } from './ic-devices.js';
import { SIMULATED_WALL_CLOCK_MS } from './sim.js';
import { recordingEnvironment, restoreRangeData, traceHooks, type TraceHooks } from './trace-capture.js';

const POST_MESSAGE = encodeControl({ code: HVCALL_POST_MESSAGE });
const SIGNAL_EVENT = encodeControl({ code: HVCALL_SIGNAL_EVENT });
const SIGNAL_EVENT_FAST = encodeControl({ code: HVCALL_SIGNAL_EVENT, fast: true });
/** Replay memory is the pages a trace names; more than this (1 GiB) is refused as hostile. */
const MAX_REPLAY_PAGES = 1 << 18;
const MAX_GPA = 2 ** 52;
/** Hyper-V's own limit on virtual processors per partition is in the low thousands. */
const MAX_REPLAY_VPS = 1024;
/** Most events replay holds between one driven event and the next (and in each comparison queue). */
export const MAX_WINDOW_EVENTS = 1 << 16;
/** Most event data (payloads, packets, range data) the window holds: 256 MiB. */
export const MAX_WINDOW_BYTES = 256 << 20;
/** Most context events a divergence reports. */
const MAX_CONTEXT = 1000;

/** A trace that cannot be replayed at all (unknown device, dropped events, absurd page lists). */
export class ReplayError extends HvemuError {
  readonly outcome = 'host-error' as const;
}

export interface ReplayOptions {
  /** Replay one device alone (its name in the trace header): only its channel's events are compared. */
  device?: string;
  /** Wall clock the timesync service reports (default: the simulated VM's fixed clock). */
  wallClockMs?: () => number;
  /** The device kinds the trace's devices are built from (default: defaultDevices(), the ICs). */
  devices?: DeviceRegistry;
  /** Events of context before a divergence (default 5, at most 1000). */
  context?: number;
  logger?: Logger;
  /** Called with every event the replayed host records (the result keeps none of them). */
  onEvent?: (event: TraceEvent) => void;
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
  /** Events the replayed host recorded (up to the divergence, when there is one). */
  actualEvents: number;
  /** The trace has no footer: it was cut, or its recorder did not close. */
  truncated: boolean;
  /**
   * What makes a match weaker than it looks: a truncated trace, a trace (or a --device
   * channel) without events. A caller that prints "match" prints these with it.
   */
  warnings: string[];
  /** The most events the look-ahead window held (bounded by MAX_WINDOW_EVENTS). */
  peakWindowEvents: number;
}

/**
 * Replays `trace` (a TraceReader streams it; a Trace is in memory); see the module comment for
 * what is driven, what is compared and the memory replay holds.
 */
export function replayTrace(trace: Trace | TraceReader, options: ReplayOptions = {}): ReplayResult {
  const source = eventSource(trace);
  checkOptions(options);
  const scan = scanEvents(source);
  if (scan.droppedEvents > 0n) {
    throw new ReplayError(`the trace dropped ${scan.droppedEvents} events while it was captured; replay needs every event`);
  }
  const session = new ReplaySession(source.header, scan, options);
  const run = session.run(source.pass());
  const d = run.divergence;
  const divergence: ReplayDivergence | null = d && {
    ...d,
    recordedSeq: d.expected?.seq,
    relid: (d.expected && eventRelid(d.expected)) ?? (d.actual && eventRelid(d.actual)),
  };
  const warnings: string[] = [];
  if (scan.truncated)
    warnings.push(
      `the trace has no footer (it was cut, or its recorder did not close): only the ${scan.events} events before the end were replayed`,
    );
  if (scan.events === 0) warnings.push('the trace holds no events: nothing was replayed or compared');
  else if (run.compared === 0)
    warnings.push(`no recorded events of ${options.device !== undefined ? `device ${options.device}` : 'the trace'} were compared`);
  return {
    matched: divergence === null,
    compared: run.compared,
    driven: run.driven,
    divergence,
    actualEvents: run.actualEvents,
    truncated: scan.truncated,
    warnings,
    peakWindowEvents: run.peakWindowEvents,
  };
}

/** A trace replay can read twice, event by event; what the pass found after the events. */
interface EventSource {
  header: TraceHeader;
  /** A new pass over the events; its return value says what it found besides them. */
  pass(): Iterator<TraceEvent, { droppedEvents: bigint; truncated: boolean } | void>;
  /** For an in-memory trace: its dropped notices and footer, known before any pass. */
  known?: { droppedEvents: bigint; truncated: boolean };
}

function eventSource(trace: Trace | TraceReader): EventSource {
  if (trace instanceof TraceReader) {
    return {
      header: trace.header,
      pass: () => {
        const events = trace.events();
        return {
          next: () => {
            const r = events.next();
            return r.done ? { done: true, value: { droppedEvents: r.value.droppedEvents, truncated: r.value.truncated } } : r;
          },
        };
      },
    };
  }
  if (typeof trace !== 'object' || trace === null)
    throw new HostUsageError(`replayTrace: trace must be a Trace or a TraceReader, got ${describe(trace)}`);
  const t = trace as Partial<Trace>;
  checkHeader(t.header);
  if (!Array.isArray(t.events)) throw new HostUsageError(`replayTrace: trace.events must be an array of events, got ${describe(t.events)}`);
  if (!Array.isArray(t.dropped)) throw new HostUsageError(`replayTrace: trace.dropped must be an array, got ${describe(t.dropped)}`);
  if (t.footer !== null && (typeof t.footer !== 'object' || t.footer === undefined))
    throw new HostUsageError(`replayTrace: trace.footer must be a footer or null, got ${describe(t.footer)}`);
  let droppedEvents = 0n;
  t.dropped.forEach((d, i) => {
    if (typeof d !== 'object' || d === null || typeof d.count !== 'bigint' || d.count < 0n)
      throw new HostUsageError(`replayTrace: trace.dropped[${i}] must be { count: bigint, firstSeq: bigint }, got ${describe(d)}`);
    droppedEvents += d.count;
  });
  const events = t.events;
  return { header: t.header!, pass: () => events[Symbol.iterator](), known: { droppedEvents, truncated: t.footer === null } };
}

function checkHeader(header: unknown): asserts header is TraceHeader {
  if (typeof header !== 'object' || header === null)
    throw new HostUsageError(`replayTrace: trace.header must be an object, got ${describe(header)}`);
  const devices = (header as Partial<TraceHeader>).devices;
  if (!Array.isArray(devices)) throw new HostUsageError(`replayTrace: trace.header.devices must be an array, got ${describe(devices)}`);
  devices.forEach((d: unknown, i) => {
    const dev = d as Partial<TraceHeader['devices'][number]> | null;
    if (typeof dev !== 'object' || dev === null || typeof dev.name !== 'string' || !isU32(dev.relid)) {
      throw new HostUsageError(`replayTrace: trace.header.devices[${i}] must have a name (string) and a relid (u32), got ${describe(d)}`);
    }
  });
}

function checkOptions(options: unknown): asserts options is ReplayOptions {
  if (typeof options !== 'object' || options === null)
    throw new HostUsageError(`replayTrace: options must be an object, got ${describe(options)}`);
  const o = options as Record<string, unknown>;
  if (o.device !== undefined && typeof o.device !== 'string')
    throw new HostUsageError(`replayTrace: options.device must be a device name (string), got ${describe(o.device)}`);
  if (o.wallClockMs !== undefined && typeof o.wallClockMs !== 'function')
    throw new HostUsageError(`replayTrace: options.wallClockMs must be a function, got ${describe(o.wallClockMs)}`);
  if (o.onEvent !== undefined && typeof o.onEvent !== 'function')
    throw new HostUsageError(`replayTrace: options.onEvent must be a function, got ${describe(o.onEvent)}`);
  if (o.devices !== undefined && !(o.devices instanceof DeviceRegistry))
    throw new HostUsageError(`replayTrace: options.devices must be a DeviceRegistry, got ${describe(o.devices)}`);
  if (o.context !== undefined && !(Number.isInteger(o.context) && (o.context as number) >= 0 && (o.context as number) <= MAX_CONTEXT)) {
    throw new HostUsageError(`replayTrace: options.context must be an integer 0..${MAX_CONTEXT}, got ${describe(o.context)}`);
  }
  const logger = o.logger as Partial<Logger> | undefined;
  if (logger !== undefined && (typeof logger !== 'object' || logger === null || typeof logger.warn !== 'function')) {
    throw new HostUsageError(`replayTrace: options.logger must be a Logger, got ${describe(logger)}`);
  }
}

/** What the first pass found: how to size the host, and whether the trace is whole. */
interface Scan {
  /** The values each channel's device read from its clocks, in order (HostInput events). */
  inputs: Map<number, RecordedInputs>;
  events: number;
  firstTime: bigint;
  pages: number[];
  vpCount: number;
  droppedEvents: bigint;
  truncated: boolean;
}

/** The first pass: every event checked, the pages and vCPUs it names collected. */
function scanEvents(source: EventSource): Scan {
  const pages = new PageSet();
  const inputs = new Map<number, RecordedInputs>();
  let inputCount = 0;
  let vpCount = 1;
  let events = 0;
  let firstTime = 0n;
  const pass = source.pass();
  for (let r = pass.next(); ; r = pass.next()) {
    if (r.done) {
      const end = source.known ?? (r.value as { droppedEvents: bigint; truncated: boolean });
      return { inputs, events, firstTime, pages: pages.sorted(), vpCount, droppedEvents: end.droppedEvents, truncated: end.truncated };
    }
    const e = r.value;
    checkEvent(e, events);
    if (events === 0) firstTime = e.time;
    if (e.vp >= MAX_REPLAY_VPS) throw new ReplayError(`event #${e.seq} names vCPU ${e.vp}; replay supports 0..${MAX_REPLAY_VPS - 1}`);
    vpCount = Math.max(vpCount, e.vp + 1);
    pages.addEvent(e);
    if (e.kind === 'hostInput') {
      if (++inputCount > MAX_REPLAY_INPUTS) throw new ReplayError(`the trace has more than ${MAX_REPLAY_INPUTS} host inputs`);
      addInput(inputs, e.hostInput);
    }
    events++;
  }
}

/** Most HostInput events a trace may have (replay keeps their values: 16 bytes each). */
const MAX_REPLAY_INPUTS = 4_000_000;

/** One channel's recorded clock reads, consumed in order by its replayed device. */
interface RecordedInputs {
  referenceTime: bigint[];
  wallClockMs: number[];
  nextReferenceTime: number;
  nextWallClockMs: number;
}

function addInput(inputs: Map<number, RecordedInputs>, input: HostInput): void {
  let recorded = inputs.get(input.relid);
  if (!recorded) inputs.set(input.relid, (recorded = { referenceTime: [], wallClockMs: [], nextReferenceTime: 0, nextWallClockMs: 0 }));
  if (input.source === 'referenceTime') recorded.referenceTime.push(input.referenceTime);
  else recorded.wallClockMs.push(input.wallClockMs);
}

/**
 * The environment a replayed device gets: its clocks answer with the values the recorded
 * device read, in order; past the recorded ones (a device that reads more often than it did:
 * a divergence the comparison reports) with the replay's own clocks.
 */
function replayedEnvironment(
  recorded: RecordedInputs | undefined,
  env: { clock: ManualClock; logger: Logger; wallClockMs?: () => number },
): DeviceEnvironment {
  return {
    logger: env.logger,
    clock: {
      now: () =>
        recorded && recorded.nextReferenceTime < recorded.referenceTime.length
          ? recorded.referenceTime[recorded.nextReferenceTime++]
          : env.clock.now(),
    },
    wallClockMs: () => {
      if (env.wallClockMs) return env.wallClockMs();
      return recorded && recorded.nextWallClockMs < recorded.wallClockMs.length
        ? recorded.wallClockMs[recorded.nextWallClockMs++]
        : SIMULATED_WALL_CLOCK_MS;
    },
  };
}

/** A device that accepts its channel and ignores it: the other channels of a --device replay. */
class InertDevice implements ChannelHandler {
  onOpen(): void {}
  onSignal(): void {}
  onClose(): void {}
}

/** Hands what the replayed host records, stamped with the replay clock, to `onEvent`. */
class ForwardingSink implements TraceSink {
  readonly enabled = true;
  count = 0;
  constructor(
    private readonly clock: ManualClock,
    private readonly onEvent: (e: TraceEvent) => void,
  ) {}
  record(vp: number, body: TraceEventBody): void {
    this.onEvent({ seq: BigInt(this.count++), time: this.clock.now(), vp, ...body } as TraceEvent);
  }
}

/**
 * The recorded events of a pass, read ahead as far as the replay looks: at(i) reads up to
 * event i; release(i) forgets the events before i. Holds at most MAX_WINDOW_EVENTS events
 * and MAX_WINDOW_BYTES of their data.
 */
class EventWindow {
  private events: TraceEvent[] = [];
  private sizes: number[] = [];
  /** Index (in the pass) of events[head]. */
  private base = 0;
  private head = 0;
  private bytes = 0;
  private ended = false;
  peak = 0;
  constructor(private readonly pass: Iterator<TraceEvent, unknown>) {}

  at(i: number): TraceEvent | undefined {
    while (!this.ended && i >= this.base + this.events.length - this.head) {
      const r = this.pass.next();
      if (r.done) {
        this.ended = true;
        break;
      }
      const size = eventBytes(r.value);
      const held = this.events.length - this.head + 1;
      if (held > MAX_WINDOW_EVENTS || this.bytes + size > MAX_WINDOW_BYTES) {
        throw new ReplayError(
          `more than ${held > MAX_WINDOW_EVENTS ? `${MAX_WINDOW_EVENTS} events` : `${MAX_WINDOW_BYTES >> 20} MiB of events`} between one guest event and the next (at recorded event #${r.value.seq}): replay's look-ahead window holds no more`,
        );
      }
      this.events.push(r.value);
      this.sizes.push(size);
      this.bytes += size;
      this.peak = Math.max(this.peak, held);
    }
    const k = i - this.base + this.head;
    return k >= this.head && k < this.events.length ? this.events[k] : undefined;
  }

  release(i: number): void {
    while (this.base < i && this.head < this.events.length) {
      this.bytes -= this.sizes[this.head];
      this.head++;
      this.base++;
    }
    if (this.head > 1024 && this.head * 2 > this.events.length) {
      this.events = this.events.slice(this.head);
      this.sizes = this.sizes.slice(this.head);
      this.head = 0;
    }
  }
}

/** The data an event holds, roughly: its byte fields plus a fixed overhead. */
function eventBytes(e: TraceEvent): number {
  switch (e.kind) {
    case 'postMessage':
      return 64 + e.postMessage.payload.length;
    case 'synicMessage':
      return 64 + e.synicMessage.payload.length;
    case 'ringPacket':
      return 64 + e.ringPacket.packet.length + e.ringPacket.ranges.reduce((n, r) => n + r.data.length + 8 * r.pfns.length, 0);
    case 'gpadlCreated':
      return 64 + 8 * e.gpadlCreated.pfns.length;
    case 'hostCall':
      return 64 + e.hostCall.argsJson.length + e.hostCall.method.length + e.hostCall.device.length;
    default:
      return 64;
  }
}

/**
 * First-divergence comparison as the events arrive (the same answer as firstDivergence over
 * the two whole lists): each side queues what the other has not matched yet; a side more than
 * MAX_WINDOW_EVENTS ahead is a divergence where the other side has nothing.
 */
class OnlineComparison {
  private expected: TraceEvent[] = [];
  private actual: TraceEvent[] = [];
  private readonly context: TraceEvent[] = [];
  compared = 0;
  divergence: Divergence | null = null;
  constructor(private readonly contextSize: number) {}

  pushExpected(e: TraceEvent): void {
    if (this.divergence) return;
    this.expected.push(e);
    this.match();
  }
  pushActual(e: TraceEvent): void {
    if (this.divergence) return;
    this.actual.push(e);
    this.match();
  }
  /** The end of both sides: what is left unmatched is the divergence. */
  finish(): void {
    if (this.divergence) return;
    if (this.expected.length > 0 || this.actual.length > 0) this.diverge(this.expected[0], this.actual[0], []);
  }

  private match(): void {
    let n = 0;
    while (n < this.expected.length && n < this.actual.length) {
      const e = this.expected[n];
      const a = this.actual[n];
      const fields = eventDifferences(e, a);
      if (fields.length > 0) {
        this.expected.splice(0, n);
        this.actual.splice(0, n);
        return this.diverge(e, a, fields);
      }
      this.compared++;
      if (this.contextSize > 0) {
        this.context.push(e);
        if (this.context.length > this.contextSize) this.context.shift();
      }
      n++;
    }
    if (n > 0) {
      this.expected.splice(0, n);
      this.actual.splice(0, n);
    }
    if (this.expected.length > MAX_WINDOW_EVENTS) this.diverge(this.expected[0], undefined, []);
    else if (this.actual.length > MAX_WINDOW_EVENTS) this.diverge(undefined, this.actual[0], []);
  }

  private diverge(expected: TraceEvent | undefined, actual: TraceEvent | undefined, fields: string[]): void {
    if (expected) this.compared++;
    this.divergence = { index: this.compared - (expected ? 1 : 0), expected, actual, context: [...this.context], fields };
    this.expected = [];
    this.actual = [];
  }
}

class ReplaySession {
  private readonly focusRelid: number | undefined;
  private readonly clock: ManualClock;
  private readonly sink: ForwardingSink;
  private readonly comparison: OnlineComparison;
  private readonly memory: GuestMemory;
  private readonly scratchGpa: number;
  private readonly hyperv: HyperV;
  private readonly hypercalls: HypercallDispatcher;
  private readonly vmbus: VmbusHost;
  private readonly devices = new Map<number, { name: string; device: VmbusDevice }>();
  private readonly guestRings = new Map<number, RingEndpoint>();
  private readonly vpCount: number;
  private readonly logger: Logger;
  private readonly hooks: TraceHooks;
  private readonly inputs: Map<number, RecordedInputs>;

  constructor(
    private readonly header: TraceHeader,
    scan: Scan,
    options: ReplayOptions,
  ) {
    this.logger = options.logger ?? silentLogger;
    this.focusRelid = options.device === undefined ? undefined : header.devices.find((d) => d.name === options.device)?.relid;
    this.clock = new ManualClock(scan.firstTime);
    this.comparison = new OnlineComparison(options.context ?? 5);
    const onEvent = options.onEvent;
    this.sink = new ForwardingSink(this.clock, (e) => {
      onEvent?.(e);
      if (this.keep(e)) this.comparison.pushActual(e);
    });
    const pages = scan.pages;
    if (pages.length > MAX_REPLAY_PAGES) throw new ReplayError(`the trace names more than ${MAX_REPLAY_PAGES} guest pages`);
    this.scratchGpa = (pages.length > 0 ? pages[pages.length - 1] + 2 : 1) * PAGE_SIZE;
    this.memory = GuestMemory.createShared(coalesce([...pages, this.scratchGpa / PAGE_SIZE]));
    this.vpCount = scan.vpCount;
    const hooks = traceHooks(this.sink, this.memory, () => this.vmbus?.server);
    this.hooks = hooks;
    this.inputs = scan.inputs;
    this.hyperv = new HyperV({
      memory: this.memory,
      vpCount: this.vpCount,
      clock: this.clock,
      logger: this.logger,
      observer: hooks.synic,
      sink: { raise: () => {} },
    });
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
    this.offerDevices(options, hooks.onHostCall);
  }

  private keep(e: TraceEvent): boolean {
    return this.focusRelid === undefined || eventRelid(e) === this.focusRelid;
  }

  /** Offers the header's devices in relid order. */
  private offerDevices(
    options: ReplayOptions,
    onHostCall: (relid: number, device: string, method: string, args: readonly unknown[]) => void,
  ): void {
    // Traces from schema 3 on hold what each device read from its clocks: the replayed device
    // reads the same values (and records them again, so they are compared too). Older traces
    // get the replay clock and the simulated VM's wall clock, as they were captured with.
    const withInputs = this.header.schemaVersion >= TRACE_SCHEMA_HOST_INPUTS;
    const envFor = (d: { name: string; relid: number }): DeviceEnvironment => {
      if (!withInputs)
        return { clock: this.clock, logger: this.logger, wallClockMs: options.wallClockMs ?? (() => SIMULATED_WALL_CLOCK_MS) };
      const replayed = replayedEnvironment(this.inputs.get(d.relid), {
        clock: this.clock,
        logger: this.logger,
        wallClockMs: options.wallClockMs,
      });
      return recordingEnvironment(replayed, d.name, () => d.relid, this.hooks);
    };
    const devices = [...this.header.devices].sort((a, b) => a.relid - b.relid);
    if (options.device !== undefined && !devices.some((d) => d.name === options.device)) {
      throw new ReplayError(`the trace has no device ${options.device} (it has: ${devices.map((d) => d.name).join(', ') || 'none'})`);
    }
    const registry = options.devices ?? defaultDevices();
    for (const d of devices) {
      const kind = registry.get(d.name);
      if (!kind)
        throw new ReplayError(
          `device ${d.name} (relid ${d.relid}) has no replay factory: no registered device kind of that name; known: ${registry.names.join(', ')}`,
        );
      const alone = options.device === undefined || options.device === d.name;
      const device = kind.create(envFor(d));
      const channel: Channel = alone ? attachDevice(this.vmbus, device).channel : this.vmbus.offerChannel(kind.offer, new InertDevice());
      if (channel.relid !== d.relid)
        throw new ReplayError(`device ${d.name} was offered as relid ${channel.relid}, the trace has ${d.relid}`);
      if (alone) {
        this.devices.set(d.relid, { name: d.name, device });
        if (isHostCallable(device)) device.observeHostCalls((method, args) => onHostCall(channel.relid, d.name, method, args));
      }
    }
  }

  /** The second pass: drives every guest event and device call, comparing as it goes; stops at the first divergence. */
  run(pass: Iterator<TraceEvent, unknown>): {
    driven: number;
    compared: number;
    divergence: Divergence | null;
    actualEvents: number;
    peakWindowEvents: number;
  } {
    const window = new EventWindow(pass);
    let driven = 0;
    try {
      for (let i = 0; ; i++) {
        const e = window.at(i);
        if (!e || this.comparison.divergence) break;
        if (this.keep(e)) this.comparison.pushExpected(e);
        if (isGuestOriginated(e) && e.kind !== 'ringPacket') {
          if (e.time > this.clock.now()) this.clock.set(e.time);
          this.consumeMessagesAndFlags();
          this.consumeRings(window, i);
          this.writeGuestPackets(window, i);
          this.drive(e);
          driven++;
        }
        window.release(i + 1);
      }
    } finally {
      this.vmbus.dispose();
    }
    this.comparison.finish();
    return {
      driven,
      compared: this.comparison.compared,
      divergence: this.comparison.divergence,
      actualEvents: this.sink.count,
      peakWindowEvents: window.peak,
    };
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
    const input = new Uint8Array(16 + Math.min(payload.length, HV_MESSAGE_PAYLOAD_BYTE_COUNT));
    const view = new DataView(input.buffer);
    view.setUint32(0, connectionId, true);
    view.setUint32(8, messageType, true);
    view.setUint32(12, payload.length, true);
    input.set(payload.subarray(0, input.length - 16), 16);
    this.memory.write(this.scratchGpa, input);
    this.hypercalls.dispatch(vp, { rcx: POST_MESSAGE, rdx: BigInt(this.scratchGpa), r8: 0n });
  }

  private signalEvent(vp: number, connectionId: number, flag: number, fast: boolean): void {
    if (fast) {
      this.hypercalls.dispatch(vp, { rcx: SIGNAL_EVENT_FAST, rdx: BigInt(connectionId) | (BigInt(flag) << 32n), r8: 0n });
      return;
    }
    const input = new Uint8Array(8);
    const view = new DataView(input.buffer);
    view.setUint32(0, connectionId, true);
    view.setUint16(4, flag, true);
    this.memory.write(this.scratchGpa, input);
    this.hypercalls.dispatch(vp, { rcx: SIGNAL_EVENT, rdx: BigInt(this.scratchGpa), r8: 0n });
  }

  private hostCall(relid: number, method: string, argsJson: string): void {
    const entry = this.devices.get(relid);
    if (!entry) return; // another device's call in a --device replay
    const { name, device } = entry;
    let args: unknown[];
    try {
      args = decodeHostCallArgs(argsJson);
    } catch (error) {
      throw new ReplayError(`host call ${method} on relid ${relid} has malformed arguments: ${(error as Error).message}`);
    }
    if (!isHostCallable(device) || !device.hostCalls.includes(method)) {
      const known = isHostCallable(device) ? device.hostCalls.join(', ') : 'none';
      throw new ReplayError(`host call ${method} on relid ${relid}: ${name} has no such host call (known: ${known})`);
    }
    let result: unknown;
    try {
      result = device.invokeHostCall(method, args);
    } catch (error) {
      // The recorded call threw the same at the recording VMM (or the arguments are hostile):
      // either way the call is over, and what the host did is compared as events.
      this.logger.warn('replay: a recorded host call threw', { relid, method, error: String(error) });
      return;
    }
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
        this.guestRings.set(
          m.child_relid,
          openRingEndpoint(layout, 'guest', () => {}, { logger: this.logger, name: `replay guest relid ${m.child_relid}` }),
        );
      } catch (error) {
        this.logger.warn('replay: the recorded ring layout is unusable', { relid: m.child_relid, error: String(error) });
      }
    } else if (m.msgtype === CHANNELMSG_CLOSECHANNEL) {
      this.guestRings.delete(m.child_relid);
    }
  }

  /** The guest packets the host read between event i and the next driven event, written into their rings now. */
  private writeGuestPackets(window: EventWindow, i: number): void {
    for (let j = i + 1, e = window.at(j); e; e = window.at(++j)) {
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
        for (let sint = 0; sint < HV_SYNIC_SINT_COUNT; sint++) this.memory.writeU32(simp + sint * HV_MESSAGE_SIZE, 0);
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
  private consumeRings(window: EventWindow, i: number): void {
    const decided = new Set<number>();
    for (let j = i + 1, e = window.at(j); e; e = window.at(++j)) {
      if (isGuestOriginated(e) && e.kind !== 'ringPacket') break;
      if (e.kind !== 'ringPacket' || e.ringPacket.direction !== 'HOST_TO_GUEST') continue;
      const relid = e.ringPacket.relid;
      if (decided.has(relid)) continue;
      decided.add(relid);
      const ring = this.guestRings.get(relid);
      if (ring && wasSignalled(window, j)) drainQuietly(ring, this.logger);
    }
  }
}

/** Whether the host-to-guest packet at index j was followed by an event flag before anything else on its channel or from the guest. */
function wasSignalled(window: EventWindow, j: number): boolean {
  const relid = (window.at(j) as TraceEvent & { kind: 'ringPacket' }).ringPacket.relid;
  for (let k = j + 1, e = window.at(k); e; e = window.at(++k)) {
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

/** Every guest page a trace names (SynIC and reference-TSC pages, GPADL and GPA-direct PFNs, monitor pages); hostile counts are refused. */
class PageSet {
  private readonly pages = new Set<number>();
  add(gpa: bigint | number): void {
    const pfn = Math.floor(Number(gpa) / PAGE_SIZE);
    if (Number.isSafeInteger(pfn) && pfn >= 0 && pfn * PAGE_SIZE < MAX_GPA) this.pages.add(pfn);
    if (this.pages.size > MAX_REPLAY_PAGES) throw new ReplayError(`the trace names more than ${MAX_REPLAY_PAGES} guest pages`);
  }
  addEvent(e: TraceEvent): void {
    if (e.kind === 'msrWrite' && [HV_X64_MSR_SIMP, HV_X64_MSR_SIEFP, HV_X64_MSR_REFERENCE_TSC].includes(e.msrWrite.msr)) {
      if (e.msrWrite.value & 1n) this.add(e.msrWrite.value & ~0xfffn);
    } else if (e.kind === 'gpadlCreated') {
      for (const pfn of e.gpadlCreated.pfns) this.add(pfn * BigInt(PAGE_SIZE));
    } else if (e.kind === 'ringPacket') {
      for (const r of e.ringPacket.ranges) for (const pfn of r.pfns) this.add(pfn * BigInt(PAGE_SIZE));
    } else if (e.kind === 'postMessage') {
      const m = parseChannelMessage(e.postMessage.payload);
      if (!(m instanceof Error) && m.msgtype === CHANNELMSG_INITIATE_CONTACT) {
        for (const gpa of [m.monitor_page1, m.monitor_page2]) if (gpa !== 0n) this.add(gpa);
      }
    }
  }
  sorted(): number[] {
    return [...this.pages].sort((a, b) => a - b);
  }
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

function isU32(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (value instanceof Uint8Array) return 'a byte array';
  if (typeof value === 'object') return 'an object';
  if (typeof value === 'string') return `'${value.length > 40 ? `${value.slice(0, 40)}...` : value}'`;
  if (typeof value === 'bigint') return `${value}n`;
  return String(value);
}

/** An event as the schema has it, or a ReplayError naming the event and the field. */
function checkEvent(e: unknown, index: number): asserts e is TraceEvent {
  const where = `event ${index}`;
  if (typeof e !== 'object' || e === null) throw new ReplayError(`${where} is ${describe(e)}, not an event`);
  const ev = e as Record<string, unknown>;
  if (typeof ev.seq !== 'bigint' || ev.seq < 0n)
    throw new ReplayError(`${where}: seq must be a non-negative bigint, got ${describe(ev.seq)}`);
  if (typeof ev.time !== 'bigint' || ev.time < 0n)
    throw new ReplayError(`${where} (#${ev.seq}): time must be a non-negative bigint, got ${describe(ev.time)}`);
  if (!isU32(ev.vp)) throw new ReplayError(`event #${ev.seq} names vCPU ${describe(ev.vp)}; replay supports 0..${MAX_REPLAY_VPS - 1}`);
  const problem = eventBodyProblem(ev);
  if (problem) throw new ReplayError(`${where} (#${ev.seq}): ${problem}`);
}
