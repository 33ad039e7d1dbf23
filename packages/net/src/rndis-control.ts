/**
 * The RNDIS control side of the NIC as a pure state machine: a control message in, the
 * completion out (or none), with the device's RNDIS state (initialized, packet filter, RSS
 * parameters, the offloads the guest asked for) kept here. No I/O: the device carries the
 * answers to the guest through the receive buffer.
 *
 * What it answers: INITIALIZE (one message per transfer as far as the host's sends go, 8-byte
 * packet alignment), QUERY of the OIDs Linux and Windows netvsc query (the others:
 * RNDIS_STATUS_NOT_SUPPORTED), SET of the packet filter, RSS parameters, offload parameters
 * and the multicast list, RESET, KEEPALIVE; HALT is answered by nothing, as RNDIS says.
 */
import {
  encodeRndisMessage,
  ndis_offload,
  ndis_offload_params,
  ndis_recv_scale_cap,
  ndis_recv_scale_param,
  NDIS_HASH_FUNC_TOEPLITZ,
  NDIS_HASH_IPV4,
  NDIS_HASH_IPV6,
  NDIS_HASH_TCP_IPV4,
  NDIS_HASH_TCP_IPV6,
  NDIS_OBJECT_TYPE_DEFAULT,
  NDIS_OBJECT_TYPE_OFFLOAD,
  NDIS_OBJECT_TYPE_RSS_CAPABILITIES,
  NDIS_OBJECT_TYPE_RSS_PARAMETERS,
  NDIS_OFFLOAD_PARAMETERS_REVISION_1,
  NDIS_OFFLOAD_PARAMETERS_REVISION_2,
  NDIS_OFFLOAD_PARAMETERS_REVISION_3,
  NDIS_OFFLOAD_SIZE,
  NDIS_OFFLOAD_SIZE_6_0,
  NDIS_OFFLOAD_SIZE_6_1,
  NDIS_RECEIVE_SCALE_CAPABILITIES_REVISION_2,
  NDIS_RSS_HASH_SECRET_KEY_MAX_SIZE_REVISION_2,
  NDIS_RSS_INDIRECTION_TABLE_MAX_SIZE_REVISION_2,
  NDIS_RSS_PARAM_FLAG_DISABLE_RSS,
  NDIS_RSS_PARAM_FLAG_HASH_INFO_UNCHANGED,
  NDIS_RSS_PARAM_FLAG_HASH_KEY_UNCHANGED,
  NDIS_RSS_PARAM_FLAG_ITABLE_UNCHANGED,
  OID_802_3_CURRENT_ADDRESS,
  OID_802_3_MAXIMUM_LIST_SIZE,
  OID_802_3_MULTICAST_LIST,
  OID_802_3_PERMANENT_ADDRESS,
  OID_GEN_CURRENT_LOOKAHEAD,
  OID_GEN_CURRENT_PACKET_FILTER,
  OID_GEN_FRIENDLY_NAME,
  OID_GEN_HARDWARE_STATUS,
  OID_GEN_LINK_SPEED,
  OID_GEN_MAC_OPTIONS,
  OID_GEN_MAXIMUM_FRAME_SIZE,
  OID_GEN_MAXIMUM_LOOKAHEAD,
  OID_GEN_MAXIMUM_SEND_PACKETS,
  OID_GEN_MAXIMUM_TOTAL_SIZE,
  OID_GEN_MEDIA_CONNECT_STATUS,
  OID_GEN_MEDIA_IN_USE,
  OID_GEN_MEDIA_SUPPORTED,
  OID_GEN_PHYSICAL_MEDIUM,
  OID_GEN_RECEIVE_BLOCK_SIZE,
  OID_GEN_RECEIVE_SCALE_CAPABILITIES,
  OID_GEN_RECEIVE_SCALE_PARAMETERS,
  OID_GEN_SUPPORTED_LIST,
  OID_GEN_TRANSMIT_BLOCK_SIZE,
  OID_GEN_VENDOR_DESCRIPTION,
  OID_GEN_VENDOR_DRIVER_VERSION,
  OID_GEN_VENDOR_ID,
  OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES,
  OID_TCP_OFFLOAD_PARAMETERS,
  rndis_indicate_status,
  rndis_initialize_complete,
  rndis_initialize_request,
  rndis_keepalive_complete,
  rndis_keepalive_request,
  rndis_message_header,
  rndis_query_complete,
  rndis_query_request,
  rndis_reset_complete,
  rndis_set_complete,
  rndis_set_request,
  RNDIS_DF_CONNECTIONLESS,
  RNDIS_HEADER_SIZE,
  RNDIS_MAJOR_VERSION,
  RNDIS_MEDIUM_802_3,
  RNDIS_MINOR_VERSION,
  RNDIS_MSG_HALT,
  RNDIS_MSG_INDICATE,
  RNDIS_MSG_INIT,
  RNDIS_MSG_INIT_C,
  RNDIS_MSG_KEEPALIVE,
  RNDIS_MSG_KEEPALIVE_C,
  RNDIS_MSG_QUERY,
  RNDIS_MSG_QUERY_C,
  RNDIS_MSG_RESET,
  RNDIS_MSG_RESET_C,
  RNDIS_MSG_SET,
  RNDIS_MSG_SET_C,
  RNDIS_STATUS_INVALID_DATA,
  RNDIS_STATUS_INVALID_LENGTH,
  RNDIS_STATUS_MEDIA_CONNECT,
  RNDIS_STATUS_MEDIA_DISCONNECT,
  RNDIS_STATUS_NOT_SUPPORTED,
  RNDIS_STATUS_SUCCESS,
  RndisProtocolError,
} from './rndis.js';
import { NVSP_PROTOCOL_VERSION_4, NVSP_PROTOCOL_VERSION_5 } from './nvsp.js';

