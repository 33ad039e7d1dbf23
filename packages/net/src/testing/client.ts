/**
 * A netvsc guest in TypeScript, for tests: it does what Linux hv_netvsc does, in Linux's
 * order (netvsc_connect_vsp, netvsc_init_buf, rndis_filter_device_add, rndis_filter_open):
 * NVSP INIT newest version first, NDIS config and version, the receive buffer, the send
 * buffer, RNDIS INITIALIZE, the queries and sets, subchannels and RSS parameters, the packet
 * filter. Then frames both ways: sends in send-buffer sections or page buffers (GPA direct),
 * receives from transfer-page packets, each completed (or held, to exhaust the receive buffer).
 *
 * It polls its rings (no interrupts): `poll()` reads everything that arrived; the async calls
 * poll and yield to the event loop until their answer is there.
 */
import { HvemuError } from '@hvemu/common';
import { PAGE_SIZE, type GuestMemory } from '@hvemu/memory';
import {
  encodeGpaDirectHeader,
  type OutgoingPacket,
  VM_PKT_COMP,
  VM_PKT_DATA_INBAND,
  VM_PKT_DATA_USING_GPA_DIRECT,
  VM_PKT_DATA_USING_XFER_PAGES,
  VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED,
  type GuestChannel,
  type PacketView,
  type PageAllocator,
  type VmbusClient,
} from '@hvemu/vmbus';
import {
  encodeNvsp,
  NETVSC_INVALID_INDEX,
  NETVSC_RECEIVE_BUFFER_ID,
  NETVSC_SEND_BUFFER_ID,
  nvsp_1_message_send_ndis_version,
  nvsp_1_message_send_receive_buffer,
  nvsp_1_message_send_rndis_packet,
  nvsp_1_message_send_rndis_packet_complete,
  nvsp_1_message_send_send_buffer,
  nvsp_2_send_ndis_config,
  nvsp_5_subchannel_request,
  nvsp_message_init,
  NVSP_MSG_TYPE_INIT,
  NVSP_MSG1_TYPE_SEND_NDIS_VER,
  NVSP_MSG1_TYPE_SEND_RECV_BUF,
  NVSP_MSG1_TYPE_SEND_RNDIS_PKT,
  NVSP_MSG1_TYPE_SEND_RNDIS_PKT_COMPLETE,
  NVSP_MSG1_TYPE_SEND_SEND_BUF,
  NVSP_MSG2_TYPE_SEND_NDIS_CONFIG,
  NVSP_MSG4_TYPE_SEND_VF_ASSOCIATION,
  NVSP_MSG5_TYPE_SEND_INDIRECTION_TABLE,
  NVSP_MSG5_TYPE_SUBCHANNEL,
  NVSP_PROTOCOL_VERSION_2,
  NVSP_PROTOCOL_VERSION_5,
  NVSP_PROTOCOL_VERSIONS,
  NVSP_RNDIS_CHANNEL_CONTROL,
  NVSP_RNDIS_CHANNEL_DATA,
  NVSP_STAT_SUCCESS,
  NVSP_SUBCHANNEL_ALLOCATE,
  NvspProtocolError,
  parseNvspHostMessage,
  linuxNdisCapabilities,
  ndisVersionFor,
  type NvspHostMessage,
} from '../nvsp.js';
import {
  readU32le,
  encodeRndisMessage,
  forEachPpi,
  IEEE_8021Q_INFO,
  NBL_HASH_VALUE,
  ndis_offload,
  ndis_recv_scale_cap,
  ndis_recv_scale_param,
  NDIS_HASH_FUNC_TOEPLITZ,
  NDIS_HASH_IPV4,
  NDIS_HASH_IPV6,
  NDIS_HASH_TCP_IPV4,
  NDIS_HASH_TCP_IPV6,
  NDIS_OBJECT_TYPE_OFFLOAD,
  NDIS_OBJECT_TYPE_RSS_CAPABILITIES,
  NDIS_OBJECT_TYPE_RSS_PARAMETERS,
  NDIS_OFFLOAD_PARAMETERS_REVISION_1,
  NDIS_OFFLOAD_PARAMETERS_REVISION_2,
  NDIS_OFFLOAD_PARAMETERS_REVISION_3,
  NDIS_OFFLOAD_SIZE,
  NDIS_OFFLOAD_SIZE_6_0,
  NDIS_OFFLOAD_SIZE_6_1,
  NDIS_PACKET_TYPE_ALL_MULTICAST,
  NDIS_PACKET_TYPE_BROADCAST,
  NDIS_PACKET_TYPE_DIRECTED,
  NDIS_RECEIVE_SCALE_CAPABILITIES_REVISION_2,
  NDIS_RECEIVE_SCALE_PARAMETERS_REVISION_2,
  NDIS_RSS_PARAM_FLAG_BASE_CPU_UNCHANGED,
  ndis_offload_params,
  NDIS_OBJECT_TYPE_DEFAULT,
  NDIS_OFFLOAD_PARAMETERS_TX_RX_DISABLED,
  OID_802_3_PERMANENT_ADDRESS,
  OID_GEN_CURRENT_PACKET_FILTER,
  OID_GEN_LINK_SPEED,
  OID_GEN_MAXIMUM_FRAME_SIZE,
  OID_GEN_MEDIA_CONNECT_STATUS,
  OID_GEN_RECEIVE_SCALE_CAPABILITIES,
  OID_GEN_RECEIVE_SCALE_PARAMETERS,
  OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES,
  OID_TCP_OFFLOAD_PARAMETERS,
  parseRndisPacket,
  rndis_indicate_status,
  rndis_initialize_complete,
  rndis_initialize_request,
  rndis_query_complete,
  rndis_query_request,
  rndis_reset_complete,
  rndis_reset_request,
  rndis_set_complete,
  rndis_set_request,
  RNDIS_HEADER_SIZE,
  RNDIS_MSG_INDICATE,
  RNDIS_MSG_INIT,
  RNDIS_MSG_PACKET,
  RNDIS_MSG_QUERY,
  RNDIS_MSG_RESET,
  RNDIS_MSG_RESET_C,
  RNDIS_MSG_SET,
  RNDIS_STATUS_MEDIA_CONNECT,
  RNDIS_STATUS_MEDIA_DISCONNECT,
  RNDIS_STATUS_SUCCESS,
  RndisPacketLayout,
  writeRndisPacketHeader,
} from '../rndis.js';

