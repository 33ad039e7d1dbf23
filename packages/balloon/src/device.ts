/**
 * The host end of hv_balloon (dynamic memory) as a VMBus device. The guest negotiates a
 * version (WIN10, WIN8, WIN7), reports its capabilities and then its memory pressure about once
 * a second; the host inflates the balloon (BALLOON_REQUEST; the guest answers with the page
 * ranges it gave up, in messages of at most 510 ranges), deflates it (UNBALLOON_REQUEST with
 * exactly pages it holds) and hot-adds RAM (MEM_HOT_ADD_REQUEST for a region it mapped first).
 *
 * One transaction at a time (Linux overwrites a request still in flight). Pages the guest
 * gives are checked (inside RAM, non-empty, not given already, not beyond what was asked, a
 * message only while a request is open) before any is released; a message that fails a check
 * is dropped whole (logged, an 'error' event, nothing released), so no host memory goes that
 * the guest did not give. Ballooned pages are a bitmap over PFNs (PageSet).
 */
import { HostUsageError, HvemuError, silentLogger, type Logger } from '@hvemu/common';
import {
  VM_PKT_DATA_INBAND,
  type DeviceChannel,
  type HostCallable,
  type HostCallObserver,
  type OfferSpec,
  type OutgoingPacket,
  type PacketView,
  type VmbusDevice,
} from '@hvemu/vmbus';
import type { BalloonMemory, RamSpan } from './memory.js';
import { PageSet } from './page-set.js';
import * as P from './protocol.js';

const PAGE = P.DM_PAGE_SIZE;
const GiB4 = 2 ** 32;
const MiB = 1 << 20;
/** UNBALLOON_REQUEST messages per transaction: 64 x 4 KiB may wait for ring space at most. */
const MAX_UNBALLOON_MESSAGES = 64;

/** The guest did not answer a transaction in time: it is abandoned (late answers are dropped). */
export class BalloonTimeoutError extends HvemuError {
  readonly outcome = 'message-dropped' as const;
}

export type BalloonPhase = 'closed' | 'version' | 'capabilities' | 'ready';

export interface GuestCapabilities {
  readonly balloon: boolean;
  readonly hotAdd: boolean;
  /** The hot-add chunk the guest needs, bytes (2^hot_add_alignment MiB). */
  readonly hotAddAlignment: number;
}

export interface BalloonStats {
  readonly phase: BalloonPhase;
  /** The negotiated version (0 before). */
  readonly version: number;
  readonly capabilities: GuestCapabilities | null;
  /** The guest's last pressure report. */
  readonly lastStatus: P.DmStatus | null;
  readonly statusReports: number;
  /** Guest RAM the VM has (regions, hot-added included), bytes. */
  readonly ramBytes: number;
  /** Pages in the balloon now. */
  readonly balloonedPages: number;
  /** RAM the guest has now: ramBytes minus the balloon. */
  readonly guestBytes: number;
  /** The target set (setTarget or the policy), bytes; null: none. */
  readonly targetBytes: number | null;
  /** Bytes released to the host so far (cumulative) and given back by unballoon. */
  readonly releasedBytes: number;
  readonly returnedBytes: number;
  readonly hotAddedBytes: number;
  /** Guest messages dropped for a protocol fault, and transactions the guest left unanswered. */
  readonly protocolErrors: number;
  readonly timeouts: number;
  /** The operation in flight. */
  readonly inFlight: 'balloon' | 'unballoon' | 'hot-add' | null;
  /** Host bytes behind guest RAM now, where the memory port measures it. */
  readonly hostAllocatedBytes?: number;
}

export type BalloonChange =
  | { readonly kind: 'inflated'; readonly pages: number; readonly ranges: number }
  | { readonly kind: 'deflated'; readonly pages: number }
  | { readonly kind: 'balloon-done'; readonly requested: number; readonly received: number }
  | { readonly kind: 'hot-added'; readonly gpa: number; readonly bytes: number; readonly pagesOnlined: number }
  | { readonly kind: 'ready'; readonly version: number; readonly capabilities: GuestCapabilities }
  | { readonly kind: 'reset' };

