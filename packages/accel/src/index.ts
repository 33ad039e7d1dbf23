export {
  Partition,
  Vcpu,
  type Irqfd,
  type Ioeventfd,
  type MemoryRegion,
  type PageListView,
  type PartitionOptions,
  type VcpuOutcome,
  type VcpuStatus,
  type VcpuTimes,
} from './partition.js';
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
export { formatRegisters, type Registers, type Segment, type SpecialRegisters, type DescriptorTable } from './registers.js';
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
export { loadElf64, type LoadedElf } from './guest/elf.js';
export { enterLongMode, writeLongModeTables, longModeSpecialRegisters, LOADER_RESERVED_END } from './guest/long-mode.js';
export {
  TestPlatform,
  SerialPort,
  DebugExitPort,
  AssertPort,
  SERIAL_PORT,
  DEBUG_EXIT_PORT,
  ASSERT_PORT,
  type GuestAssertion,
} from './guest/platform.js';
