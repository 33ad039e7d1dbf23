/**
 * NVSP, the network VSP protocol netvsc speaks over VMBus, as data: the message header, each
 * message body (named as in Linux drivers/net/hyperv/hyperv_net.h), the versions and statuses,
 * and a parser that turns guest bytes into a typed message or an NvspProtocolError (never
 * throws). Body structures start after the 4-byte nvsp_message_header, so their offsets are
 * relative to byte 4 of the message, as the C unions are.
 */
import { defineStruct, HvemuError, type StructLayout, type StructValue } from '@hvemu/common';

export const NVSP_PROTOCOL_VERSION_1 = 2;
export const NVSP_PROTOCOL_VERSION_2 = 0x30002;
export const NVSP_PROTOCOL_VERSION_4 = 0x40000;
export const NVSP_PROTOCOL_VERSION_5 = 0x50000;
export const NVSP_PROTOCOL_VERSION_6 = 0x60000;
export const NVSP_PROTOCOL_VERSION_61 = 0x60001;
/** Linux netvsc_connect_vsp tries these, newest first, with min = max = the candidate. */
export const NVSP_PROTOCOL_VERSIONS: readonly number[] = [
  NVSP_PROTOCOL_VERSION_61,
  NVSP_PROTOCOL_VERSION_6,
  NVSP_PROTOCOL_VERSION_5,
  NVSP_PROTOCOL_VERSION_4,
  NVSP_PROTOCOL_VERSION_2,
  NVSP_PROTOCOL_VERSION_1,
];

export const NVSP_MSG_TYPE_NONE = 0;
export const NVSP_MSG_TYPE_INIT = 1;
export const NVSP_MSG_TYPE_INIT_COMPLETE = 2;
export const NVSP_MSG1_TYPE_SEND_NDIS_VER = 100;
export const NVSP_MSG1_TYPE_SEND_RECV_BUF = 101;
export const NVSP_MSG1_TYPE_SEND_RECV_BUF_COMPLETE = 102;
export const NVSP_MSG1_TYPE_REVOKE_RECV_BUF = 103;
export const NVSP_MSG1_TYPE_SEND_SEND_BUF = 104;
export const NVSP_MSG1_TYPE_SEND_SEND_BUF_COMPLETE = 105;
export const NVSP_MSG1_TYPE_REVOKE_SEND_BUF = 106;
export const NVSP_MSG1_TYPE_SEND_RNDIS_PKT = 107;
export const NVSP_MSG1_TYPE_SEND_RNDIS_PKT_COMPLETE = 108;
/** 109-124 and 126-127 are the v2 chimney/VMQ/rxbuf messages; no in-box guest sends them. */
export const NVSP_MSG2_TYPE_SEND_NDIS_CONFIG = 125;
export const NVSP_MSG4_TYPE_SEND_VF_ASSOCIATION = 128;
export const NVSP_MSG4_TYPE_SWITCH_DATA_PATH = 129;
export const NVSP_MSG4_TYPE_UPLINK_CONNECT_STATE_DEPRECATED = 130;
export const NVSP_MSG5_TYPE_OID_QUERY_EX = 131;
export const NVSP_MSG5_TYPE_OID_QUERY_EX_COMP = 132;
export const NVSP_MSG5_TYPE_SUBCHANNEL = 133;
export const NVSP_MSG5_TYPE_SEND_INDIRECTION_TABLE = 134;
export const NVSP_MSG6_TYPE_PD_API = 135;
export const NVSP_MSG6_TYPE_PD_POST_BATCH = 136;

export const NVSP_STAT_NONE = 0;
export const NVSP_STAT_SUCCESS = 1;
export const NVSP_STAT_FAIL = 2;
export const NVSP_STAT_PROTOCOL_TOO_NEW = 3;
export const NVSP_STAT_PROTOCOL_TOO_OLD = 4;
export const NVSP_STAT_INVALID_RNDIS_PKT = 5;
export const NVSP_STAT_BUSY = 6;
export const NVSP_STAT_PROTOCOL_UNSUPPORTED = 7;

