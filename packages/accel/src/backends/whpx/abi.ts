/**
 * The Windows Hypervisor Platform ABI hvemu uses: capability and property codes, register
 * names (x64 and arm64 differ: x64 WHP names are WHP's own numbering, arm64 WHP names are the
 * hypervisor's HV_REGISTER_NAME values), exit reasons, and every structure that crosses the
 * DLL boundary, declared with defineStruct so a wrong offset fails at load time.
 *
 * Source of every number: WinHvPlatformDefs.h as published in MicrosoftDocs/Virtualization-
 * Documentation (virtualization/api/hypervisor-platform/headers, commit 77e0742a, 2026-08),
 * cross-checked with microsoft/openvmm vm/whp/src/abi{,/x64,/arm64}.rs (commit 1488a37b).
 * Written from those tables; no code copied.
 */
import { defineStruct, type FieldRow } from '@hvemu/common';

export type WhpxArch = 'x64' | 'arm64';

// --- HRESULTs -----------------------------------------------------------------------------

export const S_OK = 0;
export const E_INVALIDARG = 0x80070057;
export const WHV_E_UNKNOWN_CAPABILITY = 0x80370300;
export const WHV_E_INSUFFICIENT_BUFFER = 0x80370301;
export const WHV_E_UNKNOWN_PROPERTY = 0x80370302;
/**
 * HRESULT_FROM_WIN32(ERROR_HV_OBJECT_IN_USE): ERROR_HV_* codes are 0xC035xxxx with the
 * hypervisor status in the low 16 bits (HV_STATUS_OBJECT_IN_USE = 0x19); the value is already
 * negative as an HRESULT, so HRESULT_FROM_WIN32 leaves it unchanged.
 */
export const ERROR_HV_OBJECT_IN_USE = 0xc0350019;
export const HV_STATUS_OBJECT_IN_USE = 0x19;
export const HV_STATUS_INVALID_SYNIC_STATE = 0x18;

/** The hypervisor status carried in an HRESULT of facility 0x35 (OpenVMM's WHvError::hv_result test), else undefined. */
export function hvStatusOf(hr: number): number | undefined {
  return ((hr >>> 0) & 0x3fff0000) === 0x00350000 ? hr & 0xffff : undefined;
}

export function failed(hr: number): boolean {
  return (hr | 0) < 0;
}

export function formatHresult(hr: number): string {
  return `0x${(hr >>> 0).toString(16).padStart(8, '0')}`;
}

// --- capabilities (WHV_CAPABILITY_CODE) ----------------------------------------------------

export const WHvCapabilityCode = {
  HypervisorPresent: 0x0,
  Features: 0x1,
  ExtendedVmExits: 0x2,
  X64MsrExitBitmap: 0x4,
  ProcessorVendor: 0x1000,
  SyntheticProcessorFeaturesBanks: 0x1008,
  PhysicalAddressWidth: 0x100a,
  GicLpiIntIdBits: 0x2011,
} as const;

/** WHV_CAPABILITY_FEATURES bits. */
export const CAPABILITY_FEATURE_LOCAL_APIC_EMULATION = 1n << 1n; // x64 header only
export const CAPABILITY_FEATURE_ARM64_SUPPORT = 1n << 11n; // arm64 header only

// --- partition properties (WHV_PARTITION_PROPERTY_CODE) ------------------------------------

export const WHvPartitionPropertyCode = {
  ExtendedVmExits: 0x1,
  ExceptionExitBitmap: 0x2,
  X64MsrExitBitmap: 0x5,
  CpuidExitList: 0x1003,
  LocalApicEmulationMode: 0x1005,
  MsrActionList: 0x100f,
  SyntheticProcessorFeaturesBanks: 0x100c,
  Arm64IcParameters: 0x1012,
  ProcessorCount: 0x1fff,
} as const;