/** What the NIC is, from the VMM's side. */
export interface NicIdentity {
  /** 6 bytes. */
  readonly mac: Uint8Array;
  /** Largest frame payload (without the 14-byte Ethernet header). */
  readonly mtu: number;
  /** Queues the guest may use (primary + subchannels). */
  readonly maxQueues: number;
  /** Reported link speed, bits/s. */
  readonly linkSpeedBps: number;
  /** OID_GEN_FRIENDLY_NAME (Linux makes it the interface alias); none: not supported. */
  readonly friendlyName?: string;
}

/** The receive-side scaling the guest configured. */
export interface RssState {
  enabled: boolean;
  hashInfo: number;
  key: Uint8Array;
  /** Queue (subchannel index) per indirection-table entry. */
  table: Uint32Array;
}

export interface OffloadRequest {
  /** The last ndis_offload_params the guest set (decoded), or null. */
  params: ReturnType<typeof ndis_offload_params.decode> | null;
}

/** The RNDIS pkt_alignment_factor the host reports: 2^3 = 8 bytes (RNDIS_PKT_ALIGN_DEFAULT). */
export const PKT_ALIGNMENT_FACTOR = 3;
/** max_pkt_per_msg: RNDIS data messages the guest may batch in one send (RNDIS_MAX_PKT_DEFAULT). */
export const MAX_PKT_PER_MSG = 8;
/** The multicast list the host keeps (it filters nothing by it: all multicast passes). */
export const MAXIMUM_LIST_SIZE = 32;
/** RSS indirection table entries the host reports (Linux's ITAB_NUM). */
export const RSS_TABLE_ENTRIES = 128;

