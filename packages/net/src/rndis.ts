/**
 * RNDIS as netvsc carries it, as data: the message header and bodies (include/linux/rndis.h,
 * drivers/net/hyperv/hyperv_net.h), the per-packet info (PPI) elements, the NDIS objects the
 * offload and RSS OIDs carry, the OIDs and statuses. Parsers validate every length and offset
 * a guest gives and report a fault instead of throwing; the packet parser fills a caller-owned
 * object so the data path allocates nothing per frame.
 */
import { defineStruct, HvemuError } from '@hvemu/common';

export const RNDIS_MAJOR_VERSION = 1;
export const RNDIS_MINOR_VERSION = 0;
export const RNDIS_DF_CONNECTIONLESS = 1;
export const RNDIS_MEDIUM_802_3 = 0;

export const RNDIS_MSG_COMPLETION = 0x80000000;
export const RNDIS_MSG_PACKET = 1;
export const RNDIS_MSG_INIT = 2;
export const RNDIS_MSG_INIT_C = (RNDIS_MSG_INIT | RNDIS_MSG_COMPLETION) >>> 0;
export const RNDIS_MSG_HALT = 3;
export const RNDIS_MSG_QUERY = 4;
export const RNDIS_MSG_QUERY_C = (RNDIS_MSG_QUERY | RNDIS_MSG_COMPLETION) >>> 0;
export const RNDIS_MSG_SET = 5;
export const RNDIS_MSG_SET_C = (RNDIS_MSG_SET | RNDIS_MSG_COMPLETION) >>> 0;
export const RNDIS_MSG_RESET = 6;
export const RNDIS_MSG_RESET_C = (RNDIS_MSG_RESET | RNDIS_MSG_COMPLETION) >>> 0;
export const RNDIS_MSG_INDICATE = 7;
export const RNDIS_MSG_KEEPALIVE = 8;
export const RNDIS_MSG_KEEPALIVE_C = (RNDIS_MSG_KEEPALIVE | RNDIS_MSG_COMPLETION) >>> 0;

export const RNDIS_STATUS_SUCCESS = 0;
export const RNDIS_STATUS_FAILURE = 0xc0000001;
export const RNDIS_STATUS_NOT_SUPPORTED = 0xc00000bb;
export const RNDIS_STATUS_INVALID_DATA = 0xc0010015;
export const RNDIS_STATUS_INVALID_LENGTH = 0xc0010014;
export const RNDIS_STATUS_MULTICAST_FULL = 0xc0010009;
export const RNDIS_STATUS_ADAPTER_NOT_READY = 0xc0010011;
export const RNDIS_STATUS_MEDIA_CONNECT = 0x4001000b;
export const RNDIS_STATUS_MEDIA_DISCONNECT = 0x4001000c;
export const RNDIS_STATUS_LINK_SPEED_CHANGE = 0x40010013;
export const RNDIS_STATUS_NETWORK_CHANGE = 0x40010018;