export interface BalloonEvents {
  status: (status: P.DmStatus, stats: BalloonStats) => void;
  change: (change: BalloonChange, stats: BalloonStats) => void;
  error: (error: HvemuError) => void;
}

/**
 * Turns each pressure report into a target: bytes to set, null to clear the target, undefined
 * to leave it. The default policy is none: nothing happens unless the VMM sets a target.
 */
export type BalloonPolicy = (status: P.DmStatus, stats: BalloonStats) => number | null | undefined;

/** A policy that follows the guest's committed memory: target = committed + headroom, at least `minBytes`. */
export function followCommitted(options: { headroomBytes?: number; minBytes?: number } = {}): BalloonPolicy {
  const headroom = options.headroomBytes ?? 256 * MiB;
  const min = options.minBytes ?? 0;
  return (status) => Math.max(min, status.numCommitted * PAGE + headroom);
}

export interface HotAddResult {
  readonly gpa: number;
  readonly bytes: number;
  /** Pages the guest says it brought online (MEM_HOT_ADD_RESPONSE page_count). */
  readonly pagesOnlined: number;
  readonly accepted: boolean;
}

export interface BalloonOptions {
  memory: BalloonMemory;
  instanceId?: string;
  logger?: Logger;
  /** Versions the host accepts (default WIN10, WIN8, WIN7). */
  versions?: readonly number[];
  /** How long the guest may take for each message of a transaction, ms (default 60000). */
  responseTimeoutMs?: number;
  /** Most pages one BALLOON_REQUEST asks for (default 262144: 1 GiB). */
  maxPagesPerRequest?: number;
  policy?: BalloonPolicy;
  /** Sent as INFO_MESSAGE (MAX_PAGE_CNT) once the guest is ready, from version 1.0 (the guest logs it). */
  maxPageCount?: number;
  /** Where hot-added RAM starts: default the top of RAM, at least 4 GiB, aligned as the guest asks. */
  hotAddBase?: number;
  /** Guest packets read per signal before the rest waits for the next event-loop turn (default 64). */
  readBudget?: number;
}

type Op =
  | { kind: 'balloon'; transId: number; requested: number; received: number }
  | { kind: 'unballoon'; transId: number; pages: number }
  | { kind: 'hot-add'; transId: number; gpa: number; size: number; pages: number; done: (r: HotAddResult | Error) => void };

interface PendingHotAdd {
  bytes: number;
  done: (r: HotAddResult | Error) => void;
}

export const BALLOON_HOST_CALLS: readonly string[] = ['setTarget', 'hotAdd'];

export class BalloonDevice implements VmbusDevice, HostCallable {
  readonly offer: OfferSpec;
  private readonly logger: Logger;
  private readonly memory: BalloonMemory;
  private readonly accepted: readonly number[];
  private readonly timeoutMs: number;
  private readonly maxPerRequest: number;
  private readonly readBudget: number;
  private policy: BalloonPolicy | undefined;
  private channel: DeviceChannel | null = null;
  private phase: BalloonPhase = 'closed';
  private version = 0;
  private caps: GuestCapabilities | null = null;
  private lastStatus: P.DmStatus | null = null;
  private statusReports = 0;
  private readonly ballooned = new PageSet();
  private ram: RamSpan[] = [];
  /** RAM as maximal runs of adjacent regions. */
  private spans: RamSpan[] = [];
  private target: number | null = null;
  /** Set when the guest gave less than asked: no new request until a status report or a new target. */
  private stalled = false;
  private op: Op | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private pendingHotAdd: PendingHotAdd | null = null;
  private nextTransId = 1;
  private counters = { releasedBytes: 0, returnedBytes: 0, hotAddedBytes: 0, protocolErrors: 0, timeouts: 0 };
  private readonly listeners: { [K in keyof BalloonEvents]: Set<BalloonEvents[K]> } = {
    status: new Set(),
    change: new Set(),
    error: new Set(),
  };
  private idleWaiters: (() => void)[] = [];
  private hostCallObserver: HostCallObserver | undefined;
  private readonly packet: OutgoingPacket = { type: VM_PKT_DATA_INBAND, transactionId: 0n, payload: new Uint8Array(0) };
  private readScheduled = false;