const SUPPORTED_OIDS = [
  OID_GEN_SUPPORTED_LIST,
  OID_GEN_HARDWARE_STATUS,
  OID_GEN_MEDIA_SUPPORTED,
  OID_GEN_MEDIA_IN_USE,
  OID_GEN_PHYSICAL_MEDIUM,
  OID_GEN_MAXIMUM_LOOKAHEAD,
  OID_GEN_CURRENT_LOOKAHEAD,
  OID_GEN_MAXIMUM_FRAME_SIZE,
  OID_GEN_MAXIMUM_TOTAL_SIZE,
  OID_GEN_TRANSMIT_BLOCK_SIZE,
  OID_GEN_RECEIVE_BLOCK_SIZE,
  OID_GEN_LINK_SPEED,
  OID_GEN_MEDIA_CONNECT_STATUS,
  OID_GEN_CURRENT_PACKET_FILTER,
  OID_GEN_MAC_OPTIONS,
  OID_GEN_MAXIMUM_SEND_PACKETS,
  OID_GEN_VENDOR_ID,
  OID_GEN_VENDOR_DESCRIPTION,
  OID_GEN_VENDOR_DRIVER_VERSION,
  OID_802_3_PERMANENT_ADDRESS,
  OID_802_3_CURRENT_ADDRESS,
  OID_802_3_MAXIMUM_LIST_SIZE,
  OID_802_3_MULTICAST_LIST,
  OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES,
  OID_TCP_OFFLOAD_PARAMETERS,
  OID_GEN_RECEIVE_SCALE_CAPABILITIES,
  OID_GEN_RECEIVE_SCALE_PARAMETERS,
];

export type RndisState = 'uninitialized' | 'initialized' | 'halted';

export class RndisControl {
  state: RndisState = 'uninitialized';
  packetFilter = 0;
  linkUp = true;
  multicastCount = 0;
  readonly rss: RssState = { enabled: false, hashInfo: 0, key: new Uint8Array(40), table: new Uint32Array(0) };
  readonly offloads: OffloadRequest = { params: null };
  /** The NVSP version the channel negotiated (decides the offload object's revision). */
  nvspVersion = 0;

  constructor(readonly nic: NicIdentity) {}

  /** Back to before INITIALIZE (a new NVSP session). */
  reset(): void {
    this.state = 'uninitialized';
    this.packetFilter = 0;
    this.multicastCount = 0;
    this.rss.enabled = false;
    this.rss.table = new Uint32Array(0);
    this.offloads.params = null;
  }

  /**
   * Handles one control message (`msg`: exactly msg_len bytes, msg_len >= 8 checked by the
   * caller). Returns the completion to send, or null (HALT, or a message that gets no
   * answer). Throws RndisProtocolError for a message the host drops.
   */
  handle(msg: Uint8Array): Uint8Array | null {
    const { ndis_msg_type: type } = rndis_message_header.decode(msg);
    switch (type) {
      case RNDIS_MSG_INIT:
        return this.initialize(msg);
      case RNDIS_MSG_QUERY:
        return this.query(msg);
      case RNDIS_MSG_SET:
        return this.set(msg);
      case RNDIS_MSG_RESET:
        return encodeRndisMessage(RNDIS_MSG_RESET_C, rndis_reset_complete, { status: RNDIS_STATUS_SUCCESS, addressing_reset: 0 });
      case RNDIS_MSG_KEEPALIVE: {
        const { req_id } = rndis_keepalive_request.decode(body(msg, rndis_keepalive_request.size));
        return encodeRndisMessage(RNDIS_MSG_KEEPALIVE_C, rndis_keepalive_complete, { req_id, status: RNDIS_STATUS_SUCCESS });
      }
      case RNDIS_MSG_HALT:
        this.state = 'halted';
        return null;
      default:
        throw new RndisProtocolError('unknown-type', `RNDIS message type 0x${type.toString(16)} is not a control request a host takes`);
    }
  }

  /** RNDIS_MSG_INDICATE for the current link state. */
  linkIndication(): Uint8Array {
    const status = this.linkUp ? RNDIS_STATUS_MEDIA_CONNECT : RNDIS_STATUS_MEDIA_DISCONNECT;
    return encodeRndisMessage(RNDIS_MSG_INDICATE, rndis_indicate_status, { status, status_buflen: 0, status_buf_offset: 0 });
  }

  private initialize(msg: Uint8Array): Uint8Array {
    const req = rndis_initialize_request.decode(body(msg, rndis_initialize_request.size));
    const ok = req.major_ver === RNDIS_MAJOR_VERSION;
    if (ok) this.state = 'initialized';
    return encodeRndisMessage(RNDIS_MSG_INIT_C, rndis_initialize_complete, {
      req_id: req.req_id,
      status: ok ? RNDIS_STATUS_SUCCESS : RNDIS_STATUS_NOT_SUPPORTED,
      major_ver: RNDIS_MAJOR_VERSION,
      minor_ver: RNDIS_MINOR_VERSION,
      dev_flags: RNDIS_DF_CONNECTIONLESS,
      medium: RNDIS_MEDIUM_802_3,
      max_pkt_per_msg: MAX_PKT_PER_MSG,
      max_xfer_size: 0x10000,
      pkt_alignment_factor: PKT_ALIGNMENT_FACTOR,
    });
  }

