/* The Hyper-V guest ABI the C guests use (TLFS names): synthetic MSRs, SINT and synthetic
 * timer bits, message types, hypercall codes and statuses, the SynIC message slot, and the
 * hypercall-page call. Definitions only; each guest keeps its own pages. Shared by the VMBus
 * demo guest (vmbus/vmbus.h) and the test guests in ../test/guests (hv.h, the enlightenment
 * guests, and synic-basic.c), which find it with -I packages/vm/guests. */
#ifndef HVEMU_HV_ABI_H
#define HVEMU_HV_ABI_H
#include "rt.h"

#define HV_X64_MSR_GUEST_OS_ID 0x40000000
#define HV_X64_MSR_HYPERCALL 0x40000001
#define HV_X64_MSR_VP_INDEX 0x40000002
#define HV_X64_MSR_TIME_REF_COUNT 0x40000020
#define HV_X64_MSR_REFERENCE_TSC 0x40000021
#define HV_X64_MSR_TSC_FREQUENCY 0x40000022
#define HV_X64_MSR_SCONTROL 0x40000080
#define HV_X64_MSR_SIEFP 0x40000082
#define HV_X64_MSR_SIMP 0x40000083
#define HV_X64_MSR_EOM 0x40000084
#define HV_X64_MSR_SINT0 0x40000090
#define HV_X64_MSR_STIMER0_CONFIG 0x400000b0
#define HV_X64_MSR_STIMER0_COUNT 0x400000b1

#define SINT_MASKED (1ULL << 16)
#define SINT_AUTO_EOI (1ULL << 17)

/* HV_X64_MSR_STIMERx_CONFIG */
#define STIMER_ENABLE 1ULL
#define STIMER_PERIODIC 2ULL
#define STIMER_AUTO_ENABLE 8ULL
#define STIMER_DIRECT (1ULL << 12)
#define STIMER_VECTOR(v) ((uint64_t)(v) << 4)
#define STIMER_SINT(s) ((uint64_t)(s) << 16)

#define HVMSG_TIMER_EXPIRED 0x80000010u

#define HVCALL_POST_MESSAGE 0x5c
#define HVCALL_SIGNAL_EVENT 0x5d
#define HV_HYPERCALL_FAST (1u << 16)
#define HV_STATUS_INVALID_CONNECTION_ID 0x12

#define HV_MESSAGE_PAYLOAD 240

struct hv_message {
  volatile uint32_t type;
  volatile uint8_t size;
  volatile uint8_t flags;
  uint16_t reserved;
  volatile uint64_t sender;
  volatile uint8_t payload[HV_MESSAGE_PAYLOAD];
};

/* Calls the hypercall page at *page (RCX control, RDX input, R8 output; RAX status). The page
 * may use R9-R11 (hvemu's does not, Hyper-V's may). */
static inline uint64_t hv_hypercall(void *const *page, uint64_t control, uint64_t in, uint64_t out) {
  uint64_t status;
  register uint64_t r8 __asm__("r8") = out;
  __asm__ volatile("call *%[page]" : "=a"(status), "+c"(control), "+d"(in), "+r"(r8) : [page] "m"(*page) : "memory", "cc", "r9", "r10", "r11");
  return status;
}
#endif
