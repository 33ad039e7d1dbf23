/**
 * The guest side of the VMBus channel protocol in TypeScript, negotiating in the order the
 * Linux driver does (drivers/hv/connection.c, channel_mgmt.c, channel.c):
 * INITIATE_CONTACT newest version first, falling back on refusal (or INVALID_CONNECTION_ID);
 * REQUESTOFFERS and offers until ALLOFFERS_DELIVERED; the ring GPADL (GPADL_HEADER with up to
 * 26 PFNs, then GPADL_BODYs of 28); OPENCHANNEL; CLOSECHANNEL then GPADL_TEARDOWN; on a
 * rescind, RELID_RELEASED once the channel is let go; UNLOAD.
 *
 * It drives simulated partitions, replay and tests. Messages that arrive while it waits for
 * something else (offers, rescinds) are handled as Linux handles them, whenever they arrive.
 */
import { HvemuError, silentLogger, type Logger } from '@hvemu/common';
import { HV_STATUS_INSUFFICIENT_BUFFERS, HV_STATUS_INVALID_CONNECTION_ID, HV_STATUS_SUCCESS } from '@hvemu/hvdef';
import { PAGE_SIZE, type GuestMemory } from '@hvemu/memory';
import { openRingEndpoint, ringPairFromPages, type RingEndpoint } from '../ring/pair.js';
import {
  CHANNELMSG_ALLOFFERS_DELIVERED,
  CHANNELMSG_CLOSECHANNEL,
  CHANNELMSG_GPADL_CREATED,
  CHANNELMSG_GPADL_TEARDOWN,
  CHANNELMSG_GPADL_TORNDOWN,
  CHANNELMSG_MODIFYCHANNEL,
  CHANNELMSG_MODIFYCHANNEL_RESPONSE,
  CHANNELMSG_OFFERCHANNEL,
  CHANNELMSG_OPENCHANNEL,
  CHANNELMSG_OPENCHANNEL_RESULT,
  CHANNELMSG_RELID_RELEASED,
  CHANNELMSG_REQUESTOFFERS,
  CHANNELMSG_RESCIND_CHANNELOFFER,
  CHANNELMSG_UNLOAD,
  CHANNELMSG_UNLOAD_RESPONSE,
  CHANNELMSG_VERSION_RESPONSE,
  GPADL_BODY_MAX_PFNS,
  GPADL_HEADER_MAX_PFNS,
  LINUX_VMBUS_VERSIONS,
  VERSION_WIN10_V5,
  VERSION_WIN10_V5_3,
  VERSION_WIN10_V6_0,
  VMBUS_GPADL_HANDLE_BASE,
  VMBUS_MESSAGE_CONNECTION_ID,
  VMBUS_MESSAGE_CONNECTION_ID_4,
  VMBUS_MESSAGE_SINT,
  versionString,
} from '../protocol/constants.js';
import { ChannelProtocolError } from '../protocol/errors.js';
import {
  channelMessageName,
  encodeChannelMessage,
  encodeGpaRange,
  encodeGpadlBody,
  encodeGpadlHeader,
  encodeInitiateContact,
  parseChannelMessage,
  type ChannelMessage,
  type ChannelMessageOf,
} from '../protocol/messages.js';
import type { GuestTransport } from './transport.js';

/** Linux vmbus_post_msg retries a refused post this many times. */
const POST_RETRIES = 100;
/** struct hv_monitor_page: trigger_group[4] (pending u32, armed u32) at byte 8. */
const MONITOR_TRIGGER_GROUP_OFFSET = 8;

/** The client could not complete a protocol step. */
export class VmbusClientError extends HvemuError {
  readonly outcome = 'host-error' as const;
}

/** Hands out guest pages for rings and buffers. */
export interface PageAllocator {
  /** `count` physically contiguous pages (Linux allocates ring buffers contiguous); returns their PFNs. */
  allocate(count: number): number[];
}