/** WHV_EXTENDED_VM_EXITS bit numbers (x64-only bits are reserved on arm64). */
export const ExtendedVmExit = {
  X64CpuidExit: 0,
  X64MsrExit: 1,
  ExceptionExit: 2,
  X64RdtscExit: 3,
  X64ApicSmiExitTrap: 4,
  HypercallExit: 5,
  X64ApicInitSipiExitTrap: 6,
  UnknownSynicConnection: 10,
  RetargetUnknownVpciDevice: 11,
  GpaAccessFaultExit: 14,
} as const;

/** WHV_X64_MSR_EXIT_BITMAP bit numbers. */
export const X64MsrExitBitmap = {
  UnhandledMsrs: 0,
  TscMsrWrite: 1,
  TscMsrRead: 2,
  ApicBaseMsrWrite: 3,
  MiscEnableMsrRead: 4,
  McUpdatePatchLevelMsrRead: 5,
} as const;

/** WHV_X64_LOCAL_APIC_EMULATION_MODE. */
export const LocalApicEmulationMode = { None: 0, XApic: 1, X2Apic: 2 } as const;

/**
 * WHV_SYNTHETIC_PROCESSOR_FEATURES bank 0 bit numbers (same bits as the hypervisor's
 * HV_PARTITION_SYNTHETIC_PROCESSOR_FEATURES). Bits 10, 11, 15 and 31-35 are x64 only; 39
 * (SyncContext) is arm64 only.
 */
export const SyntheticFeature = {
  HypervisorPresent: 0,
  Hv1: 1,
  AccessVpRunTimeReg: 2,
  AccessPartitionReferenceCounter: 3,
  AccessSynicRegs: 4,
  AccessSyntheticTimerRegs: 5,
  AccessIntrCtrlRegs: 6,
  AccessHypercallRegs: 7,
  AccessVpIndex: 8,
  AccessPartitionReferenceTsc: 9,
  AccessGuestIdleReg: 10,
  AccessFrequencyRegs: 11,
  EnableExtendedGvaRangesForFlushVirtualAddressList: 15,
  FastHypercallOutput: 18,
  DirectSyntheticTimers: 22,
  ExtendedProcessorMasks: 24,
  TbFlushHypercalls: 25,
  SyntheticClusterIpi: 26,
  NotifyLongSpinWait: 27,
  QueryNumaDistance: 28,
  SignalEvents: 29,
  RetargetDeviceInterrupt: 30,
  AccessVpRegs: 38,
  SyncContext: 39,
} as const;
export type SyntheticFeatureName = keyof typeof SyntheticFeature;

const X64_ONLY_FEATURES: ReadonlySet<SyntheticFeatureName> = new Set([
  'AccessGuestIdleReg',
  'AccessFrequencyRegs',
  'EnableExtendedGvaRangesForFlushVirtualAddressList',
]);
const ARM64_ONLY_FEATURES: ReadonlySet<SyntheticFeatureName> = new Set(['SyncContext']);

/**
 * What hvemu offloads to the hypervisor by default: the Hyper-V interface vmbus needs
 * (CPUID leaves, hypercall page, VP index, SynIC, synthetic timers, reference counter and
 * TSC page, VP assist page / APIC MSRs, SignalEvent), a subset of OpenVMM's offload list.
 */
export const DEFAULT_SYNTHETIC_FEATURES: readonly SyntheticFeatureName[] = [
  'HypervisorPresent',
  'Hv1',
  'AccessVpRunTimeReg',
  'AccessPartitionReferenceCounter',
  'AccessSynicRegs',
  'AccessSyntheticTimerRegs',
  'AccessIntrCtrlRegs',
  'AccessHypercallRegs',
  'AccessVpIndex',
  'AccessPartitionReferenceTsc',
  'FastHypercallOutput',
  'DirectSyntheticTimers',
  'SignalEvents',
];

/** Bank 0 mask for `names`; bits of the other architecture are dropped (they are reserved there). */
export function syntheticFeatureMask(names: readonly SyntheticFeatureName[], arch: WhpxArch): bigint {
  let mask = 0n;
  for (const n of names) {
    if (arch === 'arm64' && X64_ONLY_FEATURES.has(n)) continue;
    if (arch === 'x64' && ARM64_ONLY_FEATURES.has(n)) continue;
    mask |= 1n << BigInt(SyntheticFeature[n]);
  }
  return mask;
}

