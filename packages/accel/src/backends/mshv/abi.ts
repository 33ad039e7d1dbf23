/**
 * The /dev/mshv ABI (Linux 6.15+ root partition / L1VH), x86-64: ioctl numbers, argument
 * structures, the hypercalls MSHV_ROOT_HVCALL passes through, register names, intercept
 * types and synthetic-processor-feature bits. Every structure is declared with defineStruct
 * so a wrong offset fails when this module loads.
 *
 * Sources (facts only, checked against the headers): torvalds/linux include/uapi/linux/mshv.h
 * (ioctls, argument structs), include/hyperv/hvgdk_mini.h (hv_message, HVMSG_*, HVCALL_*,
 * HV_STATUS_*, hv_register_assoc, hv_input_{get,set}_vp_registers, hv_intercept_type),
 * include/hyperv/hvhdk.h (synthetic processor features, assert-virtual-interrupt input),
 * include/hyperv/hvhdk_mini.h (partition property codes); rust-vmm/mshv hv-headers/hvhdk.h
 * (x64 intercept message layouts, post-message / signal-event inputs) and hvgdk_mini.h
 * (x64 register names, install-intercept input, access masks).
 */
import { defineStruct } from '@hvemu/common';

// ---------------------------------------------------------------------------------------------
// ioctl numbers: the generic Linux _IOC encoding (x86-64 and arm64 alike).

const IOC_NONE = 0;
const IOC_WRITE = 1;
const IOC_READ = 2;

/** Linux `_IOC(dir, type, nr, size)`: dir in bits 30-31, size 16-29, type 8-15, nr 0-7. */
export function ioc(dir: number, type: number, nr: number, size: number): number {
  if (size < 0 || size >= 1 << 14) throw new RangeError(`ioctl size ${size} does not fit 14 bits`);
  return ((dir << 30) | (size << 16) | (type << 8) | nr) >>> 0;
}
export const io = (type: number, nr: number): number => ioc(IOC_NONE, type, nr, 0);
export const iow = (type: number, nr: number, size: number): number => ioc(IOC_WRITE, type, nr, size);
export const ior = (type: number, nr: number, size: number): number => ioc(IOC_READ, type, nr, size);
export const iowr = (type: number, nr: number, size: number): number => ioc(IOC_READ | IOC_WRITE, type, nr, size);

export const MSHV_IOCTL = 0xb8;
export const MSHV_DEVICE_PATH = '/dev/mshv';

// ---------------------------------------------------------------------------------------------
// ioctl argument structures (include/uapi/linux/mshv.h)

export const MshvCreatePartition = defineStruct('mshv_create_partition', 16, [
  [0, 'ptFlags', 'u64'],
  [8, 'ptIsolation', 'u64'],
] as const);
/** pt_flags bits (1 << MSHV_PT_BIT_*). */
export const MSHV_PT_BIT_LAPIC = 0;
export const MSHV_PT_BIT_X2APIC = 1;
export const MSHV_PT_BIT_GPA_SUPER_PAGES = 2;
export const MSHV_PT_ISOLATION_NONE = 0n;

export const MshvCreateVp = defineStruct('mshv_create_vp', 4, [[0, 'vpIndex', 'u32']] as const);

export const MshvUserMemRegion = defineStruct('mshv_user_mem_region', 32, [
  [0, 'size', 'u64'],
  [8, 'guestPfn', 'u64'],
  [16, 'userspaceAddr', 'u64'],
  [24, 'flags', 'u8'],
  [25, 'rsvd', { bytes: 7 }],
] as const);
export const MSHV_SET_MEM_BIT_WRITABLE = 0;
export const MSHV_SET_MEM_BIT_EXECUTABLE = 1;
export const MSHV_SET_MEM_BIT_UNMAP = 2;

export const MshvUserIrqfd = defineStruct('mshv_user_irqfd', 16, [
  [0, 'fd', 'u32'],
  [4, 'resamplefd', 'u32'],
  [8, 'gsi', 'u32'],
  [12, 'flags', 'u32'],
] as const);