/** A bump allocator over `[firstPfn, firstPfn + pageCount)`. */
export class BumpPageAllocator implements PageAllocator {
  private next: number;
  private readonly end: number;
  constructor(firstPfn: number, pageCount: number) {
    this.next = firstPfn;
    this.end = firstPfn + pageCount;
  }
  allocate(count: number): number[] {
    if (this.next + count > this.end) throw new VmbusClientError(`out of guest pages (${count} wanted)`);
    const pfns = Array.from({ length: count }, (_, i) => this.next + i);
    this.next += count;
    return pfns;
  }
}

export type ClientOffer = ChannelMessageOf<typeof CHANNELMSG_OFFERCHANNEL> & {
  /** The host rescinded it. */
  rescinded: boolean;
};

export interface VmbusClientOptions {
  transport: GuestTransport;
  memory: GuestMemory;
  pages: PageAllocator;
  /** target_vcpu of INITIATE_CONTACT: the VP index of the CPU that handles channel messages. */
  vp?: number;
  /** Versions to try, newest first (default: Linux's list, 5.3 down to 2.4). */
  versions?: readonly number[];
  /** 6.0 feature flags to request. */
  featureFlags?: number;
  /** Pre-5.0 interrupt page and the monitor pages (GPAs; 0 = none). */
  interruptPage?: number;
  monitorPages?: readonly [number, number];
  logger?: Logger;
}

export interface OpenOptions {
  /** Pages of the guest-to-host ring, control page included (Linux: send ring). Default 4. */
  sendPages?: number;
  /** Pages of the host-to-guest ring, control page included. Default 4. */
  recvPages?: number;
  /** VP for host-to-guest interrupts. Default: the client's VP. */
  targetVp?: number;
  userData?: Uint8Array;
}

/** A channel the guest opened. */
export interface GuestChannel {
  readonly relid: number;
  readonly offer: ClientOffer;
  readonly ringGpadl: number;
  readonly pfns: readonly number[];
  /** The guest end: `inbound` (host-to-guest ring), `outbound` (guest-to-host ring). */
  readonly rings: RingEndpoint;
  /** HvSignalEvent on the offer's connection id. */
  signalHost(): number;
}

export class VmbusClient {
  private readonly transport: GuestTransport;
  private readonly memory: GuestMemory;
  private readonly logger: Logger;
  private readonly vp: number;
  /** Messages that arrived and wait for someone to take them. */
  private readonly inbox: ChannelMessage[] = [];
  private nextGpadl = VMBUS_GPADL_HANDLE_BASE;
  private msgConnId = VMBUS_MESSAGE_CONNECTION_ID;
  private readonly open = new Map<number, GuestChannel>();
  readonly offers = new Map<number, ClientOffer>();
  /** The negotiated version, 0 when not connected. */
  version = 0;
  supportedFeatures = 0;
  /** Every message received, in order (tests, timelines). */
  readonly received: ChannelMessage[] = [];

  constructor(private readonly options: VmbusClientOptions) {
    this.transport = options.transport;
    this.memory = options.memory;
    this.logger = options.logger ?? silentLogger;
    this.vp = options.vp ?? 0;
  }

  // ---- connection

