export {
  attachHyperV,
  enlightenedPartitionOptions,
  HYPERCALL_PORT,
  type AttachOptions,
  type EnlightenmentConfig,
  type Enlightenments,
} from './enlighten.js';
export { SimulatedVm, SimulatedLinuxGuest, type IntegrationComponents, type SimulatedVmOptions, type TimelineEvent } from './sim.js';
export { traceHooks, type TraceHooks } from './trace-capture.js';