// OIDs (include/linux/rndis.h RNDIS_OID_*, hyperv_net.h for the NDIS 6 ones)
export const OID_GEN_SUPPORTED_LIST = 0x00010101;
export const OID_GEN_HARDWARE_STATUS = 0x00010102;
export const OID_GEN_MEDIA_SUPPORTED = 0x00010103;
export const OID_GEN_MEDIA_IN_USE = 0x00010104;
export const OID_GEN_MAXIMUM_LOOKAHEAD = 0x00010105;
export const OID_GEN_MAXIMUM_FRAME_SIZE = 0x00010106;
export const OID_GEN_LINK_SPEED = 0x00010107;
export const OID_GEN_TRANSMIT_BLOCK_SIZE = 0x0001010a;
export const OID_GEN_RECEIVE_BLOCK_SIZE = 0x0001010b;
export const OID_GEN_VENDOR_ID = 0x0001010c;
export const OID_GEN_VENDOR_DESCRIPTION = 0x0001010d;
export const OID_GEN_CURRENT_PACKET_FILTER = 0x0001010e;
export const OID_GEN_CURRENT_LOOKAHEAD = 0x0001010f;
export const OID_GEN_DRIVER_VERSION = 0x00010110;
export const OID_GEN_MAXIMUM_TOTAL_SIZE = 0x00010111;
export const OID_GEN_MAC_OPTIONS = 0x00010113;
export const OID_GEN_MEDIA_CONNECT_STATUS = 0x00010114;
export const OID_GEN_MAXIMUM_SEND_PACKETS = 0x00010115;
export const OID_GEN_VENDOR_DRIVER_VERSION = 0x00010116;
export const OID_GEN_NETWORK_LAYER_ADDRESSES = 0x00010118;
export const OID_GEN_PHYSICAL_MEDIUM = 0x00010202;
/** NDIS 6 (ntddndis.h): NDIS_LINK_SPEED and NDIS_LINK_STATE objects. */
export const OID_GEN_MAX_LINK_SPEED = 0x00010206;
export const OID_GEN_LINK_STATE = 0x00010207;
export const OID_GEN_RNDIS_CONFIG_PARAMETER = 0x0001021b;
export const OID_GEN_FRIENDLY_NAME = 0x00020216;
export const OID_GEN_XMIT_OK = 0x00020101;
export const OID_GEN_RCV_OK = 0x00020102;
export const OID_GEN_RECEIVE_SCALE_CAPABILITIES = 0x00010203;
export const OID_GEN_RECEIVE_SCALE_PARAMETERS = 0x00010204;
export const OID_802_3_PERMANENT_ADDRESS = 0x01010101;
export const OID_802_3_CURRENT_ADDRESS = 0x01010102;
export const OID_802_3_MULTICAST_LIST = 0x01010103;
export const OID_802_3_MAXIMUM_LIST_SIZE = 0x01010104;
export const OID_TCP_OFFLOAD_CURRENT_CONFIG = 0xfc01020b;
export const OID_TCP_OFFLOAD_PARAMETERS = 0xfc01020c;
export const OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES = 0xfc01020d;
export const OID_OFFLOAD_ENCAPSULATION = 0x0101010a;

export const NDIS_PACKET_TYPE_DIRECTED = 0x1;
export const NDIS_PACKET_TYPE_MULTICAST = 0x2;
export const NDIS_PACKET_TYPE_ALL_MULTICAST = 0x4;
export const NDIS_PACKET_TYPE_BROADCAST = 0x8;
export const NDIS_PACKET_TYPE_PROMISCUOUS = 0x20;

export const NDIS_OBJECT_TYPE_DEFAULT = 0x80;
export const NDIS_OBJECT_TYPE_RSS_CAPABILITIES = 0x88;
export const NDIS_OBJECT_TYPE_RSS_PARAMETERS = 0x89;
export const NDIS_OBJECT_TYPE_OFFLOAD = 0xa7;
export const NDIS_OBJECT_TYPE_OFFLOAD_ENCAPSULATION = 0xa8;
export const NDIS_OFFLOAD_ENCAPSULATION_REVISION_1 = 1;
export const NDIS_LINK_STATE_REVISION_1 = 1;
export const NDIS_RECEIVE_SCALE_CAPABILITIES_REVISION_2 = 2;
export const NDIS_RECEIVE_SCALE_PARAMETERS_REVISION_2 = 2;
export const NDIS_OFFLOAD_PARAMETERS_REVISION_1 = 1;
export const NDIS_OFFLOAD_PARAMETERS_REVISION_2 = 2;
export const NDIS_OFFLOAD_PARAMETERS_REVISION_3 = 3;