export const MshvUserIoeventfd = defineStruct('mshv_user_ioeventfd', 32, [
  [0, 'datamatch', 'u64'],
  [8, 'addr', 'u64'],
  [16, 'len', 'u32'],
  [20, 'fd', 'u32'],
  [24, 'flags', 'u32'],
  [28, 'rsvd', { bytes: 4 }],
] as const);

export const MshvUserIrqTableHeader = defineStruct('mshv_user_irq_table', 8, [
  [0, 'nr', 'u32'],
  [4, 'rsvd', 'u32'],
] as const);

export const MshvGpapAccessBitmap = defineStruct('mshv_gpap_access_bitmap', 32, [
  [0, 'accessType', 'u8'],
  [1, 'accessOp', 'u8'],
  [2, 'rsvd', { bytes: 6 }],
  [8, 'pageCount', 'u64'],
  [16, 'gpapBase', 'u64'],
  [24, 'bitmapPtr', 'u64'],
] as const);

export const MshvRootHvcall = defineStruct('mshv_root_hvcall', 32, [
  [0, 'code', 'u16'],
  [2, 'reps', 'u16'],
  [4, 'inSz', 'u16'],
  [6, 'outSz', 'u16'],
  [8, 'status', 'u16'],
  [10, 'rsvd', { bytes: 6 }],
  [16, 'inPtr', 'u64'],
  [24, 'outPtr', 'u64'],
] as const);

export const MSHV_RUN_VP_BUF_SZ = 256;

export const MshvGetSetVpState = defineStruct('mshv_get_set_vp_state', 16, [
  [0, 'type', 'u8'],
  [1, 'rsvd', { bytes: 3 }],
  [4, 'bufSz', 'u32'],
  [8, 'bufPtr', 'u64'],
] as const);

/** /dev/mshv */
export const MSHV_CREATE_PARTITION = iow(MSHV_IOCTL, 0x00, MshvCreatePartition.size);
/** partition fd */
export const MSHV_INITIALIZE_PARTITION = io(MSHV_IOCTL, 0x00);
export const MSHV_CREATE_VP = iow(MSHV_IOCTL, 0x01, MshvCreateVp.size);
export const MSHV_SET_GUEST_MEMORY = iow(MSHV_IOCTL, 0x02, MshvUserMemRegion.size);
export const MSHV_IRQFD = iow(MSHV_IOCTL, 0x03, MshvUserIrqfd.size);
export const MSHV_IOEVENTFD = iow(MSHV_IOCTL, 0x04, MshvUserIoeventfd.size);
/** sizeof(struct mshv_user_irq_table) is the 8-byte header (flexible array). */
export const MSHV_SET_MSI_ROUTING = iow(MSHV_IOCTL, 0x05, MshvUserIrqTableHeader.size);
export const MSHV_GET_GPAP_ACCESS_BITMAP = iowr(MSHV_IOCTL, 0x06, MshvGpapAccessBitmap.size);
/** partition and VP fds */
export const MSHV_ROOT_HVCALL = iowr(MSHV_IOCTL, 0x07, MshvRootHvcall.size);
/** VP fd */
export const MSHV_RUN_VP = ior(MSHV_IOCTL, 0x00, MSHV_RUN_VP_BUF_SZ);
export const MSHV_GET_VP_STATE = iowr(MSHV_IOCTL, 0x01, MshvGetSetVpState.size);
export const MSHV_SET_VP_STATE = iowr(MSHV_IOCTL, 0x02, MshvGetSetVpState.size);

// ---------------------------------------------------------------------------------------------
// Hypercalls (HVCALL_*, hvgdk_mini.h) and their status codes.

