/* Hyper-V pieces shared by the enlightenment test guests (MSRs, hypercalls, SynIC pages) and
 * the request port of packages/vm/test/helpers/hv-guest.ts. */
#ifndef HVEMU_HV_H
#define HVEMU_HV_H
#include "hv-abi.h"

/* Host requests (hv-guest.ts): one 32-bit OUT, op << 24 | vp << 16 | sint << 8 | arg. */
#define REQUEST_PORT 0xe0
#define REQ_POST 1   /* post a message to (vp, sint): type 1, payload {sint, vp, arg} */
#define REQ_SIGNAL 2 /* set event flag arg of (vp, sint) */
#define REQ_ISR 3    /* the host counts set ISR bits in vp's in-kernel LAPIC */
#define REQ_UNREGISTER 4 /* remove event connection arg */
static inline void request(int op, int vp, int sint, int arg) {
  outl(REQUEST_PORT, ((uint32_t)op << 24) | ((uint32_t)vp << 16) | ((uint32_t)sint << 8) | (uint32_t)(arg & 0xff));
}

static uint8_t hcall_page[4096] __attribute__((aligned(4096)));
static void *hcall_ptr = hcall_page;

static inline void hv_enable_hypercalls(void) {
  wrmsr(HV_X64_MSR_GUEST_OS_ID, 0x8100ULL << 48);
  wrmsr(HV_X64_MSR_HYPERCALL, (uint64_t)hcall_page | 1);
}

static inline uint64_t hypercall(uint64_t control, uint64_t in, uint64_t out) { return hv_hypercall(&hcall_ptr, control, in, out); }

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
