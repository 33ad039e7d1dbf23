export type { CloseReason, OpenRequest, ServerAction, LogAction } from './actions.js';
export { describeServerAction } from './actions.js';
export {
  VmbusServer,
  DEFAULT_SERVER_LIMITS,
  channelConnectionId,
  type ChannelState,
  type ConnectionInfo,
  type GuestMessage,
  type OfferSpec,
  type ServerChannel,
  type ServerGpadl,
  type ServerLimits,
  type ServerOptions,
} from './server.js';
export { decodeGpadlRanges, type GpadlRange, type GuestRamMap, type GpadlLimits } from './gpadl.js';
export { Channel, type ChannelHandler, type ChannelCloseReason } from './channel.js';
export { VmbusHost, type VmbusHostOptions } from './vmbus-host.js';
