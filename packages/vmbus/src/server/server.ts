/**
 * The VMBus host server core: a pure, synchronous state machine (OpenVMM's shape). Guest
 * channel messages and host calls go in; a list of actions comes out (messages to post,
 * device notifications, log records). No timers, no I/O, no logger: the wiring layer
 * (vmbus-host.ts) does all of that.
 *
 * States:
 * - connection: disconnected | connected (version, message VP, msg_conn_id, interrupt and
 *   monitor pages, 6.0 feature flags, whether REQUESTOFFERS came);
 * - channel (one per offer, by relid): closed | opening | open | rescinded (waiting for
 *   RELID_RELEASED; the relid is reused only after it);
 * - GPADL: in progress (header seen, bodies pending; bounded) | ready | tearing down (ring of
 *   an open channel: TORNDOWN is sent when the channel closes).
 *
 * Every guest value is validated before use. A malformed message is dropped with a logged
 * reason; a bad request that has an answer gets it with a failure status; nothing a guest
 * sends can throw out of `handle()` or affect another channel.
 */
import { HostUsageError, parseGuid } from '@hvemu/common';
import { PAGE_SIZE } from '@hvemu/memory';
import {
  CHANNELMSG_ALLOFFERS_DELIVERED,
  CHANNELMSG_CLOSECHANNEL,
  CHANNELMSG_GPADL_BODY,
  CHANNELMSG_GPADL_CREATED,
  CHANNELMSG_GPADL_HEADER,
  CHANNELMSG_GPADL_TEARDOWN,
  CHANNELMSG_GPADL_TORNDOWN,
  CHANNELMSG_INITIATE_CONTACT,
  CHANNELMSG_MODIFYCHANNEL,
  CHANNELMSG_MODIFYCHANNEL_RESPONSE,
  CHANNELMSG_OFFERCHANNEL,
  CHANNELMSG_OPENCHANNEL,
  CHANNELMSG_OPENCHANNEL_RESULT,
  CHANNELMSG_RELID_RELEASED,
  CHANNELMSG_REQUESTOFFERS,
  CHANNELMSG_RESCIND_CHANNELOFFER,
  CHANNELMSG_TL_CONNECT_REQUEST,
  CHANNELMSG_UNLOAD,
  CHANNELMSG_UNLOAD_RESPONSE,
  CHANNELMSG_VERSION_RESPONSE,
  MAX_CHANNEL_RELIDS,
  MAX_USER_DEFINED_BYTES,
  MAX_PIPE_USER_DEFINED_BYTES,
  STATUS_UNSUCCESSFUL,
  VERSION_WIN10,
  VERSION_WIN10_V4_1,
  VERSION_WIN10_V5,
  VERSION_WIN10_V5_3,
  VERSION_WIN10_V6_0,
  VERSION_WIN7,
  VERSION_WIN8,
  VERSION_WIN8_1,
  VMBUS_CHANNEL_NAMED_PIPE_MODE,
  VMBUS_CONNECTION_SUCCESSFUL,
  VMBUS_MESSAGE_CONNECTION_ID,
  VMBUS_MESSAGE_SINT,
  VMBUS_MONITOR_ID_COUNT,
  VMBUS_VERSIONS,
  versionString,
} from '../protocol/constants.js';
import { ChannelProtocolError } from '../protocol/errors.js';
import {
  channelMessageName,
  encodeChannelMessage,
  encodePipeUserDefined,
  encodeVersionResponse,
  parseChannelMessage,
  type ChannelMessageOf,
  type ChannelMessageType,
} from '../protocol/messages.js';
import type { OpenRequest, ServerAction } from './actions.js';
import { decodeGpadlRanges, gpadlPageCount, type GpadlAssembly, type GpadlRange, type GuestRamMap } from './gpadl.js';

/** What a device offers. GUIDs in canonical text form. */
export interface OfferSpec {
  /** if_type: the device class. */
  readonly interfaceType: string;
  /** if_instance. */
  readonly interfaceInstance: string;
  /** chn_flags (VMBUS_CHANNEL_*). NAMED_PIPE_MODE is added when `pipeMode` is given. */
  readonly flags?: number;
  readonly mmioMegabytes?: number;
  /** user_def (at most 120 bytes; 116 with a pipe mode). */
  readonly userDefined?: Uint8Array;
  /** VMBUS_PIPE_TYPE_*: use the pipe form of user_def. */
  readonly pipeMode?: number;
  /** Monitored notification: the guest signals through the monitor page instead of a hypercall. */
  readonly monitorAllocated?: boolean;
  /** 0..127; required with monitorAllocated. */
  readonly monitorId?: number;
  /** is_dedicated_interrupt (default true: the guest need not set bits in the shared interrupt page). */
  readonly dedicatedInterrupt?: boolean;
}

export interface ServerLimits {
  /** Complete GPADLs per connection. */
  maxGpadls: number;
  /** GPADLs between GPADL_HEADER and their last GPADL_BODY. */
  maxGpadlsInProgress: number;
  /** Pages in one GPADL (range_buflen, a u16, caps it at 8190 anyway). */
  maxGpadlPages: number;
  /** Pages over all GPADLs of the connection (bounds the PFN lists the server holds). */
  maxTotalGpadlPages: number;
  /** gpa_range records in one GPADL. */
  maxGpadlRanges: number;
  /** Subchannels per primary. */
  maxSubchannels: number;
}