/** nvsp_1_message_send_rndis_packet.channel_type (RNDIS's two "channels" travel in one). */
export const NVSP_RNDIS_CHANNEL_DATA = 0;
export const NVSP_RNDIS_CHANNEL_CONTROL = 1;
/** send_buf_section_index when the send buffer is not used (NETVSC_INVALID_INDEX). */
export const NETVSC_INVALID_INDEX = 0xffffffff;
/** nvsp_1_message_send_receive_buffer.id Linux uses, echoed as the xfer_pageset_id of every receive. */
export const NETVSC_RECEIVE_BUFFER_ID = 0xcafe;
export const NETVSC_SEND_BUFFER_ID = 0;
export const NVSP_SUBCHANNEL_ALLOCATE = 1;
/** Entries of the send indirection table Linux accepts (VRSS_SEND_TAB_SIZE); any other count is ignored. */
export const VRSS_SEND_TAB_SIZE = 16;
export const VRSS_CHANNEL_MAX = 64;
export const NVSP_DATAPATH_SYNTHETIC = 0;
export const NVSP_DATAPATH_VF = 1;

export const nvsp_message_header = defineStruct('nvsp_message_header', 4, [[0, 'msg_type', 'u32']]);

export const nvsp_message_init = defineStruct('nvsp_message_init', 8, [
  [0, 'min_protocol_ver', 'u32'],
  [4, 'max_protocol_ver', 'u32'],
]);
export const nvsp_message_init_complete = defineStruct('nvsp_message_init_complete', 12, [
  [0, 'negotiated_protocol_ver', 'u32'],
  [4, 'max_mdl_chain_len', 'u32'],
  [8, 'status', 'u32'],
]);
export const nvsp_1_message_send_ndis_version = defineStruct('nvsp_1_message_send_ndis_version', 8, [
  [0, 'ndis_major_ver', 'u32'],
  [4, 'ndis_minor_ver', 'u32'],
]);
/** __packed in Linux: 6 bytes. */
export const nvsp_1_message_send_receive_buffer = defineStruct('nvsp_1_message_send_receive_buffer', 6, [
  [0, 'gpadl_handle', 'u32'],
  [4, 'id', 'u16'],
]);
export const nvsp_1_receive_buffer_section = defineStruct('nvsp_1_receive_buffer_section', 16, [
  [0, 'offset', 'u32'],
  [4, 'sub_alloc_size', 'u32'],
  [8, 'num_sub_allocs', 'u32'],
  [12, 'end_offset', 'u32'],
]);
/** With its one section (sections[1]) flattened: Linux requires num_sections == 1. */
export const nvsp_1_message_send_receive_buffer_complete = defineStruct('nvsp_1_message_send_receive_buffer_complete', 24, [
  [0, 'status', 'u32'],
  [4, 'num_sections', 'u32'],
  [8, 'offset', 'u32'],
  [12, 'sub_alloc_size', 'u32'],
  [16, 'num_sub_allocs', 'u32'],
  [20, 'end_offset', 'u32'],
]);
export const nvsp_1_message_revoke_receive_buffer = defineStruct('nvsp_1_message_revoke_receive_buffer', 2, [[0, 'id', 'u16']]);
export const nvsp_1_message_send_send_buffer = defineStruct('nvsp_1_message_send_send_buffer', 6, [
  [0, 'gpadl_handle', 'u32'],
  [4, 'id', 'u16'],
]);
export const nvsp_1_message_send_send_buffer_complete = defineStruct('nvsp_1_message_send_send_buffer_complete', 8, [
  [0, 'status', 'u32'],
  [4, 'section_size', 'u32'],
]);
export const nvsp_1_message_revoke_send_buffer = defineStruct('nvsp_1_message_revoke_send_buffer', 2, [[0, 'id', 'u16']]);
export const nvsp_1_message_send_rndis_packet = defineStruct('nvsp_1_message_send_rndis_packet', 12, [
  [0, 'channel_type', 'u32'],
  [4, 'send_buf_section_index', 'u32'],
  [8, 'send_buf_section_size', 'u32'],
]);
export const nvsp_1_message_send_rndis_packet_complete = defineStruct('nvsp_1_message_send_rndis_packet_complete', 4, [
  [0, 'status', 'u32'],
]);
/** capability bits: 0 vmq, 1 chimney, 2 sriov, 3 ieee8021q, 4 correlation_id, 5 teaming, 6 vsubnetid, 7 rsc. */
export const NDIS_CONFIG_SRIOV = 1n << 2n;
export const NDIS_CONFIG_IEEE8021Q = 1n << 3n;
export const NDIS_CONFIG_TEAMING = 1n << 5n;
export const NDIS_CONFIG_RSC = 1n << 7n;