  /** INITIATE_CONTACT from the newest version down until the host accepts one. Returns it. */
  async connect(): Promise<number> {
    for (const version of this.options.versions ?? LINUX_VMBUS_VERSIONS) {
      const modern = version >= VERSION_WIN10_V5;
      // >= 5.0 contacts go to connection id 4, older ones to 1 (connection.c vmbus_negotiate_version).
      const connectionId = modern ? VMBUS_MESSAGE_CONNECTION_ID_4 : VMBUS_MESSAGE_CONNECTION_ID;
      const [mp1, mp2] = this.options.monitorPages ?? [0, 0];
      const message = encodeInitiateContact({
        vmbus_version_requested: version,
        target_vcpu: this.vp,
        ...(modern
          ? {
              msg_sint: VMBUS_MESSAGE_SINT,
              msg_vtl: 0,
              feature_flags: version >= VERSION_WIN10_V6_0 ? (this.options.featureFlags ?? 0) : 0,
            }
          : { interrupt_page: BigInt(this.options.interruptPage ?? 0) }),
        monitor_page1: BigInt(mp1),
        monitor_page2: BigInt(mp2),
      });
      const status = this.transport.post(connectionId, message);
      // INVALID_CONNECTION_ID on an INITIATE_CONTACT means "host too old": try the next version.
      if (status === HV_STATUS_INVALID_CONNECTION_ID) continue;
      if (status !== HV_STATUS_SUCCESS) throw new VmbusClientError(`INITIATE_CONTACT post failed with status 0x${status.toString(16)}`);
      const response = await this.waitFor((m) => m.msgtype === CHANNELMSG_VERSION_RESPONSE);
      if (response.msgtype !== CHANNELMSG_VERSION_RESPONSE) continue;
      if (response.version_supported === 0) {
        this.logger.debug(`vmbus client: ${versionString(version)} refused`);
        continue;
      }
      this.version = version;
      this.supportedFeatures = response.supported_features;
      this.msgConnId = modern ? response.msg_conn_id : VMBUS_MESSAGE_CONNECTION_ID;
      return version;
    }
    throw new VmbusClientError('the host accepted no VMBus version');
  }

  /** REQUESTOFFERS; resolves with the offers once ALLOFFERS_DELIVERED arrives. */
  async requestOffers(): Promise<ClientOffer[]> {
    this.post(encodeChannelMessage(CHANNELMSG_REQUESTOFFERS, {}));
    await this.waitFor((m) => m.msgtype === CHANNELMSG_ALLOFFERS_DELIVERED);
    return [...this.offers.values()].filter((o) => !o.rescinded);
  }

  /** UNLOAD; resolves at UNLOAD_RESPONSE. Everything is forgotten; connect() may follow. */
  async unload(): Promise<void> {
    this.post(encodeChannelMessage(CHANNELMSG_UNLOAD, {}));
    await this.waitFor((m) => m.msgtype === CHANNELMSG_UNLOAD_RESPONSE);
    this.forget();
  }

  private forget(): void {
    this.version = 0;
    this.offers.clear();
    this.open.clear();
    this.inbox.length = 0;
    this.msgConnId = VMBUS_MESSAGE_CONNECTION_ID;
  }

  // ---- GPADLs

  /**
   * Describes `pfns` (one range of `byteCount` bytes from `byteOffset`) to the host: a
   * GPADL_HEADER with up to 26 PFNs, GPADL_BODYs with up to 28 each. Resolves with the handle.
   */
  async createGpadl(relid: number, pfns: readonly number[], byteCount = pfns.length * PAGE_SIZE, byteOffset = 0): Promise<number> {
    const gpadl = this.nextGpadl++;
    for (const message of gpadlMessages(relid, gpadl, pfns, byteCount, byteOffset)) this.post(message);
    const created = await this.waitFor((m) => m.msgtype === CHANNELMSG_GPADL_CREATED && m.child_relid === relid && m.gpadl === gpadl);
    if (created.msgtype === CHANNELMSG_GPADL_CREATED && created.creation_status !== 0) {
      throw new VmbusClientError(`GPADL 0x${gpadl.toString(16)} refused (status 0x${created.creation_status.toString(16)})`);
    }
    return gpadl;
  }

  async teardownGpadl(relid: number, gpadl: number): Promise<void> {
    this.post(encodeChannelMessage(CHANNELMSG_GPADL_TEARDOWN, { child_relid: relid, gpadl }));
    await this.waitFor((m) => m.msgtype === CHANNELMSG_GPADL_TORNDOWN && m.gpadl === gpadl);
  }

  // ---- channels