export function syntheticFeatureNames(mask: bigint): string[] {
  return Object.entries(SyntheticFeature)
    .filter(([, bit]) => (mask >> BigInt(bit)) & 1n)
    .map(([n]) => n);
}

// --- memory, VPs ---------------------------------------------------------------------------

export const WHvMapGpaRangeFlag = { Read: 1, Write: 2, Execute: 4, TrackDirtyPages: 8 } as const;
export const WHV_ANY_VP = 0xffffffff;
export const WHV_SYNIC_MESSAGE_SIZE = 256;

// --- registers -----------------------------------------------------------------------------

/** WHV_REGISTER_VALUE: 16 bytes, 16-byte aligned in arrays. */
export const WHV_REGISTER_VALUE_SIZE = 16;

/** x64 WHV_REGISTER_NAME for hvemu's Registers fields. */
export const WHvX64Register = {
  rax: 0x00,
  rcx: 0x01,
  rdx: 0x02,
  rbx: 0x03,
  rsp: 0x04,
  rbp: 0x05,
  rsi: 0x06,
  rdi: 0x07,
  r8: 0x08,
  r9: 0x09,
  r10: 0x0a,
  r11: 0x0b,
  r12: 0x0c,
  r13: 0x0d,
  r14: 0x0e,
  r15: 0x0f,
  rip: 0x10,
  rflags: 0x11,
} as const;

export const WHvX64SegmentRegister = { es: 0x12, cs: 0x13, ss: 0x14, ds: 0x15, fs: 0x16, gs: 0x17, ldt: 0x18, tr: 0x19 } as const;
export const WHvX64RegisterIdtr = 0x1a;
export const WHvX64RegisterGdtr = 0x1b;
export const WHvX64RegisterCr0 = 0x1c;
export const WHvX64RegisterCr2 = 0x1d;
export const WHvX64RegisterCr3 = 0x1e;
export const WHvX64RegisterCr4 = 0x1f;
export const WHvX64RegisterCr8 = 0x20;
export const WHvX64RegisterXmm0 = 0x1000;
export const WHvX64RegisterEfer = 0x2001;
export const WHvX64RegisterApicBase = 0x2003;
export const WHvRegisterPendingInterruption = 0x80000000;
export const WHvRegisterInterruptState = 0x80000001;
/** 128-bit WHV_X64_PENDING_EXCEPTION_EVENT (what OpenVMM uses to inject #GP after an MSR exit). */
export const WHvRegisterPendingEvent = 0x80000002;
export const WHvX64RegisterDeliverabilityNotifications = 0x80000004;

/** arm64 WHV_REGISTER_NAME (= HV_ARM64_REGISTER_NAME). X0..X28 are contiguous from 0x00020000. */
export const WHvArm64RegisterX0 = 0x00020000;
export const WHvArm64RegisterFp = 0x0002001d;
export const WHvArm64RegisterLr = 0x0002001e;
export const WHvArm64RegisterSp = 0x0002001f;
export const WHvArm64RegisterPc = 0x00020022;
export const WHvArm64RegisterPstate = 0x00020023;
export const WHvArm64RegisterGicrBaseGpa = 0x00063000;
export const WHvArm64RegisterDeliverabilityNotifications = 0x00010006;

export function arm64X(n: number): number {
  return WHvArm64RegisterX0 + n;
}

/** WHV_DELIVERABILITY_NOTIFICATIONS_REGISTER: SINT mask in bits 48-63 on both architectures. */
export const DELIVERABILITY_SINT_SHIFT = 48n;
/** x64 only: NMI (bit 0) and interrupt (bit 1) notifications. */
export const DELIVERABILITY_NMI = 1n;
export const DELIVERABILITY_INTERRUPT = 2n;

export function deliverabilityRegister(arch: WhpxArch): number {
  return arch === 'x64' ? WHvX64RegisterDeliverabilityNotifications : WHvArm64RegisterDeliverabilityNotifications;
}

