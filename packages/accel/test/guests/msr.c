/* User-space MSRs: the Hyper-V range and a caller-registered MSR reach TypeScript. */
#include "rt.h"

#define HV_X64_MSR_GUEST_OS_ID 0x40000000
#define HV_X64_MSR_HYPERCALL 0x40000001
#define HV_UNHANDLED 0x40000077
#define IA32_MISC_ENABLE 0x1a0

int guest_main(int cpu) {
  (void)cpu;
  wrmsr(HV_X64_MSR_GUEST_OS_ID, 0x8100123456789abcUL);
  ASSERT(rdmsr(HV_X64_MSR_GUEST_OS_ID) == 0x8100123456789abcUL);
  ASSERT(rdmsr(HV_X64_MSR_HYPERCALL) == 0xfeedfacecafeUL);
  uint64_t v = 0;
  ASSERT(rdmsr_safe(HV_UNHANDLED, &v) == -1);          /* no handler: #GP */
  ASSERT(wrmsr_safe(HV_X64_MSR_HYPERCALL, 1) == -1);   /* handler refused: #GP */
  ASSERT(rdmsr(IA32_MISC_ENABLE) == 0x1a0a1a0UL);      /* filtered although KVM knows it */
  return 0;
}