export interface ServerOptions {
  /** VPs of the partition: target VPs must be below this. */
  vpCount: number;
  /** Guest RAM: every GPADL PFN and the interrupt page are checked against it. */
  ram: GuestRamMap;
  /** Newest version offered (default 6.0). */
  maxVersion?: number;
  /** msg_conn_id answered for >= 5.0 (default 1). */
  messageConnectionId?: number;
  /** 6.0 feature flags the host supports (default none); the answer is the guest's request ANDed with these. */
  featureFlags?: number;
  limits?: Partial<ServerLimits>;
}

export const DEFAULT_SERVER_LIMITS: Readonly<ServerLimits> = Object.freeze({
  maxGpadls: 512,
  maxGpadlsInProgress: 64,
  maxGpadlPages: 8190,
  maxTotalGpadlPages: 1 << 20,
  maxGpadlRanges: 256,
  maxSubchannels: 64,
});

export interface ConnectionInfo {
  readonly version: number;
  /** VP channel messages go to. */
  readonly messageVp: number;
  readonly msgConnId: number;
  /** Pre-5.0 interrupt page GPA (0 if none). */
  readonly interruptPage: number;
  readonly monitorPage1: bigint;
  readonly monitorPage2: bigint;
  readonly featureFlags: number;
  offersRequested: boolean;
}

export type ChannelState = 'closed' | 'opening' | 'open' | 'rescinded';

export interface ServerChannel {
  readonly relid: number;
  readonly connectionId: number;
  readonly spec: OfferSpec;
  readonly subChannelIndex: number;
  /** relid of the primary (itself for a primary). */
  readonly primaryRelid: number;
  /** Offer order of the primary, for REQUESTOFFERS (primaries first, subchannels after). */
  readonly order: number;
  state: ChannelState;
  /** The guest of this connection has seen the offer. */
  offered: boolean;
  targetVp: number;
  openid: number;
  ringGpadl: number;
  /** Bumped on every open attempt, so a late completeOpen for an abandoned attempt is ignored. */
  openGeneration: number;
}

export interface ServerGpadl {
  readonly handle: number;
  readonly relid: number;
  readonly ranges: readonly GpadlRange[];
  readonly pageCount: number;
  /** GPADL_TEARDOWN came while the GPADL is the ring of an open channel: TORNDOWN waits for the close. */
  tearingDown: boolean;
}

/** An input message: the posting VP and the hv_message payload. */
export interface GuestMessage {
  readonly vp: number;
  readonly bytes: Uint8Array;
}

/** Collects actions; small helpers keep the handlers readable. */
class Out {
  readonly list: ServerAction[] = [];
  push(action: ServerAction): void {
    this.list.push(action);
  }
  warn(reason: string, message: string, fields: Record<string, unknown> = {}): void {
    this.list.push({ kind: 'log', level: 'warn', message, fields: { reason, ...fields } });
  }
  info(message: string, fields?: Record<string, unknown>): void {
    this.list.push({ kind: 'log', level: 'info', message, fields });
  }
  debug(message: string, fields?: Record<string, unknown>): void {
    this.list.push({ kind: 'log', level: 'debug', message, fields });
  }
}

/** connection_id of a channel: relid | SINT << 12, as OpenVMM does; unique and clear of ids 1-4. */
export function channelConnectionId(relid: number): number {
  return relid | (VMBUS_MESSAGE_SINT << 12);
}

export class VmbusServer {
  private readonly vpCount: number;
  private readonly ram: GuestRamMap;
  private readonly maxVersion: number;
  private readonly messageConnectionId: number;
  private readonly hostFeatures: number;
  readonly limits: Readonly<ServerLimits>;

  private connection: ConnectionInfo | null = null;
  private readonly channels = new Map<number, ServerChannel>();
  private readonly gpadls = new Map<number, ServerGpadl>();
  private readonly assemblies = new Map<number, GpadlAssembly>();
  private totalGpadlPages = 0;
  private nextOrder = 0;

  constructor(options: ServerOptions) {
    if (!Number.isInteger(options.vpCount) || options.vpCount < 1) throw new HostUsageError('vpCount must be >= 1');
    this.vpCount = options.vpCount;
    this.ram = options.ram;
    this.maxVersion = options.maxVersion ?? VERSION_WIN10_V6_0;
    if (!VMBUS_VERSIONS.includes(this.maxVersion)) throw new HostUsageError(`unknown VMBus version 0x${this.maxVersion.toString(16)}`);
    this.messageConnectionId = options.messageConnectionId ?? VMBUS_MESSAGE_CONNECTION_ID;
    this.hostFeatures = options.featureFlags ?? 0;
    this.limits = Object.freeze({ ...DEFAULT_SERVER_LIMITS, ...options.limits });
  }

  // ------------------------------------------------------------------ queries

  /** The connection, or null when disconnected. */
  get connectionInfo(): Readonly<ConnectionInfo> | null {
    return this.connection;
  }

  channel(relid: number): Readonly<ServerChannel> | undefined {
    return this.channels.get(relid);
  }

  /** Every channel, by relid. */
  allChannels(): readonly Readonly<ServerChannel>[] {
    return [...this.channels.values()];
  }

  gpadl(handle: number): Readonly<ServerGpadl> | undefined {
    return this.gpadls.get(handle);
  }

  /** The ready GPADLs of a channel. */
  gpadlsOf(relid: number): readonly Readonly<ServerGpadl>[] {
    return [...this.gpadls.values()].filter((g) => g.relid === relid);
  }

  /** GPADLs being assembled (bounded by limits.maxGpadlsInProgress). */
  get gpadlsInProgress(): number {
    return this.assemblies.size;
  }