export const NDIS_RSS_PARAM_FLAG_BASE_CPU_UNCHANGED = 0x1;
export const NDIS_RSS_PARAM_FLAG_HASH_INFO_UNCHANGED = 0x2;
export const NDIS_RSS_PARAM_FLAG_ITABLE_UNCHANGED = 0x4;
export const NDIS_RSS_PARAM_FLAG_HASH_KEY_UNCHANGED = 0x8;
export const NDIS_RSS_PARAM_FLAG_DISABLE_RSS = 0x10;
export const NDIS_HASH_FUNC_TOEPLITZ = 0x1;
export const NDIS_HASH_IPV4 = 0x100;
export const NDIS_HASH_TCP_IPV4 = 0x200;
export const NDIS_HASH_IPV6 = 0x400;
export const NDIS_HASH_TCP_IPV6 = 0x1000;
/** Largest indirection table (bytes) and key of NDIS_RECEIVE_SCALE_PARAMETERS revision 2. */
export const NDIS_RSS_INDIRECTION_TABLE_MAX_SIZE_REVISION_2 = 128 * 4;
export const NDIS_RSS_HASH_SECRET_KEY_MAX_SIZE_REVISION_2 = 40;

// per-packet info types (enum ndis_per_pkt_info_type)
export const TCPIP_CHKSUM_PKTINFO = 0;
export const IPSEC_PKTINFO = 1;
export const TCP_LARGESEND_PKTINFO = 2;
export const IEEE_8021Q_INFO = 6;
export const NBL_HASH_VALUE = 8;
/** Internal PPI types (the `internal` bit set). */
export const RNDIS_PKTINFO_ID = 1;
/** The `internal` bit of rndis_per_packet_info.type (bit 31). */
export const RNDIS_PPI_INTERNAL = 0x80000000;

/** struct rndis_message's header: the type and the whole message's length. */
export const rndis_message_header = defineStruct('rndis_message_header', 8, [
  [0, 'ndis_msg_type', 'u32'],
  [4, 'msg_len', 'u32'],
]);
export const RNDIS_HEADER_SIZE = rndis_message_header.size;

export const rndis_initialize_request = defineStruct('rndis_initialize_request', 16, [
  [0, 'req_id', 'u32'],
  [4, 'major_ver', 'u32'],
  [8, 'minor_ver', 'u32'],
  [12, 'max_xfer_size', 'u32'],
]);
export const rndis_initialize_complete = defineStruct('rndis_initialize_complete', 44, [
  [0, 'req_id', 'u32'],
  [4, 'status', 'u32'],
  [8, 'major_ver', 'u32'],
  [12, 'minor_ver', 'u32'],
  [16, 'dev_flags', 'u32'],
  [20, 'medium', 'u32'],
  [24, 'max_pkt_per_msg', 'u32'],
  [28, 'max_xfer_size', 'u32'],
  [32, 'pkt_alignment_factor', 'u32'],
  [36, 'af_list_offset', 'u32'],
  [40, 'af_list_size', 'u32'],
]);
export const rndis_halt_request = defineStruct('rndis_halt_request', 4, [[0, 'req_id', 'u32']]);
/** info_buf_offset counts from the start of this body (byte 8 of the message). */
export const rndis_query_request = defineStruct('rndis_query_request', 20, [
  [0, 'req_id', 'u32'],
  [4, 'oid', 'u32'],
  [8, 'info_buflen', 'u32'],
  [12, 'info_buf_offset', 'u32'],
  [16, 'dev_vc_handle', 'u32'],
]);
export const rndis_query_complete = defineStruct('rndis_query_complete', 16, [
  [0, 'req_id', 'u32'],
  [4, 'status', 'u32'],
  [8, 'info_buflen', 'u32'],
  [12, 'info_buf_offset', 'u32'],
]);
export const rndis_set_request = defineStruct('rndis_set_request', 20, [
  [0, 'req_id', 'u32'],
  [4, 'oid', 'u32'],
  [8, 'info_buflen', 'u32'],
  [12, 'info_buf_offset', 'u32'],
  [16, 'dev_vc_handle', 'u32'],
]);
export const rndis_set_complete = defineStruct('rndis_set_complete', 8, [
  [0, 'req_id', 'u32'],
  [4, 'status', 'u32'],
]);
export const rndis_reset_request = defineStruct('rndis_reset_request', 4, [[0, 'reserved', 'u32']]);
export const rndis_reset_complete = defineStruct('rndis_reset_complete', 8, [
  [0, 'status', 'u32'],
  [4, 'addressing_reset', 'u32'],
]);
export const rndis_indicate_status = defineStruct('rndis_indicate_status', 12, [
  [0, 'status', 'u32'],
  [4, 'status_buflen', 'u32'],
  [8, 'status_buf_offset', 'u32'],
]);
export const rndis_keepalive_request = defineStruct('rndis_keepalive_request', 4, [[0, 'req_id', 'u32']]);
export const rndis_keepalive_complete = defineStruct('rndis_keepalive_complete', 8, [
  [0, 'req_id', 'u32'],
  [4, 'status', 'u32'],
]);
/** Offsets count from the start of this body (byte 8 of the message). */
export const rndis_packet = defineStruct('rndis_packet', 36, [
  [0, 'data_offset', 'u32'],
  [4, 'data_len', 'u32'],
  [8, 'oob_data_offset', 'u32'],
  [12, 'oob_data_len', 'u32'],
  [16, 'num_oob_data_elements', 'u32'],
  [20, 'per_pkt_info_offset', 'u32'],
  [24, 'per_pkt_info_len', 'u32'],
  [28, 'vc_handle', 'u32'],
  [32, 'reserved', 'u32'],
]);
/** One PPI element: `type` bits 0-30, bit 31 `internal`; the data at `ppi_offset` from the element. */
export const rndis_per_packet_info = defineStruct('rndis_per_packet_info', 12, [
  [0, 'size', 'u32'],
  [4, 'type', 'u32'],
  [8, 'ppi_offset', 'u32'],
]);
/** A PPI element with a u32 of data (checksum, LSO, VLAN, hash): NDIS_*_PPI_SIZE in Linux. */
export const NDIS_U32_PPI_SIZE = rndis_per_packet_info.size + 4;
/**
 * OID_GEN_RNDIS_CONFIG_PARAMETER's information buffer: a named parameter, its name (UTF-16LE,
 * no terminator) and value at offsets from the start of this structure, lengths in bytes.
 */