/** WHV_X64_PENDING_EXCEPTION_EVENT low 64 bits: EventPending bit 0, EventType bits 1-3 (0 = exception),
 * DeliverErrorCode bit 8, Vector bits 16-31, ErrorCode bits 32-63; the high 64 bits are ExceptionParameter. */
export function pendingExceptionEvent(vector: number, errorCode: number | undefined): bigint {
  const withCode = errorCode !== undefined;
  return 1n | (withCode ? 1n << 8n : 0n) | (BigInt(vector & 0xffff) << 16n) | (BigInt((errorCode ?? 0) >>> 0) << 32n);
}
export const X86_VECTOR_GP = 13;

// --- exit reasons ---------------------------------------------------------------------------

export const WHvRunVpExitReasonX64 = {
  None: 0x0,
  MemoryAccess: 0x1,
  X64IoPortAccess: 0x2,
  UnrecoverableException: 0x4,
  InvalidVpRegisterValue: 0x5,
  UnsupportedFeature: 0x6,
  X64InterruptWindow: 0x7,
  X64Halt: 0x8,
  X64ApicEoi: 0x9,
  SynicSintDeliverable: 0xa,
  X64MsrAccess: 0x1000,
  X64Cpuid: 0x1001,
  Exception: 0x1002,
  X64Rdtsc: 0x1003,
  X64ApicSmiTrap: 0x1004,
  Hypercall: 0x1005,
  X64ApicInitSipiTrap: 0x1006,
  X64ApicWriteTrap: 0x1007,
  Canceled: 0x2001,
} as const;

/** arm64 exit reasons are hypervisor message types. */
export const WHvRunVpExitReasonArm64 = {
  None: 0x0,
  UnmappedGpa: 0x80000000,
  GpaIntercept: 0x80000001,
  InvalidVpRegisterValue: 0x80000020,
  UnrecoverableException: 0x80000021,
  UnsupportedFeature: 0x80000022,
  Hypercall: 0x80000050,
  SynicSintDeliverable: 0x80000062,
  RegisterIntercept: 0x80010006,
  Arm64Reset: 0x8001000c,
  Canceled: 0xffffffff,
} as const;

export const ARM64_RESET_POWER_OFF = 0;
export const ARM64_RESET_REBOOT = 1;

// --- structures: x64 ------------------------------------------------------------------------

/** sizeof(WHV_RUN_VP_EXIT_CONTEXT). */
export const RUN_VP_EXIT_CONTEXT_SIZE: Record<WhpxArch, number> = { x64: 224, arm64: 272 };
/** Where the exit-specific union starts. */
export const X64_UNION_OFFSET = 48;
export const ARM64_UNION_OFFSET = 16;
export const X64_UNION_SIZE = 176;
export const ARM64_UNION_SIZE = 256;

export const WhvX64SegmentRegister = defineStruct('WHV_X64_SEGMENT_REGISTER', 16, [
  [0, 'base', 'u64'],
  [8, 'limit', 'u32'],
  [12, 'selector', 'u16'],
  [14, 'attributes', 'u16'],
] as const);

export const WhvX64TableRegister = defineStruct('WHV_X64_TABLE_REGISTER', 16, [
  [0, 'pad', { bytes: 6 }],
  [6, 'limit', 'u16'],
  [8, 'base', 'u64'],
] as const);

/** WHV_RUN_VP_EXIT_CONTEXT (x64) up to the union: ExitReason, Reserved, VpContext (WHV_X64_VP_EXIT_CONTEXT). */
export const WhvRunVpExitContextX64Head = defineStruct('WHV_RUN_VP_EXIT_CONTEXT(x64) head', 48, [
  [0, 'exitReason', 'u32'],
  [4, 'reserved', 'u32'],
  [8, 'executionState', 'u16'],
  [10, 'instructionLengthCr8', 'u8'], // InstructionLength bits 0-3, Cr8 bits 4-7
  [11, 'reserved1', 'u8'],
  [12, 'reserved2', 'u32'],
  [16, 'csBase', 'u64'],
  [24, 'csLimit', 'u32'],
  [28, 'csSelector', 'u16'],
  [30, 'csAttributes', 'u16'],
  [32, 'rip', 'u64'],
  [40, 'rflags', 'u64'],
] as const);

