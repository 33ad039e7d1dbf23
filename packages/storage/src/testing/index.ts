/** @hvemu/storage/testing: the storvsc guest, the arbitraries and the reference model, for testing any disk backend or VSP. */
export {
  StorvscClient,
  StorvscClientError,
  VMBUS_RQST_INIT,
  LINUX_STORVSC_VERSIONS,
  LEGACY_STORVSC_VERSIONS,
  type InitResult,
  type SrbCompletion,
  type SrbSpec,
  type StorvscClientOptions,
} from './client.js';
export { anyCdb, servedCdb, hostileSrbFields, ioBatches, patternFor, type IoMixOptions, type IoOp } from './arbitraries.js';
export { DiskModel, VolatileCacheBackend, type DiskModelSnapshot } from './model.js';