  /** Opens an offered channel as Linux __vmbus_open does: ring GPADL, ring init, OPENCHANNEL. */
  async openChannel(relid: number, options: OpenOptions = {}): Promise<GuestChannel> {
    const offer = this.offers.get(relid);
    if (!offer || offer.rescinded) throw new VmbusClientError(`relid ${relid} is not offered`);
    const sendPages = options.sendPages ?? 4;
    const recvPages = options.recvPages ?? 4;
    const pfns = this.options.pages.allocate(sendPages + recvPages);
    const gpadl = await this.createGpadl(relid, pfns);
    const layout = ringPairFromPages(this.memory, pfns, sendPages);
    layout.guestToHost.initialize();
    layout.hostToGuest.initialize();
    const openid = relid;
    this.post(
      encodeChannelMessage(CHANNELMSG_OPENCHANNEL, {
        child_relid: relid,
        openid,
        ringbuffer_gpadlhandle: gpadl,
        target_vp: options.targetVp ?? this.vp,
        downstream_ringbuffer_pageoffset: sendPages,
        userdata: options.userData,
      }),
    );
    const result = await this.waitFor((m) => m.msgtype === CHANNELMSG_OPENCHANNEL_RESULT && m.child_relid === relid && m.openid === openid);
    if (result.msgtype === CHANNELMSG_OPENCHANNEL_RESULT && result.status !== 0) {
      await this.teardownGpadl(relid, gpadl);
      throw new VmbusClientError(`OPENCHANNEL relid ${relid} refused (status 0x${result.status.toString(16)})`);
    }
    const signalHost = (): number => this.signal(offer);
    const channel: GuestChannel = {
      relid,
      offer,
      ringGpadl: gpadl,
      pfns,
      rings: openRingEndpoint(layout, 'guest', signalHost, { logger: this.logger, name: `guest relid ${relid}` }),
      signalHost,
    };
    this.open.set(relid, channel);
    return channel;
  }

  /**
   * Signals the host for a channel as Linux vmbus_setevent does: a monitored channel
   * (monitor_allocated, and monitor pages given at connect) only sets its bit in monitor page
   * 2's trigger_group[monitorid / 32].pending, with no hypercall; any other channel makes a
   * fast HvSignalEvent on its connection id.
   */
  private signal(offer: ClientOffer): number {
    const monitorPage2 = this.options.monitorPages?.[1] ?? 0;
    if (offer.monitor_allocated && monitorPage2 !== 0) {
      const pending = this.memory.u32Array(monitorPage2 + MONITOR_TRIGGER_GROUP_OFFSET + (offer.monitorid >>> 5) * 8, 1);
      Atomics.or(pending, 0, 1 << (offer.monitorid & 31));
      return HV_STATUS_SUCCESS;
    }
    return this.transport.signal(offer.connection_id);
  }

  /** CLOSECHANNEL, then the ring GPADL's teardown (vmbus_close_internal); after a rescind, RELID_RELEASED instead. */
  async closeChannel(channel: GuestChannel): Promise<void> {
    this.open.delete(channel.relid);
    channel.rings.inbound.close(`relid ${channel.relid} closed`);
    channel.rings.outbound.close(`relid ${channel.relid} closed`);
    if (channel.offer.rescinded) {
      // Linux neither closes nor tears down on a rescinded channel; it releases the relid.
      this.post(encodeChannelMessage(CHANNELMSG_RELID_RELEASED, { child_relid: channel.relid }));
      return;
    }
    this.post(encodeChannelMessage(CHANNELMSG_CLOSECHANNEL, { child_relid: channel.relid }));
    await this.teardownGpadl(channel.relid, channel.ringGpadl);
  }

  /** MODIFYCHANNEL (>= 4.1); from 5.3 waits for the response and returns its status. */
  async modifyChannel(relid: number, targetVp: number): Promise<number> {
    this.post(encodeChannelMessage(CHANNELMSG_MODIFYCHANNEL, { child_relid: relid, target_vp: targetVp }));
    if (this.version < VERSION_WIN10_V5_3) return 0;
    const r = await this.waitFor((m) => m.msgtype === CHANNELMSG_MODIFYCHANNEL_RESPONSE && m.child_relid === relid);
    return r.msgtype === CHANNELMSG_MODIFYCHANNEL_RESPONSE ? r.status : 0;
  }

