/**
 * netvsp: the host end of Linux hv_netvsc and Windows netvsc, as a VmbusDevice.
 *
 * One NVSP session per open of the primary channel: INIT (versions 1-6.1), NDIS config and
 * version, the receive buffer (a transfer-page set the host writes RNDIS messages into, one
 * section per message, reused only after the guest completes the transfer-page packet), the
 * send buffer (sections the guest fills), RNDIS control through RndisControl, subchannels on
 * request (NVSP 5+) with vRSS (Toeplitz hash, indirection table, hash PPI per frame), link
 * state indications. Frames go to and come from a NetBackend with backpressure both ways.
 *
 * Every guest input is hostile: a malformed NVSP or RNDIS message is dropped (or completed
 * with a failure status) and counted in `stats`, the channel and the others keep working.
 */
import { HostUsageError, silentLogger, type Logger } from '@hvemu/common';
import {
  GuestDataRevokedError,
  VM_PKT_COMP,
  VM_PKT_DATA_INBAND,
  VM_PKT_DATA_USING_GPA_DIRECT,
  VM_PKT_DATA_USING_XFER_PAGES,
  VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED,
  type ChannelCloseReason,
  type DeviceChannel,
  type GuestData,
  type HostCallable,
  type HostCallObserver,
  type OfferSpec,
  type OutgoingPacket,
  type PacketView,
  type VmbusDevice,
} from '@hvemu/vmbus';
import type { NetBackend, NetBackendSink } from './backend/backend.js';
import { ReceiveBuffer, SendBuffer } from './buffers.js';
import {
  encodeNvsp,
  NETVSC_INVALID_INDEX,
  NETVSC_RECEIVE_BUFFER_ID,
  NETVSC_SEND_BUFFER_ID,
  nvsp_1_message_send_receive_buffer_complete,
  nvsp_1_message_send_rndis_packet,
  nvsp_1_message_send_rndis_packet_complete,
  nvsp_1_message_send_send_buffer_complete,
  nvsp_4_send_vf_association,
  nvsp_5_send_indirect_table,
  nvsp_5_subchannel_complete,
  nvsp_message_init_complete,
  NDIS_CONFIG_IEEE8021Q,
  NVSP_INDIRECTION_TABLE_OFFSET,
  NVSP_MESSAGE_SIZE,
  NVSP_MSG_TYPE_INIT,
  NVSP_MSG_TYPE_INIT_COMPLETE,
  NVSP_MSG1_TYPE_REVOKE_RECV_BUF,
  NVSP_MSG1_TYPE_REVOKE_SEND_BUF,
  NVSP_MSG1_TYPE_SEND_NDIS_VER,
  NVSP_MSG1_TYPE_SEND_RECV_BUF,
  NVSP_MSG1_TYPE_SEND_RECV_BUF_COMPLETE,
  NVSP_MSG1_TYPE_SEND_RNDIS_PKT,
  NVSP_MSG1_TYPE_SEND_RNDIS_PKT_COMPLETE,
  NVSP_MSG1_TYPE_SEND_SEND_BUF,
  NVSP_MSG1_TYPE_SEND_SEND_BUF_COMPLETE,
  NVSP_MSG2_TYPE_SEND_NDIS_CONFIG,
  NVSP_MSG4_TYPE_SEND_VF_ASSOCIATION,
  NVSP_MSG4_TYPE_SWITCH_DATA_PATH,
  NVSP_MSG5_TYPE_SEND_INDIRECTION_TABLE,
  NVSP_MSG5_TYPE_SUBCHANNEL,
  NVSP_PROTOCOL_VERSION_4,
  NVSP_PROTOCOL_VERSION_5,
  NVSP_PROTOCOL_VERSIONS,
  NVSP_RNDIS_CHANNEL_DATA,
  NVSP_STAT_FAIL,
  NVSP_STAT_INVALID_RNDIS_PKT,
  NVSP_STAT_SUCCESS,
  NVSP_SUBCHANNEL_ALLOCATE,
  NvspProtocolError,
  parseNvspGuestMessage,
  VRSS_SEND_TAB_SIZE,
  type NvspGuestMessage,
} from './nvsp.js';
import {
  IEEE_8021Q_INFO,
  NBL_HASH_VALUE,
  NDIS_PACKET_TYPE_ALL_MULTICAST,
  NDIS_PACKET_TYPE_BROADCAST,
  NDIS_PACKET_TYPE_DIRECTED,
  NDIS_PACKET_TYPE_MULTICAST,
  NDIS_PACKET_TYPE_PROMISCUOUS,
  NDIS_U32_PPI_SIZE,
  RNDIS_PACKET_HEADER_SIZE,
  writeRndisPacketHeader,
} from './rndis.js';
import { RndisControl, type NicIdentity } from './rndis-control.js';
import { RndisTx } from './rndis-tx.js';
import { rssHash } from './toeplitz.js';
import { ETH_HLEN, hasCtag, ndisVlanInfo, parseMac, tooLong, VLAN_HLEN } from './ethernet.js';

/** The synthetic network class GUID (include/linux/hyperv.h HV_NIC_GUID). */
export const HV_NIC_GUID = 'f8615163-df3e-46c5-913f-f2d2f965ed0e';
/** Linux's netvsc limits (NETVSC_MTU, ETH_MIN_MTU). */
export const NETVSC_MTU_MAX = 65535 - ETH_HLEN;
export const NETVSC_MTU_MIN = 68;
/** The send-buffer section size the host chooses (Linux's NETVSC_SEND_SECTION_SIZE). */
export const DEFAULT_SEND_SECTION_SIZE = 6144;
/** Packets read from one ring before other work gets a turn. */
const READ_BATCH = 64;
/**
 * Ranges (RNDIS messages) per transfer-page packet: frames that arrive together go to the guest
 * together (one ring packet, one signal, one completion). Linux takes up to 375 without RSC.
 */