/** The host answered what a netvsc guest cannot go on with (or not at all). */
export class NetvscClientError extends HvemuError {
  readonly outcome = 'host-error' as const;
}

export interface NetvscClientOptions {
  /** A connected client whose offers include the NIC. */
  vmbus: VmbusClient;
  memory: GuestMemory;
  pages: PageAllocator;
  /** The NIC's primary relid. */
  relid: number;
  /** NVSP versions to try, newest first (default: Linux's). */
  versions?: readonly number[];
  /** MTU the guest wants (NDIS config), default 1500. */
  mtu?: number;
  /** Default 256 KiB (Linux: 16 MiB). */
  recvBufferBytes?: number;
  /** Default 64 KiB (Linux: 1 MiB). */
  sendBufferBytes?: number;
  /** Queues wanted (primary + subchannels), default 1. */
  queues?: number;
  /** Ring pages each way per channel, default 16. */
  ringPages?: number;
  /** Page-buffer pages per queue for sends outside the send buffer (and control), default 20. */
  txPages?: number;
  /** How the client yields while it waits (default: setImmediate). */
  yieldTurn?: () => Promise<void>;
  /** Turns a wait may take before it gives up, default 20000. */
  maxTurns?: number;
  /**
   * Where received frames go instead of received(): each as a view of the receive buffer, valid
   * during the call only (no copy, no allocation: a guest that consumes frames in place, as a
   * benchmark's reader does).
   */
  onFrame?: (frame: Uint8Array, hash: number | null, queue: number, vlan: number | null) => void;
}

/** What the guest learned while connecting. */
export interface NetvscInfo {
  version: number;
  mac: Uint8Array;
  /** OID_GEN_MAXIMUM_FRAME_SIZE. */
  mtu: number;
  linkUp: boolean;
  linkSpeed: number;
  recvSectionSize: number;
  recvSections: number;
  sendSectionSize: number;
  sendSections: number;
  maxPktPerMsg: number;
  pktAlignment: number;
  queues: number;
  hwcapsRevision: number;
  rssQueues: number;
}

/** A frame the guest received, with its hash PPI and its IEEE_8021Q_INFO PPI (the tag the host took out) if any. */
export interface ReceivedFrame {
  frame: Uint8Array;
  hash: number | null;
  vlan: number | null;
}

export interface SendOptions {
  /** Queue (subchannel index), default 0. */
  queue?: number;
  /** 'section' (copy into the send buffer, as Linux does for small frames) or 'pages' (GPA direct). Default: section if it fits. */
  via?: 'section' | 'pages';
  /** PPIs to add: [type, value, ...]. */
  ppis?: readonly number[];
}

interface GuestQueue {
  readonly index: number;
  readonly channel: GuestChannel;
  /** Page-buffer pages for this queue's GPA-direct sends (one in flight per page set). */
  readonly txPfns: number[];
  txBusy: number | null;
  readonly received: ReceivedFrame[];
  /** Transfer-page packets not completed yet (held, or the ring was full). */
  readonly toComplete: number[];
}

const NO_ID = 0;
const NO_PPIS: readonly number[] = [];
/** Transaction IDs from here on name a send-buffer section; the others (requests, page-buffer sends) stay below. */
const SECTION_TID = 0x4000_0000;

export class NetvscClient {
  info!: NetvscInfo;
  /** Every RNDIS status indication seen (media connect/disconnect, ...). */
  readonly indications: number[] = [];
  /** The send indirection table the host sent, and VF associations. */
  sendTable: number[] = [];
  vfAssociations = 0;
  /** Hold transfer-page completions (the guest stops returning receive sections). */
  holdCompletions = false;
  /** Malformed host packets seen. */
  hostErrors = 0;
  /** The GPADL handles of the receive and send buffers (hostile tests tear them down). */
  recvGpadl = 0;
  sendGpadl = 0;
  private readonly queues: GuestQueue[] = [];
  private readonly completions = new Map<number, NvspHostMessage | null>();
  private readonly rndisAnswers = new Map<number, Uint8Array>();
  /** RESET_C messages not taken yet: they carry no request id. */
  private readonly resetAnswers: Uint8Array[] = [];
  private nextTid = 1;
  private nextReqId = 1;
  private recvGpa = 0;
  private recvBytes = 0;
  private sendGpa = 0;
  /** The send buffer as one view when it is contiguous in host memory (the data path writes it directly). */
  private sendView: Uint8Array | null = null;
  private freeSections: number[] = [];
  /**
   * Sends through a section carry the transaction ID SECTION_TID + section (a section is out
   * once at a time, as Linux's send_buf_index): the completion names its section without a
   * lookup table. sectionOut marks the sections out, so a completion for a free one is refused.
   */
  private sectionOut = new Uint8Array(0);
  private readonly layout = new RndisPacketLayout();
  // Reused on the data path: the ring copies each packet as it is written.
  private readonly header = new Uint8Array(RNDIS_HEADER_SIZE + 36 + 8 * 16);
  private readonly headerView = new DataView(this.header.buffer);
  /** The RNDIS_MSG_PACKET header without PPIs, as a view made once (it is on the per-frame path). */
  private readonly plainHeader = this.header.subarray(0, RNDIS_HEADER_SIZE + 36);
  /** The hash PPI of the frame being received (onRxPpi is made once: no closure per frame). */
  private rxHash: number | null = null;
  private rxVlan: number | null = null;
  private rxPpiArea: Uint8Array = new Uint8Array(0);
  private readonly onRxPpi = (type: number, internal: boolean, at: number): void => {
    if (internal) return;
    if (type === NBL_HASH_VALUE) this.rxHash = readU32le(this.rxPpiArea, at);
    else if (type === IEEE_8021Q_INFO) this.rxVlan = readU32le(this.rxPpiArea, at);
  };
  private readonly sectionPayload = encodeNvsp(NVSP_MSG1_TYPE_SEND_RNDIS_PKT, nvsp_1_message_send_rndis_packet, {
    channel_type: NVSP_RNDIS_CHANNEL_DATA,
  });
  private readonly sectionPayloadView = new DataView(this.sectionPayload.buffer);
  private readonly sectionPacket: OutgoingPacket = {
    type: VM_PKT_DATA_INBAND,
    flags: VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED,
    transactionId: 0,
    payload: this.sectionPayload,
  };
  private readonly completionPacket: OutgoingPacket = { type: VM_PKT_COMP, transactionId: 0, payload: RX_COMPLETE };
  private readonly opts: Required<Omit<NetvscClientOptions, 'vmbus' | 'memory' | 'pages' | 'relid' | 'versions' | 'onFrame'>> &
    NetvscClientOptions;