  /** Processes whatever the host sent (offers, rescinds) without waiting. */
  pump(): void {
    for (let bytes = this.transport.receive(); bytes !== null; bytes = this.transport.receive()) this.accept(bytes);
  }

  /**
   * Posts a raw channel message (hostile tests use it too). HV_STATUS_INSUFFICIENT_BUFFERS is
   * retried as Linux vmbus_post_msg does (up to 100 times); in between, this guest takes the
   * messages waiting for it, which is what lets a host with a backlog take more.
   */
  post(bytes: Uint8Array): number {
    let status = this.transport.post(this.msgConnId, bytes);
    for (let retry = 0; status === HV_STATUS_INSUFFICIENT_BUFFERS && retry < POST_RETRIES; retry++) {
      this.pump();
      status = this.transport.post(this.msgConnId, bytes);
    }
    if (status !== HV_STATUS_SUCCESS) throw new VmbusClientError(`HvPostMessage failed with status 0x${status.toString(16)}`);
    return status;
  }

  // ---- receiving

  private accept(bytes: Uint8Array): void {
    const m = parseChannelMessage(bytes);
    if (m instanceof ChannelProtocolError) {
      // The guest drops what it cannot parse (vmbus_on_msg_dpc).
      this.logger.warn(`vmbus client: ${m.message}`);
      return;
    }
    this.received.push(m);
    switch (m.msgtype) {
      case CHANNELMSG_OFFERCHANNEL:
        this.offers.set(m.child_relid, { ...m, rescinded: false });
        return;
      case CHANNELMSG_RESCIND_CHANNELOFFER: {
        const offer = this.offers.get(m.child_relid);
        if (!offer) return;
        offer.rescinded = true;
        // A channel nobody has open is freed at once; an open one when its user closes it.
        if (!this.open.has(m.child_relid)) this.post(encodeChannelMessage(CHANNELMSG_RELID_RELEASED, { child_relid: m.child_relid }));
        return;
      }
      default:
        this.inbox.push(m);
    }
  }

  /** Waits for a message matching `match` (earlier unmatched ones stay in the inbox). */
  private async waitFor(match: (m: ChannelMessage) => boolean): Promise<ChannelMessage> {
    for (;;) {
      this.pump();
      const i = this.inbox.findIndex(match);
      if (i >= 0) return this.inbox.splice(i, 1)[0];
      if (!this.transport.wait) throw new VmbusClientError('the host did not answer');
      await this.transport.wait();
    }
  }

  /** Messages that arrived and nobody waited for (tests look at stray answers here). */
  takeUnclaimed(): ChannelMessage[] {
    this.pump();
    return this.inbox.splice(0);
  }

  describe(m: ChannelMessage): string {
    return channelMessageName(m.msgtype);
  }
}

/** The GPADL_HEADER and GPADL_BODY messages Linux sends for one range (channel.c create_gpadl_header). */
export function gpadlMessages(relid: number, gpadl: number, pfns: readonly number[], byteCount: number, byteOffset = 0): Uint8Array[] {
  const range = encodeGpaRange(byteCount, byteOffset, pfns);
  const headerBytes = Math.min(range.length, 8 + 8 * GPADL_HEADER_MAX_PFNS);
  const messages = [
    encodeGpadlHeader({ child_relid: relid, gpadl, range_buflen: range.length, rangecount: 1 }, range.subarray(0, headerBytes)),
  ];
  for (let at = headerBytes; at < range.length; at += 8 * GPADL_BODY_MAX_PFNS) {
    messages.push(encodeGpadlBody({ gpadl }, range.subarray(at, Math.min(range.length, at + 8 * GPADL_BODY_MAX_PFNS))));
  }
  return messages;
}