  /**
   * Where a host-to-guest signal for `relid` goes: the channel's target VP, SINT 2, flag relid;
   * before Win8 the guest looks at the shared interrupt page instead (flag 0 then, and
   * `interruptPage` says where to set the relid bit). Null when the channel is not open.
   */
  signalTarget(relid: number): { vp: number; sint: number; flag: number; interruptPage: number } | null {
    const ch = this.channels.get(relid);
    const conn = this.connection;
    if (!ch || ch.state !== 'open' || !conn) return null;
    if (conn.version < VERSION_WIN8) return { vp: 0, sint: VMBUS_MESSAGE_SINT, flag: 0, interruptPage: conn.interruptPage };
    return { vp: ch.targetVp, sint: VMBUS_MESSAGE_SINT, flag: relid, interruptPage: 0 };
  }

  // ------------------------------------------------------------------ host calls

  /** Adds a device's offer; it reaches the guest now if the guest already asked for offers. */
  addOffer(spec: OfferSpec): { relid: number; actions: ServerAction[] } {
    validateOfferSpec(spec);
    const out = new Out();
    const relid = this.allocateRelid();
    const ch = this.createChannel(relid, spec, 0, relid, this.nextOrder++);
    this.offerIfRequested(ch, out);
    return { relid, actions: out.list };
  }

  /**
   * A device asks for `count` more subchannels of its primary (multi-queue). They carry the
   * primary's class and instance with sub_channel_index continuing from the last one.
   */
  offerSubchannels(primaryRelid: number, count: number): { relids: number[]; actions: ServerAction[] } {
    const primary = this.channels.get(primaryRelid);
    if (!primary || primary.subChannelIndex !== 0) throw new HostUsageError(`relid ${primaryRelid} is not a primary channel`);
    if (!Number.isInteger(count) || count < 0) throw new HostUsageError(`bad subchannel count ${count}`);
    const out = new Out();
    if (primary.state === 'rescinded') return { relids: [], actions: out.list };
    if (this.connection && this.connection.version < VERSION_WIN8) {
      // sub_channel_index is reserved before Win8: such a guest would see a duplicate offer.
      out.warn('subchannels-unsupported', `relid ${primaryRelid}: no subchannels below VMBus 2.4`);
      return { relids: [], actions: out.list };
    }
    const subs = [...this.channels.values()].filter((c) => c.primaryRelid === primaryRelid && c.subChannelIndex > 0);
    const have = subs.length;
    if (have + count > this.limits.maxSubchannels) throw new HostUsageError(`more than ${this.limits.maxSubchannels} subchannels`);
    // Indexes continue from the live ones: after the device rescinded its subchannels (a new
    // session of a multi-queue device), new ones start at 1 again, as guests index queues by it.
    let index = subs.filter((c) => c.state !== 'rescinded').reduce((m, c) => Math.max(m, c.subChannelIndex), 0);
    const relids: number[] = [];
    for (let i = 0; i < count; i++) {
      const relid = this.allocateRelid();
      const ch = this.createChannel(relid, primary.spec, ++index, primaryRelid, primary.order);
      relids.push(relid);
      this.offerIfRequested(ch, out);
    }
    return { relids, actions: out.list };
  }

  /**
   * Removes a device (and, for a primary, its subchannels). An open channel is closed first. If
   * the guest saw the offer it gets RESCIND_CHANNELOFFER and the relid stays taken until it
   * answers RELID_RELEASED; otherwise the channel is gone at once.
   */
  rescindOffer(relid: number): ServerAction[] {
    const ch = this.channels.get(relid);
    if (!ch) throw new HostUsageError(`no channel with relid ${relid}`);
    const out = new Out();
    const targets = ch.subChannelIndex === 0 ? [...this.channels.values()].filter((c) => c.primaryRelid === relid) : [ch];
    // Subchannels first, then the primary, as the guest closes them.
    targets.sort((a, b) => b.subChannelIndex - a.subChannelIndex);
    for (const c of targets) this.rescindOne(c, out);
    return out.list;
  }

  /** The device's answer to an 'open' action. Sends OPENCHANNEL_RESULT. */
  completeOpen(relid: number, accepted: boolean, generation?: number): ServerAction[] {
    const out = new Out();
    const ch = this.channels.get(relid);
    if (!ch || ch.state !== 'opening' || (generation !== undefined && generation !== ch.openGeneration)) {
      out.debug(`relid ${relid}: open completion ignored (the open was abandoned)`);
      return out.list;
    }
    ch.state = accepted ? 'open' : 'closed';
    if (!accepted) out.warn('device-refused-open', `relid ${relid}: the device refused the open`);
    this.sendOpenResult(ch, ch.openid, accepted ? 0 : STATUS_UNSUCCESSFUL, out);
    if (!accepted) this.flushDeferredTeardowns(ch, out);
    return out.list;
  }

  /** The current open generation of a channel (pass it back to completeOpen). */
  openGeneration(relid: number): number {
    return this.channels.get(relid)?.openGeneration ?? -1;
  }

  // ------------------------------------------------------------------ guest messages

  /** Handles one channel message from the guest. Never throws. */
  handle(message: GuestMessage): ServerAction[] {
    const out = new Out();
    try {
      this.dispatch(message, out);
    } catch (error) {
      // A bug here must not take down the VMM or leak to the guest; it is logged loudly.
      out.push({
        kind: 'log',
        level: 'error',
        message: 'vmbus server: internal error handling a guest message',
        fields: { error: String(error) },
      });
    }
    return out.list;
  }