  constructor(options: NetvscClientOptions) {
    this.opts = {
      mtu: 1500,
      recvBufferBytes: 256 << 10,
      sendBufferBytes: 64 << 10,
      queues: 1,
      ringPages: 16,
      txPages: 20,
      yieldTurn: () => new Promise((r) => setImmediate(r)),
      maxTurns: 20000,
      ...options,
    };
  }

  /** Frames received on `queue`, in order (the array is the client's; take them with splice). */
  received(queue = 0): ReceivedFrame[] {
    return this.queues[queue].received;
  }

  get queueCount(): number {
    return this.queues.length;
  }

  // ---- bring-up

  async connect(): Promise<NetvscInfo> {
    const primary = await this.openQueue(this.opts.relid, 0);
    const version = await this.negotiate(primary);
    const info = { version } as NetvscInfo;
    if (version >= NVSP_PROTOCOL_VERSION_2) {
      this.sendNvsp(
        primary,
        encodeNvsp(NVSP_MSG2_TYPE_SEND_NDIS_CONFIG, nvsp_2_send_ndis_config, {
          mtu: this.opts.mtu + 14,
          capability: linuxNdisCapabilities(version),
        }),
      );
    }
    const ndis = ndisVersionFor(version);
    this.sendNvsp(
      primary,
      encodeNvsp(NVSP_MSG1_TYPE_SEND_NDIS_VER, nvsp_1_message_send_ndis_version, {
        ndis_major_ver: ndis.major,
        ndis_minor_ver: ndis.minor,
      }),
    );
    await this.receiveBuffer(primary, info);
    await this.sendBuffer(primary, info);
    this.info = info;
    await this.rndisInit(info);
    await this.queries(info);
    if (version >= NVSP_PROTOCOL_VERSION_5 && this.opts.queues > 1 && info.rssQueues >= 2) await this.subchannels(primary, info);
    info.queues = this.queues.length;
    await this.setPacketFilter(NDIS_PACKET_TYPE_DIRECTED | NDIS_PACKET_TYPE_ALL_MULTICAST | NDIS_PACKET_TYPE_BROADCAST);
    return info;
  }

  private async openQueue(relid: number, index: number): Promise<GuestQueue> {
    const channel = await this.opts.vmbus.openChannel(relid, { sendPages: this.opts.ringPages, recvPages: this.opts.ringPages });
    const q: GuestQueue = {
      index,
      channel,
      txPfns: this.opts.pages.allocate(this.opts.txPages),
      txBusy: null,
      received: [],
      toComplete: [],
    };
    this.queues[index] = q;
    return q;
  }

  private async negotiate(primary: GuestQueue): Promise<number> {
    for (const v of this.opts.versions ?? NVSP_PROTOCOL_VERSIONS) {
      const m = await this.request(
        primary,
        encodeNvsp(NVSP_MSG_TYPE_INIT, nvsp_message_init, { min_protocol_ver: v, max_protocol_ver: v }),
      );
      if (m?.msg_type === 2 && m.status === NVSP_STAT_SUCCESS) return v;
    }
    throw new NetvscClientError('the host accepted no NVSP version');
  }

  private async receiveBuffer(primary: GuestQueue, info: NetvscInfo): Promise<void> {
    const pages = Math.ceil(this.opts.recvBufferBytes / PAGE_SIZE);
    const pfns = this.opts.pages.allocate(pages);
    this.recvGpa = pfns[0] * PAGE_SIZE;
    this.recvBytes = pages * PAGE_SIZE;
    const gpadl = await this.opts.vmbus.createGpadl(primary.channel.relid, pfns);
    this.recvGpadl = gpadl;
    const m = await this.request(
      primary,
      encodeNvsp(NVSP_MSG1_TYPE_SEND_RECV_BUF, nvsp_1_message_send_receive_buffer, { gpadl_handle: gpadl, id: NETVSC_RECEIVE_BUFFER_ID }),
    );
    // Linux's checks (netvsc_init_buf): one section at offset 0 that fits the buffer.
    if (m?.msg_type !== 102 || m.status !== NVSP_STAT_SUCCESS || m.num_sections !== 1 || m.offset !== 0) {
      throw new NetvscClientError(`receive buffer refused: ${JSON.stringify(m)}`);
    }
    if (m.sub_alloc_size < 68 || m.sub_alloc_size * m.num_sub_allocs > this.recvBytes) throw new NetvscClientError('bad receive sections');
    info.recvSectionSize = m.sub_alloc_size;
    info.recvSections = m.num_sub_allocs;
  }