  constructor(private readonly options: BalloonOptions) {
    if (!options || typeof options.memory?.regions !== 'function' || typeof options.memory.release !== 'function') {
      throw new HostUsageError('BalloonDevice needs options.memory: a BalloonMemory { regions(), release(pairs) }');
    }
    this.memory = options.memory;
    this.logger = options.logger ?? silentLogger;
    this.accepted = options.versions ?? P.LINUX_DM_VERSIONS;
    this.timeoutMs = options.responseTimeoutMs ?? 60_000;
    this.maxPerRequest = Math.min(options.maxPagesPerRequest ?? 262_144, 0xffff_ffff);
    this.readBudget = options.readBudget ?? 64;
    this.policy = options.policy;
    this.offer = { interfaceType: P.HV_DM_GUID, interfaceInstance: options.instanceId ?? P.DEFAULT_DM_INSTANCE };
    this.refreshRam();
  }

  // ---- host API

  /** The host-API methods traces record and replay makes again. */
  get hostCalls(): readonly string[] {
    return BALLOON_HOST_CALLS;
  }

  observeHostCalls(observer: HostCallObserver): void {
    this.hostCallObserver = observer;
  }

  invokeHostCall(method: string, args: readonly unknown[]): unknown {
    if (method === 'setTarget') return this.setTarget(args[0] as number | null);
    if (method === 'hotAdd') return this.hotAdd(args[0] as number);
    throw new HostUsageError(`the balloon has no host call ${method} (known: ${BALLOON_HOST_CALLS.join(', ')})`);
  }

  /**
   * The RAM the guest should have, bytes (null: no target; the balloon stays as it is). The
   * device inflates or deflates toward it, one transaction at a time, from now and after every
   * transaction; a guest that gives less than asked is asked again after its next status report.
   */
  setTarget(bytes: number | null): void {
    if (bytes !== null && (typeof bytes !== 'number' || !Number.isFinite(bytes) || bytes < 0)) {
      throw new HostUsageError(`setTarget: a byte count >= 0 or null, not ${String(bytes)}`);
    }
    this.hostCallObserver?.('setTarget', [bytes]);
    this.target = bytes;
    this.stalled = false;
    this.pursue();
  }

  /**
   * Adds RAM above the guest's RAM (at least `bytes`, rounded up to the guest's hot-add
   * alignment), then asks the guest to online it. Resolves with what the guest reported;
   * rejects (HostUsageError) if the guest cannot take hot add, another hot add is pending, or
   * the memory port cannot add RAM.
   */
  hotAdd(bytes: number): Promise<HotAddResult> {
    if (typeof bytes !== 'number' || !Number.isSafeInteger(bytes) || bytes <= 0) {
      return Promise.reject(new HostUsageError(`hotAdd: a positive byte count, not ${String(bytes)}`));
    }
    if (!this.memory.addRam) return Promise.reject(new HostUsageError('hotAdd: the memory port cannot add RAM'));
    if (this.phase !== 'ready' || !this.caps?.hotAdd)
      return Promise.reject(new HostUsageError('hotAdd: the guest has not offered hot add'));
    if (this.pendingHotAdd || this.op?.kind === 'hot-add') return Promise.reject(new HostUsageError('hotAdd: a hot add is pending'));
    this.hostCallObserver?.('hotAdd', [bytes]);
    return new Promise<HotAddResult>((resolve, reject) => {
      this.pendingHotAdd = { bytes, done: (r) => (r instanceof Error ? reject(r) : resolve(r)) };
      this.pursue();
    });
  }

  /** Sets the policy consulted on every status report (undefined: none). */
  setPolicy(policy: BalloonPolicy | undefined): void {
    this.policy = policy;
  }

