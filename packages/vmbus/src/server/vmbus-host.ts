/**
 * The thin wiring around the pure VmbusServer: guest HvPostMessage on message connections 1
 * and 4 goes into `handle()`; the actions it returns are carried out here, in order:
 * channel messages are posted on SINT 2 (hv_message type 1), devices are told about
 * open/close/retarget, each channel's event connection routes HvSignalEvent to its device,
 * and log actions go to the Logger.
 *
 * The SynIC and the hypercall connection table are reached through the small structural
 * contracts of @hvemu/hvdef (SynicPort, ConnectionPort: satisfied by @hvemu/synic's HyperV and @hvemu/hypercalls'
 * ConnectionRegistry), so vmbus does not depend on either package.
 */
import { HostUsageError, silentLogger, type Logger } from '@hvemu/common';
import { HV_STATUS_INSUFFICIENT_BUFFERS, HV_STATUS_SUCCESS, type ConnectionPort, type SynicPort } from '@hvemu/hvdef';
import { PAGE_SIZE, type GuestBuffer, type GuestMemory } from '@hvemu/memory';
import { openRingEndpoint, ringPairFromPages } from '../ring/pair.js';
import type { PacketView } from '../ring/reader.js';
import type { OutgoingPacket } from '../ring/writer.js';
import {
  MAX_CHANNEL_RELIDS,
  VMBUS_EVENT_CONNECTION_ID,
  VMBUS_MESSAGE_CONNECTION_ID,
  VMBUS_MESSAGE_CONNECTION_ID_4,
  VMBUS_MESSAGE_TYPE,
} from '../protocol/constants.js';
import { channelMessageName } from '../protocol/messages.js';
import type { OpenRequest, ServerAction } from './actions.js';
import { Channel, type ChannelHandler, type ChannelHost } from './channel.js';
import { VmbusServer, type OfferSpec, type ServerGpadl, type ServerOptions } from './server.js';

/** Channel messages held for a busy SynIC before the host gives up on the guest (each <= 240 bytes). */
const DEFAULT_MAX_BACKLOG = 4096;
/** How often a held message is retried when the port cannot say when it is ready (ms). */
const BACKLOG_RETRY_MS = 1;
/** The guest-to-host half of the pre-5.0 interrupt page (Linux send_int_page). */
const SEND_INTERRUPT_HALF = PAGE_SIZE / 2;
/** struct hv_monitor_page: trigger_group[4] of { pending u32, armed u32 } at byte 8. */
const MONITOR_TRIGGER_GROUP_OFFSET = 8;
const MONITOR_TRIGGER_GROUPS = 4;

/** A channel message the SynIC could not take yet. */
interface HeldMessage {
  readonly vp: number;
  readonly sint: number;
  readonly msgtype: number;
  readonly bytes: Uint8Array;
}

export interface VmbusHostOptions extends Omit<ServerOptions, 'ram'> {
  memory: GuestMemory;
  synic: SynicPort;
  connections: ConnectionPort;
  logger?: Logger;
  /** Every action the server produced, before it is carried out (traces, tests). */
  onAction?(action: ServerAction): void;
  /**
   * Channel messages held, in order, while the SynIC answers 'busy' (the guest is not draining
   * its message slot). While any are held the guest's own HvPostMessage gets
   * HV_STATUS_INSUFFICIENT_BUFFERS (Linux retries), so the backlog cannot grow from guest
   * requests. Default 4096; beyond it a message is lost and logged as an error.
   */
  maxBacklog?: number;
  /** Every ring packet of every channel, by direction (traces). The view is valid during the call. */
  onPacket?(relid: number, direction: 'guest-to-host' | 'host-to-guest', packet: PacketView | OutgoingPacket): void;
}