export const MAX_XFER_RANGES = 64;
/** RNDIS control answers waiting for a receive section; more are dropped and counted. */
const MAX_PENDING_CONTROL = 64;

export interface NetvspOptions {
  backend: NetBackend;
  /** 6 bytes, or "aa:bb:cc:dd:ee:ff". */
  mac: Uint8Array | string;
  /**
   * Default 1500 (68..65521); frames of up to mtu + 14 pass, + 4 for one carrying an 802.1Q /
   * 802.1ad tag (or a guest frame whose VLAN PPI adds one). The guest's NDIS config may lower it for rx.
   */
  mtu?: number;
  /**
   * Default true: to a guest that announced ieee8021q in its NDIS config (Linux always does), a
   * backend frame with an 802.1Q tag is delivered untagged with the tag in an IEEE_8021Q_INFO
   * PPI, as Hyper-V's switch delivers a trunk port's frames. False: tags stay in the frame.
   */
  rxVlanOffload?: boolean;
  /**
   * Default false, as Hyper-V refuses MAC spoofing unless it is enabled: whether the guest may
   * change its current address (OID_GEN_RNDIS_CONFIG_PARAMETER "NetworkAddress", Linux's
   * `ip link set address`). The permanent address stays `mac` either way.
   */
  allowMacChange?: boolean;
  /** Queues (primary + subchannels) the guest may open for vRSS; default 4, at most 64. */
  maxQueues?: number;
  /** Default 10 Gbit/s. */
  linkSpeedBps?: number;
  /** The offer's instance GUID (one per NIC of a VM). */
  instanceId?: string;
  friendlyName?: string;
  /** Default 6144. */
  sendSectionSize?: number;
  /** The link is up when the VM starts (default true). */
  linkUp?: boolean;
  logger?: Logger;
}

/** Counters of everything the device did, dropped or refused. */
export interface NetvspStats {
  txFrames: number;
  txBytes: number;
  rxFrames: number;
  rxBytes: number;
  /** Guest NVSP messages dropped: malformed, out of order, on the wrong channel. */
  nvspErrors: number;
  /** Guest RNDIS messages refused: lengths, offsets, PPI chains. */
  rndisErrors: number;
  /** RNDIS control requests answered with an error status (malformed, refused, not initialized). */
  rndisControlErrors: number;
  /** RNDIS QUERY/SET of an OID the host does not implement (answered NOT_SUPPORTED). */
  rndisUnsupportedOids: number;
  /** SEND_RNDIS_PKT naming a send-buffer section that is not there (or past the section). */
  badSections: number;
  /** Packets whose page buffers (GPA ranges) are outside guest RAM. */
  badPageBuffers: number;
  /** Guest frames shorter than an Ethernet header or longer than the MTU allows. */
  txBadSize: number;
  /** Backend frames dropped: the wrong size, or the guest is not ready, or the packet filter says no. */
  rxBadSize: number;
  /** Backend frames the host's MTU allows but the guest's (NDIS config) does not: dropped. */
  rxOverMtu: number;
  /** Backend frames delivered with their 802.1Q tag moved into an IEEE_8021Q_INFO PPI. */
  rxVlanOffloaded: number;
  rxNotReady: number;
  rxFiltered: number;
  /** Times a backend frame waited because no receive section (or no ring space) was free. */
  rxBackpressure: number;
  /** Transfer-page completions naming no section out on that queue. */
  badCompletions: number;
  /** RNDIS control answers dropped because too many waited for receive sections. */
  controlDrops: number;
  /** Guest data packets with checksum / LSO / VLAN PPIs (the host passes frames on as built). */
  txChecksumRequests: number;
  txLsoRequests: number;
  txVlanTagged: number;
}

/** A stage of the NVSP session on the primary channel. */
type Stage = 'init' | 'ready';

interface Queue {
  readonly index: number;
  readonly channel: DeviceChannel;
  /** A transfer-page packet waits for ring space: further frames for this queue wait too. */
  ringBlocked: boolean;
  /** Sections written for this queue and not yet named by a transfer-page packet (sent together). */
  readonly batch: number[];
  readonly batchLengths: number[];
  /** More packets may be in the ring after a batch (the guest does not signal for those). */
  again: ReturnType<typeof setImmediate> | null;
}

interface Session {
  stage: Stage;
  version: number;
  /** Largest untagged frame the guest takes: the host's, or less after the guest's NDIS config. */
  rxFrameLimit: number;
  /** The guest's NDIS config announced ieee8021q: tags go to it as PPIs (with rxVlanOffload). */
  rxVlanPpi: boolean;
  recv: ReceiveBuffer | null;
  send: SendBuffer | null;
  subchannelsOffered: number;
}

const HOST_CALLS = ['connect', 'disconnect'] as const;

