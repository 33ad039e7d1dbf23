export {
  KvmPartition,
  KvmVcpu,
  type Irqfd,
  type Ioeventfd,
  type MemoryRegion,
  type PageListView,
  type KvmPartitionOptions,
  type VcpuOutcome,
  type VcpuStatus,
  type VcpuTimes,
} from './backends/kvm/partition.js';
export type {
  Exit,
  ExitKind,
  ExitHandler,
  ExitResponse,
  IoExit,
  MmioExit,
  MsrReadExit,
  MsrWriteExit,
  CpuidExit,
  HypercallExit,
  HaltExit,
  ShutdownExit,
  UnrecoverableExit,
} from './exits.js';
export type { IoDevice, MmioDevice, MsrDevice, DeviceControl } from './devices.js';
export {
  buildCpuidModel,
  hypervisorVendorLeaf,
  vendorWords,
  CPUID_FLAG_SIGNIFICANT_INDEX,
  HYPERVISOR_LEAF_FIRST,
  HYPERVISOR_LEAF_LAST,
  type CpuidEntry,
  type CpuidModelOptions,
} from './cpuid.js';
export {
  compareCpuid,
  cpuidProbeCode,
  describeCpuidDifferences,
  enterFlatRealMode,
  probeGuestCpuid,
  warnCpuidDifferences,
  type CpuidDifference,
  type CpuidProbeOptions,
  type CpuidProbeResult,
  type CpuidRegister,
} from './cpuid-probe.js';
export { formatRegisters, registersWith, type Registers, type Segment, type SpecialRegisters, type DescriptorTable } from './registers.js';
export {
  AccelError,
  AccelUsageError,
  ApiVersionError,
  ExitHandlerError,
  GuestFatalError,
  HostSystemError,
  HypervisorUnavailableError,
  MemoryMapError,
  MissingCapabilityError,
  NativeAddonError,
  type FatalReason,
} from './errors.js';
export { ExitRouter, fatalError } from './exit-router.js';
export { createFdWatcher, type FdWatcher } from './native/fd-watcher.js';
export { nativeFrameIo, type FrameIo } from './native/frame-io.js';
export { nativeFileIo, type FileIo } from './native/file-io.js';
export {
  createFrameWriter,
  FRAME_SLOT_DONE,
  FRAME_SLOT_IDLE,
  FRAME_SLOT_QUEUED,
  type FrameSlot,
  type FrameSlotResult,
  type FrameWriter,
} from './native/frame-writer.js';
export type {
  AccelPartition,
  AccelVcpu,
  BackendName,
  GuestTsc,
  Doorbell,
  DoorbellSpec,
  Doorbells,
  InterruptTrigger,
  InterruptTriggers,
  PageListMapping,
  PageLists,
  MemoryControl,
  RamUsage,
} from './backends/types.js';
export {
  OffloadedSynicPort,
  SynicPostError,
  encodeHvMessage,
  type OffloadedSynicOps,
  type OffloadedSynicOptions,
} from './backends/offloaded-synic.js';
export {
  decodeMmioInstruction,
  mmioStoreValue,
  completeMmioRead,
  completeMmioWrite,
  MmioDecodeError,
  MAX_INSTRUCTION_LENGTH,
  type MmioInstruction,
  type MmioDecodeMode,
  type GprIndex,
} from './backends/x86-mmio.js';
export { MshvPartition, type MshvPartitionOptions } from './backends/mshv/partition.js';
export { KoffiMshvSys, MshvSysError, type MshvSys, type HostBuffer } from './backends/mshv/sys.js';
export { decodeRunMessage, type MshvEvent, type InterceptContext } from './backends/mshv/messages.js';
export { completeIntercept, completeMmio, type RegisterWrite } from './backends/mshv/completion.js';
export * as mshvAbi from './backends/mshv/abi.js';
export {
  WhpxPartition,
  extendedExits as whpxExtendedExits,
  gicParameters as whpxGicParameters,
  type WhpxPartitionOptions,
  type WhpxGicOptions,
} from './backends/whpx/partition.js';
export {
  loadWhpxApi,
  WhpxCallError,
  WHP_DLL,
  type WhpxApi,
  type HostBuffer as WhpxHostBuffer,
  type PartitionHandle as WhpxPartitionHandle,
} from './backends/whpx/api.js';
export { decodeX64Exit as decodeWhpxX64Exit } from './backends/whpx/exit-x64.js';
export { decodeArm64Exit as decodeWhpxArm64Exit, decodeDataAbort } from './backends/whpx/exit-arm64.js';
export type { WhpxEvent, Arm64DataAccess } from './backends/whpx/events.js';
export {
  completeX64 as completeWhpxX64,
  completeX64Mmio as completeWhpxX64Mmio,
  completeArm64 as completeWhpxArm64,
  completeArm64Mmio as completeWhpxArm64Mmio,
  type RegisterWrite as WhpxRegisterWrite,
} from './backends/whpx/completion.js';
export * as whpxAbi from './backends/whpx/abi.js';
