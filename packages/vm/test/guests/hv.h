/* Hyper-V pieces shared by the enlightenment test guests (MSRs, hypercalls, SynIC pages) and
 * the request port of packages/vm/test/helpers/hv-guest.ts. */
#ifndef HVEMU_HV_H
#define HVEMU_HV_H
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
#define HVMSG_TIMER_EXPIRED 0x80000010u

/* Host requests (hv-guest.ts): one 32-bit OUT, op << 24 | vp << 16 | sint << 8 | arg. */
#define REQUEST_PORT 0xe0
#define REQ_POST 1   /* post a message to (vp, sint): type 1, payload {sint, vp, arg} */
#define REQ_SIGNAL 2 /* set event flag arg of (vp, sint) */
#define REQ_ISR 3    /* the host counts set ISR bits in vp's in-kernel LAPIC */
#define REQ_UNREGISTER 4 /* remove event connection arg */
static inline void request(int op, int vp, int sint, int arg) {
  outl(REQUEST_PORT, ((uint32_t)op << 24) | ((uint32_t)vp << 16) | ((uint32_t)sint << 8) | (uint32_t)(arg & 0xff));
}

struct hv_message {
  volatile uint32_t type;
  volatile uint8_t size;
  volatile uint8_t flags;
  uint16_t reserved;
  volatile uint64_t sender;
  volatile uint8_t payload[240];
};

static uint8_t hcall_page[4096] __attribute__((aligned(4096)));
static void *hcall_ptr = hcall_page;

static inline void hv_enable_hypercalls(void) {
  wrmsr(HV_X64_MSR_GUEST_OS_ID, 0x8100ULL << 48);
  wrmsr(HV_X64_MSR_HYPERCALL, (uint64_t)hcall_page | 1);
}

static inline uint64_t hypercall(uint64_t control, uint64_t in, uint64_t out) {
  uint64_t status;
  register uint64_t r8 __asm__("r8") = out;
  __asm__ volatile("call *%[page]" : "=a"(status), "+c"(control), "+d"(in), "+r"(r8) : [page] "m"(hcall_ptr) : "memory", "cc", "r9", "r10", "r11");
  return status;
}

/* Frees a message slot the TLFS way: type NONE, fence, EOM if something is pending. */
static inline void hv_free_slot(struct hv_message *m) {
  m->type = 0;
  __asm__ volatile("mfence" ::: "memory");
  if (m->flags & 1) wrmsr(HV_X64_MSR_EOM, 0);
}

/* Spins (with interrupts on) until *counter reaches n; false if it never does. */
static inline int wait_count(volatile int *counter, int n) {
  sti();
  for (long i = 0; i < 3000000 && *counter < n; i++) __asm__ volatile("pause");
  cli();
  return *counter >= n;
}

/* Two-vCPU rendezvous. */
static volatile uint32_t barrier_count;
static inline void barrier(uint32_t round) {
  __atomic_add_fetch(&barrier_count, 1, __ATOMIC_SEQ_CST);
  while (__atomic_load_n(&barrier_count, __ATOMIC_SEQ_CST) < 2 * round) __asm__ volatile("pause");
}
#endif