  private dispatch({ vp, bytes }: GuestMessage, out: Out): void {
    const msg = parseChannelMessage(bytes);
    if (msg instanceof ChannelProtocolError) {
      out.warn(msg.fault, msg.message, { vp, msgtype: msg.msgtype, size: bytes.length });
      return;
    }
    const name = channelMessageName(msg.msgtype);
    out.debug(`guest -> host ${name}`, { vp });
    if (msg.msgtype === CHANNELMSG_INITIATE_CONTACT) return this.onInitiateContact(vp, msg, out);
    if (msg.msgtype === CHANNELMSG_UNLOAD) return this.onUnload(vp, out);
    const conn = this.connection;
    if (!conn) return out.warn('not-connected', `${name} before INITIATE_CONTACT: dropped`, { vp });
    switch (msg.msgtype) {
      case CHANNELMSG_REQUESTOFFERS:
        return this.onRequestOffers(conn, out);
      case CHANNELMSG_GPADL_HEADER:
        return this.onGpadlHeader(msg, out);
      case CHANNELMSG_GPADL_BODY:
        return this.onGpadlBody(msg, out);
      case CHANNELMSG_GPADL_TEARDOWN:
        return this.onGpadlTeardown(msg, out);
      case CHANNELMSG_OPENCHANNEL:
        return this.onOpenChannel(conn, msg, out);
      case CHANNELMSG_CLOSECHANNEL:
        return this.onCloseChannel(msg.child_relid, out);
      case CHANNELMSG_MODIFYCHANNEL:
        return this.onModifyChannel(conn, msg, out);
      case CHANNELMSG_RELID_RELEASED:
        return this.onRelidReleased(msg.child_relid, out);
      case CHANNELMSG_TL_CONNECT_REQUEST:
        if (conn.version < VERSION_WIN10) return out.warn('version', `TL_CONNECT_REQUEST needs VMBus 4.0`);
        out.push({ kind: 'tl-connect-request', guestEndpointId: msg.guest_endpoint_id, hostServiceId: msg.host_service_id });
        return;
      default:
        // The host's own message types coming from the guest.
        return out.warn('wrong-direction', `${name} is a host-to-guest message: dropped`, { vp });
    }
  }

  // ---- connection

  private onInitiateContact(vp: number, msg: ChannelMessageOf<typeof CHANNELMSG_INITIATE_CONTACT>, out: Out): void {
    if (this.connection) {
      // A guest starting over (kexec, kdump, resume) without UNLOAD: forget the old connection first.
      out.info('INITIATE_CONTACT while connected: resetting the connection');
      this.disconnect('reconnect', out);
    }
    const version = msg.vmbus_version_requested;
    const modern = version >= VERSION_WIN10_V5;
    // Messages go to target_vcpu from Win8.1 on; to VP 0 before (OpenVMM, Hyper-V).
    const targetOk = msg.target_vcpu < this.vpCount;
    const refuseTo = version >= VERSION_WIN8_1 && targetOk ? msg.target_vcpu : targetOk ? 0 : vp;
    const refuse = (reason: string, detail: string): void => {
      out.warn(reason, `INITIATE_CONTACT ${versionString(version)} refused: ${detail}`, { vp });
      this.send(
        out,
        refuseTo,
        CHANNELMSG_VERSION_RESPONSE,
        encodeVersionResponse({ version_supported: 0, connection_state: VMBUS_CONNECTION_SUCCESSFUL }, false),
      );
    };
    if (!VMBUS_VERSIONS.includes(version) || version > this.maxVersion) return refuse('unsupported-version', 'version not supported');
    if (!targetOk) return refuse('bad-target-vp', `target_vcpu ${msg.target_vcpu} of ${this.vpCount} VPs`);
    let interruptPage = 0;
    if (modern) {
      if (msg.msg_sint !== VMBUS_MESSAGE_SINT) return refuse('bad-sint', `msg_sint ${msg.msg_sint} (only SINT ${VMBUS_MESSAGE_SINT})`);
      if (msg.msg_vtl !== 0) return refuse('bad-vtl', `msg_vtl ${msg.msg_vtl} (only VTL 0)`);
    } else {
      const gpa = msg.interrupt_page;
      if (gpa !== 0n && (gpa % BigInt(PAGE_SIZE) !== 0n || gpa >= 2n ** 52n || !this.ram.contains(Number(gpa), PAGE_SIZE))) {
        return refuse('bad-interrupt-page', `interrupt page 0x${gpa.toString(16)} is not a page of guest RAM`);
      }
      // Before Win8 the host signals only through this page.
      if (gpa === 0n && version < VERSION_WIN8) return refuse('bad-interrupt-page', 'no interrupt page');
      interruptPage = Number(gpa);
    }
    const messageVp = version >= VERSION_WIN8_1 ? msg.target_vcpu : 0;
    const featureFlags = version >= VERSION_WIN10_V6_0 ? msg.feature_flags & this.hostFeatures : 0;
    this.connection = {
      version,
      messageVp,
      msgConnId: modern ? this.messageConnectionId : VMBUS_MESSAGE_CONNECTION_ID,
      interruptPage,
      monitorPage1: msg.monitor_page1,
      monitorPage2: msg.monitor_page2,
      featureFlags,
      offersRequested: false,
    };
    out.info(`VMBus ${versionString(version)} accepted`, { messageVp, monitorPage1: msg.monitor_page1, monitorPage2: msg.monitor_page2 });
    out.push({ kind: 'connected', version, targetVp: messageVp, featureFlags });
    this.send(
      out,
      messageVp,
      CHANNELMSG_VERSION_RESPONSE,
      encodeVersionResponse(
        {
          version_supported: 1,
          connection_state: VMBUS_CONNECTION_SUCCESSFUL,
          msg_conn_id: modern ? this.messageConnectionId : 0,
          supported_features: featureFlags,
        },
        version >= VERSION_WIN10_V6_0,
      ),
    );
  }