// Declared once in @hvemu/hvdef; re-exported so this module reads as the whole ABI.
export {
  HVCALL_GET_PARTITION_PROPERTY,
  HVCALL_SET_PARTITION_PROPERTY,
  HVCALL_INSTALL_INTERCEPT,
  HVCALL_GET_VP_REGISTERS,
  HVCALL_SET_VP_REGISTERS,
  HVCALL_TRANSLATE_VIRTUAL_ADDRESS,
  HVCALL_POST_MESSAGE,
  HVCALL_SIGNAL_EVENT,
  HVCALL_REGISTER_INTERCEPT_RESULT,
  HVCALL_ASSERT_VIRTUAL_INTERRUPT,
  HVCALL_SIGNAL_EVENT_DIRECT,
  HVCALL_POST_MESSAGE_DIRECT,
  HV_STATUS_SUCCESS,
  HV_STATUS_INVALID_HYPERCALL_CODE,
  HV_STATUS_INVALID_PARAMETER,
  HV_STATUS_ACCESS_DENIED,
  HV_STATUS_INVALID_PARTITION_STATE,
  HV_STATUS_UNKNOWN_PROPERTY,
  HV_STATUS_INSUFFICIENT_MEMORY,
  HV_STATUS_INVALID_VP_INDEX,
  HV_STATUS_INVALID_CONNECTION_ID,
  HV_STATUS_INSUFFICIENT_BUFFERS,
  HV_STATUS_INVALID_VP_STATE,
  HV_HYPERCALL_FAST_BIT,
  HV_REGISTER_VALUE_SIZE,
  HV_MESSAGE_SIZE,
  HV_MESSAGE_HEADER_SIZE,
  HV_MESSAGE_PAYLOAD_BYTE_COUNT,
  hv_message_header,
} from '@hvemu/hvdef';

// Hypercall inputs; the kernel overwrites the leading partition id (MSHV_ROOT_HVCALL rule).

export const HvInputSetPartitionProperty = defineStruct('hv_input_set_partition_property', 24, [
  [0, 'partitionId', 'u64'],
  [8, 'propertyCode', 'u32'],
  [12, 'padding', 'u32'],
  [16, 'propertyValue', 'u64'],
] as const);

export const HvInputGetPartitionProperty = defineStruct('hv_input_get_partition_property', 16, [
  [0, 'partitionId', 'u64'],
  [8, 'propertyCode', 'u32'],
  [12, 'padding', 'u32'],
] as const);

export const HvInputInstallIntercept = defineStruct('hv_input_install_intercept', 24, [
  [0, 'partitionId', 'u64'],
  [8, 'accessType', 'u32'],
  [12, 'interceptType', 'u32'],
  [16, 'interceptParameter', 'u64'],
] as const);

/** Header of hv_input_get_vp_registers / hv_input_set_vp_registers; names or assocs follow @16. */
export const HvInputVpRegistersHeader = defineStruct('hv_input_vp_registers_header', 16, [
  [0, 'partitionId', 'u64'],
  [8, 'vpIndex', 'u32'],
  [12, 'inputVtl', 'u8'],
  [13, 'rsvdZ8', 'u8'],
  [14, 'rsvdZ16', 'u16'],
] as const);

/** hv_register_assoc: the 16-byte value is a union; 64-bit registers use its low 8 bytes. */
export const HvRegisterAssoc = defineStruct('hv_register_assoc', 32, [
  [0, 'name', 'u32'],
  [4, 'reserved1', 'u32'],
  [8, 'reserved2', 'u64'],
  [16, 'valueLow', 'u64'],
  [24, 'valueHigh', 'u64'],
] as const);

export const HvInputAssertVirtualInterrupt = defineStruct('hv_input_assert_virtual_interrupt', 32, [
  [0, 'partitionId', 'u64'],
  [8, 'interruptType', 'u32'],
  /** bit 0 level-triggered, bit 1 logical destination mode */
  [12, 'controlFlags', 'u32'],
  [16, 'destAddr', 'u64'],
  [24, 'vector', 'u32'],
  [28, 'targetVtl', 'u8'],
  [29, 'rsvdZ0', 'u8'],
  [30, 'rsvdZ1', 'u16'],
] as const);
export const HV_X64_INTERRUPT_TYPE_FIXED = 0;

