/**
 * The RNDIS control side of the NIC as a pure state machine: a control message in, the
 * completion out (or none), with the device's RNDIS state (initialized or halted, packet
 * filter, multicast list, current MAC, RSS parameters, the offloads the guest asked for) kept
 * here. No I/O: the device carries the answers to the guest through the receive buffer.
 *
 * What it answers: INITIALIZE (a fresh RNDIS session each time; 8 packets per message, 8-byte
 * alignment), QUERY of the OIDs in QUERY_OIDS (OID_GEN_SUPPORTED_LIST lists the ones answered
 * in the current configuration, then the set-only ones), SET of the packet filter, multicast list, RSS
 * parameters, offload parameters, offload encapsulation, config parameters (NetworkAddress
 * changes the MAC when the host allows it) and network layer addresses, RESET (addressing
 * lost: filter and multicast list cleared, addressing_reset = 1), KEEPALIVE; HALT is answered
 * by nothing, as RNDIS says, and only INITIALIZE is taken after it. Every request the guest
 * gets wrong is answered with an error status and counted (stats), never thrown; only a
 * message too short for its body or of an unknown type throws RndisProtocolError (the device
 * drops it and counts it in rndisErrors).
 */
import { HostUsageError, silentLogger, type Logger } from '@hvemu/common';
import {
  readU32le,
  encodeRndisMessage,
  MEDIA_CONNECT_STATE_CONNECTED,
  MEDIA_CONNECT_STATE_DISCONNECTED,
  MEDIA_DUPLEX_STATE_FULL,
  ndis_link_speed,
  ndis_link_state,
  ndis_offload,
  ndis_offload_encapsulation,
  ndis_offload_params,
  ndis_recv_scale_cap,
  ndis_recv_scale_param,
  NDIS_ENCAPSULATION_IEEE_802_3,
  NDIS_HASH_FUNC_TOEPLITZ,
  NDIS_HASH_IPV4,
  NDIS_HASH_IPV6,
  NDIS_HASH_TCP_IPV4,
  NDIS_HASH_TCP_IPV6,
  NDIS_LINK_STATE_REVISION_1,
  NDIS_OBJECT_TYPE_DEFAULT,
  NDIS_OBJECT_TYPE_OFFLOAD,
  NDIS_OBJECT_TYPE_OFFLOAD_ENCAPSULATION,
  NDIS_OBJECT_TYPE_RSS_CAPABILITIES,
  NDIS_OBJECT_TYPE_RSS_PARAMETERS,
  NDIS_OFFLOAD_ENCAPSULATION_REVISION_1,
  NDIS_OFFLOAD_PARAMETERS_REVISION_1,
  NDIS_OFFLOAD_PARAMETERS_REVISION_2,
  NDIS_OFFLOAD_PARAMETERS_REVISION_3,
  NDIS_OFFLOAD_SET_ON,
  NDIS_OFFLOAD_SIZE,
  NDIS_OFFLOAD_SIZE_6_0,
  NDIS_OFFLOAD_SIZE_6_1,
  NDIS_RECEIVE_SCALE_CAPABILITIES_REVISION_2,
  NDIS_RECEIVE_SCALE_PARAMETERS_REVISION_2,
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
  OID_GEN_DRIVER_VERSION,
  OID_GEN_FRIENDLY_NAME,
  OID_GEN_HARDWARE_STATUS,
  OID_GEN_LINK_SPEED,
  OID_GEN_LINK_STATE,
  OID_GEN_MAC_OPTIONS,
  OID_GEN_MAX_LINK_SPEED,
  OID_GEN_MAXIMUM_FRAME_SIZE,
  OID_GEN_MAXIMUM_LOOKAHEAD,
  OID_GEN_MAXIMUM_SEND_PACKETS,
  OID_GEN_MAXIMUM_TOTAL_SIZE,
  OID_GEN_MEDIA_CONNECT_STATUS,
  OID_GEN_MEDIA_IN_USE,
  OID_GEN_MEDIA_SUPPORTED,
  OID_GEN_NETWORK_LAYER_ADDRESSES,
  OID_GEN_PHYSICAL_MEDIUM,
  OID_GEN_RCV_OK,
  OID_GEN_RECEIVE_BLOCK_SIZE,
  OID_GEN_RECEIVE_SCALE_CAPABILITIES,
  OID_GEN_RECEIVE_SCALE_PARAMETERS,
  OID_GEN_RNDIS_CONFIG_PARAMETER,
  OID_GEN_SUPPORTED_LIST,
  OID_GEN_TRANSMIT_BLOCK_SIZE,
  OID_GEN_VENDOR_DESCRIPTION,
  OID_GEN_VENDOR_DRIVER_VERSION,
  OID_GEN_VENDOR_ID,
  OID_GEN_XMIT_OK,
  OID_OFFLOAD_ENCAPSULATION,
  OID_TCP_OFFLOAD_CURRENT_CONFIG,
  OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES,
  OID_TCP_OFFLOAD_PARAMETERS,
  rndis_config_parameter_info,
  rndis_halt_request,
  rndis_indicate_status,
  rndis_initialize_complete,
  rndis_initialize_request,
  rndis_keepalive_complete,
  rndis_keepalive_request,
  rndis_message_header,
  rndis_query_complete,
  rndis_query_request,
  rndis_reset_complete,
  rndis_reset_request,
  rndis_set_complete,
  rndis_set_request,
  RNDIS_CONFIG_PARAM_TYPE_INTEGER,
  RNDIS_CONFIG_PARAM_TYPE_STRING,
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
  RNDIS_STATUS_ADAPTER_NOT_READY,
  RNDIS_STATUS_FAILURE,
  RNDIS_STATUS_INVALID_DATA,
  RNDIS_STATUS_INVALID_LENGTH,
  RNDIS_STATUS_MEDIA_CONNECT,
  RNDIS_STATUS_MEDIA_DISCONNECT,
  RNDIS_STATUS_MULTICAST_FULL,
  RNDIS_STATUS_NOT_SUPPORTED,
  RNDIS_STATUS_SUCCESS,
  RndisProtocolError,
} from './rndis.js';
import { ndisVersionFor, NVSP_PROTOCOL_VERSION_4, NVSP_PROTOCOL_VERSION_5 } from './nvsp.js';