export class VmbusHost {
  readonly server: VmbusServer;
  /** Guest RAM, as devices reach it (GuestData of GPADLs and packets). */
  readonly memory: GuestMemory;
  private readonly synic: SynicPort;
  private readonly connections: ConnectionPort;
  private readonly logger: Logger;
  private readonly channels = new Map<number, Channel>();
  private readonly unregister = new Map<number, () => void>();
  private readonly queue: ServerAction[] = [];
  private draining = false;
  /** monitorId -> relid of channels offered with monitored notification. */
  private readonly monitored = new Map<number, number>();
  private badMonitorPageLogged = false;
  private readonly disposers: (() => void)[] = [];
  private readonly channelHost: ChannelHost;
  /** Statistics. */
  readonly stats = {
    messagesIn: 0,
    messagesOut: 0,
    messagesHeld: 0,
    messagesRefused: 0,
    messagesLost: 0,
    guestSignals: 0,
    spuriousSignals: 0,
  };
  /** Channel messages waiting for the SynIC, oldest first. */
  private readonly backlog: HeldMessage[] = [];
  private backlogTimer: ReturnType<typeof setTimeout> | null = null;
  private flushing = false;

  constructor(private readonly options: VmbusHostOptions) {
    this.memory = options.memory;
    this.synic = options.synic;
    this.connections = options.connections;
    this.logger = options.logger ?? silentLogger;
    this.server = new VmbusServer({ ...options, ram: options.memory });
    const onMessage = (vp: number, type: number, payload: Uint8Array): number => this.onGuestMessage(vp, type, payload);
    for (const id of new Set([
      VMBUS_MESSAGE_CONNECTION_ID,
      VMBUS_MESSAGE_CONNECTION_ID_4,
      options.messageConnectionId ?? VMBUS_MESSAGE_CONNECTION_ID,
    ])) {
      this.disposers.push(this.connections.registerMessage(id, { onMessage }));
    }
    // Pre-Win7 guests (and non-dedicated interrupts before 5.0) signal the shared event connection.
    this.disposers.push(this.connections.registerEvent(VMBUS_EVENT_CONNECTION_ID, { onSignal: () => this.onSharedEvent() }));
    const stopListening = this.synic.onPostReady?.(() => this.flushBacklog());
    if (stopListening) this.disposers.push(stopListening);
    this.channelHost = {
      signalGuest: (relid) => this.signalGuest(relid),
      gpadlBuffer: (relid, gpadl) => this.gpadlBuffer(relid, gpadl),
      gpadlHandles: (relid) => this.server.gpadlsOf(relid).map((g) => g.handle),
      gpadlRanges: (relid, gpadl) => this.gpadlOf(relid, gpadl).ranges,
    };
  }

  /** Offers a device channel; the guest sees it at REQUESTOFFERS (or now, if it already asked). */
  offerChannel(spec: OfferSpec, handler: ChannelHandler): Channel {
    const { relid, actions } = this.server.addOffer(spec);
    const channel = this.track(relid, handler);
    if (spec.monitorAllocated) this.monitored.set(spec.monitorId!, relid);
    this.run(actions);
    return channel;
  }

  /** Offers `count` subchannels of `primary`; `handlerFor(index)` gives each its handler. */
  offerSubchannels(primary: Channel, count: number, handlerFor: (subChannelIndex: number) => ChannelHandler): Channel[] {
    const { relids, actions } = this.server.offerSubchannels(primary.relid, count);
    const subs = relids.map((relid) => this.track(relid, handlerFor(this.server.channel(relid)!.subChannelIndex)));
    this.run(actions);
    return subs;
  }

  /** Removes a device's channel (and a primary's subchannels) while the guest runs. */
  rescind(channel: Channel): void {
    for (const [monitorId, relid] of this.monitored) if (relid === channel.relid) this.monitored.delete(monitorId);
    this.run(this.server.rescindOffer(channel.relid));
  }

  channel(relid: number): Channel | undefined {
    return this.channels.get(relid);
  }

  /** Unregisters every connection (the VM is going away). */
  dispose(): void {
    if (this.backlogTimer) clearTimeout(this.backlogTimer);
    this.backlogTimer = null;
    for (const d of this.disposers.splice(0)) d();
    for (const d of this.unregister.values()) d();
    this.unregister.clear();
  }

  private track(relid: number, handler: ChannelHandler): Channel {
    const ch = this.server.channel(relid)!;
    const channel = new Channel(this.channelHost, relid, ch.connectionId, ch.spec, ch.subChannelIndex, handler);
    this.channels.set(relid, channel);
    this.unregister.set(relid, this.connections.registerEvent(ch.connectionId, { onSignal: () => this.onChannelSignal(relid) }));
    return channel;
  }