  stats(): BalloonStats {
    const ramBytes = this.ram.reduce((n, r) => n + r.size, 0);
    const stats: BalloonStats = {
      phase: this.phase,
      version: this.version,
      capabilities: this.caps,
      lastStatus: this.lastStatus,
      statusReports: this.statusReports,
      ramBytes,
      balloonedPages: this.ballooned.size,
      guestBytes: ramBytes - this.ballooned.size * PAGE,
      targetBytes: this.target,
      ...this.counters,
      inFlight: this.op?.kind ?? null,
    };
    if (!this.memory.allocatedBytes) return stats;
    try {
      return { ...stats, hostAllocatedBytes: this.memory.allocatedBytes() };
    } catch {
      return stats;
    }
  }

  /** The ballooned pages as (startPage, pageCount) runs in PFN order. */
  balloonedRanges(): number[] {
    return this.ballooned.runs();
  }

  on<K extends keyof BalloonEvents>(event: K, listener: BalloonEvents[K]): () => void {
    this.listeners[event].add(listener);
    return () => void this.listeners[event].delete(listener);
  }

  /** Resolves when nothing is in flight and nothing more can be done now toward the target. */
  idle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  // ---- VmbusDevice

  open(channel: DeviceChannel): void {
    this.endSession('reopened');
    this.channel = channel;
    this.phase = 'version';
  }

  close(): void {
    this.endSession('closed');
    this.channel = null;
    this.phase = 'closed';
  }

  onSignal(channel: DeviceChannel): void {
    if (channel !== this.channel) return;
    channel.queue.onGuestSignal();
    this.readSome(channel);
  }

  stop(): void {
    this.clearTimer();
  }

  // ---- reading

  private readSome(channel: DeviceChannel): void {
    const n = channel.queue.read((p) => this.onPacket(p), this.readBudget);
    if (n >= this.readBudget && !this.readScheduled) {
      // A flood: the rest waits for the next turn, so one guest cannot hold the event loop.
      this.readScheduled = true;
      setImmediate(() => {
        this.readScheduled = false;
        if (this.channel !== channel || channel.queue.closed) return;
        try {
          this.readSome(channel);
        } catch (e) {
          channel.fail(e);
        }
      });
    }
  }

  private onPacket(p: PacketView): void {
    if (p.type !== VM_PKT_DATA_INBAND) {
      return this.fault(new P.BalloonProtocolError(`a packet of type ${p.type} (dm messages are in-band)`, 'unexpected'));
    }
    if (p.length > P.DM_MAX_MESSAGE_SIZE + 64) {
      return this.fault(new P.BalloonProtocolError(`a ${p.length}-byte packet`, 'oversize'));
    }
    const msg = P.parseGuestMessage(p.payload());
    if (msg instanceof P.BalloonProtocolError) return this.fault(msg);
    this.onMessage(msg);
  }

  /** One decoded guest message (exposed for the fuzzers through the channel only). */
  private onMessage(msg: P.GuestMessage): void {
    switch (msg.type) {
      case P.DM_VERSION_REQUEST:
        return this.onVersion(msg);
      case P.DM_CAPABILITIES_REPORT:
        return this.onCapabilities(msg);
      case P.DM_STATUS_REPORT:
        return this.onStatus(msg.status);
      case P.DM_BALLOON_RESPONSE:
        return this.onBalloonResponse(msg.morePages, msg.ranges);
      case P.DM_UNBALLOON_RESPONSE:
        return this.onUnballoonResponse();
      case P.DM_MEM_HOT_ADD_RESPONSE:
        return this.onHotAddResponse(msg.pageCount, msg.result);
    }
  }

  private onVersion(msg: { transId: number; version: number; isLastAttempt: boolean }): void {
    if (this.phase !== 'version') {
      return this.fault(new P.BalloonProtocolError(`VERSION_REQUEST in phase ${this.phase}`, 'unexpected'));
    }
    const ok = this.accepted.includes(msg.version);
    this.send(P.encodeVersionResponse(msg.transId, ok));
    if (ok) {
      this.version = msg.version;
      this.phase = 'capabilities';
    } else {
      this.logger.info('balloon: refused a dynamic memory version', { version: msg.version, lastAttempt: msg.isLastAttempt });
    }
  }

