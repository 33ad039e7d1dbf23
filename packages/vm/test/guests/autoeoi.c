/*
 * AutoEOI: SINTs 2-15 on vectors of every priority class (0x2x .. 0xFx) with AutoEOI set and
 * handlers that never EOI. Each round signals them from the highest class to the lowest (on a
 * LAPIC that keeps an unacknowledged vector in service, the first one blocks every later,
 * lower one), and every interrupt must arrive. Inside a handler the guest asks the host to
 * count in-service bits in its in-kernel LAPIC.
 */
#include "hv.h"

#define ROUNDS 8

static uint8_t simp[2][4096] __attribute__((aligned(4096)));
static uint8_t siefp[2][4096] __attribute__((aligned(4096)));
static volatile int hits[2][16];
static volatile int ask_isr;

static int vector_of(int sint) { return 0x20 + 0x10 * (sint - 2) + (sint & 1); } /* 0x20 .. 0xf1 */

static void on_sint(struct isr_frame *f) {
  int cpu = apic_id() & 1;
  int sint = ((int)f->vector - 0x20) / 0x10 + 2;
  hits[cpu][sint]++;
  if (ask_isr) {
    ask_isr = 0;
    request(REQ_ISR, cpu, 0, 0);
  }
  /* no EOI: AutoEOI */
}

int guest_main(int cpu) {
  for (int s = 2; s < 16; s++) rt_set_handler(vector_of(s), on_sint);
  wrmsr(HV_X64_MSR_SIMP, (uint64_t)simp[cpu] | 1);
  wrmsr(HV_X64_MSR_SIEFP, (uint64_t)siefp[cpu] | 1);
  for (int s = 2; s < 16; s++) wrmsr(HV_X64_MSR_SINT0 + s, (uint64_t)vector_of(s) | SINT_AUTO_EOI);
  wrmsr(HV_X64_MSR_SCONTROL, 1);
  for (int round = 1; round <= ROUNDS; round++) {
    for (int s = 15; s >= 2; s--) {
      if (cpu == 0 && round == 1 && s == 15) ask_isr = 1;
      request(REQ_SIGNAL, cpu, s, 0);
      ASSERT(wait_count(&hits[cpu][s], round));
      siefp[cpu][s * 256] = 0;
    }
  }
  for (int s = 2; s < 16; s++) ASSERT(hits[cpu][s] == ROUNDS);
  return 0;
}