/** What the NIC is, from the VMM's side. */
export interface NicIdentity {
  /**
   * 6 bytes. RndisControl keeps its own copy as the current address (the rx filter's): a guest
   * may change it through the NetworkAddress config parameter when allowMacChange is set.
   */
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
  /** The last NDIS_OFFLOAD_ENCAPSULATION the guest set (OID_OFFLOAD_ENCAPSULATION), or null. */
  encapsulation: ReturnType<typeof ndis_offload_encapsulation.decode> | null;
}

/** The counters RndisControl reads (the statistics OIDs) and writes; NetvspStats is one. */
export interface RndisControlStats {
  /** Frames the guest sent that left the NIC (OID_GEN_XMIT_OK). */
  readonly txFrames: number;
  /** Frames delivered to the guest (OID_GEN_RCV_OK). */
  readonly rxFrames: number;
  /**
   * Control requests answered with an error status: malformed (an information buffer outside
   * the message, a bad NDIS object, RSS parameters or config parameter), refused (a MAC change
   * the host does not allow, a foreign RNDIS version), or sent while not initialized.
   */
  rndisControlErrors: number;
  /** QUERY or SET of an OID the host does not implement (RNDIS_STATUS_NOT_SUPPORTED; guests probe some). */
  rndisUnsupportedOids: number;
}

export interface RndisControlOptions {
  /** Where to count (default: counters of its own, with no frames). */
  stats?: RndisControlStats;
  /** Refused requests and ignored config parameters are logged at debug (default: silent). */
  logger?: Logger;
  /** The guest may change its MAC (default false, as Hyper-V without MAC address spoofing). */
  allowMacChange?: boolean;
}

/** The RNDIS pkt_alignment_factor the host reports: 2^3 = 8 bytes (RNDIS_PKT_ALIGN_DEFAULT). */
export const PKT_ALIGNMENT_FACTOR = 3;
/** max_pkt_per_msg: RNDIS data messages the guest may batch in one send (RNDIS_MAX_PKT_DEFAULT). */
export const MAX_PKT_PER_MSG = 8;
/** The multicast list the host keeps (it filters nothing by it: all multicast passes). */
export const MAXIMUM_LIST_SIZE = 32;
/** RSS indirection table entries the host reports (Linux's ITAB_NUM). */
export const RSS_TABLE_ENTRIES = 128;
/** The config parameter that sets the MAC (Linux NWADR_STR; Windows' registry keyword). */
export const NETWORK_ADDRESS_PARAMETER = 'NetworkAddress';

/**
 * The OIDs QUERY answers, in OID_GEN_SUPPORTED_LIST order. The list a guest gets is the subset
 * answered in the current configuration (RSS capabilities from NVSP 5, RSS parameters with 2+
 * queues, the friendly name when the VMM gave one), then SET_ONLY_OIDS: NDIS's supported list
 * names the OIDs a miniport handles "for a query or set request".
 */
/**
 * OIDs SET takes and QUERY does not: NDIS defines the offload parameters, config parameters
 * and network layer addresses as set-only, and the host reports no encapsulation of its own.
 */
