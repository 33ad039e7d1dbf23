export * from './nvsp.js';
export * from './rndis.js';
export {
  RndisControl,
  MAX_PKT_PER_MSG,
  MAXIMUM_LIST_SIZE,
  NETWORK_ADDRESS_PARAMETER,
  PKT_ALIGNMENT_FACTOR,
  RSS_TABLE_ENTRIES,
  type NicIdentity,
  type OffloadRequest,
  type RndisControlOptions,
  type RndisControlStats,
  type RndisState,
  type RssState,
} from './rndis-control.js';
export { toeplitz, rssHash } from './toeplitz.js';
export { ReceiveBuffer, SendBuffer, TxSource, MAX_RECV_SECTIONS } from './buffers.js';
export {
  NetvspDevice,
  HV_NIC_GUID,
  NETVSC_MTU_MAX,
  NETVSC_MTU_MIN,
  DEFAULT_SEND_SECTION_SIZE,
  nicOffer,
  type NetvspOptions,
  type NetvspStats,
} from './netvsp.js';
export { ETH_HLEN, VLAN_HLEN, parseMac, formatMac, ndisVlanInfo, vlanTci } from './ethernet.js';
export { gather, type NetBackend, type NetBackendSink } from './backend/backend.js';
export { createPortPair, PairPort, type PortStats } from './backend/pair.js';
export { TapBackend, TapError, tapUnavailableReason, type TapOptions, type TapStats } from './backend/tap.js';
export { nicDeviceKind, type NicSpec } from './kind.js';