  private query(msg: Uint8Array): Uint8Array {
    const req = rndis_query_request.decode(body(msg, rndis_query_request.size));
    const info = this.queryInfo(req.oid);
    const status = info === null ? RNDIS_STATUS_NOT_SUPPORTED : RNDIS_STATUS_SUCCESS;
    const data = info ?? new Uint8Array(0);
    return encodeRndisMessage(
      RNDIS_MSG_QUERY_C,
      rndis_query_complete,
      { req_id: req.req_id, status, info_buflen: data.length, info_buf_offset: rndis_query_complete.size },
      data,
    );
  }

  /** The information buffer for `oid`, or null (not supported). */
  private queryInfo(oid: number): Uint8Array | null {
    const { nic } = this;
    switch (oid) {
      case OID_GEN_SUPPORTED_LIST:
        return u32s(...SUPPORTED_OIDS);
      case OID_GEN_HARDWARE_STATUS:
        return u32s(0); // NdisHardwareStatusReady
      case OID_GEN_MEDIA_SUPPORTED:
      case OID_GEN_MEDIA_IN_USE:
        return u32s(RNDIS_MEDIUM_802_3);
      case OID_GEN_PHYSICAL_MEDIUM:
        return u32s(0); // NdisPhysicalMediumUnspecified
      case OID_GEN_MAXIMUM_FRAME_SIZE:
      case OID_GEN_MAXIMUM_LOOKAHEAD:
      case OID_GEN_CURRENT_LOOKAHEAD:
        return u32s(nic.mtu);
      case OID_GEN_MAXIMUM_TOTAL_SIZE:
      case OID_GEN_TRANSMIT_BLOCK_SIZE:
      case OID_GEN_RECEIVE_BLOCK_SIZE:
        return u32s(nic.mtu + 14);
      case OID_GEN_LINK_SPEED:
        return u32s(Math.min(0xffffffff, Math.floor(nic.linkSpeedBps / 100))); // in units of 100 bit/s
      case OID_GEN_MEDIA_CONNECT_STATUS:
        return u32s(this.linkUp ? 0 : 1); // NdisMediaStateConnected / Disconnected
      case OID_GEN_CURRENT_PACKET_FILTER:
        return u32s(this.packetFilter);
      case OID_GEN_MAC_OPTIONS:
        return u32s(0);
      case OID_GEN_MAXIMUM_SEND_PACKETS:
        return u32s(MAX_PKT_PER_MSG);
      case OID_GEN_VENDOR_ID:
        return u32s(0xffffff); // no IEEE OUI
      case OID_GEN_VENDOR_DESCRIPTION:
        return new TextEncoder().encode('hvemu netvsp\0');
      case OID_GEN_VENDOR_DRIVER_VERSION:
        return u32s(0x00010000);
      case OID_802_3_PERMANENT_ADDRESS:
      case OID_802_3_CURRENT_ADDRESS:
        return nic.mac.slice();
      case OID_802_3_MAXIMUM_LIST_SIZE:
        return u32s(MAXIMUM_LIST_SIZE);
      case OID_GEN_FRIENDLY_NAME:
        return nic.friendlyName === undefined ? null : utf16z(nic.friendlyName);
      case OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES:
        return this.offloadCaps();
      case OID_GEN_RECEIVE_SCALE_CAPABILITIES:
        return this.nvspVersion >= NVSP_PROTOCOL_VERSION_5 ? this.rssCaps() : null;
      default:
        return null;
    }
  }