export class NetvspDevice implements VmbusDevice, HostCallable, NetBackendSink {
  readonly offer: OfferSpec;
  readonly rndis: RndisControl;
  readonly stats: NetvspStats = newStats();
  readonly hostCalls: readonly string[] = HOST_CALLS;
  private readonly backend: NetBackend;
  private readonly logger: Logger;
  private readonly sendSectionSize: number;
  /** Largest untagged frame either way (mtu + 14). */
  private readonly hostFrame: number;
  /** Largest frame with a tag: what a receive section must hold. */
  private readonly maxFrame: number;
  private readonly rxVlanOffload: boolean;
  /** Open queues by subchannel index (0 = the primary). */
  private readonly queues: (Queue | undefined)[] = [];
  private session: Session | null = null;
  /** The backend holds a frame we refused; it waits for resume(). */
  private rxPaused = false;
  private readonly pendingControl: Uint8Array[] = [];
  private hostCallObserver: HostCallObserver | undefined;
  /** Guest to network: the RNDIS walk; its backendFull stops reading rings until writable(). */
  private readonly tx: RndisTx;
  private readonly rxHeader = new Uint8Array(RNDIS_PACKET_HEADER_SIZE + 4 * NDIS_U32_PPI_SIZE);
  private readonly rxHeaderView = new DataView(this.rxHeader.buffer);
  private readonly rxPpis: number[] = [];
  private readonly xferHeader = new Uint8Array(8 + 8 * MAX_XFER_RANGES);
  private readonly xferHeaderView = new DataView(this.xferHeader.buffer);
  /** Transfer-page packets the guest has not completed: packet id -> queue and sections. */
  private readonly inflight = new Map<number, { queue: number; sections: number[] }>();
  private nextPacketId = 1;
  private flushQueued = false;
  private readonly xferPayload = encodeNvsp(NVSP_MSG1_TYPE_SEND_RNDIS_PKT, nvsp_1_message_send_rndis_packet, {
    channel_type: NVSP_RNDIS_CHANNEL_DATA,
    send_buf_section_index: NETVSC_INVALID_INDEX,
    send_buf_section_size: 0,
  });
  private readonly xferPacket: OutgoingPacket = {
    type: VM_PKT_DATA_USING_XFER_PAGES,
    flags: VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED,
    transactionId: 0,
    header: this.xferHeader,
    payload: this.xferPayload,
  };
  private readonly txCompletion: OutgoingPacket = { type: VM_PKT_COMP, transactionId: 0 };
  private readonly txComplete = [NVSP_STAT_SUCCESS, NVSP_STAT_FAIL, NVSP_STAT_INVALID_RNDIS_PKT].map((status) =>
    encodeNvsp(NVSP_MSG1_TYPE_SEND_RNDIS_PKT_COMPLETE, nvsp_1_message_send_rndis_packet_complete, { status }),
  );

  constructor(options: NetvspOptions) {
    const mtu = options.mtu ?? 1500;
    if (!Number.isInteger(mtu) || mtu < NETVSC_MTU_MIN || mtu > NETVSC_MTU_MAX) {
      throw new HostUsageError(`netvsp: mtu ${mtu} is outside ${NETVSC_MTU_MIN}..${NETVSC_MTU_MAX}`);
    }
    const maxQueues = options.maxQueues ?? 4;
    if (!Number.isInteger(maxQueues) || maxQueues < 1 || maxQueues > 64)
      throw new HostUsageError(`netvsp: maxQueues ${maxQueues} is outside 1..64`);
    this.sendSectionSize = options.sendSectionSize ?? DEFAULT_SEND_SECTION_SIZE;
    if (!Number.isInteger(this.sendSectionSize) || this.sendSectionSize < NETVSC_MTU_MIN) {
      throw new HostUsageError(`netvsp: send section size ${this.sendSectionSize} is below ${NETVSC_MTU_MIN}`);
    }
    const linkSpeedBps = options.linkSpeedBps ?? 10e9;
    if (!Number.isSafeInteger(linkSpeedBps) || linkSpeedBps < 0)
      throw new HostUsageError(`netvsp: linkSpeedBps ${linkSpeedBps} is not a whole number of bit/s (0..2^53)`);
    const nic: NicIdentity = {
      mac: parseMac(options.mac),
      mtu,
      maxQueues,
      linkSpeedBps,
      friendlyName: options.friendlyName,
    };
    this.hostFrame = mtu + ETH_HLEN;
    this.maxFrame = this.hostFrame + VLAN_HLEN;
    this.rxVlanOffload = options.rxVlanOffload ?? true;
    this.rndis = new RndisControl(nic, { stats: this.stats, logger: options.logger, allowMacChange: options.allowMacChange });
    this.rndis.linkUp = options.linkUp ?? true;
    this.backend = options.backend;
    this.logger = options.logger ?? silentLogger;
    this.tx = new RndisTx({
      stats: this.stats,
      rndis: this.rndis,
      backend: this.backend,
      logger: this.logger,
      hostFrame: this.hostFrame,
      sendControl: (answer) => this.sendControl(answer),
    });
    this.offer = nicOffer(nic.mac, options.instanceId);
    this.backend.attach(this);
  }

  get mac(): Uint8Array {
    return this.rndis.nic.mac;
  }

  /** The negotiated NVSP version (0 before INIT). */
  get nvspVersion(): number {
    return this.session?.version ?? 0;
  }

  /** Receive-buffer sections free now (0 without a receive buffer). */
  get receiveSectionsFree(): number {
    return this.session?.recv?.available ?? 0;
  }

  /** Transfer-page packets the guest has not completed yet. */
  get receivesInFlight(): number {
    return this.inflight.size;
  }

  /** Largest untagged frame delivered to the guest now (its NDIS config's MTU or the host's, the smaller). */
  get rxFrameLimit(): number {
    return this.session?.rxFrameLimit ?? this.hostFrame;
  }

  /** Queues open now (primary and subchannels). */
  get openQueues(): number {
    return this.queues.filter((q) => q !== undefined).length;
  }

  // ---- host API (traced and replayed as host calls)

  /** The cable is plugged in: the guest sees RNDIS_STATUS_MEDIA_CONNECT. */
  connect(): void {
    this.hostCallObserver?.('connect', []);
    this.setLink(true);
  }