/** The capability bits Linux's netvsc_init announces at `version`: ieee8021q; + sriov, teaming from NVSP 5; + rsc from 6.1. */
export function linuxNdisCapabilities(version: number): bigint {
  let bits = NDIS_CONFIG_IEEE8021Q;
  if (version >= NVSP_PROTOCOL_VERSION_5) bits |= NDIS_CONFIG_SRIOV | NDIS_CONFIG_TEAMING;
  if (version >= NVSP_PROTOCOL_VERSION_61) bits |= NDIS_CONFIG_RSC;
  return bits;
}
export const nvsp_2_send_ndis_config = defineStruct('nvsp_2_send_ndis_config', 16, [
  [0, 'mtu', 'u32'],
  [4, 'reserved', 'u32'],
  [8, 'capability', 'u64'],
]);
export const nvsp_4_send_vf_association = defineStruct('nvsp_4_send_vf_association', 8, [
  [0, 'allocated', 'u32'],
  [4, 'serial', 'u32'],
]);
export const nvsp_4_sw_datapath = defineStruct('nvsp_4_sw_datapath', 4, [[0, 'active_datapath', 'u32']]);
export const nvsp_5_subchannel_request = defineStruct('nvsp_5_subchannel_request', 8, [
  [0, 'op', 'u32'],
  [4, 'num_subchannels', 'u32'],
]);
export const nvsp_5_subchannel_complete = defineStruct('nvsp_5_subchannel_complete', 8, [
  [0, 'status', 'u32'],
  [4, 'num_subchannels', 'u32'],
]);
export const nvsp_5_send_indirect_table = defineStruct('nvsp_5_send_indirect_table', 8, [
  [0, 'count', 'u32'],
  [4, 'offset', 'u32'],
]);

/**
 * sizeof(union nvsp_all_messages): its largest member is nvsp_6_pd_api_comp (op, status and a
 * 28-byte create-queue union: 36 bytes). Linux sends and expects sizeof(struct nvsp_message) =
 * 40 for every message; the host accepts shorter ones as long as the body it reads is there.
 */
export const NVSP_UNION_SIZE = 36;
export const NVSP_MESSAGE_SIZE = nvsp_message_header.size + NVSP_UNION_SIZE;
/**
 * Where the send indirection table sits: right after a whole nvsp_message. Linux up to NVSP 6
 * assumes this offset whatever the message says (an old host bug); from 6.1 it reads `offset`.
 */
export const NVSP_INDIRECTION_TABLE_OFFSET = NVSP_MESSAGE_SIZE;

/** Body layouts of the messages a guest sends (SUBCHANNEL as its request). */
const GUEST_BODIES = {
  [NVSP_MSG_TYPE_INIT]: nvsp_message_init,
  [NVSP_MSG1_TYPE_SEND_NDIS_VER]: nvsp_1_message_send_ndis_version,
  [NVSP_MSG1_TYPE_SEND_RECV_BUF]: nvsp_1_message_send_receive_buffer,
  [NVSP_MSG1_TYPE_REVOKE_RECV_BUF]: nvsp_1_message_revoke_receive_buffer,
  [NVSP_MSG1_TYPE_SEND_SEND_BUF]: nvsp_1_message_send_send_buffer,
  [NVSP_MSG1_TYPE_REVOKE_SEND_BUF]: nvsp_1_message_revoke_send_buffer,
  [NVSP_MSG1_TYPE_SEND_RNDIS_PKT]: nvsp_1_message_send_rndis_packet,
  [NVSP_MSG1_TYPE_SEND_RNDIS_PKT_COMPLETE]: nvsp_1_message_send_rndis_packet_complete,
  [NVSP_MSG2_TYPE_SEND_NDIS_CONFIG]: nvsp_2_send_ndis_config,
  [NVSP_MSG4_TYPE_SWITCH_DATA_PATH]: nvsp_4_sw_datapath,
  [NVSP_MSG5_TYPE_SUBCHANNEL]: nvsp_5_subchannel_request,
} as const;