  private onUnload(vp: number, out: Out): void {
    const conn = this.connection;
    const to = conn ? conn.messageVp : vp < this.vpCount ? vp : 0;
    const version = conn?.version ?? VERSION_WIN10_V5_3;
    if (conn) this.disconnect('unload', out);
    else out.warn('not-connected', 'UNLOAD while disconnected: answered anyway');
    // UNLOAD_RESPONSE exists from Win7 on; a WS2008 guest just stops.
    if (version >= VERSION_WIN7) this.send(out, to, CHANNELMSG_UNLOAD_RESPONSE, encodeChannelMessage(CHANNELMSG_UNLOAD_RESPONSE, {}));
  }

  /** Ends the connection: closes every channel, forgets GPADLs and released-pending relids. */
  private disconnect(reason: 'unload' | 'reconnect', out: Out): void {
    for (const ch of [...this.channels.values()]) {
      if (ch.state === 'open' || ch.state === 'opening') out.push({ kind: 'close', relid: ch.relid, reason: 'disconnect' });
      if (ch.state === 'rescinded') {
        this.freeChannel(ch, out);
        continue;
      }
      ch.state = 'closed';
      ch.offered = false;
      ch.openGeneration++;
    }
    for (const g of this.gpadls.values()) out.push({ kind: 'gpadl-torndown', relid: g.relid, gpadl: g.handle });
    this.gpadls.clear();
    this.assemblies.clear();
    this.totalGpadlPages = 0;
    this.connection = null;
    out.push({ kind: 'disconnected', reason });
  }

  // ---- offers

  private onRequestOffers(conn: ConnectionInfo, out: Out): void {
    if (conn.offersRequested) return out.warn('out-of-order', 'second REQUESTOFFERS on this connection: dropped');
    conn.offersRequested = true;
    const live = [...this.channels.values()].filter((c) => c.state !== 'rescinded');
    // Primaries before their subchannels (Linux makes an offer whose primary it has not seen a new primary).
    live.sort((a, b) => a.order - b.order || a.subChannelIndex - b.subChannelIndex);
    for (const ch of live) this.sendOffer(ch, out);
    this.send(out, conn.messageVp, CHANNELMSG_ALLOFFERS_DELIVERED, encodeChannelMessage(CHANNELMSG_ALLOFFERS_DELIVERED, {}));
  }

  private offerIfRequested(ch: ServerChannel, out: Out): void {
    if (this.connection?.offersRequested) this.sendOffer(ch, out);
  }

  private sendOffer(ch: ServerChannel, out: Out): void {
    const conn = this.connection!;
    ch.offered = true;
    this.send(out, conn.messageVp, CHANNELMSG_OFFERCHANNEL, encodeOffer(ch));
  }

  private rescindOne(ch: ServerChannel, out: Out): void {
    if (ch.state === 'rescinded') return;
    if (ch.state === 'open' || ch.state === 'opening') {
      out.push({ kind: 'close', relid: ch.relid, reason: 'rescind' });
      ch.openGeneration++;
    }
    if (ch.offered && this.connection) {
      ch.state = 'rescinded';
      // The ring's TORNDOWN would never be matched now: Linux does not tear down GPADLs of a rescinded channel.
      this.send(
        out,
        this.connection.messageVp,
        CHANNELMSG_RESCIND_CHANNELOFFER,
        encodeChannelMessage(CHANNELMSG_RESCIND_CHANNELOFFER, { child_relid: ch.relid }),
      );
    } else {
      this.freeChannel(ch, out);
    }
  }

  private onRelidReleased(relid: number, out: Out): void {
    const ch = this.channels.get(relid);
    if (!ch) return out.warn('bogus-relid', `RELID_RELEASED for unknown relid ${relid}: dropped`);
    if (ch.state !== 'rescinded') return out.warn('out-of-order', `RELID_RELEASED for relid ${relid}, which was not rescinded: dropped`);
    this.freeChannel(ch, out);
  }

  /** Removes a channel and its GPADLs; the relid may be reused from now on. */
  private freeChannel(ch: ServerChannel, out: Out): void {
    for (const g of [...this.gpadls.values()]) {
      if (g.relid === ch.relid) this.removeGpadl(g, out);
    }
    for (const [handle, a] of this.assemblies) if (a.relid === ch.relid) this.assemblies.delete(handle);
    this.channels.delete(ch.relid);
    out.push({ kind: 'channel-freed', relid: ch.relid, connectionId: ch.connectionId });
  }

  // ---- GPADLs