/** WHV_X64_VP_EXECUTION_STATE bits. */
export const EXEC_STATE_CR0_PE = 1 << 2;
export const EXEC_STATE_EFER_LMA = 1 << 4;
/** WHV_X64_SEGMENT_REGISTER attribute bits. */
export const SEGMENT_ATTR_LONG = 1 << 13;
export const SEGMENT_ATTR_DEFAULT = 1 << 14;

export const WhvMemoryAccessContextX64 = defineStruct('WHV_MEMORY_ACCESS_CONTEXT(x64)', 40, [
  [0, 'instructionByteCount', 'u8'],
  [1, 'reserved', { bytes: 3 }],
  [4, 'instructionBytes', { bytes: 16 }],
  [20, 'accessInfo', 'u32'], // AccessType bits 0-1 (read 0, write 1, execute 2), GpaUnmapped bit 2, GvaValid bit 3
  [24, 'gpa', 'u64'],
  [32, 'gva', 'u64'],
] as const);

export const WhvX64IoPortAccessContext = defineStruct('WHV_X64_IO_PORT_ACCESS_CONTEXT', 96, [
  [0, 'instructionByteCount', 'u8'],
  [1, 'reserved', { bytes: 3 }],
  [4, 'instructionBytes', { bytes: 16 }],
  [20, 'accessInfo', 'u32'], // IsWrite bit 0, AccessSize bits 1-3, StringOp bit 4, RepPrefix bit 5
  [24, 'portNumber', 'u16'],
  [26, 'reserved2', { bytes: 6 }],
  [32, 'rax', 'u64'],
  [40, 'rcx', 'u64'],
  [48, 'rsi', 'u64'],
  [56, 'rdi', 'u64'],
  [64, 'ds', { bytes: 16 }],
  [80, 'es', { bytes: 16 }],
] as const);

export const WhvX64MsrAccessContext = defineStruct('WHV_X64_MSR_ACCESS_CONTEXT', 24, [
  [0, 'accessInfo', 'u32'], // IsWrite bit 0
  [4, 'msrNumber', 'u32'],
  [8, 'rax', 'u64'],
  [16, 'rdx', 'u64'],
] as const);

export const WhvX64CpuidAccessContext = defineStruct('WHV_X64_CPUID_ACCESS_CONTEXT', 64, [
  [0, 'rax', 'u64'],
  [8, 'rcx', 'u64'],
  [16, 'rdx', 'u64'],
  [24, 'rbx', 'u64'],
  [32, 'defaultResultRax', 'u64'],
  [40, 'defaultResultRcx', 'u64'],
  [48, 'defaultResultRdx', 'u64'],
  [56, 'defaultResultRbx', 'u64'],
] as const);

export const WhvVpExceptionContext = defineStruct('WHV_VP_EXCEPTION_CONTEXT', 40, [
  [0, 'instructionByteCount', 'u8'],
  [1, 'reserved', { bytes: 3 }],
  [4, 'instructionBytes', { bytes: 16 }],
  [20, 'exceptionInfo', 'u32'], // ErrorCodeValid bit 0, SoftwareException bit 1
  [24, 'exceptionType', 'u8'],
  [25, 'reserved2', { bytes: 3 }],
  [28, 'errorCode', 'u32'],
  [32, 'exceptionParameter', 'u64'],
] as const);

export const WhvX64UnsupportedFeatureContext = defineStruct('WHV_X64_UNSUPPORTED_FEATURE_CONTEXT', 16, [
  [0, 'featureCode', 'u32'],
  [4, 'reserved', 'u32'],
  [8, 'featureParameter', 'u64'],
] as const);

export const WhvX64InterruptionDeliverableContext = defineStruct('WHV_X64_INTERRUPTION_DELIVERABLE_CONTEXT', 4, [
  [0, 'deliverableType', 'u32'],
] as const);
export const WhvX64ApicEoiContext = defineStruct('WHV_X64_APIC_EOI_CONTEXT', 4, [[0, 'interruptVector', 'u32']] as const);
export const WhvRunVpCanceledContext = defineStruct('WHV_RUN_VP_CANCELED_CONTEXT', 4, [[0, 'cancelReason', 'u32']] as const);

