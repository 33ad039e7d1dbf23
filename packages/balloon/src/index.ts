export * from './protocol.js';
export { PageSet } from './page-set.js';
export { balloonMemory, type BalloonMemory, type MemoryControlLike, type RamSpan } from './memory.js';
export {
  BALLOON_HOST_CALLS,
  BalloonDevice,
  BalloonTimeoutError,
  followCommitted,
  type BalloonChange,
  type BalloonEvents,
  type BalloonOptions,
  type BalloonPhase,
  type BalloonPolicy,
  type BalloonStats,
  type GuestCapabilities,
  type HotAddResult,
} from './device.js';
export { BALLOON_KIND, balloonDeviceKind, createBalloon, type BalloonSpec } from './kind.js';