export const rndis_config_parameter_info = defineStruct('rndis_config_parameter_info', 20, [
  [0, 'parameter_name_offset', 'u32'],
  [4, 'parameter_name_length', 'u32'],
  [8, 'parameter_type', 'u32'],
  [12, 'parameter_value_offset', 'u32'],
  [16, 'parameter_value_length', 'u32'],
]);
/** parameter_type: a u32 value, or a UTF-16LE string (Linux sends NetworkAddress as one). */
export const RNDIS_CONFIG_PARAM_TYPE_INTEGER = 0;
export const RNDIS_CONFIG_PARAM_TYPE_STRING = 2;

export const ndis_object_header = defineStruct('ndis_object_header', 4, [
  [0, 'type', 'u8'],
  [1, 'revision', 'u8'],
  [2, 'size', 'u16'],
]);
/** NDIS_RECEIVE_SCALE_CAPABILITIES (__packed: 18 bytes). */
export const ndis_recv_scale_cap = defineStruct('ndis_recv_scale_cap', 18, [
  [0, 'hdr_type', 'u8'],
  [1, 'hdr_rev', 'u8'],
  [2, 'hdr_size', 'u16'],
  [4, 'cap_flag', 'u32'],
  [8, 'num_int_msg', 'u32'],
  [12, 'num_recv_que', 'u32'],
  [16, 'num_indirect_tabent', 'u16'],
]);
/** NDIS_RECEIVE_SCALE_PARAMETERS (natural alignment: 40 bytes); table and key follow at their offsets. */
export const ndis_recv_scale_param = defineStruct('ndis_recv_scale_param', 40, [
  [0, 'hdr_type', 'u8'],
  [1, 'hdr_rev', 'u8'],
  [2, 'hdr_size', 'u16'],
  [4, 'flag', 'u16'],
  [6, 'base_cpu_number', 'u16'],
  [8, 'hashinfo', 'u32'],
  [12, 'indirect_tabsize', 'u16'],
  [14, 'pad0', 'u16'],
  [16, 'indirect_taboffset', 'u32'],
  [20, 'hashkey_size', 'u16'],
  [22, 'pad1', 'u16'],
  [24, 'hashkey_offset', 'u32'],
  [28, 'processor_masks_offset', 'u32'],
  [32, 'num_processor_masks', 'u32'],
  [36, 'processor_masks_entry_size', 'u32'],
]);
/**
 * struct ndis_offload (OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES): 156 bytes; NDIS 6.0 guests take
 * the first 112 (NDIS_OFFLOAD_SIZE_6_0), 6.1 the first 144 (NDIS_OFFLOAD_SIZE_6_1).
 */