  private onCapabilities(msg: { transId: number; caps: bigint }): void {
    if (this.phase !== 'capabilities') {
      return this.fault(new P.BalloonProtocolError(`CAPABILITIES_REPORT in phase ${this.phase}`, 'unexpected'));
    }
    const align = Number((msg.caps >> P.DM_CAPS_HOT_ADD_ALIGNMENT_SHIFT) & 0xfn);
    this.caps = {
      balloon: (msg.caps & P.DM_CAPS_BALLOON) !== 0n,
      hotAdd: (msg.caps & P.DM_CAPS_HOT_ADD) !== 0n,
      hotAddAlignment: 2 ** align * MiB,
    };
    this.send(P.encodeCapabilitiesResponse(msg.transId, true));
    this.phase = 'ready';
    if (this.options.maxPageCount !== undefined && this.version >= P.DYNMEM_PROTOCOL_VERSION_WIN8) {
      this.send(P.encodeInfoMaxPageCount(this.transId(), this.options.maxPageCount));
    }
    this.emit('change', { kind: 'ready', version: this.version, capabilities: this.caps });
    this.pursue();
  }

  private onStatus(status: P.DmStatus): void {
    if (this.phase !== 'ready') {
      return this.fault(new P.BalloonProtocolError(`STATUS_REPORT in phase ${this.phase}`, 'unexpected'));
    }
    this.lastStatus = status;
    this.statusReports++;
    this.stalled = false;
    this.emit('status', status);
    if (this.policy) {
      try {
        const t = this.policy(status, this.stats());
        if (t === null || (typeof t === 'number' && Number.isFinite(t) && t >= 0)) this.target = t;
      } catch (e) {
        this.logger.error('balloon: the policy threw', { error: String(e) });
      }
    }
    this.pursue();
  }

  private onBalloonResponse(morePages: boolean, ranges: Float64Array): void {
    const op = this.op;
    if (!op || op.kind !== 'balloon') {
      return this.fault(new P.BalloonProtocolError('BALLOON_RESPONSE with no balloon request open', 'not-requested'));
    }
    const fault = this.takeRanges(op, ranges);
    if (fault) this.fault(fault);
    if (morePages && op.received < op.requested) return this.armTimer();
    if (morePages) {
      // Everything asked for came; a guest that still says more_pages is wrong, but the transaction is over.
      this.fault(new P.BalloonProtocolError('BALLOON_RESPONSE: more_pages after every page asked for', 'too-many-pages'));
    }
    this.finishOp();
    if (op.received < op.requested) this.stalled = true;
    this.emit('change', { kind: 'balloon-done', requested: op.requested, received: op.received });
    this.pursue();
  }

  /**
   * Checks every range of one message, then tracks and releases them all; on a fault nothing of
   * the message is kept or released.
   */
  private takeRanges(op: { requested: number; received: number }, ranges: Float64Array): P.BalloonProtocolError | null {
    const n = ranges.length / 2;
    let pages = 0;
    let fault: P.BalloonProtocolError | null = null;
    let added = 0;
    for (; added < n; added++) {
      const start = ranges[2 * added];
      const count = ranges[2 * added + 1];
      if (count === 0) {
        fault = new P.BalloonProtocolError(`BALLOON_RESPONSE: range ${added} is empty`, 'range-empty');
        break;
      }
      if (!this.inRam(start, count)) {
        fault = new P.BalloonProtocolError(`BALLOON_RESPONSE: pages ${start}+${count} are not guest RAM`, 'range-outside-ram');
        break;
      }
      if (pages + count > op.requested - op.received) {
        fault = new P.BalloonProtocolError(
          `BALLOON_RESPONSE: more pages than the ${op.requested - op.received} still asked for`,
          'too-many-pages',
        );
        break;
      }
      if (!this.ballooned.tryAdd(start, count)) {
        fault = new P.BalloonProtocolError(`BALLOON_RESPONSE: pages ${start}+${count} are in the balloon already`, 'range-repeated');
        break;
      }
      pages += count;
    }
    if (fault) {
      for (let i = 0; i < added; i++) this.ballooned.remove(ranges[2 * i], ranges[2 * i + 1]);
      return fault;
    }
    if (n === 0) return null;
    op.received += pages;
    // One batched release for the message, in bytes, split where a range crosses from one RAM region into the next.
    const bytePairs = this.toRegionPairs(ranges);
    try {
      this.counters.releasedBytes += this.memory.release(bytePairs);
    } catch (e) {
      // The host could not release them: they stay in the balloon (the guest gave them), unreleased.
      this.logger.error('balloon: releasing pages failed', { error: String(e) });
    }
    this.emit('change', { kind: 'inflated', pages, ranges: n });
    return null;
  }