  private async sendBuffer(primary: GuestQueue, info: NetvscInfo): Promise<void> {
    const pages = Math.ceil(this.opts.sendBufferBytes / PAGE_SIZE);
    const pfns = this.opts.pages.allocate(pages);
    this.sendGpa = pfns[0] * PAGE_SIZE;
    try {
      this.sendView = this.opts.memory.bytes(this.sendGpa, pages * PAGE_SIZE);
    } catch {
      this.sendView = null; // across RAM regions: written through GuestMemory
    }
    const gpadl = await this.opts.vmbus.createGpadl(primary.channel.relid, pfns);
    this.sendGpadl = gpadl;
    const m = await this.request(
      primary,
      encodeNvsp(NVSP_MSG1_TYPE_SEND_SEND_BUF, nvsp_1_message_send_send_buffer, { gpadl_handle: gpadl, id: NETVSC_SEND_BUFFER_ID }),
    );
    if (m?.msg_type !== 105 || m.status !== NVSP_STAT_SUCCESS || m.section_size < 68) throw new NetvscClientError('send buffer refused');
    info.sendSectionSize = m.section_size;
    info.sendSections = Math.floor((pages * PAGE_SIZE) / m.section_size);
    this.freeSections = Array.from({ length: info.sendSections }, (_, i) => info.sendSections - 1 - i);
    this.sectionOut = new Uint8Array(info.sendSections);
  }

  private async rndisInit(info: NetvscInfo): Promise<void> {
    const reqId = this.nextReqId++;
    const answer = await this.rndisRequest(
      encodeRndisMessage(RNDIS_MSG_INIT, rndis_initialize_request, { req_id: reqId, major_ver: 1, minor_ver: 0, max_xfer_size: 0x4000 }),
      reqId,
    );
    const c = rndis_initialize_complete.decode(answer, RNDIS_HEADER_SIZE);
    if (c.status !== RNDIS_STATUS_SUCCESS) throw new NetvscClientError(`RNDIS INITIALIZE failed: 0x${c.status.toString(16)}`);
    info.maxPktPerMsg = c.max_pkt_per_msg;
    info.pktAlignment = 1 << c.pkt_alignment_factor;
  }

  /** rndis_filter_device_add's queries and sets, in its order. */
  private async queries(info: NetvscInfo): Promise<void> {
    const mtu = await this.query(OID_GEN_MAXIMUM_FRAME_SIZE);
    info.mtu = mtu.status === RNDIS_STATUS_SUCCESS && mtu.data.length === 4 ? readU32le(mtu.data, 0) : this.opts.mtu;
    const mac = await this.query(OID_802_3_PERMANENT_ADDRESS);
    if (mac.status !== RNDIS_STATUS_SUCCESS || mac.data.length !== 6) throw new NetvscClientError('no MAC address');
    info.mac = mac.data;
    const [rev, size] =
      info.version >= NVSP_PROTOCOL_VERSION_5
        ? [NDIS_OFFLOAD_PARAMETERS_REVISION_3, NDIS_OFFLOAD_SIZE]
        : info.version >= 0x40000
          ? [NDIS_OFFLOAD_PARAMETERS_REVISION_2, NDIS_OFFLOAD_SIZE_6_1]
          : [NDIS_OFFLOAD_PARAMETERS_REVISION_1, NDIS_OFFLOAD_SIZE_6_0];
    const caps = await this.query(
      OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES,
      ndis_offload.encodeNew({ hdr_type: NDIS_OBJECT_TYPE_OFFLOAD, hdr_rev: rev, hdr_size: size }).subarray(0, size),
    );
    if (caps.status !== RNDIS_STATUS_SUCCESS || caps.data.length < NDIS_OFFLOAD_SIZE_6_0 || caps.data[0] !== NDIS_OBJECT_TYPE_OFFLOAD) {
      throw new NetvscClientError('bad offload capabilities');
    }
    info.hwcapsRevision = caps.data[1];
    // Linux turns IPv4 header checksum offload off and, with no capability offered, nothing on.
    const params = ndis_offload_params.encodeNew({
      hdr_type: NDIS_OBJECT_TYPE_DEFAULT,
      hdr_rev: 3,
      hdr_size: 28,
      ip_v4_csum: NDIS_OFFLOAD_PARAMETERS_TX_RX_DISABLED,
    });
    await this.set(OID_TCP_OFFLOAD_PARAMETERS, info.version <= 0x40000 ? params.subarray(0, 22) : params);
    const link = await this.query(OID_GEN_MEDIA_CONNECT_STATUS);
    info.linkUp = link.status === RNDIS_STATUS_SUCCESS && readU32le(link.data, 0) === 0;
    info.rssQueues = 1;
    if (info.version < NVSP_PROTOCOL_VERSION_5) return;
    const speed = await this.query(OID_GEN_LINK_SPEED);
    info.linkSpeed = speed.status === RNDIS_STATUS_SUCCESS ? readU32le(speed.data, 0) : 0;
    const rss = await this.query(
      OID_GEN_RECEIVE_SCALE_CAPABILITIES,
      ndis_recv_scale_cap.encodeNew({
        hdr_type: NDIS_OBJECT_TYPE_RSS_CAPABILITIES,
        hdr_rev: NDIS_RECEIVE_SCALE_CAPABILITIES_REVISION_2,
        hdr_size: 18,
      }),
    );
    if (rss.status === RNDIS_STATUS_SUCCESS && rss.data.length >= ndis_recv_scale_cap.size)
      info.rssQueues = ndis_recv_scale_cap.decode(rss.data).num_recv_que;
  }