  // ---- guest -> host

  private onGuestMessage(vp: number, type: number, payload: Uint8Array): number {
    this.stats.messagesIn++;
    if (type !== VMBUS_MESSAGE_TYPE) {
      this.logger.warn(`vmbus: message of hv_message type ${type} on a VMBus connection: dropped`, { vp, reason: 'bad-message-type' });
      return HV_STATUS_SUCCESS;
    }
    if (this.backlog.length > 0 && (this.flushBacklog(), this.backlog.length > 0)) {
      // Our answers to earlier messages are still waiting for the guest to drain its slot: take
      // no more until they are out. The guest retries (Linux vmbus_post_msg does, with backoff).
      this.stats.messagesRefused++;
      return HV_STATUS_INSUFFICIENT_BUFFERS;
    }
    this.run(this.server.handle({ vp, bytes: payload }));
    return HV_STATUS_SUCCESS;
  }

  private onChannelSignal(relid: number): number {
    this.stats.guestSignals++;
    const channel = this.channels.get(relid);
    if (!channel || !channel.isOpen || channel.failed) {
      this.stats.spuriousSignals++;
      return HV_STATUS_SUCCESS;
    }
    channel.guestSignals++;
    try {
      channel.handler.onSignal?.(channel);
    } catch (error) {
      this.failChannel(channel, error);
    }
    return HV_STATUS_SUCCESS;
  }

  /**
   * A device threw while serving the guest (a broken ring), or found the guest's fault outside a
   * signal (a deferred read): that channel stops, the rest go on. Once per channel.
   */
  failChannel(channel: Channel, error: unknown): void {
    if (channel.failed) return;
    channel.failed = true;
    this.logger.warn(`vmbus: relid ${channel.relid} failed`, { reason: 'channel-failed', error: String(error) });
    try {
      channel.handler.onClose?.(channel, 'failed');
    } catch (e) {
      this.logger.error(`vmbus: relid ${channel.relid} close handler threw`, { error: String(e) });
    }
  }

  /**
   * Monitored notification (MNF). A channel offered with monitorAllocated signals the host by
   * setting bit (monitorId % 32) of trigger_group[monitorId / 32].pending in monitor page 2,
   * with no hypercall and so no exit. A write to guest RAM cannot be trapped here, so the host
   * scans: this takes every group's pending bits (atomic exchange) and signals their channels.
   * Call it from `startMonitorScan()`'s timer or wherever the VMM already runs; the latency of
   * an MNF signal is the time to the next scan. Returns the channels signalled.
   */
  scanMonitorPage(): number {
    const page = Number(this.server.connectionInfo?.monitorPage2 ?? 0n);
    if (page === 0 || this.monitored.size === 0) return 0;
    if (!this.memory.contains(page, PAGE_SIZE)) {
      if (!this.badMonitorPageLogged) this.logger.warn('vmbus: monitor page 2 is not guest RAM; MNF signals are ignored', { gpa: page });
      this.badMonitorPageLogged = true;
      return 0;
    }
    const groups = this.memory.u32Array(page + MONITOR_TRIGGER_GROUP_OFFSET, MONITOR_TRIGGER_GROUPS * 2);
    let signalled = 0;
    for (let g = 0; g < MONITOR_TRIGGER_GROUPS; g++) {
      let bits = Atomics.exchange(groups, g * 2, 0);
      while (bits !== 0) {
        const bit = 31 - Math.clz32(bits);
        bits &= ~(1 << bit);
        const relid = this.monitored.get(g * 32 + bit);
        if (relid === undefined) continue; // a bit no offer owns: ignore it
        this.onChannelSignal(relid);
        signalled++;
      }
    }
    return signalled;
  }

  /** Scans the monitor page every `periodMs` (default 1 ms); returns a function that stops it. */
  startMonitorScan(periodMs = 1): () => void {
    const timer = setInterval(() => this.scanMonitorPage(), periodMs);
    timer.unref?.();
    return () => clearInterval(timer);
  }

