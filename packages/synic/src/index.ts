export * from '@hvemu/hvdef';
export { MsrFault, SynicQueueFull } from './errors.js';
export { VpSynic, type SynicInterruptSink, type SynicMessage, type SynicObserver, type VpSynicOptions } from './vp-synic.js';
export { VpStimers, type StimerEvent } from './stimer.js';
export {
  tscPageParameters,
  referenceTimeFromTsc,
  tscAtReferenceTime,
  writeTscPage,
  type TscModel,
  type TscPageParameters,
} from './reference-tsc.js';
export * from './cpuid.js';
export { HyperV, type HyperVEvents, type HyperVOptions } from './hyperv.js';