const SET_ONLY_OIDS: readonly number[] = [
  OID_TCP_OFFLOAD_PARAMETERS,
  OID_GEN_RNDIS_CONFIG_PARAMETER,
  OID_OFFLOAD_ENCAPSULATION,
  OID_GEN_NETWORK_LAYER_ADDRESSES,
];

const QUERY_OIDS: readonly number[] = [
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
  OID_GEN_MAX_LINK_SPEED,
  OID_GEN_LINK_STATE,
  OID_GEN_MEDIA_CONNECT_STATUS,
  OID_GEN_CURRENT_PACKET_FILTER,
  OID_GEN_MAC_OPTIONS,
  OID_GEN_MAXIMUM_SEND_PACKETS,
  OID_GEN_VENDOR_ID,
  OID_GEN_VENDOR_DESCRIPTION,
  OID_GEN_VENDOR_DRIVER_VERSION,
  OID_GEN_DRIVER_VERSION,
  OID_GEN_FRIENDLY_NAME,
  OID_GEN_XMIT_OK,
  OID_GEN_RCV_OK,
  OID_802_3_PERMANENT_ADDRESS,
  OID_802_3_CURRENT_ADDRESS,
  OID_802_3_MULTICAST_LIST,
  OID_802_3_MAXIMUM_LIST_SIZE,
  OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES,
  OID_TCP_OFFLOAD_CURRENT_CONFIG,
  OID_GEN_RECEIVE_SCALE_CAPABILITIES,
  OID_GEN_RECEIVE_SCALE_PARAMETERS,
];

export type RndisState = 'uninitialized' | 'initialized' | 'halted';

/** A config parameter as the guest named it: its name and raw value bytes. */
interface ConfigParameter {
  name: string;
  type: number;
  value: Uint8Array;
}

export class RndisControl {
  state: RndisState = 'uninitialized';
  packetFilter = 0;
  linkUp = true;
  /** The multicast addresses the guest set, 6 bytes each (reported by QUERY; frames are not matched against it). */
  multicastList = new Uint8Array(0);
  /** The guest may change its MAC (NetworkAddress); the host may flip it at run time, as Hyper-V's setting. */
  allowMacChange: boolean;
  /** The NIC as configured, `mac` being the current address (what OID_802_3_CURRENT_ADDRESS and the rx filter use). */
  readonly nic: NicIdentity;
  /** The address the VMM gave (OID_802_3_PERMANENT_ADDRESS): a guest's change never touches it. */
  readonly permanentMac: Uint8Array;
  readonly stats: RndisControlStats;
  readonly rss: RssState = { enabled: false, hashInfo: 0, key: new Uint8Array(40), table: new Uint32Array(0) };
  readonly offloads: OffloadRequest = { params: null, encapsulation: null };
  /** The NVSP version the channel negotiated (decides the offload object's revision). */
  nvspVersion = 0;
  private readonly logger: Logger;

  constructor(nic: NicIdentity, options: RndisControlOptions = {}) {
    // Copies: a MAC change writes the current address in place, never the caller's bytes.
    this.nic = { ...nic, mac: nic.mac.slice() };
    this.permanentMac = nic.mac.slice();
    this.stats = options.stats ?? { txFrames: 0, rxFrames: 0, rndisControlErrors: 0, rndisUnsupportedOids: 0 };
    this.logger = options.logger ?? silentLogger;
    this.allowMacChange = options.allowMacChange ?? false;
    if (!Number.isSafeInteger(nic.linkSpeedBps) || nic.linkSpeedBps < 0)
      throw new HostUsageError(`RndisControl: linkSpeedBps ${nic.linkSpeedBps} is not a whole number of bit/s (0..2^53)`);
  }

  /** The current address back to the permanent one (a guest that starts over knows only that). */
  restorePermanentMac(): void {
    this.nic.mac.set(this.permanentMac);
  }

  get multicastCount(): number {
    return this.multicastList.length / 6;
  }

  /**
   * Back to before INITIALIZE (a new NVSP session). The current MAC stays: Linux changes it
   * once (netvsc_set_mac_addr) and keeps using it across the sessions an MTU or channel change
   * makes, without sending it again.
   */
  reset(): void {
    this.state = 'uninitialized';
    this.clearSession();
  }