  /** The shared event connection: relid bits in the send half of the interrupt page. */
  private onSharedEvent(): number {
    const page = this.server.connectionInfo?.interruptPage ?? 0;
    if (page === 0) return HV_STATUS_SUCCESS;
    const words = this.memory.u32Array(page + SEND_INTERRUPT_HALF, MAX_CHANNEL_RELIDS / 32);
    for (let w = 0; w < words.length; w++) {
      let bits = Atomics.exchange(words, w, 0);
      while (bits !== 0) {
        const bit = 31 - Math.clz32(bits);
        bits &= ~(1 << bit);
        const relid = w * 32 + bit;
        if (relid !== 0) this.onChannelSignal(relid);
      }
    }
    return HV_STATUS_SUCCESS;
  }

  // ---- host -> guest

  private signalGuest(relid: number): void {
    const target = this.server.signalTarget(relid);
    if (!target) return;
    if (target.interruptPage !== 0) {
      // Before Win8 the guest finds the relid in the receive half of its interrupt page.
      const words = this.memory.u32Array(target.interruptPage, MAX_CHANNEL_RELIDS / 32);
      Atomics.or(words, relid >>> 5, 1 << (relid & 31));
    }
    this.synic.signalEvent(target.vp, target.sint, target.flag);
  }

  private gpadlOf(relid: number, handle: number): ServerGpadl {
    const g = this.server.gpadl(handle);
    if (!g || g.relid !== relid) throw new HostUsageError(`GPADL 0x${handle.toString(16)} is not a GPADL of relid ${relid}`);
    return g;
  }

  private gpadlBuffer(relid: number, handle: number): GuestBuffer {
    const g = this.gpadlOf(relid, handle);
    if (g.ranges.length !== 1) throw new HostUsageError(`GPADL 0x${handle.toString(16)} has ${g.ranges.length} ranges; views need one`);
    const r = g.ranges[0];
    return this.memory.pageList(r.pfns, r.byteOffset, r.byteCount);
  }

  // ---- channel messages to the guest

  /** Posts a channel message, or holds it (in order behind any held before it) while the SynIC is busy. */
  private postOrHold(message: HeldMessage): void {
    if (this.backlog.length === 0 && this.tryPost(message)) return;
    const limit = this.options.maxBacklog ?? DEFAULT_MAX_BACKLOG;
    if (this.backlog.length >= limit) {
      this.stats.messagesLost++;
      this.logger.error(
        `vmbus: ${channelMessageName(message.msgtype)} to vp ${message.vp} lost: ${limit} messages already wait for the guest`,
        { reason: 'message-backlog-full' },
      );
      return;
    }
    this.backlog.push(message);
    this.stats.messagesHeld++;
    this.armBacklogRetry();
  }

  private tryPost(m: HeldMessage): boolean {
    return this.synic.postMessage(m.vp, m.sint, { type: VMBUS_MESSAGE_TYPE, payload: m.bytes }) !== 'busy';
  }

  /** Posts held messages in order until the SynIC is busy again. */
  private flushBacklog(): void {
    // A post can deliver at once and so report space again from inside itself: one flush at a time.
    if (this.flushing) return;
    this.flushing = true;
    try {
      while (this.backlog.length > 0 && this.tryPost(this.backlog[0])) this.backlog.shift();
    } finally {
      this.flushing = false;
    }
    if (this.backlog.length > 0) this.armBacklogRetry();
  }

  /** A port without onPostReady cannot say when to retry: poll it. */
  private armBacklogRetry(): void {
    if (this.synic.onPostReady || this.backlogTimer) return;
    this.backlogTimer = setTimeout(() => {
      this.backlogTimer = null;
      this.flushBacklog();
    }, BACKLOG_RETRY_MS);
    this.backlogTimer.unref?.();
  }

  /** Channel messages waiting for the guest to drain its message slot. */
  get heldMessages(): number {
    return this.backlog.length;
  }

  // ---- carrying out actions

  /** Runs actions in order; actions produced meanwhile (completions, nested host calls) queue behind. */
  private run(actions: readonly ServerAction[]): void {
    this.queue.push(...actions);
    if (this.draining) return;
    this.draining = true;
    try {
      while (this.queue.length > 0) this.perform(this.queue.shift()!);
    } finally {
      this.draining = false;
    }
  }