  /** NVSP5 SUBCHANNEL, open what the host offered, then the RSS parameters (rndis_set_subchannel). */
  private async subchannels(primary: GuestQueue, info: NetvscInfo): Promise<void> {
    const wanted = Math.min(this.opts.queues, info.rssQueues) - 1;
    const m = await this.request(
      primary,
      encodeNvsp(NVSP_MSG5_TYPE_SUBCHANNEL, nvsp_5_subchannel_request, { op: NVSP_SUBCHANNEL_ALLOCATE, num_subchannels: wanted }),
    );
    if (m?.msg_type !== NVSP_MSG5_TYPE_SUBCHANNEL || m.status !== NVSP_STAT_SUCCESS || m.num_subchannels > wanted) {
      throw new NetvscClientError('subchannel request refused');
    }
    const instance = primary.channel.offer.if_instance;
    for (let index = 1; index <= m.num_subchannels; index++) {
      const offer = await this.until(() =>
        [...this.opts.vmbus.offers.values()].find((o) => o.if_instance === instance && o.sub_channel_index === index && !o.rescinded),
      );
      await this.openQueue(offer.child_relid, index);
    }
    await this.setRss(1 + m.num_subchannels, DEFAULT_RSS_KEY);
  }

  /** OID_GEN_RECEIVE_SCALE_PARAMETERS as Linux sets it: Toeplitz, IPv4/IPv6 with TCP, 128 entries round robin. */
  async setRss(queues: number, key: Uint8Array, entries = 128): Promise<number> {
    const tableAt = ndis_recv_scale_param.size;
    const keyAt = tableAt + entries * 4;
    const info = new Uint8Array(keyAt + key.length);
    ndis_recv_scale_param.encode(
      {
        hdr_type: NDIS_OBJECT_TYPE_RSS_PARAMETERS,
        hdr_rev: NDIS_RECEIVE_SCALE_PARAMETERS_REVISION_2,
        hdr_size: ndis_recv_scale_param.size,
        flag: NDIS_RSS_PARAM_FLAG_BASE_CPU_UNCHANGED,
        hashinfo: NDIS_HASH_FUNC_TOEPLITZ | NDIS_HASH_IPV4 | NDIS_HASH_TCP_IPV4 | NDIS_HASH_IPV6 | NDIS_HASH_TCP_IPV6,
        indirect_tabsize: entries * 4,
        indirect_taboffset: tableAt,
        hashkey_size: key.length,
        hashkey_offset: keyAt,
      },
      info,
    );
    const dv = new DataView(info.buffer);
    for (let i = 0; i < entries; i++) dv.setUint32(tableAt + i * 4, i % queues, true);
    info.set(key, keyAt);
    return this.set(OID_GEN_RECEIVE_SCALE_PARAMETERS, info);
  }

  async setPacketFilter(filter: number): Promise<number> {
    const v = new Uint8Array(4);
    new DataView(v.buffer).setUint32(0, filter, true);
    return this.set(OID_GEN_CURRENT_PACKET_FILTER, v);
  }

  // ---- RNDIS requests

  async query(oid: number, inBuffer: Uint8Array = new Uint8Array(0)): Promise<{ status: number; data: Uint8Array }> {
    const reqId = this.nextReqId++;
    const msg = encodeRndisMessage(
      RNDIS_MSG_QUERY,
      rndis_query_request,
      { req_id: reqId, oid, info_buflen: inBuffer.length, info_buf_offset: rndis_query_request.size, dev_vc_handle: 0 },
      inBuffer,
    );
    const answer = await this.rndisRequest(msg, reqId);
    const c = rndis_query_complete.decode(answer, RNDIS_HEADER_SIZE);
    // Linux's checks (rndis_filter_query_device): the buffer lies inside the message.
    const bodyLen = answer.length - RNDIS_HEADER_SIZE;
    if (c.info_buf_offset < rndis_query_complete.size || c.info_buf_offset > bodyLen || c.info_buflen > bodyLen - c.info_buf_offset) {
      throw new NetvscClientError('QUERY_C with its buffer outside the message');
    }
    const at = RNDIS_HEADER_SIZE + c.info_buf_offset;
    return { status: c.status, data: answer.slice(at, at + c.info_buflen) };
  }

  async set(oid: number, value: Uint8Array): Promise<number> {
    const reqId = this.nextReqId++;
    const msg = encodeRndisMessage(
      RNDIS_MSG_SET,
      rndis_set_request,
      { req_id: reqId, oid, info_buflen: value.length, info_buf_offset: rndis_set_request.size, dev_vc_handle: 0 },
      value,
    );
    const answer = await this.rndisRequest(msg, reqId);
    return rndis_set_complete.decode(answer, RNDIS_HEADER_SIZE).status;
  }

  /** Sends a control message (page buffers, control channel) and waits for the completion naming `reqId`. */
  async rndisRequest(message: Uint8Array, reqId: number): Promise<Uint8Array> {
    await this.until(() => this.sendViaPages(this.queues[0], message, NVSP_RNDIS_CHANNEL_CONTROL));
    return this.rndisAnswer(reqId);
  }

  /** Waits for (and takes) the control completion naming `reqId`: a request sent with sendRaw, say. */
  async rndisAnswer(reqId: number): Promise<Uint8Array> {
    return this.until(() => this.takeAnswer(reqId));
  }

  /**
   * RNDIS RESET (control channel); resolves with the first RESET_C that arrives (RESET has no
   * request id): its status and addressing_reset (1: set the packet filter and multicast list again).
   */
  async rndisReset(): Promise<{ status: number; addressingReset: number }> {
    const message = encodeRndisMessage(RNDIS_MSG_RESET, rndis_reset_request, { reserved: 0 });
    await this.until(() => this.sendViaPages(this.queues[0], message, NVSP_RNDIS_CHANNEL_CONTROL));
    const answer = await this.until(() => this.resetAnswers.shift());
    const c = rndis_reset_complete.decode(answer, RNDIS_HEADER_SIZE);
    return { status: c.status, addressingReset: c.addressing_reset };
  }

  private takeAnswer(reqId: number): Uint8Array | undefined {
    const a = this.rndisAnswers.get(reqId);
    if (a) this.rndisAnswers.delete(reqId);
    return a;
  }