  /** The cable is pulled: RNDIS_STATUS_MEDIA_DISCONNECT; frames from the backend are dropped meanwhile. */
  disconnect(): void {
    this.hostCallObserver?.('disconnect', []);
    this.setLink(false);
  }

  observeHostCalls(observer: HostCallObserver): void {
    this.hostCallObserver = observer;
  }

  invokeHostCall(method: string, _args: readonly unknown[]): unknown {
    if (method === 'connect') return this.connect();
    if (method === 'disconnect') return this.disconnect();
    throw new HostUsageError(`netvsp has no host call ${method} (known: ${HOST_CALLS.join(', ')})`);
  }

  private setLink(up: boolean): void {
    if (this.rndis.linkUp === up) return;
    this.rndis.linkUp = up;
    if (this.rndis.state === 'initialized') this.sendControl(this.rndis.linkIndication());
  }

  // ---- VmbusDevice

  open(channel: DeviceChannel): void {
    const index = channel.subChannelIndex;
    if (index === 0) {
      this.session = {
        stage: 'init',
        version: 0,
        rxFrameLimit: this.hostFrame,
        rxVlanPpi: false,
        recv: null,
        send: null,
        subchannelsOffered: 0,
      };
    } else if (!this.session || index > this.session.subchannelsOffered)
      throw new HostUsageError(`netvsp: subchannel ${index} was not offered`);
    this.queues[index] = { index, channel, ringBlocked: false, again: null, batch: [], batchLengths: [] };
  }

  close(channel: DeviceChannel, reason: ChannelCloseReason): void {
    const q = this.queues[channel.subChannelIndex];
    if (q?.channel !== channel) return;
    if (q.again) clearImmediate(q.again);
    this.queues[channel.subChannelIndex] = undefined;
    if (channel.subChannelIndex === 0) {
      // The session ends with the primary: buffers and RNDIS state go, and the subchannels are
      // rescinded (as Hyper-V does), so a new session asks again and gets fresh ones from index 1.
      // After this close's own message handling: the rescind must not run inside it.
      if (this.session && this.session.subchannelsOffered > 0) queueMicrotask(() => channel.rescindSubchannels());
      this.session = null;
      this.rndis.reset();
      // A guest that unloaded VMBus (a reboot, kexec) comes back knowing only the permanent address.
      if (reason === 'disconnect') this.rndis.restorePermanentMac();
      this.pendingControl.length = 0;
      this.forgetReceives();
    }
    this.resumeBackend();
  }

  onSignal(channel: DeviceChannel): void {
    const q = this.queues[channel.subChannelIndex];
    if (q?.channel === channel) this.drain(q);
  }

  stop(): void {
    for (const q of this.queues) if (q?.again) clearImmediate(q.again);
  }

  // ---- guest to host

  /** Reads a batch of the queue's packets; comes back for more while the backend takes frames. */
  private drain(q: Queue): void {
    if (q.again) {
      clearImmediate(q.again);
      q.again = null;
    }
    if (this.tx.backendFull || this.queues[q.index] !== q) return;
    // A full backend stops the read (the rest waits in the ring; writable() comes back for it).
    const n = q.channel.queue.read((p) => {
      this.onPacket(q, p);
      return !this.tx.backendFull;
    }, READ_BATCH);
    // The guest signals only when its ring goes from empty to non-empty: come back for the rest.
    if (n === READ_BATCH && !this.tx.backendFull) q.again = setImmediate(() => this.drainLater(q));
  }

  /** drain() outside a signal: a ring the guest broke fails that channel, as a throw from onSignal would. */
  private drainLater(q: Queue): void {
    q.again = null;
    try {
      this.drain(q);
    } catch (error) {
      q.channel.fail(error);
    }
  }

  private onPacket(q: Queue, p: PacketView): void {
    if (p.type === VM_PKT_COMP) return this.onCompletion(q, p);
    if ((p.type !== VM_PKT_DATA_INBAND && p.type !== VM_PKT_DATA_USING_GPA_DIRECT) || p.payloadLength < 4) {
      this.stats.nvspErrors++;
      return;
    }
    if (p.u32(p.payloadOffset) === NVSP_MSG1_TYPE_SEND_RNDIS_PKT) return this.onRndisPacket(q, p);
    if (q.index !== 0) {
      this.stats.nvspErrors++; // subchannels carry data only
      return;
    }
    const m = parseNvspGuestMessage(p.payload().slice(0, Math.min(p.payloadLength, NVSP_MESSAGE_SIZE)));
    if (m instanceof NvspProtocolError) {
      this.stats.nvspErrors++;
      this.logger.debug(`netvsp: ${m.message}`);
      return;
    }
    this.onControl(q, m, p.transactionId);
  }

