/**
 * The Hyper-V CPUID leaves 0x40000000-0x4000000A, advertising exactly what hvemu implements.
 * Bits and meanings: TLFS "Hypervisor CPUID leaves" (see the reference fact sheet).
 */
export interface CpuidLeaf {
  function: number;
  index: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

export interface HypervCpuidConfig {
  /** 12-character vendor id; "Microsoft Hv" for guests that check it. */
  vendor?: string;
  maxVps?: number;
  /** Direct-mode synthetic timers (CPUID 0x40000003 EDX bit 19). */
  directStimers?: boolean;
  /** Recommend that guests not use AutoEOI (0x40000004 EAX bit 9). */
  deprecateAutoEoi?: boolean;
  /** Crash MSRs (EDX bit 10). */
  crashMsrs?: boolean;
  /** Build/version reported in 0x40000002 (defaults: 10.0 build 14393, as KVM reports). */
  build?: number;
}

// 0x40000003 EAX: partition privileges (access to MSRs)
export const HV_MSR_VP_RUNTIME_AVAILABLE = 1 << 0;
export const HV_MSR_TIME_REF_COUNT_AVAILABLE = 1 << 1;
export const HV_MSR_SYNIC_AVAILABLE = 1 << 2;
export const HV_MSR_SYNTIMER_AVAILABLE = 1 << 3;
export const HV_MSR_HYPERCALL_AVAILABLE = 1 << 5;
export const HV_MSR_VP_INDEX_AVAILABLE = 1 << 6;
export const HV_MSR_RESET_AVAILABLE = 1 << 7;
export const HV_MSR_REFERENCE_TSC_AVAILABLE = 1 << 9;
export const HV_MSR_GUEST_IDLE_AVAILABLE = 1 << 10;
export const HV_ACCESS_FREQUENCY_MSRS = 1 << 11;
// 0x40000003 EBX
export const HV_POST_MESSAGES = 1 << 4;
export const HV_SIGNAL_EVENTS = 1 << 5;
// 0x40000003 EDX
export const HV_FEATURE_FREQUENCY_MSRS_AVAILABLE = 1 << 8;
export const HV_FEATURE_GUEST_CRASH_MSR_AVAILABLE = 1 << 10;
export const HV_STIMER_DIRECT_MODE_AVAILABLE = 1 << 19;
// 0x40000004 EAX
export const HV_DEPRECATING_AEOI_RECOMMENDED = 1 << 9;

export const HYPERV_CPUID_VENDOR_AND_MAX_FUNCTIONS = 0x40000000;
export const HYPERV_CPUID_INTERFACE = 0x40000001;
export const HYPERV_CPUID_VERSION = 0x40000002;
export const HYPERV_CPUID_FEATURES = 0x40000003;
export const HYPERV_CPUID_ENLIGHTMENT_INFO = 0x40000004;
export const HYPERV_CPUID_IMPLEMENT_LIMITS = 0x40000005;
export const HYPERV_CPUID_MAX = 0x4000000a;

function ascii4(s: string, at: number): number {
  let v = 0;
  for (let i = 0; i < 4; i++) v |= (s.charCodeAt(at + i) & 0xff) << (8 * i);
  return v >>> 0;
}

export function hypervCpuidLeaves(config: HypervCpuidConfig = {}): CpuidLeaf[] {
  const vendor = (config.vendor ?? 'Microsoft Hv').padEnd(12, '\0').slice(0, 12);
  const leaf = (fn: number, eax = 0, ebx = 0, ecx = 0, edx = 0): CpuidLeaf => ({
    function: fn,
    index: 0,
    eax: eax >>> 0,
    ebx: ebx >>> 0,
    ecx: ecx >>> 0,
    edx: edx >>> 0,
  });
  const featuresEax =
    HV_MSR_VP_RUNTIME_AVAILABLE |
    HV_MSR_TIME_REF_COUNT_AVAILABLE |
    HV_MSR_SYNIC_AVAILABLE |
    HV_MSR_SYNTIMER_AVAILABLE |
    HV_MSR_HYPERCALL_AVAILABLE |
    HV_MSR_VP_INDEX_AVAILABLE |
    HV_MSR_RESET_AVAILABLE |
    HV_MSR_REFERENCE_TSC_AVAILABLE |
    HV_MSR_GUEST_IDLE_AVAILABLE |
    HV_ACCESS_FREQUENCY_MSRS;
  const featuresEdx =
    HV_FEATURE_FREQUENCY_MSRS_AVAILABLE |
    (config.crashMsrs === false ? 0 : HV_FEATURE_GUEST_CRASH_MSR_AVAILABLE) |
    (config.directStimers === false ? 0 : HV_STIMER_DIRECT_MODE_AVAILABLE);
  const recommendations = config.deprecateAutoEoi === false ? 0 : HV_DEPRECATING_AEOI_RECOMMENDED;
  const leaves = [
    leaf(HYPERV_CPUID_VENDOR_AND_MAX_FUNCTIONS, HYPERV_CPUID_MAX, ascii4(vendor, 0), ascii4(vendor, 4), ascii4(vendor, 8)),
    leaf(HYPERV_CPUID_INTERFACE, ascii4('Hv#1', 0)),
    leaf(HYPERV_CPUID_VERSION, config.build ?? 14393, 0x000a0000),
    leaf(HYPERV_CPUID_FEATURES, featuresEax, HV_POST_MESSAGES | HV_SIGNAL_EVENTS, 0, featuresEdx),
    // EBX: spinlock retry count; 0xFFFFFFFF means never notify.
    leaf(HYPERV_CPUID_ENLIGHTMENT_INFO, recommendations, 0xffffffff),
    leaf(HYPERV_CPUID_IMPLEMENT_LIMITS, config.maxVps ?? 64, 64),
  ];
  for (let fn = 0x40000006; fn <= HYPERV_CPUID_MAX; fn++) leaves.push(leaf(fn));
  return leaves;
}