  /** Sends a raw RNDIS message through page buffers (hostile tests give malformed ones); resolves with the NVSP status. */
  async sendRaw(message: Uint8Array, queue = 0, channelType = NVSP_RNDIS_CHANNEL_DATA): Promise<number> {
    const q = this.queues[queue];
    await this.until(() => this.sendViaPages(q, message, channelType));
    const tid = q.txBusy!;
    const m = await this.until(() => (this.completions.has(tid) ? { m: this.completions.get(tid) } : undefined)).then((r) => r.m);
    this.completions.delete(tid);
    return m?.msg_type === NVSP_MSG1_TYPE_SEND_RNDIS_PKT_COMPLETE ? m.status : -1;
  }

  // ---- frames

  /**
   * Sends one Ethernet frame as an RNDIS data message. False when it cannot go now (no free
   * send section or page set, or the ring is full): poll and try again.
   */
  send(frame: Uint8Array, options: SendOptions = {}): boolean {
    const q = this.queues[options.queue ?? 0];
    const ppis = options.ppis ?? NO_PPIS;
    const headerLength = RNDIS_HEADER_SIZE + 36 + (ppis.length / 2) * 16;
    const via = options.via ?? (headerLength + frame.length <= this.info.sendSectionSize ? 'section' : 'pages');
    if (via === 'section') return this.sendFrameInSection(q, frame, ppis, headerLength);
    const message = new Uint8Array(headerLength + frame.length);
    writeRndisPacketHeader(new DataView(message.buffer), 0, frame.length, ppis);
    message.set(frame, headerLength);
    return this.sendViaPages(q, message, NVSP_RNDIS_CHANNEL_DATA);
  }

  /**
   * Sends made inside `fn` on `queue` are published together and signal the host at most once
   * (what a guest under load gets from the ring protocol: the host is not draining yet).
   */
  batch<T>(fn: () => T, queue = 0): T {
    return this.queues[queue].channel.rings.outbound.batch(fn);
  }

  /** The frame's RNDIS header and the frame written straight into a free section (no staging copy). */
  private sendFrameInSection(q: GuestQueue, frame: Uint8Array, ppis: readonly number[], headerLength: number): boolean {
    if (headerLength + frame.length > this.info.sendSectionSize) return false;
    const section = this.freeSections.pop();
    if (section === undefined) return false;
    const at = this.sendGpa + section * this.info.sendSectionSize;
    writeRndisPacketHeader(this.headerView, 0, frame.length, ppis);
    this.opts.memory.write(at, this.header.subarray(0, headerLength));
    this.opts.memory.write(at + headerLength, frame);
    if (!this.postSection(q, section, headerLength + frame.length)) {
      this.freeSections.push(section);
      return false;
    }
    return true;
  }

  /** A transaction ID for a request or a page-buffer send: below SECTION_TID, wrapping back to 1. */
  private takeTid(): number {
    const tid = this.nextTid;
    this.nextTid = tid + 1 === SECTION_TID ? 1 : tid + 1;
    return tid;
  }

  /** SEND_RNDIS_PKT naming `length` bytes of `section` (one reused payload: the ring copies it). */
  private postSection(q: GuestQueue, section: number, length: number): boolean {
    const dv = this.sectionPayloadView;
    dv.setUint32(8, section, true);
    dv.setUint32(12, length, true);
    this.sectionPacket.transactionId = SECTION_TID + section;
    if (!q.channel.rings.outbound.write(this.sectionPacket)) return false;
    this.sectionOut[section] = 1;
    return true;
  }

  /**
   * Several frames as RNDIS messages batched in one send-buffer section, each but the last
   * padded to the RNDIS alignment with msg_len covering the padding (netvsc_copy_to_send_buf
   * under xmit_more): one SEND_RNDIS_PKT and one completion for all of them. False when they do
   * not fit one section, there are more than max_pkt_per_msg, or no section or ring space is free.
   */
  sendBatch(frames: readonly Uint8Array[], queue = 0): boolean {
    const align = this.info.pktAlignment;
    const headerLength = RNDIS_HEADER_SIZE + 36;
    let total = 0;
    for (let i = 0; i < frames.length; i++) {
      const length = headerLength + frames[i].length;
      total += i === frames.length - 1 ? length : Math.ceil(length / align) * align;
    }
    if (frames.length === 0 || frames.length > this.info.maxPktPerMsg || total > this.info.sendSectionSize) return false;
    const section = this.freeSections.pop();
    if (section === undefined) return false;
    const view = this.sendView;
    let at = (view ? 0 : this.sendGpa) + section * this.info.sendSectionSize;
    for (let i = 0; i < frames.length; i++) {
      const frame = frames[i];
      const length = headerLength + frame.length;
      const padded = i === frames.length - 1 ? length : Math.ceil(length / align) * align;
      writeRndisPacketHeader(this.headerView, 0, frame.length, NO_PPIS);
      this.headerView.setUint32(4, padded, true);
      if (view) {
        view.set(this.plainHeader, at);
        view.set(frame, at + headerLength);
      } else {
        this.opts.memory.write(at, this.plainHeader);
        this.opts.memory.write(at + headerLength, frame);
      }
      at += padded;
    }
    if (!this.postSection(this.queues[queue], section, total)) {
      this.freeSections.push(section);
      return false;
    }
    return true;
  }

