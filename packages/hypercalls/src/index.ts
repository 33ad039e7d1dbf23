export * from './control.js';
export { ConnectionRegistry, HV_CONNECTION_ID_MASK, type EventConnection, type EventConnectionWatcher, type MessageConnection } from './connections.js';
export {
  HYPERCALLS,
  HypercallDispatcher,
  type DispatcherOptions,
  type HypercallContext,
  type HypercallDefinition,
  type HypercallRecord,
  type HypercallRegisters,
  type HypercallStats,
} from './dispatch.js';
export { DOORBELL_HOST_STATUS, hypercallPage, hypercallPageCode, type HypercallPageOptions } from './page.js';
