export * from './ring/protocol.js';
export { RingClosedError, RingCorruptError, type RingFault } from './ring/errors.js';
export { RingBuffer, MIN_RING_DATA_SIZE, bytesToRead, bytesToWrite } from './ring/ring-buffer.js';
export { RingWriter, type OutgoingPacket, type RingEndOptions, type RingTap } from './ring/writer.js';
export { RingReader, PacketView, pfnsSpanned, type GpaRange, type TransferPageRange } from './ring/reader.js';
export { ringPairFromPages, openRingEndpoint, type RingEndpoint, type RingPairLayout, type RingRole } from './ring/pair.js';
export * from './protocol/index.js';
export * from './server/index.js';
export * from './client/index.js';