export const ndis_offload = defineStruct('ndis_offload', 156, [
  [0, 'hdr_type', 'u8'],
  [1, 'hdr_rev', 'u8'],
  [2, 'hdr_size', 'u16'],
  [4, 'csum_ip4_txenc', 'u32'],
  [8, 'csum_ip4_txcsum', 'u32'],
  [12, 'csum_ip4_rxenc', 'u32'],
  [16, 'csum_ip4_rxcsum', 'u32'],
  [20, 'csum_ip6_txenc', 'u32'],
  [24, 'csum_ip6_txcsum', 'u32'],
  [28, 'csum_ip6_rxenc', 'u32'],
  [32, 'csum_ip6_rxcsum', 'u32'],
  [36, 'lsov1', { bytes: 16 }],
  [52, 'ipsecv1', { bytes: 28 }],
  [80, 'lsov2_ip4_encap', 'u32'],
  [84, 'lsov2_ip4_maxsz', 'u32'],
  [88, 'lsov2_ip4_minsg', 'u32'],
  [92, 'lsov2_ip6_encap', 'u32'],
  [96, 'lsov2_ip6_maxsz', 'u32'],
  [100, 'lsov2_ip6_minsg', 'u32'],
  [104, 'lsov2_ip6_opts', 'u32'],
  [108, 'flags', 'u32'],
  [112, 'ipsecv2', { bytes: 32 }],
  [144, 'rsc_ip4', 'u8'],
  [145, 'rsc_ip6', 'u8'],
  [146, 'pad', 'u16'],
  [148, 'encap_gre_flags', 'u32'],
  [152, 'encap_gre_maxhdr', 'u32'],
]);
export const NDIS_OFFLOAD_SIZE = ndis_offload.size;
export const NDIS_OFFLOAD_SIZE_6_0 = 112;
export const NDIS_OFFLOAD_SIZE_6_1 = 144;
/** struct ndis_offload_params (OID_TCP_OFFLOAD_PARAMETERS): 28 bytes; NVSP <= 4 guests send 22. */
export const ndis_offload_params = defineStruct('ndis_offload_params', 28, [
  [0, 'hdr_type', 'u8'],
  [1, 'hdr_rev', 'u8'],
  [2, 'hdr_size', 'u16'],
  [4, 'ip_v4_csum', 'u8'],
  [5, 'tcp_ip_v4_csum', 'u8'],
  [6, 'udp_ip_v4_csum', 'u8'],
  [7, 'tcp_ip_v6_csum', 'u8'],
  [8, 'udp_ip_v6_csum', 'u8'],
  [9, 'lso_v1', 'u8'],
  [10, 'ip_sec_v1', 'u8'],
  [11, 'lso_v2_ipv4', 'u8'],
  [12, 'lso_v2_ipv6', 'u8'],
  [13, 'tcp_connection_ip_v4', 'u8'],
  [14, 'tcp_connection_ip_v6', 'u8'],
  [15, 'pad0', 'u8'],
  [16, 'flags', 'u32'],
  [20, 'ip_sec_v2', 'u8'],
  [21, 'ip_sec_v2_ip_v4', 'u8'],
  [22, 'rsc_ip_v4', 'u8'],
  [23, 'rsc_ip_v6', 'u8'],
  [24, 'encapsulated_packet_task_offload', 'u8'],
  [25, 'encapsulation_types', 'u8'],
  [26, 'pad1', 'u16'],
]);
export const VERSION_4_OFFLOAD_SIZE = 22;
/** NDIS_OFFLOAD_ENCAPSULATION (OID_OFFLOAD_ENCAPSULATION, ntddndis.h): 28 bytes, its revision 1 size. */
export const ndis_offload_encapsulation = defineStruct('ndis_offload_encapsulation', 28, [
  [0, 'hdr_type', 'u8'],
  [1, 'hdr_rev', 'u8'],
  [2, 'hdr_size', 'u16'],
  [4, 'ipv4_enabled', 'u32'],
  [8, 'ipv4_encapsulation_type', 'u32'],
  [12, 'ipv4_header_size', 'u32'],
  [16, 'ipv6_enabled', 'u32'],
  [20, 'ipv6_encapsulation_type', 'u32'],
  [24, 'ipv6_header_size', 'u32'],
]);
/** NDIS_LINK_SPEED (OID_GEN_MAX_LINK_SPEED): bits/s each way. */
export const ndis_link_speed = defineStruct('ndis_link_speed', 16, [
  [0, 'xmit_link_speed', 'u64'],
  [8, 'rcv_link_speed', 'u64'],
]);
/** NDIS_LINK_STATE (OID_GEN_LINK_STATE), natural alignment: the speeds start at 16. */
export const ndis_link_state = defineStruct('ndis_link_state', 40, [
  [0, 'hdr_type', 'u8'],
  [1, 'hdr_rev', 'u8'],
  [2, 'hdr_size', 'u16'],
  [4, 'media_connect_state', 'u32'],
  [8, 'media_duplex_state', 'u32'],
  [12, 'pad', 'u32'],
  [16, 'xmit_link_speed', 'u64'],
  [24, 'rcv_link_speed', 'u64'],
  [32, 'pause_functions', 'u32'],
  [36, 'auto_negotiation_flags', 'u32'],
]);
export const NDIS_OFFLOAD_PARAMETERS_NO_CHANGE = 0;
export const NDIS_OFFLOAD_PARAMETERS_TX_RX_DISABLED = 1;
export const NDIS_OFFLOAD_PARAMETERS_TX_ENABLED_RX_DISABLED = 2;
export const NDIS_OFFLOAD_PARAMETERS_RX_ENABLED_TX_DISABLED = 3;
export const NDIS_OFFLOAD_PARAMETERS_TX_RX_ENABLED = 4;
export const NDIS_OFFLOAD_PARAMETERS_LSOV2_DISABLED = 1;
export const NDIS_OFFLOAD_PARAMETERS_LSOV2_ENABLED = 2;
export const NDIS_OFFLOAD_ENCAP_8023 = 0x2;
/** NDIS_OFFLOAD_ENCAPSULATION's Enabled and EncapsulationType values (ntddndis.h). */
export const NDIS_OFFLOAD_SET_NO_CHANGE = 0;
export const NDIS_OFFLOAD_SET_ON = 1;
export const NDIS_OFFLOAD_SET_OFF = 2;
export const NDIS_ENCAPSULATION_IEEE_802_3 = 2;
/** NDIS_LINK_STATE's MediaConnectState (NET_IF_MEDIA_CONNECT_STATE) and MediaDuplexState. */
export const MEDIA_CONNECT_STATE_CONNECTED = 1;
export const MEDIA_CONNECT_STATE_DISCONNECTED = 2;
export const MEDIA_DUPLEX_STATE_FULL = 2;
export const NDIS_TXCSUM_CAP_TCP4OPT = 0x004;
export const NDIS_TXCSUM_CAP_TCP4 = 0x010;
export const NDIS_TXCSUM_CAP_UDP4 = 0x040;
export const NDIS_TXCSUM_CAP_IP4 = 0x100;
export const NDIS_TXCSUM_CAP_IP6EXT = 0x001;
export const NDIS_TXCSUM_CAP_TCP6OPT = 0x004;
export const NDIS_TXCSUM_CAP_TCP6 = 0x010;
export const NDIS_TXCSUM_CAP_UDP6 = 0x040;