export const HvInputSignalEventDirect = defineStruct('hv_input_signal_event_direct', 16, [
  [0, 'targetPartition', 'u64'],
  [8, 'targetVp', 'u32'],
  [12, 'targetVtl', 'u8'],
  [13, 'targetSint', 'u8'],
  [14, 'flagNumber', 'u16'],
] as const);
export const HvOutputSignalEventDirect = defineStruct('hv_output_signal_event_direct', 8, [
  [0, 'newlySignaled', 'u8'],
  [1, 'reserved', { bytes: 7 }],
] as const);

export const HvInputPostMessageDirect = defineStruct('hv_input_post_message_direct', 280, [
  [0, 'partitionId', 'u64'],
  [8, 'vpIndex', 'u32'],
  [12, 'vtl', 'u8'],
  [13, 'padding', { bytes: 3 }],
  [16, 'sintIndex', 'u32'],
  [20, 'message', { bytes: 256 }],
  [276, 'padding2', 'u32'],
] as const);

// ---------------------------------------------------------------------------------------------
// Partition properties (hvhdk_mini.h) and synthetic processor features (hvhdk.h).

export const HV_PARTITION_PROPERTY_PRIVILEGE_FLAGS = 0x00010000;
export const HV_PARTITION_PROPERTY_SYNTHETIC_PROC_FEATURES = 0x00010001;
export const HV_PARTITION_PROPERTY_UNIMPLEMENTED_MSR_ACTION = 0x00050017;

/** Bits of hv_partition_synthetic_processor_features bank 0. */
export const SyntheticFeature = {
  hypervisorPresent: 0,
  hv1: 1,
  accessVpRunTimeReg: 2,
  accessPartitionReferenceCounter: 3,
  accessSynicRegs: 4,
  accessSyntheticTimerRegs: 5,
  accessIntrCtrlRegs: 6,
  accessHypercallRegs: 7,
  accessVpIndex: 8,
  accessPartitionReferenceTsc: 9,
  accessGuestIdleReg: 10,
  accessFrequencyRegs: 11,
  fastHypercallOutput: 18,
  directSyntheticTimers: 22,
  extendedProcessorMasks: 24,
  tbFlushHypercalls: 25,
  syntheticClusterIpi: 26,
  notifyLongSpinWait: 27,
  signalEvents: 29,
} as const;

/** What hvemu asks for: the hypervisor's SynIC, timers, reference time, hypercall MSRs, VP index. */
export const DEFAULT_SYNTHETIC_FEATURES: readonly (keyof typeof SyntheticFeature)[] = [
  'hypervisorPresent',
  'hv1',
  'accessVpRunTimeReg',
  'accessPartitionReferenceCounter',
  'accessSynicRegs',
  'accessSyntheticTimerRegs',
  'accessIntrCtrlRegs',
  'accessHypercallRegs',
  'accessVpIndex',
  'accessPartitionReferenceTsc',
  'accessFrequencyRegs',
  'directSyntheticTimers',
  'signalEvents',
];

export function syntheticFeatureMask(features: readonly (keyof typeof SyntheticFeature)[]): bigint {
  return features.reduce((m, f) => m | (1n << BigInt(SyntheticFeature[f])), 0n);
}

// ---------------------------------------------------------------------------------------------
// Intercepts (hv_intercept_type; 0xD from OpenVMM hvdef, not in the Linux headers).

export const HV_INTERCEPT_ACCESS_MASK_READ = 0x1;
export const HV_INTERCEPT_ACCESS_MASK_WRITE = 0x2;
export const HV_INTERCEPT_ACCESS_MASK_EXECUTE = 0x4;