  private onUnballoonResponse(): void {
    const op = this.op;
    if (!op || op.kind !== 'unballoon') {
      return this.fault(new P.BalloonProtocolError('UNBALLOON_RESPONSE with no unballoon request open', 'not-requested'));
    }
    this.finishOp();
    this.emit('change', { kind: 'deflated', pages: op.pages });
    this.pursue();
  }

  private onHotAddResponse(pageCount: number, result: number): void {
    const op = this.op;
    if (!op || op.kind !== 'hot-add') {
      return this.fault(new P.BalloonProtocolError('MEM_HOT_ADD_RESPONSE with no hot add open', 'not-requested'));
    }
    this.finishOp();
    let onlined = pageCount;
    if (pageCount > op.pages) {
      this.fault(new P.BalloonProtocolError(`MEM_HOT_ADD_RESPONSE: ${pageCount} pages of ${op.pages} offered`, 'hot-add-count'));
      onlined = op.pages;
    }
    const accepted = onlined > 0;
    if (!accepted) {
      // The guest took none of it: the RAM goes again.
      try {
        this.memory.removeRam?.(op.gpa);
      } catch (e) {
        this.logger.error('balloon: removing refused hot-add RAM failed', { error: String(e) });
      }
      this.refreshRam();
    } else {
      this.counters.hotAddedBytes += op.size;
    }
    this.logger.info('balloon: hot add answered', { gpa: op.gpa, bytes: op.size, pagesOnlined: onlined, result });
    const r: HotAddResult = { gpa: op.gpa, bytes: accepted ? op.size : 0, pagesOnlined: onlined, accepted };
    if (accepted) this.emit('change', { kind: 'hot-added', gpa: op.gpa, bytes: op.size, pagesOnlined: onlined });
    op.done(r);
    this.pursue();
  }

  // ---- driving toward the target

  private pursue(): void {
    if (this.phase !== 'ready' || this.op || !this.channel) return this.notifyIdle();
    if (this.pendingHotAdd) return this.startHotAdd(this.pendingHotAdd);
    if (this.target === null) return this.notifyIdle();
    const ramPages = this.ram.reduce((n, r) => n + r.size, 0) / PAGE;
    const guestPages = ramPages - this.ballooned.size;
    const want = Math.floor(this.target / PAGE);
    if (guestPages > want && this.caps?.balloon && !this.stalled) {
      const n = Math.min(guestPages - want, this.maxPerRequest);
      this.op = { kind: 'balloon', transId: this.transId(), requested: n, received: 0 };
      this.send(P.encodeBalloonRequest(this.op.transId, n));
      return this.armTimer();
    }
    if (guestPages < want && this.ballooned.size > 0) {
      this.startUnballoon(Math.min(want - guestPages, this.ballooned.size));
      return;
    }
    this.notifyIdle();
  }

