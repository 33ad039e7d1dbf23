export {
  VmbusClient,
  VmbusClientError,
  BumpPageAllocator,
  gpadlMessages,
  type ClientOffer,
  type GuestChannel,
  type OpenOptions,
  type PageAllocator,
  type VmbusClientOptions,
} from './client.js';
export { simpTransport, type GuestTransport, type SimpTransportOptions } from './transport.js';
