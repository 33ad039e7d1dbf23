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