  private onGpadlHeader(msg: ChannelMessageOf<typeof CHANNELMSG_GPADL_HEADER>, out: Out): void {
    const { child_relid: relid, gpadl: handle, range_buflen: buflen, rangecount } = msg;
    const ch = this.channels.get(relid);
    if (!ch) return out.warn('bogus-relid', `GPADL_HEADER for unknown relid ${relid}: dropped`, { gpadl: handle });
    const fail = (reason: string, detail: string): void => {
      out.warn(reason, `GPADL 0x${handle.toString(16)} on relid ${relid} refused: ${detail}`);
      this.sendGpadlCreated(relid, handle, STATUS_UNSUCCESSFUL, out);
    };
    if (ch.state === 'rescinded') return fail('rescinded', 'the channel was rescinded');
    if (this.gpadls.has(handle) || this.assemblies.has(handle)) return fail('duplicate-gpadl', 'the handle is in use');
    if (this.assemblies.size >= this.limits.maxGpadlsInProgress) return fail('limit', `${this.assemblies.size} GPADLs already in progress`);
    if (this.gpadls.size >= this.limits.maxGpadls) return fail('limit', `${this.gpadls.size} GPADLs already exist`);
    if (rangecount === 0 || buflen % 8 !== 0 || buflen < 16 * rangecount) {
      return fail('malformed', `range_buflen ${buflen} cannot hold ${rangecount} non-empty ranges`);
    }
    if (msg.rangeData.length > buflen) return fail('malformed', `header carries ${msg.rangeData.length} bytes, range_buflen is ${buflen}`);
    const assembly: GpadlAssembly = { handle, relid, rangecount, buffer: new Uint8Array(buflen), received: 0 };
    assembly.buffer.set(msg.rangeData);
    assembly.received = msg.rangeData.length;
    this.assemblies.set(handle, assembly);
    this.maybeCompleteGpadl(assembly, out);
  }

  private onGpadlBody(msg: ChannelMessageOf<typeof CHANNELMSG_GPADL_BODY>, out: Out): void {
    const assembly = this.assemblies.get(msg.gpadl);
    if (!assembly) return out.warn('bogus-gpadl', `GPADL_BODY for GPADL 0x${msg.gpadl.toString(16)}, which is not in progress: dropped`);
    const left = assembly.buffer.length - assembly.received;
    if (msg.rangeData.length > left) {
      this.assemblies.delete(assembly.handle);
      out.warn('malformed', `GPADL 0x${msg.gpadl.toString(16)}: body carries ${msg.rangeData.length} bytes, ${left} expected`);
      return this.sendGpadlCreated(assembly.relid, assembly.handle, STATUS_UNSUCCESSFUL, out);
    }
    assembly.buffer.set(msg.rangeData, assembly.received);
    assembly.received += msg.rangeData.length;
    this.maybeCompleteGpadl(assembly, out);
  }

  private maybeCompleteGpadl(assembly: GpadlAssembly, out: Out): void {
    if (assembly.received < assembly.buffer.length) return;
    this.assemblies.delete(assembly.handle);
    const { handle, relid } = assembly;
    const ranges = decodeGpadlRanges(assembly.buffer, assembly.rangecount, this.ram, {
      maxRanges: this.limits.maxGpadlRanges,
      maxPages: this.limits.maxGpadlPages,
    });
    let failure = typeof ranges === 'string' ? ranges : null;
    const pageCount = typeof ranges === 'string' ? 0 : gpadlPageCount(ranges);
    if (!failure && this.totalGpadlPages + pageCount > this.limits.maxTotalGpadlPages) {
      failure = `the connection's GPADLs would exceed ${this.limits.maxTotalGpadlPages} pages`;
    }
    if (failure !== null || typeof ranges === 'string') {
      out.warn('bad-gpadl', `GPADL 0x${handle.toString(16)} on relid ${relid} refused: ${failure}`);
      return this.sendGpadlCreated(relid, handle, STATUS_UNSUCCESSFUL, out);
    }
    this.gpadls.set(handle, { handle, relid, ranges, pageCount, tearingDown: false });
    this.totalGpadlPages += pageCount;
    out.push({ kind: 'gpadl-created', relid, gpadl: handle });
    this.sendGpadlCreated(relid, handle, 0, out);
  }

  private sendGpadlCreated(relid: number, gpadl: number, status: number, out: Out): void {
    this.send(
      out,
      this.connection!.messageVp,
      CHANNELMSG_GPADL_CREATED,
      encodeChannelMessage(CHANNELMSG_GPADL_CREATED, { child_relid: relid, gpadl, creation_status: status }),
    );
  }

  private onGpadlTeardown(msg: ChannelMessageOf<typeof CHANNELMSG_GPADL_TEARDOWN>, out: Out): void {
    const { child_relid: relid, gpadl: handle } = msg;
    const assembly = this.assemblies.get(handle);
    if (assembly && assembly.relid === relid) {
      // Abandoned half-way: forget it and answer, so the guest's wait ends.
      this.assemblies.delete(handle);
      return this.sendTorndown(handle, out);
    }
    const g = this.gpadls.get(handle);
    if (!g || g.relid !== relid)
      return out.warn('bogus-gpadl', `GPADL_TEARDOWN of 0x${handle.toString(16)} on relid ${relid}: no such GPADL, dropped`);
    if (g.tearingDown) return out.warn('out-of-order', `GPADL 0x${handle.toString(16)} is already being torn down: dropped`);
    const ch = this.channels.get(relid);
    if (ch && (ch.state === 'open' || ch.state === 'opening') && ch.ringGpadl === handle) {
      // The ring of an open channel: the device is using it. TORNDOWN goes out when the channel closes.
      g.tearingDown = true;
      return out.warn('gpadl-in-use', `GPADL 0x${handle.toString(16)} is the ring of open relid ${relid}: teardown deferred to the close`);
    }
    this.removeGpadl(g, out);
    this.sendTorndown(handle, out);
  }

  private removeGpadl(g: ServerGpadl, out: Out): void {
    this.gpadls.delete(g.handle);
    this.totalGpadlPages -= g.pageCount;
    out.push({ kind: 'gpadl-torndown', relid: g.relid, gpadl: g.handle });
  }

  private sendTorndown(handle: number, out: Out): void {
    this.send(
      out,
      this.connection!.messageVp,
      CHANNELMSG_GPADL_TORNDOWN,
      encodeChannelMessage(CHANNELMSG_GPADL_TORNDOWN, { gpadl: handle }),
    );
  }