export const HV_INTERCEPT_TYPE_X64_IO_PORT = 0x0;
export const HV_INTERCEPT_TYPE_X64_MSR = 0x1;
export const HV_INTERCEPT_TYPE_X64_CPUID = 0x2;
export const HV_INTERCEPT_TYPE_EXCEPTION = 0x3;
export const HV_INTERCEPT_TYPE_MMIO = 0x5;
export const HV_INTERCEPT_TYPE_HYPERCALL = 0x8;
export const HV_INTERCEPT_TYPE_X64_MSR_INDEX = 0xc;
export const HV_INTERCEPT_TYPE_UNKNOWN_SYNIC_CONNECTION = 0xd;

// ---------------------------------------------------------------------------------------------
// Register names (hv_register_name, x64).

export const HV_REGISTER_EXPLICIT_SUSPEND = 0x00000000;
export const HV_REGISTER_INTERCEPT_SUSPEND = 0x00000001;
export const HV_REGISTER_PENDING_INTERRUPTION = 0x00010002;
export const HV_REGISTER_INTERRUPT_STATE = 0x00010003;
export const HV_X64_REGISTER_DELIVERABILITY_NOTIFICATIONS = 0x00010006;

/** The general-purpose registers in the hypervisor's numbering (RAX 0x20000 ... R15 0x2000F). */
export const HvX64Register = {
  rax: 0x00020000,
  rcx: 0x00020001,
  rdx: 0x00020002,
  rbx: 0x00020003,
  rsp: 0x00020004,
  rbp: 0x00020005,
  rsi: 0x00020006,
  rdi: 0x00020007,
  r8: 0x00020008,
  r9: 0x00020009,
  r10: 0x0002000a,
  r11: 0x0002000b,
  r12: 0x0002000c,
  r13: 0x0002000d,
  r14: 0x0002000e,
  r15: 0x0002000f,
  rip: 0x00020010,
  rflags: 0x00020011,
} as const;

export const HV_X64_REGISTER_XMM0 = 0x00030000;
export const HV_X64_REGISTER_CR0 = 0x00040000;
export const HV_X64_REGISTER_CR2 = 0x00040001;
export const HV_X64_REGISTER_CR3 = 0x00040002;
export const HV_X64_REGISTER_CR4 = 0x00040003;
export const HV_X64_REGISTER_CR8 = 0x00040004;
export const HvX64SegmentRegister = {
  es: 0x00060000,
  cs: 0x00060001,
  ss: 0x00060002,
  ds: 0x00060003,
  fs: 0x00060004,
  gs: 0x00060005,
  ldt: 0x00060006,
  tr: 0x00060007,
} as const;
export const HV_X64_REGISTER_IDTR = 0x00070000;
export const HV_X64_REGISTER_GDTR = 0x00070001;
export const HV_X64_REGISTER_EFER = 0x00080001;
export const HV_X64_REGISTER_APIC_BASE = 0x00080003;

/**
 * HV_X64_REGISTER_DELIVERABILITY_NOTIFICATIONS layout (OpenVMM hvdef
 * HvDeliverabilityNotificationsRegister): bit 0 NMI, bit 1 interrupt, bits 2-5 priority,
 * bits 48-63 the SINT mask.
 */
export const DELIVERABILITY_NMI = 1n << 0n;
export const DELIVERABILITY_INTERRUPT = 1n << 1n;
export const DELIVERABILITY_SINT_SHIFT = 48n;

/**
 * HV_REGISTER_PENDING_INTERRUPTION (hv_x64_pending_interruption_register): bit 0 pending,
 * bits 1-3 type (3 = hardware exception), bit 4 deliver error code, bits 16-31 vector,
 * bits 32-63 error code.
 */
export function pendingException(vector: number, errorCode?: number): bigint {
  const withCode = errorCode !== undefined;
  return 1n | (3n << 1n) | (withCode ? 1n << 4n : 0n) | (BigInt(vector & 0xffff) << 16n) | (BigInt((errorCode ?? 0) >>> 0) << 32n);
}
export const X86_VECTOR_GP = 13;

