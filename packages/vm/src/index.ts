export {
  attachHyperV,
  enlightenedPartitionOptions,
  HYPERCALL_PORT,
  type AttachOptions,
  type EnlightenmentConfig,
  type Enlightenments,
} from './enlighten.js';
export { measureTscModel, tscReferenceCounter } from './reference-time.js';
export { SignalDoorbell, SIGNAL_DOORBELL_PORT, type DoorbellStats } from './signal-doorbell.js';
export { SimulatedVm, SimulatedLinuxGuest, SIMULATED_WALL_CLOCK_MS, type SimulatedVmOptions, type TimelineEvent } from './sim.js';
export {
  createIcDevice,
  defaultDevices,
  createIntegrationComponents,
  integrationComponentsOf,
  offerIntegrationComponents,
  icTraceHeader,
  IC_KINDS,
  type IcEnvironment,
  type IntegrationComponents,
} from './ic-devices.js';
export { traceHooks, type TraceHooks } from './trace-capture.js';
export { KvmVm, buildVmbusDemoGuest, type KvmVmOptions, type KvmRunResult, type IcExercise, type IcExerciseResult } from './kvm-vm.js';
export { createSimulatedBus, SIM_BUS_LAYOUT, type SimulatedBusOptions } from './sim-bus.js';
export { replayTrace, ReplayError, type ReplayOptions, type ReplayResult, type ReplayDivergence } from './replay.js';
/** Names the CPUID registers a guest sees differently from hvemu's model (KvmVm.probeCpuid). */
export { describeCpuidDifferences, type CpuidDifference, type CpuidProbeResult } from '@hvemu/accel';
export {
  balloonOf,
  buildVm,
  deviceTraceHeader,
  openPartition,
  type BackendChoice,
  type PartitionSpec,
  type Vm,
  type VmSpec,
} from './builder.js';
export { withNics, nicsOf } from './net-devices.js';
/** The NIC and storage specs VmSpec and LinuxVmOptions take (from the device packages). */
export type { NicSpec } from '@hvemu/net';
export type { StorageControllerSpec } from '@hvemu/storage';
export { LinuxVm, type LinuxVmEnd, type LinuxVmEvent, type LinuxVmOptions } from './linux-vm.js';