  /** Teardowns deferred while the channel was open. */
  private flushDeferredTeardowns(ch: ServerChannel, out: Out): void {
    for (const g of [...this.gpadls.values()]) {
      if (g.relid === ch.relid && g.tearingDown) {
        this.removeGpadl(g, out);
        this.sendTorndown(g.handle, out);
      }
    }
  }

  // ---- open / close / modify

  private onOpenChannel(conn: ConnectionInfo, msg: ChannelMessageOf<typeof CHANNELMSG_OPENCHANNEL>, out: Out): void {
    const relid = msg.child_relid;
    const ch = this.channels.get(relid);
    if (!ch || !ch.offered) return out.warn('bogus-relid', `OPENCHANNEL for unknown relid ${relid}: dropped`);
    const fail = (reason: string, detail: string): void => {
      out.warn(reason, `OPENCHANNEL relid ${relid} refused: ${detail}`);
      this.sendOpenResult(ch, msg.openid, STATUS_UNSUCCESSFUL, out);
    };
    if (ch.state === 'rescinded') return fail('rescinded', 'the channel was rescinded');
    if (ch.state !== 'closed') return fail('double-open', `the channel is ${ch.state}`);
    // Win8 made target_vp meaningful; before it every channel interrupt goes to VP 0.
    const targetVp = conn.version >= VERSION_WIN8 ? msg.target_vp : 0;
    if (targetVp >= this.vpCount) return fail('bad-target-vp', `target_vp ${msg.target_vp} of ${this.vpCount} VPs`);
    const g = this.gpadls.get(msg.ringbuffer_gpadlhandle);
    if (!g || g.relid !== relid)
      return fail('bad-ring-gpadl', `ring GPADL 0x${msg.ringbuffer_gpadlhandle.toString(16)} is not a GPADL of this channel`);
    if (g.tearingDown) return fail('bad-ring-gpadl', 'the ring GPADL is being torn down');
    const ring = g.ranges.length === 1 ? g.ranges[0] : null;
    if (!ring || ring.byteOffset !== 0 || ring.byteCount !== ring.pfns.length * PAGE_SIZE) {
      return fail('bad-ring-gpadl', 'a ring GPADL must be one page-aligned range of whole pages');
    }
    const split = msg.downstream_ringbuffer_pageoffset;
    // Each ring is a control page and at least one data page.
    if (split < 2 || split > ring.pfns.length - 2) {
      return fail('bad-ring-split', `downstream page offset ${split} in a ${ring.pfns.length}-page GPADL`);
    }
    ch.state = 'opening';
    ch.openid = msg.openid;
    ch.ringGpadl = g.handle;
    ch.targetVp = targetVp;
    ch.openGeneration++;
    const request: OpenRequest = {
      relid,
      openid: msg.openid,
      gpadl: g.handle,
      pfns: ring.pfns,
      downstreamPageOffset: split,
      targetVp,
      userData: msg.userdata,
    };
    out.push({ kind: 'open', request });
  }

  private sendOpenResult(ch: ServerChannel, openid: number, status: number, out: Out): void {
    this.send(
      out,
      this.connection!.messageVp,
      CHANNELMSG_OPENCHANNEL_RESULT,
      encodeChannelMessage(CHANNELMSG_OPENCHANNEL_RESULT, { child_relid: ch.relid, openid, status }),
    );
  }

  private onCloseChannel(relid: number, out: Out): void {
    const ch = this.channels.get(relid);
    if (!ch || !ch.offered) return out.warn('bogus-relid', `CLOSECHANNEL for unknown relid ${relid}: dropped`);
    if (ch.state === 'rescinded') return out.debug(`CLOSECHANNEL for rescinded relid ${relid}: already closed`);
    if (ch.state === 'closed') return out.warn('double-close', `CLOSECHANNEL for relid ${relid}, which is not open: dropped`);
    // Opening or open: the device lets go of the rings; a late open completion is ignored.
    ch.state = 'closed';
    ch.openGeneration++;
    out.push({ kind: 'close', relid, reason: 'guest' });
    this.flushDeferredTeardowns(ch, out);
  }

  private onModifyChannel(conn: ConnectionInfo, msg: ChannelMessageOf<typeof CHANNELMSG_MODIFYCHANNEL>, out: Out): void {
    const relid = msg.child_relid;
    if (conn.version < VERSION_WIN10_V4_1)
      return out.warn('version', `MODIFYCHANNEL needs VMBus 4.1 (connected at ${versionString(conn.version)}): dropped`);
    const ch = this.channels.get(relid);
    if (!ch || !ch.offered) return out.warn('bogus-relid', `MODIFYCHANNEL for unknown relid ${relid}: dropped`);
    let status = 0;
    if (ch.state !== 'open') {
      status = STATUS_UNSUCCESSFUL;
      out.warn('not-open', `MODIFYCHANNEL for relid ${relid}, which is ${ch.state}`);
    } else if (msg.target_vp >= this.vpCount) {
      status = STATUS_UNSUCCESSFUL;
      out.warn('bad-target-vp', `MODIFYCHANNEL relid ${relid}: target_vp ${msg.target_vp} of ${this.vpCount} VPs`);
    } else {
      ch.targetVp = msg.target_vp;
      out.push({ kind: 'retarget', relid, targetVp: msg.target_vp });
    }
    // Only 5.3 guests wait for an answer.
    if (conn.version >= VERSION_WIN10_V5_3) {
      this.send(
        out,
        conn.messageVp,
        CHANNELMSG_MODIFYCHANNEL_RESPONSE,
        encodeChannelMessage(CHANNELMSG_MODIFYCHANNEL_RESPONSE, { child_relid: relid, status }),
      );
    }
  }