  /**
   * Handles one control message (`msg`: exactly msg_len bytes). Returns the completion to
   * send, or null (HALT, which RNDIS answers with nothing). Throws RndisProtocolError (and
   * nothing else) for a message the host drops: shorter than its header or body, msg_len not
   * its length, or a type no host takes.
   */
  handle(msg: Uint8Array): Uint8Array | null {
    if (msg.length < RNDIS_HEADER_SIZE) throw new RndisProtocolError('short', `RNDIS control message of ${msg.length} bytes`);
    const { ndis_msg_type: type, msg_len: msgLen } = rndis_message_header.decode(msg);
    if (msgLen !== msg.length) throw new RndisProtocolError('bad-length', `RNDIS msg_len ${msgLen} for ${msg.length} bytes`);
    switch (type) {
      case RNDIS_MSG_INIT:
        return this.initialize(msg);
      case RNDIS_MSG_QUERY:
        return this.query(msg);
      case RNDIS_MSG_SET:
        return this.set(msg);
      case RNDIS_MSG_RESET:
        return this.resetRequest(msg);
      case RNDIS_MSG_KEEPALIVE:
        return this.keepalive(msg);
      case RNDIS_MSG_HALT:
        body(msg, rndis_halt_request.size);
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

  /** OID_GEN_SUPPORTED_LIST now: the OIDs QUERY answers, then the set-only ones. */
  supportedOids(): number[] {
    return [...this.queryableOids(), ...SET_ONLY_OIDS];
  }

  /** The OIDs QUERY answers now: each of QUERY_OIDS whose answer exists in this configuration. */
  queryableOids(): number[] {
    return QUERY_OIDS.filter((oid) => oid === OID_GEN_SUPPORTED_LIST || this.queryInfo(oid, 0) !== null);
  }

  /** Everything an RNDIS session sets (INITIALIZE, a new NVSP session). */
  private clearSession(): void {
    this.packetFilter = 0;
    this.multicastList = new Uint8Array(0);
    this.rss.enabled = false;
    this.rss.table = new Uint32Array(0);
    // A new session's SET may say HASH_KEY_UNCHANGED: nothing of the old session's is left to reuse.
    this.rss.key = new Uint8Array(40);
    this.rss.hashInfo = 0;
    this.offloads.params = null;
    this.offloads.encapsulation = null;
  }

  /** A request the guest got wrong (or may not make): answered with `status`, counted, logged. */
  private refuse(status: number, why: string): number {
    this.stats.rndisControlErrors++;
    this.logger.debug(`netvsp: RNDIS control request refused (${why})`);
    return status;
  }

  private unsupported(what: string, oid: number): number {
    this.stats.rndisUnsupportedOids++;
    this.logger.debug(`netvsp: RNDIS ${what} of OID 0x${oid.toString(16)}: not supported`);
    return RNDIS_STATUS_NOT_SUPPORTED;
  }

  /** RNDIS allows only INITIALIZE (and HALT) outside an initialized session. */
  private notReady(what: string): number {
    return this.refuse(RNDIS_STATUS_ADAPTER_NOT_READY, `${what} while the adapter is ${this.state}`);
  }

  /** A fresh session each time (after HALT too): the guest sets its filter and the rest again. */
  private initialize(msg: Uint8Array): Uint8Array {
    const req = rndis_initialize_request.decode(body(msg, rndis_initialize_request.size));
    let status = RNDIS_STATUS_SUCCESS;
    if (req.major_ver !== RNDIS_MAJOR_VERSION) status = this.refuse(RNDIS_STATUS_NOT_SUPPORTED, `RNDIS version ${req.major_ver}`);
    else {
      this.state = 'initialized';
      this.clearSession();
    }
    return encodeRndisMessage(RNDIS_MSG_INIT_C, rndis_initialize_complete, {
      req_id: req.req_id,
      status,
      major_ver: RNDIS_MAJOR_VERSION,
      minor_ver: RNDIS_MINOR_VERSION,
      dev_flags: RNDIS_DF_CONNECTIONLESS,
      medium: RNDIS_MEDIUM_802_3,
      max_pkt_per_msg: MAX_PKT_PER_MSG,
      max_xfer_size: 0x10000,
      pkt_alignment_factor: PKT_ALIGNMENT_FACTOR,
    });
  }

  /**
   * RNDIS RESET: the device loses its addressing (packet filter, multicast list) and says so
   * with addressing_reset = 1, so the guest sets them again; until it does, no frame reaches it.
   * RSS and offload settings are kept: RESET_C asks the guest to resend only the addressing.
   */
  private resetRequest(msg: Uint8Array): Uint8Array {
    body(msg, rndis_reset_request.size);
    if (this.state !== 'initialized') {
      return encodeRndisMessage(RNDIS_MSG_RESET_C, rndis_reset_complete, { status: this.notReady('RESET'), addressing_reset: 0 });
    }
    this.packetFilter = 0;
    this.multicastList = new Uint8Array(0);
    return encodeRndisMessage(RNDIS_MSG_RESET_C, rndis_reset_complete, { status: RNDIS_STATUS_SUCCESS, addressing_reset: 1 });
  }

  private keepalive(msg: Uint8Array): Uint8Array {
    const { req_id } = rndis_keepalive_request.decode(body(msg, rndis_keepalive_request.size));
    const status = this.state === 'initialized' ? RNDIS_STATUS_SUCCESS : this.notReady('KEEPALIVE');
    return encodeRndisMessage(RNDIS_MSG_KEEPALIVE_C, rndis_keepalive_complete, { req_id, status });
  }

  private query(msg: Uint8Array): Uint8Array {
    const req = rndis_query_request.decode(body(msg, rndis_query_request.size));
    let data: Uint8Array | null = null;
    let status: number;
    if (this.state !== 'initialized') status = this.notReady('QUERY');
    else if (infoBuffer(msg, req.info_buf_offset, req.info_buflen) === null) status = this.badInfoBuffer('QUERY', req.oid);
    else {
      data = this.queryInfo(req.oid, req.info_buflen);
      status = data === null ? this.unsupported('QUERY', req.oid) : RNDIS_STATUS_SUCCESS;
    }
    const info = data ?? new Uint8Array(0);
    return encodeRndisMessage(
      RNDIS_MSG_QUERY_C,
      rndis_query_complete,
      { req_id: req.req_id, status, info_buflen: info.length, info_buf_offset: rndis_query_complete.size },
      info,
    );
  }

  private badInfoBuffer(what: string, oid: number): number {
    return this.refuse(RNDIS_STATUS_INVALID_LENGTH, `${what} of OID 0x${oid.toString(16)}: information buffer outside the message`);
  }

  /**
   * The information buffer for `oid`, or null (not supported in this configuration).
   * `requestLength` is the guest's info_buflen, the only size hint the statistics OIDs have.
   */
  private queryInfo(oid: number, requestLength: number): Uint8Array | null {
    const { nic } = this;
    switch (oid) {
      case OID_GEN_SUPPORTED_LIST:
        return u32s(...this.supportedOids());
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
      case OID_GEN_MAX_LINK_SPEED:
        return ndis_link_speed.encodeNew({ xmit_link_speed: this.linkBps(), rcv_link_speed: this.linkBps() });
      case OID_GEN_LINK_STATE:
        return this.linkState();
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
      case OID_GEN_DRIVER_VERSION:
        return this.ndisVersion();
      case OID_GEN_FRIENDLY_NAME:
        return nic.friendlyName === undefined ? null : utf16z(nic.friendlyName);
      case OID_GEN_XMIT_OK:
        return counter(this.stats.txFrames, requestLength);
      case OID_GEN_RCV_OK:
        return counter(this.stats.rxFrames, requestLength);
      case OID_802_3_PERMANENT_ADDRESS:
        return this.permanentMac.slice();
      case OID_802_3_CURRENT_ADDRESS:
        return nic.mac.slice();
      case OID_802_3_MULTICAST_LIST:
        return this.multicastList.slice();
      case OID_802_3_MAXIMUM_LIST_SIZE:
        return u32s(MAXIMUM_LIST_SIZE);
      case OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES:
      case OID_TCP_OFFLOAD_CURRENT_CONFIG: // nothing offered, so nothing on
        return this.offloadCaps();
      case OID_GEN_RECEIVE_SCALE_CAPABILITIES:
        return this.nvspVersion >= NVSP_PROTOCOL_VERSION_5 ? this.rssCaps() : null;
      case OID_GEN_RECEIVE_SCALE_PARAMETERS:
        return this.nic.maxQueues >= 2 ? this.rssParams() : null;
      default:
        return null;
    }
  }

  private linkBps(): bigint {
    return BigInt(this.nic.linkSpeedBps);
  }

  /** NDIS_LINK_STATE: the link as OID_GEN_MEDIA_CONNECT_STATUS says, full duplex, no pause frames. */
  private linkState(): Uint8Array {
    return ndis_link_state.encodeNew({
      hdr_type: NDIS_OBJECT_TYPE_DEFAULT,
      hdr_rev: NDIS_LINK_STATE_REVISION_1,
      hdr_size: ndis_link_state.size,
      media_connect_state: this.linkUp ? MEDIA_CONNECT_STATE_CONNECTED : MEDIA_CONNECT_STATE_DISCONNECTED,
      media_duplex_state: MEDIA_DUPLEX_STATE_FULL,
      xmit_link_speed: this.linkBps(),
      rcv_link_speed: this.linkBps(),
    });
  }

  /** OID_GEN_DRIVER_VERSION: the NDIS version (major in the high byte) netvsc uses at this NVSP version, a u16. */
  private ndisVersion(): Uint8Array {
    const { major, minor } = ndisVersionFor(this.nvspVersion);
    return Uint8Array.of(minor, major);
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

  /** The RSS parameters in force, laid out as the guest sets them (table, then key); disabled: the flag alone. */
  private rssParams(): Uint8Array {
    const { enabled, hashInfo, key, table } = this.rss;
    const tableBytes = enabled ? table.length * 4 : 0;
    const keyBytes = enabled ? key.length : 0;
    const out = new Uint8Array(ndis_recv_scale_param.size + tableBytes + keyBytes);
    ndis_recv_scale_param.encode(
      {
        hdr_type: NDIS_OBJECT_TYPE_RSS_PARAMETERS,
        hdr_rev: NDIS_RECEIVE_SCALE_PARAMETERS_REVISION_2,
        hdr_size: ndis_recv_scale_param.size,
        flag: enabled ? 0 : NDIS_RSS_PARAM_FLAG_DISABLE_RSS,
        hashinfo: enabled ? hashInfo : 0,
        indirect_tabsize: tableBytes,
        indirect_taboffset: enabled ? ndis_recv_scale_param.size : 0,
        hashkey_size: keyBytes,
        hashkey_offset: enabled ? ndis_recv_scale_param.size + tableBytes : 0,
      },
      out,
    );
    const dv = new DataView(out.buffer);
    for (let i = 0; i < tableBytes / 4; i++) dv.setUint32(ndis_recv_scale_param.size + i * 4, table[i], true);
    out.set(key.subarray(0, keyBytes), ndis_recv_scale_param.size + tableBytes);
    return out;
  }

  private set(msg: Uint8Array): Uint8Array {
    const req = rndis_set_request.decode(body(msg, rndis_set_request.size));
    let status: number;
    if (this.state !== 'initialized') status = this.notReady('SET');
    else {
      const info = infoBuffer(msg, req.info_buf_offset, req.info_buflen);
      status = info === null ? this.badInfoBuffer('SET', req.oid) : this.setOid(req.oid, info);
    }
    return encodeRndisMessage(RNDIS_MSG_SET_C, rndis_set_complete, { req_id: req.req_id, status });
  }

  private setOid(oid: number, info: Uint8Array): number {
    switch (oid) {
      case OID_GEN_CURRENT_PACKET_FILTER:
        if (info.length < 4) return this.refuse(RNDIS_STATUS_INVALID_LENGTH, `packet filter of ${info.length} bytes`);
        this.packetFilter = readU32le(info, 0);
        return RNDIS_STATUS_SUCCESS;
      case OID_802_3_MULTICAST_LIST:
        return this.setMulticastList(info);
      case OID_TCP_OFFLOAD_PARAMETERS:
        return this.setOffloads(info);
      case OID_OFFLOAD_ENCAPSULATION:
        return this.setEncapsulation(info);
      case OID_GEN_RECEIVE_SCALE_PARAMETERS:
        return this.setRss(info);
      case OID_GEN_RNDIS_CONFIG_PARAMETER:
        return this.setConfigParameter(info);
      case OID_GEN_NETWORK_LAYER_ADDRESSES:
        return RNDIS_STATUS_SUCCESS; // Windows tells its IP addresses (for offloads): the host routes nothing by them
      default:
        return this.unsupported('SET', oid);
    }
  }

  /** Multicast addresses (group bit set), at most MAXIMUM_LIST_SIZE: kept for QUERY, all multicast passes anyway. */
  private setMulticastList(info: Uint8Array): number {
    if (info.length % 6 !== 0) return this.refuse(RNDIS_STATUS_INVALID_LENGTH, `multicast list of ${info.length} bytes`);
    if (info.length / 6 > MAXIMUM_LIST_SIZE) return this.refuse(RNDIS_STATUS_MULTICAST_FULL, `${info.length / 6} multicast addresses`);
    for (let at = 0; at < info.length; at += 6) {
      if ((info[at] & 1) === 0) return this.refuse(RNDIS_STATUS_INVALID_DATA, 'a unicast address in the multicast list');
    }
    this.multicastList = info.slice();
    return RNDIS_STATUS_SUCCESS;
  }

  /**
   * Records what the guest asks for. Since the capabilities offered nothing, a guest that
   * "enables" an offload anyway gets its frames handled without it (they are passed on as
   * built); the record is there for the VMM and the tests.
   */
  private setOffloads(info: Uint8Array): number {
    if (info.length < 22 || info[0] !== NDIS_OBJECT_TYPE_DEFAULT) return this.refuse(RNDIS_STATUS_INVALID_DATA, 'offload parameters');
    const full = new Uint8Array(ndis_offload_params.size);
    full.set(info.subarray(0, Math.min(info.length, full.length)));
    this.offloads.params = ndis_offload_params.decode(full);
    return RNDIS_STATUS_SUCCESS;
  }

  /**
   * NDIS_OFFLOAD_ENCAPSULATION (Windows sets it before its offloads): its header must be the
   * object's, no larger than what was sent; the only framing this NIC has is 802.3 with a
   * 14-byte header, so enabling any other is not supported. Recorded for the VMM.
   */
  private setEncapsulation(info: Uint8Array): number {
    const size = ndis_offload_encapsulation.size;
    if (info.length < size) return this.refuse(RNDIS_STATUS_INVALID_LENGTH, `offload encapsulation of ${info.length} bytes`);
    const e = ndis_offload_encapsulation.decode(info);
    if (e.hdr_type !== NDIS_OBJECT_TYPE_OFFLOAD_ENCAPSULATION || e.hdr_rev < NDIS_OFFLOAD_ENCAPSULATION_REVISION_1)
      return this.refuse(RNDIS_STATUS_INVALID_DATA, `offload encapsulation object type 0x${e.hdr_type.toString(16)} rev ${e.hdr_rev}`);
    if (e.hdr_size < size || e.hdr_size > info.length)
      return this.refuse(RNDIS_STATUS_INVALID_DATA, `offload encapsulation object size ${e.hdr_size}`);
    const fits = (enabled: number, type: number, header: number): boolean =>
      enabled !== NDIS_OFFLOAD_SET_ON || (type === NDIS_ENCAPSULATION_IEEE_802_3 && header === 14);
    if (
      !fits(e.ipv4_enabled, e.ipv4_encapsulation_type, e.ipv4_header_size) ||
      !fits(e.ipv6_enabled, e.ipv6_encapsulation_type, e.ipv6_header_size)
    )
      return this.refuse(RNDIS_STATUS_NOT_SUPPORTED, 'an offload encapsulation other than 802.3 with a 14-byte header');
    this.offloads.encapsulation = e;
    return RNDIS_STATUS_SUCCESS;
  }

  /** NDIS_RECEIVE_SCALE_PARAMETERS: key and table at their offsets from the object's start. */
  private setRss(info: Uint8Array): number {
    if (this.nic.maxQueues < 2) return this.unsupported('SET', OID_GEN_RECEIVE_SCALE_PARAMETERS);
    if (info.length < ndis_recv_scale_param.size) return this.refuse(RNDIS_STATUS_INVALID_LENGTH, `RSS parameters of ${info.length} bytes`);
    const p = ndis_recv_scale_param.decode(info);
    if (p.hdr_type !== NDIS_OBJECT_TYPE_RSS_PARAMETERS) return this.refuse(RNDIS_STATUS_INVALID_DATA, 'RSS parameters object type');
    if (p.flag & NDIS_RSS_PARAM_FLAG_DISABLE_RSS) {
      this.rss.enabled = false;
      return RNDIS_STATUS_SUCCESS;
    }
    const hashInfo = p.flag & NDIS_RSS_PARAM_FLAG_HASH_INFO_UNCHANGED ? this.rss.hashInfo : p.hashinfo;
    const wanted = NDIS_HASH_IPV4 | NDIS_HASH_TCP_IPV4 | NDIS_HASH_IPV6 | NDIS_HASH_TCP_IPV6;
    if ((hashInfo & 0xff) !== NDIS_HASH_FUNC_TOEPLITZ || (hashInfo & wanted) === 0)
      return this.refuse(RNDIS_STATUS_INVALID_DATA, `RSS hash info 0x${hashInfo.toString(16)}`);
    const table =
      p.flag & NDIS_RSS_PARAM_FLAG_ITABLE_UNCHANGED ? this.rss.table : this.rssTable(info, p.indirect_taboffset, p.indirect_tabsize);
    const key = p.flag & NDIS_RSS_PARAM_FLAG_HASH_KEY_UNCHANGED ? this.rss.key : rssKey(info, p.hashkey_offset, p.hashkey_size);
    if (table === null || table.length === 0) return this.refuse(RNDIS_STATUS_INVALID_DATA, 'RSS indirection table');
    if (key === null) return this.refuse(RNDIS_STATUS_INVALID_DATA, 'RSS hash key');
    Object.assign(this.rss, { enabled: true, hashInfo, key, table });
    return RNDIS_STATUS_SUCCESS;
  }

  /** The indirection table: u32 queue numbers, each below maxQueues, at most 128 of them. */
  private rssTable(info: Uint8Array, offset: number, size: number): Uint32Array | null {
    if (size % 4 !== 0 || size > NDIS_RSS_INDIRECTION_TABLE_MAX_SIZE_REVISION_2 || offset > info.length || size > info.length - offset)
      return null;
    const table = new Uint32Array(size / 4);
    for (let i = 0; i < table.length; i++) {
      table[i] = readU32le(info, offset + i * 4);
      if (table[i] >= this.nic.maxQueues) return null;
    }
    return table;
  }

  /**
   * OID_GEN_RNDIS_CONFIG_PARAMETER: a registry-style parameter of the guest's driver. The host
   * implements NetworkAddress (the MAC); any other well-formed parameter is accepted and
   * ignored, as a device without that setting (Windows sends its offload keywords this way).
   */
  private setConfigParameter(info: Uint8Array): number {
    const p = parseConfigParameter(info);
    if (typeof p === 'string') return this.refuse(RNDIS_STATUS_INVALID_DATA, `config parameter: ${p}`);
    if (p.name.toLowerCase() === NETWORK_ADDRESS_PARAMETER.toLowerCase()) return this.setNetworkAddress(p);
    this.logger.debug(`netvsp: RNDIS config parameter ${JSON.stringify(p.name.slice(0, 64))} (type ${p.type}) ignored`);
    return RNDIS_STATUS_SUCCESS;
  }

  /**
   * NetworkAddress: 12 hex digits (Linux sends "%pm", UTF-16) of a unicast address. Taken only
   * when the host allows MAC changes (Hyper-V refuses them unless MAC spoofing is on); then the
   * current address, which the rx filter matches, is the new one.
   */
  private setNetworkAddress(p: ConfigParameter): number {
    const mac = p.type === RNDIS_CONFIG_PARAM_TYPE_STRING ? macFromHexUtf16(p.value) : null;
    if (mac === null) return this.refuse(RNDIS_STATUS_INVALID_DATA, 'NetworkAddress is not 12 hex digits of a unicast address');
    const text = [...mac].map((b) => b.toString(16).padStart(2, '0')).join(':');
    if (!this.allowMacChange) return this.refuse(RNDIS_STATUS_FAILURE, `MAC change to ${text}: not allowed by the host`);
    this.nic.mac.set(mac);
    this.logger.debug(`netvsp: the guest set its MAC address to ${text}`);
    return RNDIS_STATUS_SUCCESS;
  }
}

/**
 * rndis_config_parameter_info and what it points at (offsets from its start, past the
 * structure, inside `info`), or why it is malformed: a name of whole UTF-16 units, a string
 * value of whole units, an integer value of 4 bytes.
 */
function parseConfigParameter(info: Uint8Array): ConfigParameter | string {
  if (info.length < rndis_config_parameter_info.size) return `${info.length} bytes`;
  const cpi = rndis_config_parameter_info.decode(info);
  const name = region(info, cpi.parameter_name_offset, cpi.parameter_name_length);
  const value = region(info, cpi.parameter_value_offset, cpi.parameter_value_length);
  if (name === null || value === null) return 'name or value outside the buffer';
  if (name.length === 0 || name.length % 2 !== 0) return `name of ${name.length} bytes`;
  if (cpi.parameter_type === RNDIS_CONFIG_PARAM_TYPE_STRING && value.length % 2 !== 0) return `string value of ${value.length} bytes`;
  if (cpi.parameter_type === RNDIS_CONFIG_PARAM_TYPE_INTEGER && value.length !== 4) return `integer value of ${value.length} bytes`;
  return { name: String.fromCharCode(...utf16Units(name)), type: cpi.parameter_type, value };
}

/** [offset, +length) of a config parameter's buffer, after the structure; null if not inside. */
function region(info: Uint8Array, offset: number, length: number): Uint8Array | null {
  if (offset < rndis_config_parameter_info.size || offset > info.length || length > info.length - offset) return null;
  return info.subarray(offset, offset + length);
}

function utf16Units(bytes: Uint8Array): number[] {
  const units: number[] = [];
  for (let at = 0; at + 1 < bytes.length; at += 2) units.push(bytes[at] | (bytes[at + 1] << 8));
  return units;
}

/** 12 UTF-16 hex digits (a C terminator after them tolerated) of a unicast, non-zero address; else null. */
function macFromHexUtf16(value: Uint8Array): Uint8Array | null {
  const units = utf16Units(value);
  if (units.length === 13 && units[12] === 0) units.pop();
  if (units.length !== 12) return null;
  const text = String.fromCharCode(...units);
  if (!/^[0-9a-fA-F]{12}$/.test(text)) return null;
  const mac = Uint8Array.from({ length: 6 }, (_, i) => parseInt(text.slice(i * 2, i * 2 + 2), 16));
  if (mac[0] & 1 || mac.every((b) => b === 0)) return null;
  return mac;
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

/**
 * A statistics OID's value: NDIS 6 answers a ULONG64 unless the caller's buffer holds only a
 * ULONG (then the low 32 bits); the request's info_buflen is the only size a guest gives.
 */
function counter(value: number, requestLength: number): Uint8Array {
  const out = new Uint8Array(requestLength === 4 ? 4 : 8);
  const dv = new DataView(out.buffer);
  if (out.length === 4) dv.setUint32(0, value >>> 0, true);
  else dv.setBigUint64(0, BigInt(Math.max(0, Math.floor(value))), true);
  return out;
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