  /**
   * What the host offloads: nothing (checksums, LSO, RSC all off), so the guest computes
   * checksums and segments itself and every frame goes to the backend as the guest built it.
   * The object's revision and size follow the NVSP version, as Linux asks for them.
   */
  private offloadCaps(): Uint8Array {
    const [rev, size] =
      this.nvspVersion >= NVSP_PROTOCOL_VERSION_5
        ? [NDIS_OFFLOAD_PARAMETERS_REVISION_3, NDIS_OFFLOAD_SIZE]
        : this.nvspVersion >= NVSP_PROTOCOL_VERSION_4
          ? [NDIS_OFFLOAD_PARAMETERS_REVISION_2, NDIS_OFFLOAD_SIZE_6_1]
          : [NDIS_OFFLOAD_PARAMETERS_REVISION_1, NDIS_OFFLOAD_SIZE_6_0];
    const out = ndis_offload.encodeNew({ hdr_type: NDIS_OBJECT_TYPE_OFFLOAD, hdr_rev: rev, hdr_size: size });
    return out.subarray(0, size);
  }

  private rssCaps(): Uint8Array {
    return ndis_recv_scale_cap.encodeNew({
      hdr_type: NDIS_OBJECT_TYPE_RSS_CAPABILITIES,
      hdr_rev: NDIS_RECEIVE_SCALE_CAPABILITIES_REVISION_2,
      hdr_size: ndis_recv_scale_cap.size,
      cap_flag: 0x00000100 | 0x00000200, // NDIS_RSS_CAPS_HASH_TYPE_TCP_IPV4 | _IPV6
      num_int_msg: 1,
      num_recv_que: this.nic.maxQueues,
      num_indirect_tabent: RSS_TABLE_ENTRIES,
    });
  }

  private set(msg: Uint8Array): Uint8Array {
    const req = rndis_set_request.decode(body(msg, rndis_set_request.size));
    const info = infoBuffer(msg, req.info_buf_offset, req.info_buflen);
    const status = info === null ? RNDIS_STATUS_INVALID_LENGTH : this.setOid(req.oid, info);
    return encodeRndisMessage(RNDIS_MSG_SET_C, rndis_set_complete, { req_id: req.req_id, status });
  }

  private setOid(oid: number, info: Uint8Array): number {
    switch (oid) {
      case OID_GEN_CURRENT_PACKET_FILTER:
        if (info.length < 4) return RNDIS_STATUS_INVALID_LENGTH;
        this.packetFilter = new DataView(info.buffer, info.byteOffset).getUint32(0, true);
        return RNDIS_STATUS_SUCCESS;
      case OID_802_3_MULTICAST_LIST:
        if (info.length % 6 !== 0 || info.length / 6 > MAXIMUM_LIST_SIZE) return RNDIS_STATUS_INVALID_DATA;
        this.multicastCount = info.length / 6;
        return RNDIS_STATUS_SUCCESS;
      case OID_TCP_OFFLOAD_PARAMETERS:
        return this.setOffloads(info);
      case OID_GEN_RECEIVE_SCALE_PARAMETERS:
        return this.setRss(info);
      default:
        return RNDIS_STATUS_NOT_SUPPORTED;
    }
  }

  /**
   * Records what the guest asks for. Since the capabilities offered nothing, a guest that
   * "enables" an offload anyway gets its frames handled without it (they are passed on as
   * built); the record is there for the VMM and the tests.
   */
  private setOffloads(info: Uint8Array): number {
    if (info.length < 22 || info[0] !== NDIS_OBJECT_TYPE_DEFAULT) return RNDIS_STATUS_INVALID_DATA;
    const full = new Uint8Array(ndis_offload_params.size);
    full.set(info.subarray(0, Math.min(info.length, full.length)));
    this.offloads.params = ndis_offload_params.decode(full);
    return RNDIS_STATUS_SUCCESS;
  }