/** The RX bits of ndis_tcp_ip_checksum_info. */
export const NDIS_RXCSUM_TCP_FAILED = 0x1;
export const NDIS_RXCSUM_UDP_FAILED = 0x2;
export const NDIS_RXCSUM_IP_FAILED = 0x4;
export const NDIS_RXCSUM_TCP_SUCCEEDED = 0x8;
export const NDIS_RXCSUM_UDP_SUCCEEDED = 0x10;
export const NDIS_RXCSUM_IP_SUCCEEDED = 0x20;
/** The TX bits of ndis_tcp_ip_checksum_info (tcp_header_offset in bits 16-25). */
export const NDIS_TXCSUM_IS_IPV4 = 0x1;
export const NDIS_TXCSUM_IS_IPV6 = 0x2;
export const NDIS_TXCSUM_TCP = 0x4;
export const NDIS_TXCSUM_UDP = 0x8;
export const NDIS_TXCSUM_IP_HEADER = 0x10;

/** The smallest RNDIS data message: header + rndis_packet. */
export const RNDIS_PACKET_HEADER_SIZE = RNDIS_HEADER_SIZE + rndis_packet.size;

export type RndisFault =
  | 'short'
  | 'bad-length'
  | 'bad-data-offset'
  | 'bad-data-length'
  | 'bad-ppi-offset'
  | 'bad-ppi-length'
  | 'bad-ppi-element'
  | 'bad-oob'
  | 'unknown-type';