/** Body layouts of the messages a host sends (SUBCHANNEL as its completion). */
const HOST_BODIES = {
  [NVSP_MSG_TYPE_INIT_COMPLETE]: nvsp_message_init_complete,
  [NVSP_MSG1_TYPE_SEND_RECV_BUF_COMPLETE]: nvsp_1_message_send_receive_buffer_complete,
  [NVSP_MSG1_TYPE_SEND_SEND_BUF_COMPLETE]: nvsp_1_message_send_send_buffer_complete,
  [NVSP_MSG1_TYPE_SEND_RNDIS_PKT]: nvsp_1_message_send_rndis_packet,
  [NVSP_MSG1_TYPE_SEND_RNDIS_PKT_COMPLETE]: nvsp_1_message_send_rndis_packet_complete,
  [NVSP_MSG4_TYPE_SEND_VF_ASSOCIATION]: nvsp_4_send_vf_association,
  [NVSP_MSG5_TYPE_SUBCHANNEL]: nvsp_5_subchannel_complete,
  [NVSP_MSG5_TYPE_SEND_INDIRECTION_TABLE]: nvsp_5_send_indirect_table,
} as const;

type Bodies = Record<number, StructLayout<readonly (readonly [number, string, 'u8' | 'u16' | 'u32' | 'u64'])[]>>;
type MessageOf<B extends Bodies> = {
  [K in keyof B & number]: { msg_type: K } & StructValue<B[K]['rows']>;
}[keyof B & number];

/** A message a guest may send, discriminated on msg_type. */
export type NvspGuestMessage = MessageOf<typeof GUEST_BODIES>;
/** A message a host may send, discriminated on msg_type (what the test client parses). */
export type NvspHostMessage = MessageOf<typeof HOST_BODIES>;

export type NvspFault = 'short' | 'unknown-type';

/** A guest (or host) NVSP message that cannot be parsed: dropped, counted, logged. */
export class NvspProtocolError extends HvemuError {
  readonly outcome = 'message-dropped' as const;
  constructor(
    readonly fault: NvspFault,
    message: string,
  ) {
    super(message);
  }
}

/** Parses a message a guest sent. Never throws. */
export function parseNvspGuestMessage(bytes: Uint8Array): NvspGuestMessage | NvspProtocolError {
  return parseWith(GUEST_BODIES, bytes) as NvspGuestMessage | NvspProtocolError;
}

/** Parses a message a host sent (the test client's side). Never throws. */
export function parseNvspHostMessage(bytes: Uint8Array): NvspHostMessage | NvspProtocolError {
  return parseWith(HOST_BODIES, bytes) as NvspHostMessage | NvspProtocolError;
}

function parseWith(bodies: Bodies, bytes: Uint8Array): object {
  if (bytes.length < nvsp_message_header.size) {
    return new NvspProtocolError('short', `nvsp message of ${bytes.length} bytes has no header`);
  }
  const msgType = bytes[0] | (bytes[1] << 8) | (bytes[2] << 16) | (bytes[3] << 24);
  const type = msgType >>> 0;
  const body = Object.prototype.hasOwnProperty.call(bodies, type) ? bodies[type] : undefined;
  if (!body) return new NvspProtocolError('unknown-type', `nvsp message type ${type} is not one this side takes`);
  if (bytes.length < nvsp_message_header.size + body.size) {
    return new NvspProtocolError(
      'short',
      `nvsp message type ${type}: ${bytes.length} bytes, ${nvsp_message_header.size + body.size} needed`,
    );
  }
  return { msg_type: type, ...body.decode(bytes, nvsp_message_header.size) };
}

/** A whole nvsp_message (NVSP_MESSAGE_SIZE bytes, as Linux sends them): header + body, the rest zero. */
export function encodeNvsp<R extends readonly (readonly [number, string, 'u8' | 'u16' | 'u32' | 'u64'])[]>(
  msgType: number,
  body: StructLayout<R> | null,
  value: Partial<StructValue<R>> = {},
  size = NVSP_MESSAGE_SIZE,
): Uint8Array {
  const out = new Uint8Array(size);
  nvsp_message_header.encode({ msg_type: msgType }, out, 0);
  body?.encode(value, out, nvsp_message_header.size);
  return out;
}

/** The version Linux asks for: NDIS 6.30 from NVSP 5, 6.1 before (netvsc.c negotiate_nvsp_ver). */
export function ndisVersionFor(nvspVersion: number): { major: number; minor: number } {
  return nvspVersion > NVSP_PROTOCOL_VERSION_4 ? { major: 6, minor: 30 } : { major: 6, minor: 1 };
}