  /**
   * Linux's cp_partial send (netvsc_send when a packet does not fit the batch's section):
   * `first` whole in a send section (padded to the RNDIS alignment), then `second`'s RNDIS
   * header in the same section and its frame in page buffers, all named by one SEND_RNDIS_PKT.
   */
  sendPartial(first: Uint8Array, second: Uint8Array, queue = 0): boolean {
    const q = this.queues[queue];
    const headerLength = RNDIS_HEADER_SIZE + 36;
    const firstLength = Math.ceil((headerLength + first.length) / this.info.pktAlignment) * this.info.pktAlignment;
    const sectionLength = firstLength + headerLength;
    if (q.txBusy !== null || sectionLength > this.info.sendSectionSize || second.length > q.txPfns.length * PAGE_SIZE) return false;
    const section = this.freeSections.pop();
    if (section === undefined) return false;
    const at = this.sendGpa + section * this.info.sendSectionSize;
    writeRndisPacketHeader(this.headerView, 0, first.length, NO_PPIS);
    this.headerView.setUint32(4, firstLength, true);
    this.opts.memory.write(at, this.header.subarray(0, headerLength));
    this.opts.memory.write(at + headerLength, first);
    writeRndisPacketHeader(this.headerView, 0, second.length, NO_PPIS);
    this.opts.memory.write(at + firstLength, this.header.subarray(0, headerLength));
    const tid = SECTION_TID + section;
    const ok = this.postPageBuffers(q, tid, this.writePageBuffers(q, second), NVSP_RNDIS_CHANNEL_DATA, section, sectionLength);
    if (!ok) {
      this.freeSections.push(section);
      return false;
    }
    this.sectionOut[section] = 1;
    q.txBusy = tid;
    return true;
  }

  private sendViaSection(q: GuestQueue, message: Uint8Array): boolean {
    if (message.length > this.info.sendSectionSize) return false;
    const section = this.freeSections.pop();
    if (section === undefined) return false;
    this.opts.memory.write(this.sendGpa + section * this.info.sendSectionSize, message);
    if (!this.postSection(q, section, message.length)) {
      this.freeSections.push(section);
      return false;
    }
    return true;
  }

  /** The message in this queue's page-buffer pages, described one PFN per range as Linux's page buffers are. */
  private sendViaPages(q: GuestQueue, message: Uint8Array, channelType: number): boolean {
    if (q.txBusy !== null || message.length > q.txPfns.length * PAGE_SIZE) return false;
    const tid = this.takeTid();
    const ok = this.postPageBuffers(q, tid, this.writePageBuffers(q, message), channelType, NETVSC_INVALID_INDEX, 0);
    if (ok) q.txBusy = tid;
    return ok;
  }

  /** `bytes` into this queue's page-buffer pages, one PFN per range as Linux's page buffers are. */
  private writePageBuffers(q: GuestQueue, bytes: Uint8Array): { byteCount: number; byteOffset: number; pfns: number[] }[] {
    const ranges: { byteCount: number; byteOffset: number; pfns: number[] }[] = [];
    for (let at = 0, page = 0; at < bytes.length; page++) {
      const n = Math.min(PAGE_SIZE, bytes.length - at);
      this.opts.memory.write(q.txPfns[page] * PAGE_SIZE, bytes.subarray(at, at + n));
      ranges.push({ byteCount: n, byteOffset: 0, pfns: [q.txPfns[page]] });
      at += n;
    }
    return ranges;
  }

  /** NVSP SEND_RNDIS_PKT as a GPA-direct packet naming `ranges` (and a send section, or NETVSC_INVALID_INDEX). */
  private postPageBuffers(
    q: GuestQueue,
    tid: number,
    ranges: { byteCount: number; byteOffset: number; pfns: number[] }[],
    channelType: number,
    section: number,
    sectionSize: number,
  ): boolean {
    return q.channel.rings.outbound.write({
      type: VM_PKT_DATA_USING_GPA_DIRECT,
      flags: VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED,
      transactionId: tid,
      header: encodeGpaDirectHeader(ranges),
      payload: encodeNvsp(NVSP_MSG1_TYPE_SEND_RNDIS_PKT, nvsp_1_message_send_rndis_packet, {
        channel_type: channelType,
        send_buf_section_index: section,
        send_buf_section_size: sectionSize,
      }),
    });
  }

  /** Completes transfer-page packets held while holdCompletions was set. */
  releaseHeld(): void {
    for (const q of this.queues) this.flushCompletions(q);
  }

  // ---- receiving

  /** Reads what arrived on every queue; completes transfer-page packets unless held. */
  poll(): void {
    this.opts.vmbus.pump();
    for (const q of this.queues) {
      if (!q) continue;
      q.channel.rings.inbound.drain((p) => this.onPacket(q, p));
      if (!this.holdCompletions) this.flushCompletions(q);
    }
  }

  /** Polls and yields until `get` returns something (or the turns run out). */
  async until<T>(get: () => T | undefined | null | false): Promise<T> {
    for (let turn = 0; turn < this.opts.maxTurns; turn++) {
      this.poll();
      const v = get();
      if (v !== undefined && v !== null && v !== false) return v;
      await this.opts.yieldTurn();
    }
    throw new NetvscClientError('the host did not answer');
  }

  private onPacket(q: GuestQueue, p: PacketView): void {
    if (p.type === VM_PKT_COMP) return this.onCompletion(q, p);
    if (p.type === VM_PKT_DATA_USING_XFER_PAGES) return this.onTransfer(q, p);
    if (p.type === VM_PKT_DATA_INBAND) return this.onInband(p);
    this.hostErrors++;
  }

  private onCompletion(q: GuestQueue, p: PacketView): void {
    const tid = p.transactionIdNumber;
    if (q.txBusy === tid) q.txBusy = null;
    const section = tid - SECTION_TID;
    if (section >= 0 && section < this.sectionOut.length && this.sectionOut[section] === 1) {
      // A data send's completion: its section is free again (the status is not looked at, as Linux).
      this.sectionOut[section] = 0;
      this.freeSections.push(section);
      return;
    }
    const m = p.payloadLength > 0 ? parseNvspHostMessage(p.payload().slice()) : null;
    if (m instanceof NvspProtocolError) {
      this.hostErrors++;
      return;
    }
    this.completions.set(tid, m);
  }

  private onInband(p: PacketView): void {
    const bytes = p.payload().slice();
    const m = parseNvspHostMessage(bytes);
    if (m instanceof NvspProtocolError) return void this.hostErrors++;
    if (m.msg_type === NVSP_MSG4_TYPE_SEND_VF_ASSOCIATION) this.vfAssociations++;
    else if (m.msg_type === NVSP_MSG5_TYPE_SEND_INDIRECTION_TABLE) {
      if (m.count * 4 + m.offset > bytes.length) return void this.hostErrors++;
      this.sendTable = Array.from({ length: m.count }, (_, i) => readU32le(bytes, m.offset + i * 4));
    } else this.hostErrors++;
  }

