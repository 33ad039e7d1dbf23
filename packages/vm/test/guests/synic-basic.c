/*
 * Hyper-V enlightenments seen from a guest on KVM: CPUID, the hypercall page, SynIC message
 * and event-flag delivery, HvPostMessage / HvSignalEvent (slow and fast), #GP on reserved
 * bits. The host side (synic-kvm.test.ts) answers "ping" posts on connection 7 with a "pong"
 * message on SINT 2 and signals on connection 9 with event flag 3.
 */
#include "hv-abi.h"

#define SINT 2
#define VECTOR 0x50

static uint8_t hcall_page[4096] __attribute__((aligned(4096)));
static uint8_t simp[4096] __attribute__((aligned(4096)));
static uint8_t siefp[4096] __attribute__((aligned(4096)));
static uint8_t input[4096] __attribute__((aligned(4096)));
static volatile int interrupts;
static void *hcall_ptr = hcall_page;

static void on_sint(struct isr_frame *f) {
  (void)f;
  interrupts++;
  apic_eoi();
}

static uint64_t hypercall(uint64_t control, uint64_t in, uint64_t out) { return hv_hypercall(&hcall_ptr, control, in, out); }

static uint64_t post_message(uint32_t connection, const char *text, uint32_t len) {
  memset(input, 0, 256);
  *(uint32_t *)(input + 0) = connection;
  *(uint32_t *)(input + 8) = 1; /* message type */
  *(uint32_t *)(input + 12) = len;
  memcpy(input + 16, text, len);
  return hypercall(0x5c, (uint64_t)input, 0) & 0xffff;
}

static void wait_interrupts(int n) {
  for (int spins = 0; interrupts < n; spins++) {
    ASSERT(spins < 1000);
    sti_hlt();
  }
  cli();
}

int guest_main(int cpu) {
  (void)cpu;
  uint32_t a, b, c, d;
  cpuid(0x40000000, 0, &a, &b, &c, &d);
  ASSERT(b == 0x7263694d && c == 0x666f736f && d == 0x76482074); /* "Microsoft Hv" */
  cpuid(0x40000003, 0, &a, &b, &c, &d);
  ASSERT((a & (1 << 5)) && (a & (1 << 6)));
  ASSERT(rdmsr(HV_X64_MSR_VP_INDEX) == 0);

  /* The hypercall page: refused before GUEST_OS_ID, installed after. */
  ASSERT(wrmsr_safe(HV_X64_MSR_HYPERCALL, (uint64_t)hcall_page | 1) == -1);
  wrmsr(HV_X64_MSR_GUEST_OS_ID, 0x8100ULL << 48);
  wrmsr(HV_X64_MSR_HYPERCALL, (uint64_t)hcall_page | 1);
  ASSERT(rdmsr(HV_X64_MSR_HYPERCALL) & 1);
  ASSERT(hcall_page[0] != 0xcc && hcall_page[0] != 0); /* the hypercall page code is installed */

  /* SynIC: message and event pages, SINT 2 on VECTOR. */
  rt_set_handler(VECTOR, on_sint);
  ASSERT(wrmsr_safe(HV_X64_MSR_SINT0 + SINT, VECTOR | (1ULL << 20)) == -1); /* reserved bit */
  wrmsr(HV_X64_MSR_SIMP, (uint64_t)simp | 1);
  wrmsr(HV_X64_MSR_SIEFP, (uint64_t)siefp | 1);
  wrmsr(HV_X64_MSR_SINT0 + SINT, VECTOR);
  wrmsr(HV_X64_MSR_SCONTROL, 1);

  /* HvPostMessage -> the host answers with a message in our SINT 2 slot. */
  ASSERT(post_message(7, "ping", 4) == 0);
  wait_interrupts(1);
  volatile uint32_t *slot = (volatile uint32_t *)(simp + SINT * 256);
  ASSERT(slot[0] == 1);
  ASSERT((slot[1] & 0xff) == 4);
  ASSERT(memcmp(simp + SINT * 256 + 16, "pong", 4) == 0);
  slot[0] = 0;
  __asm__ volatile("mfence" ::: "memory");
  if ((slot[1] >> 8) & 1) wrmsr(HV_X64_MSR_EOM, 0);

  /* Unknown connection, oversized payload. */
  ASSERT(post_message(8, "x", 1) == 0x12);
  ASSERT(post_message(7, "x", 241) == 0x5);

  /* Fast HvSignalEvent -> the host sets event flag 3 of SINT 2. */
  ASSERT((hypercall(0x5d | (1 << 16), 9, 0) & 0xffff) == 0);
  wait_interrupts(2);
  ASSERT(siefp[SINT * 256] == (1 << 3));

  /* Unknown hypercall code. */
  ASSERT((hypercall(0x7777, 0, 0) & 0xffff) == 2);

  /* The reference counter moves. */
  uint64_t t0 = rdmsr(HV_X64_MSR_TIME_REF_COUNT);
  for (volatile int i = 0; i < 2000; i++) {}
  ASSERT(rdmsr(HV_X64_MSR_TIME_REF_COUNT) > t0);
  rt_puts("synic-basic ok\n");
  return 0;
}