export const WhvSynicSintDeliverableContextX64 = defineStruct('WHV_SYNIC_SINT_DELIVERABLE_CONTEXT(x64)', 8, [
  [0, 'deliverableSints', 'u16'],
  [2, 'reserved1', 'u16'],
  [4, 'reserved2', 'u32'],
] as const);

export const WhvX64HypercallContext = defineStruct('WHV_X64_HYPERCALL_CONTEXT', 176, [
  [0, 'rax', 'u64'],
  [8, 'rbx', 'u64'],
  [16, 'rcx', 'u64'],
  [24, 'rdx', 'u64'],
  [32, 'r8', 'u64'],
  [40, 'rsi', 'u64'],
  [48, 'rdi', 'u64'],
  [56, 'reserved0', 'u64'],
  [64, 'xmmRegisters', { bytes: 96 }],
  [160, 'reserved1', { bytes: 16 }],
] as const);

// --- structures: arm64 (the union is the hypervisor's intercept message payload) -------------

const ARM64_HEADER_ROWS = [
  [0, 'vpIndex', 'u32'],
  [4, 'instructionLength', 'u8'],
  [5, 'interceptAccessType', 'u8'],
  [6, 'executionState', 'u16'],
  [8, 'pc', 'u64'],
  [16, 'cpsr', 'u64'],
] as const satisfies readonly FieldRow[];

export const WhvInterceptMessageHeaderArm64 = defineStruct('WHV_INTERCEPT_MESSAGE_HEADER(arm64)', 24, ARM64_HEADER_ROWS);

export const WhvRunVpExitContextArm64Head = defineStruct('WHV_RUN_VP_EXIT_CONTEXT(arm64) head', 16, [
  [0, 'exitReason', 'u32'],
  [4, 'reserved', 'u32'],
  [8, 'reserved1', 'u64'],
] as const);

export const WhvMemoryAccessContextArm64 = defineStruct('WHV_MEMORY_ACCESS_CONTEXT(arm64)', 64, [
  ...ARM64_HEADER_ROWS,
  [24, 'reserved0', 'u32'],
  [28, 'instructionByteCount', 'u8'],
  [29, 'accessInfo', 'u8'], // GvaValid bit 0, GvaGpaValid bit 1, HypercallOutputPending bit 2
  [30, 'reserved1', 'u16'],
  [32, 'instructionBytes', { bytes: 4 }],
  [36, 'reserved2', 'u32'],
  [40, 'gva', 'u64'],
  [48, 'gpa', 'u64'],
  [56, 'syndrome', 'u64'],
] as const);

export const WhvArm64HypercallContext = defineStruct('WHV_ARM64_HYPERCALL_CONTEXT', 176, [
  ...ARM64_HEADER_ROWS,
  [24, 'immediate', 'u16'],
  [26, 'reserved1', 'u16'],
  [28, 'reserved2', 'u32'],
  [32, 'x', { bytes: 18 * 8 }],
] as const);

export const WhvSynicSintDeliverableContextArm64 = defineStruct('WHV_SYNIC_SINT_DELIVERABLE_CONTEXT(arm64)', 32, [
  ...ARM64_HEADER_ROWS,
  [24, 'deliverableSints', 'u16'],
  [26, 'reserved1', 'u16'],
  [28, 'reserved2', 'u32'],
] as const);

export const WhvArm64ResetContext = defineStruct('WHV_ARM64_RESET_CONTEXT', 32, [
  ...ARM64_HEADER_ROWS,
  [24, 'resetType', 'u32'],
  [28, 'reserved', 'u32'],
] as const);

export const WhvInvalidVpRegisterContext = defineStruct('WHV_INVALID_VP_REGISTER_CONTEXT', 8, [
  [0, 'vpIndex', 'u32'],
  [4, 'reserved', 'u32'],
] as const);

