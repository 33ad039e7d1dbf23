export * from './ring/protocol.js';
export { RingClosedError, RingCorruptError, type RingFault } from './ring/errors.js';
export { RingBuffer, MIN_RING_DATA_SIZE, bytesToRead, bytesToWrite } from './ring/ring-buffer.js';
export { RingWriter, type OutgoingPacket } from './ring/writer.js';
export { RingEnd, type RingEndOptions, type RingTap } from './ring/ring-end.js';
export { RingReader, PacketView, pfnsSpanned, type GpaRange, type TransferPageRange } from './ring/reader.js';
export { ringPairFromPages, openRingEndpoint, type RingEndpoint, type RingPairLayout, type RingRole } from './ring/pair.js';
export * from './protocol/index.js';
export * from './server/index.js';
export * from './client/index.js';
export {
  encodeGpaDirectHeader,
  GuestData,
  GuestDataLease,
  GuestDataRevokedError,
  type GuestDataOptions,
  type PageRange,
} from './device/guest-data.js';
export { PacketQueue, type PacketQueueOptions } from './device/packet-queue.js';
export {
  attachDevice,
  DeviceStateError,
  type AttachedDevice,
  type AttachOptions,
  type DeviceChannel,
  type VmbusDevice,
} from './device/device.js';
export {
  DeviceRegistry,
  isHostCallable,
  type DeviceEnvironment,
  type DeviceKind,
  type HostCallable,
  type HostCallObserver,
} from './device/registry.js';