  /** The NVSP control messages of the primary channel, in the order a guest sends them. */
  private onControl(q: Queue, m: NvspGuestMessage, tid: bigint): void {
    const s = this.session!;
    if (m.msg_type === NVSP_MSG_TYPE_INIT) return this.onInit(q, m.min_protocol_ver, m.max_protocol_ver, tid);
    if (s.stage !== 'ready') {
      this.stats.nvspErrors++;
      return;
    }
    switch (m.msg_type) {
      case NVSP_MSG2_TYPE_SEND_NDIS_CONFIG:
        return this.onNdisConfig(s, m.mtu, m.capability);
      case NVSP_MSG1_TYPE_SEND_NDIS_VER:
        // No answer; a guest of NVSP 4+ hears that no VF comes with this NIC.
        if (s.version >= NVSP_PROTOCOL_VERSION_4)
          this.sendInband(q, encodeNvsp(NVSP_MSG4_TYPE_SEND_VF_ASSOCIATION, nvsp_4_send_vf_association, {}));
        return;
      case NVSP_MSG1_TYPE_SEND_RECV_BUF:
        return this.onReceiveBuffer(q, m.gpadl_handle, m.id, tid);
      case NVSP_MSG1_TYPE_SEND_SEND_BUF:
        return this.onSendBuffer(q, m.gpadl_handle, tid);
      case NVSP_MSG1_TYPE_REVOKE_RECV_BUF:
        // Linux revokes before it tears the GPADL down: frames stop reaching that buffer.
        if (m.id !== NETVSC_RECEIVE_BUFFER_ID || !s.recv) return this.refuseRevoke('receive', m.id);
        s.recv = null;
        this.forgetReceives();
        return;
      case NVSP_MSG1_TYPE_REVOKE_SEND_BUF:
        if (m.id !== NETVSC_SEND_BUFFER_ID || !s.send) return this.refuseRevoke('send', m.id);
        s.send = null;
        return;
      case NVSP_MSG5_TYPE_SUBCHANNEL:
        return this.onSubchannel(q, m.op, m.num_subchannels, tid);
      case NVSP_MSG4_TYPE_SWITCH_DATA_PATH:
        // No VF: the synthetic path stays. Completed empty when asked, as Hyper-V does.
        if (tid !== 0n) void q.channel.queue.complete(tid).catch(() => {});
        return;
      default:
        this.stats.nvspErrors++;
    }
  }

  private onInit(q: Queue, min: number, max: number, tid: bigint): void {
    const s = this.session!;
    // The newest version inside the guest's range; Linux asks for one at a time.
    const version = NVSP_PROTOCOL_VERSIONS.find((v) => v >= min && v <= max) ?? 0;
    if (version !== 0) {
      // The guest sends its NDIS config again after each INIT (netvsc_init): the old one goes.
      Object.assign(s, { stage: 'ready', version, recv: null, send: null, rxFrameLimit: this.hostFrame, rxVlanPpi: false });
      this.forgetReceives();
      this.rndis.reset();
      this.rndis.nvspVersion = version;
    }
    this.complete(
      q,
      tid,
      encodeNvsp(NVSP_MSG_TYPE_INIT_COMPLETE, nvsp_message_init_complete, {
        negotiated_protocol_ver: version === 0 ? max : version,
        // Linux does not read it; page buffers per packet the host takes (MAX_PAGE_BUFFER_COUNT).
        max_mdl_chain_len: 34,
        status: version === 0 ? NVSP_STAT_FAIL : NVSP_STAT_SUCCESS,
      }),
    );
  }

  /** A revoke naming no buffer the guest gave (another id, or none given): nothing changes. */
  private refuseRevoke(which: string, id: number): void {
    this.stats.nvspErrors++;
    this.logger.debug(`netvsp: revoke of ${which} buffer ${id} refused: no such buffer`);
  }

  /**
   * SEND_NDIS_CONFIG's mtu is the guest's MTU + ETH_HLEN (Linux netvsc_init; sent again, in a
   * new session, when the MTU changes): backend frames longer than that (+ 4 when tagged) are
   * not delivered. Linux's MTU is at least 68, so a value below 68 + 14 (0 included) is no
   * guest's: ignored (the limit stays) and counted. A value above the host's frame size (a guest
   * MTU past the OID_GEN_MAXIMUM_FRAME_SIZE it was told) is clamped to it.
   */
  private onNdisConfig(s: Session, value: number, capability: bigint): void {
    s.rxVlanPpi = this.rxVlanOffload && (capability & NDIS_CONFIG_IEEE8021Q) !== 0n;
    if (value < NETVSC_MTU_MIN + ETH_HLEN) {
      this.stats.nvspErrors++;
      this.logger.debug(`netvsp: NDIS config mtu ${value} ignored`);
      return;
    }
    s.rxFrameLimit = Math.min(value, this.hostFrame);
  }

  private onReceiveBuffer(q: Queue, gpadl: number, id: number, tid: bigint): void {
    const s = this.session!;
    const sectionSize = this.receiveSectionSize();
    const data = this.gpadlData(q, gpadl);
    const ok = data !== null && id === NETVSC_RECEIVE_BUFFER_ID && data.length >= sectionSize && s.recv === null;
    if (ok) {
      this.forgetReceives();
      s.recv = new ReceiveBuffer(gpadl, data, sectionSize);
    } else this.stats.nvspErrors++;
    const count = s.recv?.count ?? 0;
    this.complete(
      q,
      tid,
      encodeNvsp(NVSP_MSG1_TYPE_SEND_RECV_BUF_COMPLETE, nvsp_1_message_send_receive_buffer_complete, {
        status: ok ? NVSP_STAT_SUCCESS : NVSP_STAT_FAIL,
        num_sections: ok ? 1 : 0,
        offset: 0,
        sub_alloc_size: ok ? sectionSize : 0,
        num_sub_allocs: ok ? count : 0,
        end_offset: ok ? sectionSize * count : 0,
      }),
    );
  }

  /** One RNDIS data message with every PPI the host writes and the largest frame allowed. */
  private receiveSectionSize(): number {
    return Math.ceil((RNDIS_PACKET_HEADER_SIZE + 4 * NDIS_U32_PPI_SIZE + this.maxFrame) / 64) * 64;
  }