/** A guest RNDIS message the host cannot take: dropped (or answered with an error status), counted, logged. */
export class RndisProtocolError extends HvemuError {
  readonly outcome = 'message-dropped' as const;
  constructor(
    readonly fault: RndisFault,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Where a data message's parts are, in bytes from the message start: the frame
 * [dataOffset, +dataLength) and the PPI area [ppiOffset, +ppiLength). Reused per frame.
 */
export class RndisPacketLayout {
  dataOffset = 0;
  dataLength = 0;
  ppiOffset = 0;
  ppiLength = 0;
}

/** A little-endian u32 at `at` of `b` (the caller checked the range): the data path's read, no DataView per buffer. */
export function readU32le(b: Uint8Array, at: number): number {
  return (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24)) >>> 0;
}

/**
 * Validates the rndis_packet message at byte `at` of `head` (at least RNDIS_PACKET_HEADER_SIZE
 * bytes of it there) against the message's `msgLen` (already checked against what the guest sent)
 * and fills `out`. Returns the fault or null. The frame and PPI area must lie inside the
 * message past the rndis_packet body; out-of-band data (never used by netvsc) is refused.
 */
export function parseRndisPacket(head: Uint8Array, msgLen: number, out: RndisPacketLayout, at = 0): RndisFault | null {
  if (!(at >= 0) || head.length - at < RNDIS_PACKET_HEADER_SIZE || msgLen < RNDIS_PACKET_HEADER_SIZE) return 'short';
  const body = at + RNDIS_HEADER_SIZE;
  const bodyLen = msgLen - RNDIS_HEADER_SIZE;
  const dataOffset = readU32le(head, body);
  const dataLen = readU32le(head, body + 4);
  if (readU32le(head, body + 12) !== 0 || readU32le(head, body + 16) !== 0) return 'bad-oob';
  if (dataOffset < rndis_packet.size || dataOffset > bodyLen) return 'bad-data-offset';
  if (dataLen > bodyLen - dataOffset) return 'bad-data-length';
  const ppiOffset = readU32le(head, body + 20);
  const ppiLen = readU32le(head, body + 24);
  if (ppiLen !== 0) {
    if (ppiOffset < rndis_packet.size || ppiOffset > bodyLen) return 'bad-ppi-offset';
    if (ppiLen > bodyLen - ppiOffset) return 'bad-ppi-length';
  }
  // Offsets in the layout are from the message's start, wherever `at` put it in `head`.
  out.dataOffset = RNDIS_HEADER_SIZE + dataOffset;
  out.dataLength = dataLen;
  out.ppiOffset = ppiLen === 0 ? 0 : RNDIS_HEADER_SIZE + ppiOffset;
  out.ppiLength = ppiLen;
  return null;
}

/**
 * Walks the PPI chain in `area` up to `end` (the bytes [ppiOffset, +ppiLength) of a data
 * message, copied to the start of a reused buffer: no view per message): calls
 * `fn(type, internal, dataAt, dataLength)` per element with the element's data position in
 * `area`. Every element must be at least rndis_per_packet_info long, fit in what is left, and
 * have its data inside itself; the first that does not stops the walk with 'bad-ppi-element'.
 * Each element consumes at least 12 bytes, so the walk ends.
 */
export function forEachPpi(
  area: Uint8Array,
  fn: (type: number, internal: boolean, dataAt: number, dataLength: number) => void,
  end = area.length,
): RndisFault | null {
  if (!(end >= 0 && end <= area.length)) throw new RangeError(`PPI area end ${end} outside ${area.length} bytes`);
  let at = 0;
  while (at < end) {
    const left = end - at;
    if (left < rndis_per_packet_info.size) return 'bad-ppi-element';
    const size = readU32le(area, at);
    const type = readU32le(area, at + 4);
    const ppiOffset = readU32le(area, at + 8);
    if (size < rndis_per_packet_info.size || size > left) return 'bad-ppi-element';
    if (ppiOffset < rndis_per_packet_info.size || ppiOffset > size) return 'bad-ppi-element';
    fn(type & 0x7fffffff, (type & RNDIS_PPI_INTERNAL) !== 0, at + ppiOffset, size - ppiOffset);
    at += size;
  }
  return null;
}

/** One PPI element with a u32 of data at `at` in `out`; returns the bytes written (NDIS_U32_PPI_SIZE). */
export function writeU32Ppi(out: DataView, at: number, type: number, value: number): number {
  out.setUint32(at, NDIS_U32_PPI_SIZE, true);
  out.setUint32(at + 4, type >>> 0, true);
  out.setUint32(at + 8, rndis_per_packet_info.size, true);
  out.setUint32(at + 12, value >>> 0, true);
  return NDIS_U32_PPI_SIZE;
}

/**
 * Writes the header of an RNDIS data message carrying a frame of `frameLength` bytes and the
 * u32 PPIs `ppis` (type, value pairs) at `at` in `out`; the frame follows at the returned offset.
 */
export function writeRndisPacketHeader(out: DataView, at: number, frameLength: number, ppis: readonly number[]): number {
  const ppiLength = (ppis.length / 2) * NDIS_U32_PPI_SIZE;
  const headerLength = RNDIS_PACKET_HEADER_SIZE + ppiLength;
  out.setUint32(at, RNDIS_MSG_PACKET, true);
  out.setUint32(at + 4, headerLength + frameLength, true);
  const body = at + RNDIS_HEADER_SIZE;
  out.setUint32(body, headerLength - RNDIS_HEADER_SIZE, true); // data_offset
  out.setUint32(body + 4, frameLength, true);
  for (let o = 8; o < 20; o += 4) out.setUint32(body + o, 0, true); // no OOB data
  out.setUint32(body + 20, ppiLength === 0 ? 0 : rndis_packet.size, true);
  out.setUint32(body + 24, ppiLength, true);
  out.setUint32(body + 28, 0, true);
  out.setUint32(body + 32, 0, true);
  let p = at + RNDIS_PACKET_HEADER_SIZE;
  for (let i = 0; i < ppis.length; i += 2) p += writeU32Ppi(out, p, ppis[i], ppis[i + 1]);
  return headerLength;
}

/** A whole RNDIS message: header + `body` encoded + `tail` bytes, msg_len set. */
export function encodeRndisMessage<B extends { size: number; encode(v: never, b: Uint8Array, o: number): void }>(
  type: number,
  body: B,
  value: Parameters<B['encode']>[0],
  tail: Uint8Array = new Uint8Array(0),
): Uint8Array {
  const out = new Uint8Array(RNDIS_HEADER_SIZE + body.size + tail.length);
  rndis_message_header.encode({ ndis_msg_type: type >>> 0, msg_len: out.length }, out, 0);
  body.encode(value as never, out, RNDIS_HEADER_SIZE);
  out.set(tail, RNDIS_HEADER_SIZE + body.size);
  return out;
}
