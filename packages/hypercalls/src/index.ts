export { ConnectionRegistry, type EventConnectionWatcher } from './connections.js';
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