  private onSendBuffer(q: Queue, gpadl: number, tid: bigint): void {
    const s = this.session!;
    const data = this.gpadlData(q, gpadl);
    const ok = data !== null && data.length >= this.sendSectionSize && s.send === null;
    if (ok) s.send = new SendBuffer(gpadl, data, this.sendSectionSize);
    else this.stats.nvspErrors++;
    this.complete(
      q,
      tid,
      encodeNvsp(NVSP_MSG1_TYPE_SEND_SEND_BUF_COMPLETE, nvsp_1_message_send_send_buffer_complete, {
        status: ok ? NVSP_STAT_SUCCESS : NVSP_STAT_FAIL,
        section_size: ok ? this.sendSectionSize : 0,
      }),
    );
  }

  private gpadlData(q: Queue, gpadl: number): GuestData | null {
    try {
      return q.channel.gpadl(gpadl);
    } catch (error) {
      this.logger.debug(`netvsp: GPADL 0x${gpadl.toString(16)}: ${String(error)}`);
      return null;
    }
  }

  /** NVSP5 SUBCHANNEL: offers what the NIC allows (never more than asked), then the send table. */
  private onSubchannel(q: Queue, op: number, wanted: number, tid: bigint): void {
    const s = this.session!;
    const room = this.rndis.nic.maxQueues - 1 - s.subchannelsOffered;
    let granted = 0;
    let ok = s.version >= NVSP_PROTOCOL_VERSION_5 && op === NVSP_SUBCHANNEL_ALLOCATE;
    if (ok) {
      granted = Math.max(0, Math.min(wanted, room));
      ok = granted === 0 || this.offerSubchannels(q, granted);
      if (ok) s.subchannelsOffered += granted;
      else granted = 0;
    } else this.stats.nvspErrors++;
    this.complete(
      q,
      tid,
      encodeNvsp(NVSP_MSG5_TYPE_SUBCHANNEL, nvsp_5_subchannel_complete, {
        status: ok ? NVSP_STAT_SUCCESS : NVSP_STAT_FAIL,
        num_subchannels: granted,
      }),
    );
    if (ok) this.sendIndirectionTable(q, 1 + s.subchannelsOffered);
  }

  /** False when the VMBus server refuses (its subchannel limit): the guest goes on with fewer queues. */
  private offerSubchannels(q: Queue, count: number): boolean {
    try {
      q.channel.offerSubchannels(count);
      return true;
    } catch (error) {
      this.logger.warn(`netvsp: cannot offer ${count} subchannels: ${String(error)}`);
      return false;
    }
  }

  /** SEND_INDIRECTION_TABLE: which queue the guest sends each hash bucket on (round robin). */
  private sendIndirectionTable(q: Queue, queues: number): void {
    const msg = new Uint8Array(NVSP_INDIRECTION_TABLE_OFFSET + VRSS_SEND_TAB_SIZE * 4);
    msg.set(
      encodeNvsp(NVSP_MSG5_TYPE_SEND_INDIRECTION_TABLE, nvsp_5_send_indirect_table, {
        count: VRSS_SEND_TAB_SIZE,
        offset: NVSP_INDIRECTION_TABLE_OFFSET,
      }),
    );
    const dv = new DataView(msg.buffer);
    for (let i = 0; i < VRSS_SEND_TAB_SIZE; i++) dv.setUint32(NVSP_INDIRECTION_TABLE_OFFSET + i * 4, i % queues, true);
    this.sendInband(q, msg);
  }

  // ---- RNDIS messages from the guest

  /** SEND_RNDIS_PKT: the RNDIS messages in its section and/or page buffers, then its completion. */
  private onRndisPacket(q: Queue, p: PacketView): void {
    let status: number;
    try {
      status = this.rndisPacketStatus(q, p);
    } catch (error) {
      // The guest tore down the send buffer's GPADL under its own packet: refuse that packet.
      if (!(error instanceof GuestDataRevokedError)) throw error;
      this.stats.badSections++;
      status = NVSP_STAT_FAIL;
    }
    if (p.completionRequested) this.completeTx(q, p, status);
  }

  private rndisPacketStatus(q: Queue, p: PacketView): number {
    const s = this.session;
    if (!s || s.stage !== 'ready' || p.payloadLength < 4 + nvsp_1_message_send_rndis_packet.size) {
      this.stats.nvspErrors++;
      return NVSP_STAT_FAIL;
    }
    const index = p.u32(p.payloadOffset + 8);
    const size = p.u32(p.payloadOffset + 12);
    // The common case: whole messages in one section of a send buffer contiguous in host memory.
    if (index !== NETVSC_INVALID_INDEX && p.type !== VM_PKT_DATA_USING_GPA_DIRECT) {
      const start = s.send?.sectionStart(index, size) ?? -1;
      if (start >= 0) {
        return this.tx.sendFlat(s.send!.flatBytes!, start, size, q.index);
      }
    }
    let section: GuestData | null = null;
    if (index !== NETVSC_INVALID_INDEX) {
      section = s.send?.section(index, size) ?? null;
      if (!section) {
        this.stats.badSections++;
        return NVSP_STAT_FAIL;
      }
    }
    let external: GuestData | null = null;
    if (p.type === VM_PKT_DATA_USING_GPA_DIRECT) {
      try {
        external = q.channel.queue.externalData(p);
      } catch {
        this.stats.badPageBuffers++;
        return NVSP_STAT_FAIL;
      }
    }
    return this.tx.sendParts(section, external, q.index);
  }

  /** SEND_RNDIS_PKT_COMPLETE: written at once when the ring has room (no promise per packet), else queued in order. */
  private completeTx(q: Queue, p: PacketView, status: number): void {
    const c = this.txCompletion;
    c.transactionId = p.transactionIdEcho;
    c.payload = this.txComplete[status === NVSP_STAT_SUCCESS ? 0 : status === NVSP_STAT_FAIL ? 1 : 2];
    if (!q.channel.queue.trySend(c)) void q.channel.queue.send(c).catch(() => {});
  }

