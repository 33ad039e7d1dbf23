/*
 * hyperv_synic-like: on each of two vCPUs, every SINT 0-15 receives a host message and an
 * event flag on its own vector, delivered to that vCPU only (VP_INDEX-targeted); a masked
 * SINT holds its message until unmasked; SIMP disabled holds messages, and a moved SIMP
 * receives them at the new page.
 */
#include "hv.h"

#define VECTOR(sint) (0x40 + (sint))
static uint8_t simp[2][4096] __attribute__((aligned(4096)));
static uint8_t simp2[2][4096] __attribute__((aligned(4096)));
static uint8_t siefp[2][4096] __attribute__((aligned(4096)));
static volatile int hits[2][16];

static void on_sint(struct isr_frame *f) {
  hits[apic_id() & 1][f->vector - VECTOR(0)]++;
  apic_eoi();
}

static struct hv_message *slot(uint8_t *page, int sint) { return (struct hv_message *)(page + sint * 256); }

static void check_message(uint8_t *page, int sint, int vp, int arg) {
  struct hv_message *m = slot(page, sint);
  ASSERT(m->type == 1 && m->size == 3);
  ASSERT(m->payload[0] == sint && m->payload[1] == vp && m->payload[2] == arg);
  hv_free_slot(m);
}

int guest_main(int cpu) {
  int vp = (int)rdmsr(HV_X64_MSR_VP_INDEX);
  ASSERT(vp == cpu);
  for (int s = 0; s < 16; s++) rt_set_handler(VECTOR(s), on_sint);
  wrmsr(HV_X64_MSR_SIMP, (uint64_t)simp[cpu] | 1);
  wrmsr(HV_X64_MSR_SIEFP, (uint64_t)siefp[cpu] | 1);
  for (int s = 0; s < 16; s++) wrmsr(HV_X64_MSR_SINT0 + s, VECTOR(s));
  wrmsr(HV_X64_MSR_SCONTROL, 1);
  barrier(1);

  /* Every SINT: a message, then an event flag, each one interrupt on this vCPU only. */
  for (int s = 0; s < 16; s++) {
    request(REQ_POST, vp, s, 0x10 + s);
    ASSERT(wait_count(&hits[cpu][s], 1));
    check_message(simp[cpu], s, vp, 0x10 + s);
    request(REQ_SIGNAL, vp, s, s + 7);
    ASSERT(wait_count(&hits[cpu][s], 2));
    volatile uint32_t *flags = (volatile uint32_t *)(siefp[cpu] + s * 256);
    ASSERT(flags[0] == (1u << (s + 7)) || (s + 7 >= 32 && flags[1] == (1u << (s + 7 - 32))));
    flags[0] = flags[1] = 0;
  }
  barrier(2);
  for (int s = 0; s < 16; s++) ASSERT(hits[cpu][s] == 2); /* nothing of the other vCPU's came here */

  /* Masked SINT 3: the message waits (no interrupt, slot empty) until unmasked. */
  wrmsr(HV_X64_MSR_SINT0 + 3, VECTOR(3) | SINT_MASKED);
  request(REQ_POST, vp, 3, 0x33);
  for (volatile int i = 0; i < 2000; i++) {}
  ASSERT(hits[cpu][3] == 2);
  ASSERT(slot(simp[cpu], 3)->type == 0);
  wrmsr(HV_X64_MSR_SINT0 + 3, VECTOR(3));
  ASSERT(wait_count(&hits[cpu][3], 3));
  check_message(simp[cpu], 3, vp, 0x33);

  /* SIMP disabled: the message waits; SIMP moved: it lands in the new page, not the old. */
  wrmsr(HV_X64_MSR_SIMP, 0);
  request(REQ_POST, vp, 5, 0x55);
  ASSERT(slot(simp[cpu], 5)->type == 0 && hits[cpu][5] == 2);
  wrmsr(HV_X64_MSR_SIMP, (uint64_t)simp2[cpu] | 1);
  ASSERT(wait_count(&hits[cpu][5], 3));
  ASSERT(slot(simp[cpu], 5)->type == 0);
  check_message(simp2[cpu], 5, vp, 0x55);
  return 0;
}
