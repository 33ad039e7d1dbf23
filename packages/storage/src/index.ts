export * from './protocol.js';
export * as scsi from './scsi/cdb.js';
export { defineBeStruct, type BeLayout, type BeRow, type BeType } from './scsi/layout.js';
export {
  ScsiDisk,
  SUPPORTED_OPCODES,
  GOOD,
  checkCondition,
  illegalRequest,
  dataIn,
  type DataBuffer,
  type DataDirection,
  type ScsiCommand,
  type ScsiDiskOptions,
  type ScsiResult,
} from './scsi/disk.js';
export { BackendConfigError, BackendIoError, type DiskBackend, type WriteOptions } from './backend/backend.js';
export { MemoryBackend } from './backend/memory.js';
export { FileBackend, type FileBackendOptions } from './backend/file.js';
export { ScsiController, STORVSC_MAX_LUNS_PER_TARGET, STORVSC_MAX_TARGETS, type ControllerResult, type LunAddress } from './controller.js';
export {
  INITIAL_STATE,
  replySize,
  step,
  subchannelState,
  type Phase,
  type SessionConfig,
  type SessionState,
  type StepResult,
} from './session.js';
export { StorvspDevice, DEFAULT_SCSI_INSTANCE, type StorvspOptions } from './device.js';
export {
  createStorageController,
  storageDeviceKind,
  SCSI_KIND,
  type BackendDiskSpec,
  type DiskSpec,
  type StorageControllerSpec,
} from './kind.js';
