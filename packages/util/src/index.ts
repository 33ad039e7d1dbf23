export * from './protocol.js';
export {
  buildIcMessage,
  parseIcMessage,
  encodeNegotiate,
  decodeNegotiate,
  buildNegotiateRequest,
  chosenVersions,
  guestNegotiate,
  IcProtocolError,
  versionText,
  type IcHeader,
  type IcVersion,
} from './framework.js';
export { IcHostService, type IcState, type IcTransport, type IcVersions } from './service.js';
export { HeartbeatService, HEARTBEAT_VERSIONS, type HeartbeatStatus } from './services/heartbeat.js';
export {
  ShutdownService,
  SHUTDOWN_VERSIONS,
  SHTDN_REASON_FLAG_PLANNED,
  type ShutdownAnswer,
  type ShutdownKind,
  type ShutdownRequest,
} from './services/shutdown.js';
export { TimesyncService, TIMESYNC_VERSIONS, hostFileTime } from './services/timesync.js';
export {
  KvpService,
  KVP_VERSIONS,
  encodeKvpRecord,
  decodeKvpRecord,
  encodeUtf16z,
  decodeUtf16z,
  type KvpRecord,
  type KvpResult,
  type KvpValue,
} from './services/kvp.js';
export { GuestIcEndpoint, LINUX_IC_VERSIONS, type GuestIcKind, type ShutdownSeen, type TimeSampleSeen } from './guest/guest-ic.js';
export { icQueueTransport, bindIcToQueue, type IcQueueBinding } from './queue-transport.js';
export { IcDevice, IcHostCallError, IC_OFFERS, IC_HOST_API, type IcKind } from './device.js';
export { IC_DEVICE_KINDS, IC_KINDS } from './kinds.js';