export const WhvRegisterContextArm64 = defineStruct('WHV_REGISTER_CONTEXT(arm64)', 48, [
  ...ARM64_HEADER_ROWS,
  [24, 'isMemoryOp', 'u8'],
  [25, 'reserved8', 'u8'],
  [26, 'reserved16', 'u16'],
  [28, 'registerName', 'u32'],
  [32, 'accessInfo', { bytes: 16 }],
] as const);

// --- structures: inputs ---------------------------------------------------------------------

/** x64 WHV_INTERRUPT_CONTROL: Type bits 0-7, DestinationMode 8-11, TriggerMode 12-15, TargetVtl 16-23. */
export const WhvInterruptControlX64 = defineStruct('WHV_INTERRUPT_CONTROL(x64)', 16, [
  [0, 'control', 'u64'],
  [8, 'destination', 'u32'],
  [12, 'vector', 'u32'],
] as const);
export const X64_INTERRUPT_TYPE_FIXED = 0;
export const X64_DESTINATION_PHYSICAL = 0;
export const X64_TRIGGER_EDGE = 0;

/** arm64 WHV_INTERRUPT_CONTROL; InterruptControl = WHV_INTERRUPT_CONTROL2 (type bits 0-31, Asserted bit 34, Retarget bit 35). */
export const WhvInterruptControlArm64 = defineStruct('WHV_INTERRUPT_CONTROL(arm64)', 32, [
  [0, 'targetPartition', 'u64'],
  [8, 'interruptControl', 'u64'],
  [16, 'destinationAddress', 'u64'],
  [24, 'requestedVector', 'u32'],
  [28, 'targetVtl', 'u8'],
  [29, 'reservedZ0', 'u8'],
  [30, 'reservedZ1', 'u16'],
] as const);
export const ARM64_INTERRUPT_TYPE_FIXED = 0n;
export const ARM64_INTERRUPT_ASSERTED = 1n << 34n;

export const WhvSynicEventParameters = defineStruct('WHV_SYNIC_EVENT_PARAMETERS', 8, [
  [0, 'vpIndex', 'u32'],
  [4, 'targetSint', 'u8'],
  [5, 'targetVtl', 'u8'],
  [6, 'flagNumber', 'u16'],
] as const);

export const WhvSyntheticProcessorFeaturesBanks = defineStruct('WHV_SYNTHETIC_PROCESSOR_FEATURES_BANKS', 16, [
  [0, 'banksCount', 'u32'],
  [4, 'reserved0', 'u32'],
  [8, 'bank0', 'u64'],
] as const);

/**
 * WHV_ARM64_IC_PARAMETERS: EmulationMode + Reserved, then the 56-byte
 * WHV_ARM64_IC_GIC_V3_PARAMETERS; sizeof is 64 (C_ASSERT in WinHvPlatformDefs.h).
 */
export const WhvArm64IcParameters = defineStruct('WHV_ARM64_IC_PARAMETERS', 64, [
  [0, 'emulationMode', 'u32'],
  [4, 'reserved', 'u32'],
  [8, 'gicdBaseAddress', 'u64'],
  [16, 'gitsTranslaterBaseAddress', 'u64'],
  [24, 'reserved0', 'u32'],
  [28, 'gicLpiIntIdBits', 'u32'],
  [32, 'gicPpiOverflowInterruptFromCntv', 'u32'],
  [36, 'gicPpiPerformanceMonitorsInterrupt', 'u32'],
  [40, 'reserved1', { bytes: 24 }],
] as const);
export const ARM64_IC_EMULATION_GICV3 = 1;

/** One element of the MsrActionList property (x64). */
export const WhvMsrActionEntry = defineStruct('WHV_MSR_ACTION_ENTRY', 8, [
  [0, 'index', 'u32'],
  [4, 'readAction', 'u8'],
  [5, 'writeAction', 'u8'],
  [6, 'reserved', 'u16'],
] as const);
/** WHV_MSR_ACTION. */
export const MsrAction = { ArchitectureDefault: 0, IgnoreWriteReadZero: 1, Exit: 2 } as const;