  private startUnballoon(pages: number): void {
    const transId = this.transId();
    const op = { kind: 'unballoon' as const, transId, pages: 0 };
    this.op = op;
    // At most MAX_UNBALLOON_MESSAGES per transaction (what waits for ring space stays bounded); pursue() does the rest.
    let left = pages;
    for (let m = 0; left > 0 && m < MAX_UNBALLOON_MESSAGES; m++) {
      const pairs = this.ballooned.take(left, P.DM_MAX_RANGES_PER_MESSAGE, P.DM_RANGE_MAX_PAGES);
      let n = 0;
      for (let i = 1; i < pairs.length; i += 2) n += pairs[i];
      left -= n;
      op.pages += n;
      this.counters.returnedBytes += n * PAGE;
      this.send(P.encodeUnballoonRequest(transId, left > 0 && m + 1 < MAX_UNBALLOON_MESSAGES, pairs));
    }
    this.armTimer();
  }

  private startHotAdd(pending: PendingHotAdd): void {
    this.pendingHotAdd = null;
    const align = Math.max(this.caps?.hotAddAlignment ?? MiB, PAGE);
    const top = this.ram.reduce((m, r) => Math.max(m, r.gpa + r.size), 0);
    const base = this.options.hotAddBase ?? Math.max(top, GiB4);
    const gpa = Math.ceil(Math.max(base, top) / align) * align;
    const size = Math.ceil(pending.bytes / align) * align;
    const pages = size / PAGE;
    if (pages > P.DM_RANGE_MAX_PAGES || gpa / PAGE + pages > P.DM_RANGE_MAX_PFN) {
      pending.done(new HostUsageError(`hotAdd: ${size} bytes at 0x${gpa.toString(16)} do not fit one page range`));
      return this.pursue();
    }
    try {
      this.memory.addRam!({ gpa, size });
    } catch (e) {
      pending.done(e instanceof Error ? e : new HostUsageError(String(e)));
      return this.pursue();
    }
    this.refreshRam();
    const transId = this.transId();
    this.op = { kind: 'hot-add', transId, gpa, size, pages, done: pending.done };
    this.send(P.encodeHotAddRequest(transId, { startPage: gpa / PAGE, pageCount: pages }));
    this.armTimer();
  }

  // ---- helpers

  /** True when [start, start + count) is RAM (it may run across adjacent regions: hot-added chunks). */
  private inRam(start: number, count: number): boolean {
    const gpa = start * PAGE;
    const end = (start + count) * PAGE;
    // Few spans: a linear scan.
    for (const r of this.spans) if (gpa >= r.gpa && end <= r.gpa + r.size) return true;
    return false;
  }

  /** (startPage, pageCount) pairs, all RAM, as (gpa, size) byte pairs each inside one region. */
  private toRegionPairs(ranges: Float64Array): Float64Array {
    let out = new Float64Array(ranges.length);
    let k = 0;
    let r = 0;
    for (let i = 0; i < ranges.length; i += 2) {
      let gpa = ranges[i] * PAGE;
      const end = gpa + ranges[i + 1] * PAGE;
      while (gpa < end) {
        // Regions are sorted; ranges are not: search from the start when the range lies before the cursor.
        if (r >= this.ram.length || this.ram[r].gpa > gpa) r = 0;
        while (this.ram[r].gpa + this.ram[r].size <= gpa) r++;
        const stop = Math.min(end, this.ram[r].gpa + this.ram[r].size);
        if (k + 2 > out.length) {
          const grown = new Float64Array(out.length * 2 + 2);
          grown.set(out);
          out = grown;
        }
        out[k++] = gpa;
        out[k++] = stop - gpa;
        gpa = stop;
      }
    }
    return k === out.length ? out : out.subarray(0, k);
  }

  private refreshRam(): void {
    this.ram = [...this.memory.regions()].sort((a, b) => a.gpa - b.gpa);
    this.spans = [];
    for (const r of this.ram) {
      const last = this.spans[this.spans.length - 1];
      if (last && last.gpa + last.size === r.gpa) this.spans[this.spans.length - 1] = { gpa: last.gpa, size: last.size + r.size };
      else this.spans.push({ gpa: r.gpa, size: r.size });
    }
    const top = this.ram.reduce((m, r) => Math.max(m, r.gpa + r.size), 0);
    this.ballooned.grow(top / PAGE);
  }