  /** Linux netvsc_receive: each range one RNDIS message in the receive buffer. */
  private onTransfer(q: GuestQueue, p: PacketView): void {
    if (p.u16(16) !== NETVSC_RECEIVE_BUFFER_ID || p.u32(p.payloadOffset) !== NVSP_MSG1_TYPE_SEND_RNDIS_PKT) this.hostErrors++;
    const count = p.u32(20);
    for (let i = 0; i < count; i++) {
      const byteCount = p.u32(24 + i * 8);
      const byteOffset = p.u32(28 + i * 8);
      if (byteOffset > this.recvBytes || byteCount > this.recvBytes - byteOffset || byteCount > this.info.recvSectionSize) {
        this.hostErrors++;
        continue;
      }
      // A view of the section: the frame is copied out once, where it is kept.
      this.onRndisMessage(q, this.opts.memory.bytes(this.recvGpa + byteOffset, byteCount));
    }
    q.toComplete.push(p.transactionIdNumber);
  }

  private onRndisMessage(q: GuestQueue, msg: Uint8Array): void {
    if (msg.length < RNDIS_HEADER_SIZE || readU32le(msg, 4) > msg.length) return void this.hostErrors++;
    const type = readU32le(msg, 0);
    const msgLen = readU32le(msg, 4);
    if (type === RNDIS_MSG_PACKET) return this.onDataMessage(q, msg, msgLen);
    if (type === RNDIS_MSG_INDICATE) {
      const s = rndis_indicate_status.decode(msg, RNDIS_HEADER_SIZE);
      this.indications.push(s.status);
      if (s.status === RNDIS_STATUS_MEDIA_CONNECT) this.info.linkUp = true;
      if (s.status === RNDIS_STATUS_MEDIA_DISCONNECT) this.info.linkUp = false;
      return;
    }
    if (type === RNDIS_MSG_RESET_C) this.resetAnswers.push(msg.slice(0, msgLen));
    else if (type & 0x80000000) this.rndisAnswers.set(readU32le(msg, 8), msg.slice(0, msgLen));
    else this.hostErrors++;
  }

  private onDataMessage(q: GuestQueue, msg: Uint8Array, msgLen: number): void {
    if (parseRndisPacket(msg, msgLen, this.layout) !== null) return void this.hostErrors++;
    const { dataOffset, dataLength, ppiOffset, ppiLength } = this.layout;
    let hash: number | null = null;
    let vlan: number | null = null;
    if (ppiLength > 0) {
      const area = msg.subarray(ppiOffset, ppiOffset + ppiLength);
      this.rxHash = null;
      this.rxVlan = null;
      this.rxPpiArea = area;
      if (forEachPpi(area, this.onRxPpi)) this.hostErrors++;
      hash = this.rxHash;
      vlan = this.rxVlan;
    }
    const onFrame = this.opts.onFrame;
    if (onFrame) onFrame(msg.subarray(dataOffset, dataOffset + dataLength), hash, q.index, vlan);
    else q.received.push({ frame: msg.slice(dataOffset, dataOffset + dataLength), hash, vlan });
  }

  private flushCompletions(q: GuestQueue): void {
    if (q.toComplete.length === 0) return;
    const out = q.channel.rings.outbound;
    let done = 0;
    out.batch(() => {
      for (; done < q.toComplete.length; done++) {
        this.completionPacket.transactionId = q.toComplete[done];
        if (!out.write(this.completionPacket)) break;
      }
    });
    q.toComplete.splice(0, done);
  }

  /** The held transfer-page packets' transaction ids, handed to the caller (who completes them, or not). */
  takeHeld(): number[] {
    return this.queues.flatMap((q) => q.toComplete.splice(0));
  }

  /** Transfer-page packets waiting for this guest's completion. */
  heldCompletions(): number {
    return this.queues.reduce((n, q) => n + q.toComplete.length, 0);
  }

  // ---- NVSP plumbing

  private sendNvsp(q: GuestQueue, payload: Uint8Array): void {
    if (!q.channel.rings.outbound.write({ type: VM_PKT_DATA_INBAND, transactionId: NO_ID, payload }))
      throw new NetvscClientError('ring full');
  }

  /** An NVSP request with completion requested; resolves with the host's completion message. */
  async request(q: GuestQueue, payload: Uint8Array): Promise<NvspHostMessage | null> {
    const tid = this.takeTid();
    await this.until(() =>
      q.channel.rings.outbound.write({
        type: VM_PKT_DATA_INBAND,
        flags: VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED,
        transactionId: tid,
        payload,
      }),
    );
    const m = await this.until(() => (this.completions.has(tid) ? { m: this.completions.get(tid)! } : undefined));
    this.completions.delete(tid);
    return m.m;
  }

  /** The primary's guest channel (hostile tests write raw packets on it). */
  channel(queue = 0): GuestChannel {
    return this.queues[queue].channel;
  }

  /** Closes every queue (subchannels first), as Linux netvsc_device_remove does after revoking the buffers. */
  async close(): Promise<void> {
    for (const q of [...this.queues].reverse()) if (q) await this.opts.vmbus.closeChannel(q.channel);
    this.queues.length = 0;
  }
}

const RX_COMPLETE = encodeNvsp(NVSP_MSG1_TYPE_SEND_RNDIS_PKT_COMPLETE, nvsp_1_message_send_rndis_packet_complete, {
  status: NVSP_STAT_SUCCESS,
});

/** Linux's default RSS key (netvsc_hash_key in rndis_filter.c is the well-known Microsoft one). */
export const DEFAULT_RSS_KEY = Uint8Array.from([
  0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30,
  0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
]);
