export {
  NetvscClient,
  NetvscClientError,
  DEFAULT_RSS_KEY,
  type NetvscClientOptions,
  type NetvscInfo,
  type ReceivedFrame,
  type SendOptions,
} from './client.js';
export {
  ETH_HEADER,
  ethernetFrame,
  withVlanTag,
  frameArbitrary,
  tcp4Frame,
  tcp4FlowArbitrary,
  rndisDataMessage,
  ppiArbitrary,
  RNDIS_PACKET_FIELDS,
  rndisMutationArbitrary,
  applyRndisMutation,
  type RndisMutation,
} from './arbitraries.js';
export {
  createNicTestbed,
  PeerSink,
  tapTestUnavailableReason,
  TESTBED_GUEST_MAC,
  type NicTestbed,
  type NicTestbedOptions,
} from './testbed.js';