// ---------------------------------------------------------------------------------------------
// hv_message (hvgdk_mini.h) and the x64 intercept messages (rust-vmm hv-headers/hvhdk.h).

export const HvMessageType = {
  none: 0x00000000,
  unmappedGpa: 0x80000000,
  gpaIntercept: 0x80000001,
  unacceptedGpa: 0x80000003,
  timerExpired: 0x80000010,
  invalidVpRegisterValue: 0x80000020,
  unrecoverableException: 0x80000021,
  unsupportedFeature: 0x80000022,
  opaqueIntercept: 0x8000003f,
  hypercallIntercept: 0x80000050,
  synicEventIntercept: 0x80000060,
  synicSintIntercept: 0x80000061,
  synicSintDeliverable: 0x80000062,
  x64IoPortIntercept: 0x80010000,
  x64MsrIntercept: 0x80010001,
  x64CpuidIntercept: 0x80010002,
  x64ExceptionIntercept: 0x80010003,
  x64ApicEoi: 0x80010004,
  x64Halt: 0x80010007,
  x64InterruptionDeliverable: 0x80010008,
  x64SipiIntercept: 0x80010009,
} as const;

/** struct hv_x64_segment_register: base, limit, selector, attributes (16 bytes). */
export const HvX64Segment = defineStruct('hv_x64_segment_register', 16, [
  [0, 'base', 'u64'],
  [8, 'limit', 'u32'],
  [12, 'selector', 'u16'],
  [14, 'attributes', 'u16'],
] as const);
/** Attribute bits of hv_x64_segment_register: L (64-bit code) and D/B. */
export const SEGMENT_ATTR_LONG = 1 << 13;
export const SEGMENT_ATTR_DEFAULT = 1 << 14;

/** struct hv_x64_intercept_message_header (40 bytes). Offsets are relative to the payload. */
export const HvX64InterceptHeader = defineStruct('hv_x64_intercept_message_header', 40, [
  [0, 'vpIndex', 'u32'],
  /** bits 0-3 instruction length, bits 4-7 cr8 */
  [4, 'lengthAndCr8', 'u8'],
  /** 0 read, 1 write, 2 execute */
  [5, 'interceptAccessType', 'u8'],
  /** cpl bits 0-1, cr0.pe bit 2, cr0.am bit 3, efer.lma bit 4, ..., interruption pending bit 6 */
  [6, 'executionState', 'u16'],
  [8, 'cs', { bytes: 16 }],
  [24, 'rip', 'u64'],
  [32, 'rflags', 'u64'],
] as const);
export const EXEC_STATE_CR0_PE = 1 << 2;
export const EXEC_STATE_EFER_LMA = 1 << 4;
export const EXEC_STATE_INTERRUPTION_PENDING = 1 << 6;

export const HvX64IoPortInterceptMessage = defineStruct('hv_x64_io_port_intercept_message', 128, [
  [0, 'header', { bytes: 40 }],
  [40, 'portNumber', 'u16'],
  /** bits 0-2 access size, bit 3 string op, bit 4 rep prefix */
  [42, 'accessInfo', 'u8'],
  [43, 'instructionByteCount', 'u8'],
  [44, 'reserved', 'u32'],
  [48, 'rax', 'u64'],
  [56, 'instructionBytes', { bytes: 16 }],
  [72, 'ds', { bytes: 16 }],
  [88, 'es', { bytes: 16 }],
  [104, 'rcx', 'u64'],
  [112, 'rsi', 'u64'],
  [120, 'rdi', 'u64'],
] as const);