  private complete(q: Queue, tid: bigint, payload: Uint8Array): void {
    // A completion waits in order for ring space; a closed channel rejects it (nothing to answer).
    void q.channel.queue.complete(tid, payload).catch(() => {});
  }

  private sendInband(q: Queue, payload: Uint8Array): void {
    void q.channel.queue.send({ type: VM_PKT_DATA_INBAND, transactionId: 0, payload }).catch(() => {});
  }

  // ---- host to guest

  /** The guest completed a transfer-page packet: its sections are free again. */
  private onCompletion(q: Queue, p: PacketView): void {
    const recv = this.session?.recv;
    const id = p.transactionIdNumber;
    const packet = this.inflight.get(id);
    // Only a packet out on this queue, in this receive buffer, completes.
    if (!recv || !packet || packet.queue !== q.index) {
      this.stats.badCompletions++;
      return;
    }
    this.inflight.delete(id);
    for (const section of packet.sections) recv.release(section, q.index);
    this.flushControl();
    this.resumeBackend();
  }

  /** NetBackendSink: a frame from the network for the guest. */
  receive(frame: Uint8Array): boolean {
    const s = this.session;
    if (!s?.recv || this.rndis.state !== 'initialized' || !this.rndis.linkUp || this.rndis.packetFilter === 0) {
      this.stats.rxNotReady++;
      return true; // dropped: a guest that is not listening must not stall the backend
    }
    if (frame.length < ETH_HLEN || tooLong(frame, this.hostFrame)) {
      this.stats.rxBadSize++;
      return true;
    }
    if (tooLong(frame, s.rxFrameLimit)) {
      this.stats.rxOverMtu++;
      return true;
    }
    if (!this.passesFilter(frame)) {
      this.stats.rxFiltered++;
      return true;
    }
    const { queue, hash } = this.pickQueue(frame);
    if (queue.ringBlocked || this.pendingControl.length > 0) return this.refuse();
    const section = s.recv.allocate(queue.index);
    if (section < 0) return this.refuse();
    this.rxPpis.length = 0;
    if (hash !== null) this.rxPpis.push(NBL_HASH_VALUE, hash);
    // The tag of a guest that takes it out of band goes in a PPI, the frame without it.
    const untag = s.rxVlanPpi && hasCtag(frame);
    if (untag) this.rxPpis.push(IEEE_8021Q_INFO, ndisVlanInfo((frame[14] << 8) | frame[15]));
    const length = untag ? frame.length - VLAN_HLEN : frame.length;
    const headerLength = writeRndisPacketHeader(this.rxHeaderView, 0, length, this.rxPpis);
    const base = section * s.recv.sectionSize;
    try {
      if (untag) s.recv.writeFrameUntagged(base, this.rxHeader, headerLength, frame);
      else s.recv.writeFrame(base, this.rxHeader, headerLength, frame);
    } catch (error) {
      // The guest tore down the receive buffer's GPADL without revoking it first: no more receives.
      if (!(error instanceof GuestDataRevokedError)) throw error;
      s.recv = null;
      this.forgetReceives();
      this.stats.rxNotReady++;
      return true;
    }
    this.stats.rxFrames++;
    if (untag) this.stats.rxVlanOffloaded++;
    this.stats.rxBytes += length;
    this.addToBatch(queue, section, headerLength + length);
    return true;
  }

  /** Frames delivered in one burst (the backend's synchronous loop) leave in one packet per queue. */
  private addToBatch(q: Queue, section: number, length: number): void {
    q.batch.push(section);
    q.batchLengths.push(length);
    if (q.batch.length >= MAX_XFER_RANGES) return this.flushQueue(q);
    if (this.flushQueued) return;
    this.flushQueued = true;
    queueMicrotask(() => {
      this.flushQueued = false;
      for (const queue of this.queues) if (queue) this.flushQueue(queue);
    });
  }

  private flushQueue(q: Queue): void {
    if (q.batch.length === 0 || this.queues[q.index] !== q) return;
    const sections = q.batch.splice(0);
    this.sendSections(q, sections, q.batchLengths.splice(0));
  }

  private refuse(): boolean {
    this.stats.rxBackpressure++;
    this.rxPaused = true;
    return false;
  }

  /** NetBackendSink: the backend takes frames again. */
  writable(): void {
    if (!this.tx.backendFull) return;
    this.tx.backendFull = false;
    for (const q of this.queues) if (q && !q.again) q.again = setImmediate(() => this.drainLater(q));
  }

  /**
   * The transfer-page packet naming `sections` (one RNDIS message each) in the receive buffer,
   * under a packet id the guest's completion returns; waits (in order) for ring space if it must.
   */
  private sendSections(q: Queue, sections: number[], lengths: number[]): void {
    const recv = this.session!.recv!;
    const dv = this.xferHeaderView;
    dv.setUint16(0, NETVSC_RECEIVE_BUFFER_ID, true); // xfer_pageset_id
    dv.setUint8(2, 0); // sender_owns_set
    dv.setUint8(3, 0);
    dv.setUint32(4, sections.length, true); // range_cnt
    for (let i = 0; i < sections.length; i++) {
      dv.setUint32(8 + i * 8, lengths[i], true);
      dv.setUint32(12 + i * 8, sections[i] * recv.sectionSize, true);
    }
    const id = this.packetId();
    this.inflight.set(id, { queue: q.index, sections });
    this.xferPacket.header = this.xferHeader.subarray(0, 8 + 8 * sections.length);
    this.xferPacket.transactionId = id;
    const queue = q.channel.queue;
    if (queue.trySend(this.xferPacket)) return;
    q.ringBlocked = true;
    queue.send(this.xferPacket).then(
      () => {
        q.ringBlocked = false;
        this.resumeBackend();
      },
      () => {}, // the channel closed: its sections went with the session
    );
  }