  private perform(action: ServerAction): void {
    this.options.onAction?.(action);
    switch (action.kind) {
      case 'send':
        this.stats.messagesOut++;
        return this.postOrHold(action);
      case 'open':
        return this.open(action.request);
      case 'close': {
        const channel = this.channels.get(action.relid);
        if (!channel || !channel.isOpen) return;
        channel.detach();
        if (!channel.failed) this.callHandler(channel, () => channel.handler.onClose?.(channel, action.reason));
        return;
      }
      case 'retarget': {
        const channel = this.channels.get(action.relid);
        if (!channel) return;
        channel.retarget(action.targetVp);
        this.callHandler(channel, () => channel.handler.onRetarget?.(channel, action.targetVp));
        return;
      }
      case 'gpadl-created':
        return;
      case 'gpadl-torndown': {
        const channel = this.channels.get(action.relid);
        if (channel) this.callHandler(channel, () => channel.handler.onGpadlTorndown?.(channel, action.gpadl));
        return;
      }
      case 'channel-freed':
        this.unregister.get(action.relid)?.();
        this.unregister.delete(action.relid);
        this.channels.delete(action.relid);
        return;
      case 'connected':
      case 'disconnected':
      case 'tl-connect-request':
        this.logger.info(`vmbus: ${action.kind}`, { ...action });
        return;
      case 'log':
        this.logger[action.level](`vmbus: ${action.message}`, action.fields);
        return;
    }
  }

  /** OPENCHANNEL passed the server's checks: build the rings over the ring GPADL and ask the device. */
  private open(request: OpenRequest): void {
    const channel = this.channels.get(request.relid);
    const generation = this.server.openGeneration(request.relid);
    let accepted = false;
    if (channel) {
      try {
        const layout = ringPairFromPages(this.memory, request.pfns, request.downstreamPageOffset);
        const onPacket = this.options.onPacket;
        const endpoint = openRingEndpoint(layout, 'host', () => channel.signalGuest(), {
          logger: this.logger,
          name: `relid ${request.relid}`,
          inboundTap: onPacket && { read: (p) => onPacket(request.relid, 'guest-to-host', p) },
          outboundTap: onPacket && { written: (p) => onPacket(request.relid, 'host-to-guest', p) },
        });
        channel.attach(endpoint, request.userData, request.targetVp);
        const answer = channel.handler.onOpen(channel);
        if (isPromise(answer)) {
          // The device answers later; a guest close meanwhile bumps the generation and wins.
          answer.then(
            (ok) => this.finishOpen(channel, request.relid, generation, ok !== false),
            (error: unknown) => {
              this.logger.warn(`vmbus: relid ${request.relid} open refused`, { reason: 'open-failed', error: String(error) });
              this.finishOpen(channel, request.relid, generation, false);
            },
          );
          return;
        }
        accepted = answer !== false;
      } catch (error) {
        this.logger.warn(`vmbus: relid ${request.relid} open refused`, { reason: 'open-failed', error: String(error) });
        accepted = false;
      }
    }
    this.finishOpen(channel, request.relid, generation, accepted);
  }

  /** Sends OPENCHANNEL_RESULT for the device's answer, unless the open was abandoned meanwhile. */
  private finishOpen(channel: Channel | undefined, relid: number, generation: number, accepted: boolean): void {
    const current = this.server.openGeneration(relid) === generation;
    if (!accepted && current) channel?.detach();
    this.run(this.server.completeOpen(relid, accepted, generation));
    // A device that wrote during onOpen (an IC's NEGOTIATE) could not signal yet: the channel
    // only becomes signalable when the open completes. Signal now if anything is waiting.
    if (accepted && current && channel?.isOpen) {
      const ring = channel.rings.outbound.ring.snapshot();
      if (ring.writeIndex !== ring.readIndex) this.signalGuest(relid);
    }
  }

  private callHandler(channel: Channel, fn: () => void): void {
    try {
      fn();
    } catch (error) {
      this.logger.error(`vmbus: relid ${channel.relid} handler threw`, { error: String(error) });
    }
  }
}

function isPromise(v: unknown): v is Promise<boolean | void> {
  return typeof (v as { then?: unknown } | null)?.then === 'function';
}