export const HvX64MemoryInterceptMessage = defineStruct('hv_x64_memory_intercept_message', 80, [
  [0, 'header', { bytes: 40 }],
  [40, 'cacheType', 'u32'],
  [44, 'instructionByteCount', 'u8'],
  /** bit 0 gva valid, bit 1 gva-gpa valid, bit 2 hypercall output pending */
  [45, 'memoryAccessInfo', 'u8'],
  [46, 'tprPriority', 'u8'],
  [47, 'reserved1', 'u8'],
  [48, 'guestVirtualAddress', 'u64'],
  [56, 'guestPhysicalAddress', 'u64'],
  [64, 'instructionBytes', { bytes: 16 }],
] as const);

export const HvX64MsrInterceptMessage = defineStruct('hv_x64_msr_intercept_message', 64, [
  [0, 'header', { bytes: 40 }],
  [40, 'msrNumber', 'u32'],
  [44, 'reserved', 'u32'],
  [48, 'rdx', 'u64'],
  [56, 'rax', 'u64'],
] as const);

export const HvX64CpuidInterceptMessage = defineStruct('hv_x64_cpuid_intercept_message', 104, [
  [0, 'header', { bytes: 40 }],
  [40, 'rax', 'u64'],
  [48, 'rcx', 'u64'],
  [56, 'rdx', 'u64'],
  [64, 'rbx', 'u64'],
  [72, 'defaultResultRax', 'u64'],
  [80, 'defaultResultRcx', 'u64'],
  [88, 'defaultResultRdx', 'u64'],
  [96, 'defaultResultRbx', 'u64'],
] as const);

export const HvX64HypercallInterceptMessage = defineStruct('hv_x64_hypercall_intercept_message', 196, [
  [0, 'header', { bytes: 40 }],
  [40, 'rax', 'u64'],
  [48, 'rbx', 'u64'],
  [56, 'rcx', 'u64'],
  [64, 'rdx', 'u64'],
  [72, 'r8', 'u64'],
  [80, 'rsi', 'u64'],
  [88, 'rdi', 'u64'],
  [96, 'xmmRegisters', { bytes: 96 }],
  /** bit 0 isolated */
  [192, 'flags', 'u32'],
] as const);

export const HvX64ExceptionInterceptMessage = defineStruct('hv_x64_exception_intercept_message', 240, [
  [0, 'header', { bytes: 40 }],
  [40, 'exceptionVector', 'u16'],
  [42, 'exceptionInfo', 'u8'],
  [43, 'instructionByteCount', 'u8'],
  [44, 'errorCode', 'u32'],
  [48, 'exceptionParameter', 'u64'],
  [56, 'reserved', 'u64'],
  [64, 'instructionBytes', { bytes: 16 }],
  [80, 'ds', { bytes: 16 }],
  [96, 'ss', { bytes: 16 }],
  [112, 'gprs', { bytes: 128 }],
] as const);

export const HvX64SintDeliverableMessage = defineStruct('hv_x64_sint_deliverable_message', 48, [
  [0, 'header', { bytes: 40 }],
  [40, 'deliverableSints', 'u16'],
  [42, 'rsvd1', 'u16'],
  [44, 'rsvd2', 'u32'],
] as const);

export const HvX64InterruptionDeliverableMessage = defineStruct('hv_x64_interruption_deliverable_message', 48, [
  [0, 'header', { bytes: 40 }],
  [40, 'deliverableType', 'u32'],
  [44, 'rsvd', 'u32'],
] as const);

export const HvX64InvalidVpRegisterMessage = defineStruct('hv_x64_invalid_vp_register_message', 8, [
  [0, 'vpIndex', 'u32'],
  [4, 'reserved', 'u32'],
] as const);

export const HvX64UnsupportedFeatureMessage = defineStruct('hv_x64_unsupported_feature_message', 16, [
  [0, 'vpIndex', 'u32'],
  [4, 'featureCode', 'u32'],
  [8, 'featureParameter', 'u64'],
] as const);

/** Linux errno values the backend tells apart. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  ENXIO: 6,
  EAGAIN: 11,
  EACCES: 13,
  ENODEV: 19,
  EINVAL: 22,
  ENOTTY: 25,
  EOPNOTSUPP: 95,
} as const;