  /** A packet id not in flight (0 is the host's unsolicited packets'; ids wrap below 2^31). */
  private packetId(): number {
    do {
      this.nextPacketId = this.nextPacketId >= 0x7fffffff ? 1 : this.nextPacketId + 1;
    } while (this.inflight.has(this.nextPacketId));
    return this.nextPacketId;
  }

  /** A new, revoked or closed receive buffer: nothing out there completes any more. */
  private forgetReceives(): void {
    this.inflight.clear();
    for (const q of this.queues) {
      if (!q) continue;
      q.batch.length = 0;
      q.batchLengths.length = 0;
    }
  }

  /** An RNDIS control answer or indication to the guest (on the primary), in order. */
  private sendControl(message: Uint8Array): void {
    if (this.pendingControl.length >= MAX_PENDING_CONTROL) {
      this.stats.controlDrops++;
      return;
    }
    this.pendingControl.push(message);
    this.flushControl();
  }

  private flushControl(): void {
    const recv = this.session?.recv;
    const q = this.queues[0];
    if (!recv || !q) return;
    while (this.pendingControl.length > 0) {
      const message = this.pendingControl[0];
      if (message.length > recv.sectionSize) {
        this.pendingControl.shift();
        this.stats.controlDrops++;
        continue;
      }
      const section = recv.allocate(0);
      if (section < 0) return;
      this.pendingControl.shift();
      try {
        recv.data.write(section * recv.sectionSize, message);
      } catch (error) {
        // The guest tore the receive buffer's GPADL down without revoking it: no more receives.
        if (!(error instanceof GuestDataRevokedError)) throw error;
        this.stats.controlDrops += 1 + this.pendingControl.length;
        this.pendingControl.length = 0;
        this.session!.recv = null;
        this.forgetReceives();
        return;
      }
      this.flushQueue(q); // frames already written for the primary go first
      this.sendSections(q, [section], [message.length]);
    }
  }

  private resumeBackend(): void {
    if (!this.rxPaused) return;
    this.rxPaused = false;
    this.backend.resume();
  }

  /** The packet filter the guest set: directed to our MAC, broadcast, multicast, or everything. */
  private passesFilter(frame: Uint8Array): boolean {
    const filter = this.rndis.packetFilter;
    if (filter & NDIS_PACKET_TYPE_PROMISCUOUS) return true;
    if (frame[0] & 1) {
      const broadcast =
        frame[0] === 0xff && frame[1] === 0xff && frame[2] === 0xff && frame[3] === 0xff && frame[4] === 0xff && frame[5] === 0xff;
      if (broadcast) return (filter & NDIS_PACKET_TYPE_BROADCAST) !== 0;
      return (filter & (NDIS_PACKET_TYPE_MULTICAST | NDIS_PACKET_TYPE_ALL_MULTICAST)) !== 0;
    }
    if (!(filter & NDIS_PACKET_TYPE_DIRECTED)) return false;
    // The permanent address too: a guest's driver reloaded (rmmod, modprobe) asks only for that
    // one, and its close looks like an MTU change's, after which Linux keeps the address it set.
    return sameMac(frame, this.rndis.nic.mac) || sameMac(frame, this.rndis.permanentMac);
  }

  /** vRSS: the queue the indirection table gives the frame's hash (the primary when RSS is off or the queue is closed). */
  private pickQueue(frame: Uint8Array): { queue: Queue; hash: number | null } {
    const primary = this.queues[0]!;
    const rss = this.rndis.rss;
    if (!rss.enabled || rss.table.length === 0) return { queue: primary, hash: null };
    const hash = rssHash(rss.key, rss.hashInfo, frame);
    if (hash === null) return { queue: primary, hash: null };
    const queue = this.queues[rss.table[hash % rss.table.length]] ?? primary;
    return { queue, hash };
  }
}

/** The frame's destination is `mac`. */
function sameMac(frame: Uint8Array, mac: Uint8Array): boolean {
  for (let i = 0; i < 6; i++) if (frame[i] !== mac[i]) return false;
  return true;
}

/** A NIC's offer: the network class, and an instance GUID derived from the MAC unless given (stable across runs). */
export function nicOffer(mac: Uint8Array, instanceId?: string): OfferSpec {
  const hex = [...mac].map((b) => b.toString(16).padStart(2, '0')).join('');
  return { interfaceType: HV_NIC_GUID, interfaceInstance: instanceId ?? `f8615163-0000-4000-8000-${hex}` };
}

function newStats(): NetvspStats {
  return {
    txFrames: 0,
    txBytes: 0,
    rxFrames: 0,
    rxBytes: 0,
    nvspErrors: 0,
    rndisErrors: 0,
    rndisControlErrors: 0,
    rndisUnsupportedOids: 0,
    badSections: 0,
    badPageBuffers: 0,
    txBadSize: 0,
    rxBadSize: 0,
    rxOverMtu: 0,
    rxVlanOffloaded: 0,
    rxNotReady: 0,
    rxFiltered: 0,
    rxBackpressure: 0,
    badCompletions: 0,
    controlDrops: 0,
    txChecksumRequests: 0,
    txLsoRequests: 0,
    txVlanTagged: 0,
  };
}