  private transId(): number {
    const id = this.nextTransId;
    this.nextTransId = (this.nextTransId + 1) >>> 0 || 1;
    return id;
  }

  private send(payload: Uint8Array): void {
    const ch = this.channel;
    if (!ch || ch.queue.closed) return;
    this.packet.payload = payload;
    try {
      if (ch.queue.trySend(this.packet)) return;
    } catch (e) {
      this.logger.warn('balloon: send failed', { error: String(e) });
      return;
    }
    // Waits (in order) for ring space; a close rejects it, and the session ends then anyway.
    ch.queue.send(this.packet).catch(() => {});
  }

  private armTimer(): void {
    this.clearTimer();
    this.timer = setTimeout(() => this.onTimeout(), this.timeoutMs);
    this.timer.unref?.();
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private onTimeout(): void {
    this.timer = null;
    const op = this.op;
    if (!op) return;
    this.op = null;
    this.counters.timeouts++;
    const error = new BalloonTimeoutError(`the guest did not answer the ${op.kind} request (${this.timeoutMs} ms)`);
    this.logger.warn(`balloon: ${error.message}`);
    this.emit('error', error);
    if (op.kind === 'balloon') {
      this.stalled = true;
      this.emit('change', { kind: 'balloon-done', requested: op.requested, received: op.received });
    }
    if (op.kind === 'hot-add') {
      // The guest may still online it later: the RAM stays.
      this.counters.hotAddedBytes += op.size;
      op.done({ gpa: op.gpa, bytes: op.size, pagesOnlined: 0, accepted: false });
    }
    // An unanswered deflate: the pages went back already. No retry until a report or a new target.
    this.stalled = true;
    this.notifyIdle();
  }

  private finishOp(): void {
    this.op = null;
    this.clearTimer();
  }

  private fault(error: P.BalloonProtocolError): void {
    this.counters.protocolErrors++;
    if (this.counters.protocolErrors <= 100 || this.counters.protocolErrors % 10_000 === 0) {
      this.logger.warn(`balloon: ${error.message}`, { fault: error.fault, outcome: error.outcome, count: this.counters.protocolErrors });
    }
    this.emit('error', error);
  }

  private endSession(reason: string): void {
    this.clearTimer();
    const op = this.op;
    this.op = null;
    if (op?.kind === 'hot-add') op.done(new HostUsageError(`hotAdd: the channel ${reason}`));
    this.pendingHotAdd?.done(new HostUsageError(`hotAdd: the channel ${reason}`));
    this.pendingHotAdd = null;
    const hadSession = this.phase !== 'closed';
    // A new driver knows nothing of the old balloon: its pages are the guest's again (zero when touched).
    this.ballooned.clear();
    this.version = 0;
    this.caps = null;
    this.stalled = false;
    this.refreshRam();
    if (hadSession) this.emit('change', { kind: 'reset' });
    this.notifyIdle();
  }

  private isIdle(): boolean {
    if (this.op || this.pendingHotAdd) return false;
    if (this.phase !== 'ready' || this.target === null || this.stalled) return true;
    const guestPages = this.ram.reduce((n, r) => n + r.size, 0) / PAGE - this.ballooned.size;
    const want = Math.floor(this.target / PAGE);
    return !((guestPages > want && this.caps?.balloon) || (guestPages < want && this.ballooned.size > 0));
  }

  private notifyIdle(): void {
    if (this.idleWaiters.length === 0 || !this.isIdle()) return;
    for (const w of this.idleWaiters.splice(0)) w();
  }

  private emit<K extends keyof BalloonEvents>(event: K, value: Parameters<BalloonEvents[K]>[0]): void {
    if (this.listeners[event].size === 0) return;
    const stats = event === 'error' ? undefined : this.stats();
    for (const l of this.listeners[event]) {
      try {
        (l as (v: unknown, s?: BalloonStats) => void)(value, stats);
      } catch (e) {
        this.logger.error('balloon: an event listener threw', { event, error: String(e) });
      }
    }
  }
}
