/**
 * @hvemu/vmbus/testing: the property-test kit. Arbitraries for packets, ring geometries and
 * hostile rings; the ring reference model and its fast-check commands; a test ring in
 * simulated guest memory with guard pages; a simulated partition (HyperV, dispatcher, VmbusHost,
 * the VMBus client) to run a VSP against.
 */
export { payload, gpaDirectHeader, transferPageHeader, outgoingPacket, ringGeometry } from './arbitraries.js';
export { RingModel, expectedReception, packetSpace, type ReceivedPacket } from './model.js';
export { ringCommands, ringModelProperty, hvemuRingSystem, receivedFromView, RingMismatch, type RingSystem } from './commands.js';
export { createTestRing, guardsIntact, GUARD_BYTE, DEFAULT_GEOMETRY, type RingGeometry, type TestRing } from './test-ring.js';
export {
  hostileRing,
  applyCorruption,
  exerciseCorruptedRing,
  basePacket,
  EXPECTED_FAULT,
  CORRUPTION_KINDS,
  type CorruptionKind,
  type HostileRing,
} from './hostile.js';
export { createSimulatedVmbus, type SimulatedVmbus, type SimulatedVmbusOptions } from './sim-partition.js';
