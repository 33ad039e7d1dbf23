export * from './constants.js';
export { ChannelProtocolError, type ChannelProtocolFault } from './errors.js';
export * from './messages.js';