  // ---- helpers

  private send(out: Out, vp: number, msgtype: ChannelMessageType, bytes: Uint8Array): void {
    out.push({ kind: 'send', vp, sint: VMBUS_MESSAGE_SINT, msgtype, bytes });
  }

  private allocateRelid(): number {
    for (let relid = 1; relid < MAX_CHANNEL_RELIDS; relid++) if (!this.channels.has(relid)) return relid;
    throw new HostUsageError(`all ${MAX_CHANNEL_RELIDS - 1} relids are in use`);
  }

  private createChannel(relid: number, spec: OfferSpec, subChannelIndex: number, primaryRelid: number, order: number): ServerChannel {
    const ch: ServerChannel = {
      relid,
      connectionId: channelConnectionId(relid),
      spec,
      subChannelIndex,
      primaryRelid,
      order,
      state: 'closed',
      offered: false,
      targetVp: 0,
      openid: 0,
      ringGpadl: 0,
      openGeneration: 0,
    };
    this.channels.set(relid, ch);
    return ch;
  }

  /**
   * Checks the state invariants (for tests and fuzzing); returns the violations found.
   */
  checkInvariants(): string[] {
    const problems: string[] = [];
    let pages = 0;
    for (const g of this.gpadls.values()) {
      pages += g.pageCount;
      const ch = this.channels.get(g.relid);
      if (!ch) problems.push(`GPADL 0x${g.handle.toString(16)} belongs to missing relid ${g.relid}`);
      if (g.pageCount > this.limits.maxGpadlPages) problems.push(`GPADL 0x${g.handle.toString(16)} too large`);
    }
    if (pages !== this.totalGpadlPages) problems.push(`page accounting ${this.totalGpadlPages} != ${pages}`);
    if (this.gpadls.size > this.limits.maxGpadls) problems.push('too many GPADLs');
    if (this.assemblies.size > this.limits.maxGpadlsInProgress) problems.push('too many GPADLs in progress');
    if (!this.connection && (this.gpadls.size > 0 || this.assemblies.size > 0)) problems.push('GPADLs without a connection');
    for (const ch of this.channels.values()) {
      if (ch.relid < 1 || ch.relid >= MAX_CHANNEL_RELIDS) problems.push(`relid ${ch.relid} out of range`);
      if ((ch.state === 'open' || ch.state === 'opening') && !this.connection)
        problems.push(`relid ${ch.relid} ${ch.state} without a connection`);
      if (ch.state === 'open' || ch.state === 'opening') {
        const g = this.gpadls.get(ch.ringGpadl);
        if (!g || g.relid !== ch.relid) problems.push(`relid ${ch.relid} ${ch.state} without its ring GPADL`);
        if (ch.targetVp >= this.vpCount) problems.push(`relid ${ch.relid} targets VP ${ch.targetVp}`);
      }
      if (ch.state === 'rescinded' && !ch.offered) problems.push(`relid ${ch.relid} rescinded but never offered`);
      if (ch.offered && !this.connection?.offersRequested) problems.push(`relid ${ch.relid} offered without REQUESTOFFERS`);
    }
    return problems;
  }
}

function validateOfferSpec(spec: OfferSpec): void {
  parseGuid(spec.interfaceType);
  parseGuid(spec.interfaceInstance);
  const limit = spec.pipeMode === undefined ? MAX_USER_DEFINED_BYTES : MAX_PIPE_USER_DEFINED_BYTES;
  if (spec.userDefined && spec.userDefined.length > limit) throw new HostUsageError(`user-defined bytes exceed ${limit}`);
  if (spec.monitorAllocated && !(Number.isInteger(spec.monitorId) && spec.monitorId! >= 0 && spec.monitorId! < VMBUS_MONITOR_ID_COUNT)) {
    throw new HostUsageError(`monitorId must be 0..${VMBUS_MONITOR_ID_COUNT - 1} with monitorAllocated`);
  }
  for (const [name, v, max] of [
    ['flags', spec.flags ?? 0, 0xffff],
    ['mmioMegabytes', spec.mmioMegabytes ?? 0, 0xffff],
    ['pipeMode', spec.pipeMode ?? 0, 0xffffffff],
  ] as const) {
    if (!Number.isInteger(v) || v < 0 || v > max) throw new HostUsageError(`offer ${name} ${v} out of range`);
  }
}

/** OFFERCHANNEL for a channel, in the full 196 bytes. */
function encodeOffer(ch: ServerChannel): Uint8Array {
  const { spec } = ch;
  const pipe = spec.pipeMode !== undefined;
  return encodeChannelMessage(CHANNELMSG_OFFERCHANNEL, {
    if_type: spec.interfaceType,
    if_instance: spec.interfaceInstance,
    chn_flags: (spec.flags ?? 0) | (pipe ? VMBUS_CHANNEL_NAMED_PIPE_MODE : 0),
    mmio_megabytes: spec.mmioMegabytes ?? 0,
    user_def: pipe ? encodePipeUserDefined(spec.pipeMode!, spec.userDefined) : spec.userDefined,
    sub_channel_index: ch.subChannelIndex,
    child_relid: ch.relid,
    monitorid: spec.monitorAllocated ? spec.monitorId! : 0,
    monitor_allocated: spec.monitorAllocated ? 1 : 0,
    is_dedicated_interrupt: spec.dedicatedInterrupt === false ? 0 : 1,
    connection_id: ch.connectionId,
  });
}