  /** NDIS_RECEIVE_SCALE_PARAMETERS: key and table at their offsets from the object's start. */
  private setRss(info: Uint8Array): number {
    if (this.nic.maxQueues < 2) return RNDIS_STATUS_NOT_SUPPORTED;
    if (info.length < ndis_recv_scale_param.size) return RNDIS_STATUS_INVALID_LENGTH;
    const p = ndis_recv_scale_param.decode(info);
    if (p.hdr_type !== NDIS_OBJECT_TYPE_RSS_PARAMETERS) return RNDIS_STATUS_INVALID_DATA;
    if (p.flag & NDIS_RSS_PARAM_FLAG_DISABLE_RSS) {
      this.rss.enabled = false;
      return RNDIS_STATUS_SUCCESS;
    }
    const hashInfo = p.flag & NDIS_RSS_PARAM_FLAG_HASH_INFO_UNCHANGED ? this.rss.hashInfo : p.hashinfo;
    const wanted = NDIS_HASH_IPV4 | NDIS_HASH_TCP_IPV4 | NDIS_HASH_IPV6 | NDIS_HASH_TCP_IPV6;
    if ((hashInfo & 0xff) !== NDIS_HASH_FUNC_TOEPLITZ || (hashInfo & wanted) === 0) return RNDIS_STATUS_INVALID_DATA;
    const table =
      p.flag & NDIS_RSS_PARAM_FLAG_ITABLE_UNCHANGED ? this.rss.table : this.rssTable(info, p.indirect_taboffset, p.indirect_tabsize);
    const key = p.flag & NDIS_RSS_PARAM_FLAG_HASH_KEY_UNCHANGED ? this.rss.key : rssKey(info, p.hashkey_offset, p.hashkey_size);
    if (table === null || key === null || table.length === 0) return RNDIS_STATUS_INVALID_DATA;
    Object.assign(this.rss, { enabled: true, hashInfo, key, table });
    return RNDIS_STATUS_SUCCESS;
  }

  /** The indirection table: u32 queue numbers, each below maxQueues, at most 128 of them. */
  private rssTable(info: Uint8Array, offset: number, size: number): Uint32Array | null {
    if (size % 4 !== 0 || size > NDIS_RSS_INDIRECTION_TABLE_MAX_SIZE_REVISION_2 || offset > info.length || size > info.length - offset)
      return null;
    const dv = new DataView(info.buffer, info.byteOffset + offset, size);
    const table = new Uint32Array(size / 4);
    for (let i = 0; i < table.length; i++) {
      table[i] = dv.getUint32(i * 4, true);
      if (table[i] >= this.nic.maxQueues) return null;
    }
    return table;
  }
}

function rssKey(info: Uint8Array, offset: number, size: number): Uint8Array | null {
  if (size !== NDIS_RSS_HASH_SECRET_KEY_MAX_SIZE_REVISION_2 || offset > info.length || size > info.length - offset) return null;
  return info.slice(offset, offset + size);
}

/** The body of `msg` (after the 8-byte header), at least `size` bytes, else a dropped message. */
function body(msg: Uint8Array, size: number): Uint8Array {
  if (msg.length < RNDIS_HEADER_SIZE + size) {
    throw new RndisProtocolError('short', `RNDIS control message of ${msg.length} bytes, ${RNDIS_HEADER_SIZE + size} needed`);
  }
  return msg.subarray(RNDIS_HEADER_SIZE);
}

/** A QUERY/SET information buffer: offset from the body start, inside the message; null if not. */
function infoBuffer(msg: Uint8Array, offset: number, length: number): Uint8Array | null {
  const bodyLength = msg.length - RNDIS_HEADER_SIZE;
  if (length === 0) return new Uint8Array(0);
  if (offset > bodyLength || length > bodyLength - offset) return null;
  return msg.subarray(RNDIS_HEADER_SIZE + offset, RNDIS_HEADER_SIZE + offset + length);
}

function u32s(...values: number[]): Uint8Array {
  const out = new Uint8Array(values.length * 4);
  const dv = new DataView(out.buffer);
  values.forEach((v, i) => dv.setUint32(i * 4, v >>> 0, true));
  return out;
}

function utf16z(text: string): Uint8Array {
  const out = new Uint8Array((text.length + 1) * 2);
  for (let i = 0; i < text.length; i++) {
    out[i * 2] = text.charCodeAt(i) & 0xff;
    out[i * 2 + 1] = text.charCodeAt(i) >> 8;
  }
  return out;
}
