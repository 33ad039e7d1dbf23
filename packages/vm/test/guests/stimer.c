/*
 * hyperv_stimer-like, on both vCPUs: a one-shot and a periodic timer in message mode
 * (HVMSG_TIMER_EXPIRED with timer index, expiration and delivery time in SINT 2's slot), and
 * a one-shot and a periodic timer in direct mode (their own vector, no message).
 */
#include "hv.h"

#define SINT 2
#define SINT_VECTOR 0x52
#define DIRECT_VECTOR 0x60
#define TICK 20000 /* 2 ms in 100 ns units */

static uint8_t simp[2][4096] __attribute__((aligned(4096)));
static volatile int messages[2][4];
static volatile int direct_hits[2];
static volatile uint64_t last_expiration[2][4], last_delivery[2][4], seen_at[2][4];

static void on_sint(struct isr_frame *f) {
  (void)f;
  int cpu = apic_id() & 1;
  struct hv_message *m = (struct hv_message *)(simp[cpu] + SINT * 256);
  if (m->type == HVMSG_TIMER_EXPIRED) {
    uint32_t timer = *(volatile uint32_t *)&m->payload[0];
    ASSERT(timer < 4);
    last_expiration[cpu][timer] = *(volatile uint64_t *)&m->payload[8];
    last_delivery[cpu][timer] = *(volatile uint64_t *)&m->payload[16];
    seen_at[cpu][timer] = rdmsr(HV_X64_MSR_TIME_REF_COUNT);
    messages[cpu][timer]++;
    hv_free_slot(m);
  }
  apic_eoi();
}

static void on_direct(struct isr_frame *f) {
  (void)f;
  direct_hits[apic_id() & 1]++;
  apic_eoi();
}

static void stop(int timer) { wrmsr(HV_X64_MSR_STIMER0_CONFIG + 2 * timer, 0); }

int guest_main(int cpu) {
  rt_set_handler(SINT_VECTOR, on_sint);
  rt_set_handler(DIRECT_VECTOR, on_direct);
  wrmsr(HV_X64_MSR_SIMP, (uint64_t)simp[cpu] | 1);
  wrmsr(HV_X64_MSR_SINT0 + SINT, SINT_VECTOR);
  wrmsr(HV_X64_MSR_SCONTROL, 1);

  /* One-shot, message mode, auto-enabled by the count write: fires once, then disables. */
  uint64_t deadline = rdmsr(HV_X64_MSR_TIME_REF_COUNT) + TICK;
  wrmsr(HV_X64_MSR_STIMER0_CONFIG, STIMER_AUTO_ENABLE | STIMER_SINT(SINT));
  wrmsr(HV_X64_MSR_STIMER0_COUNT, deadline);
  /*
   * CONFIG was written without Enable, so the expiry below proves auto-enable set it. Reading
   * CONFIG here would race: on a loaded host the timer may already have fired and disarmed
   * itself, with its interrupt still pending behind our cleared IF.
   */
  ASSERT(wait_count(&messages[cpu][0], 1));
  ASSERT(last_expiration[cpu][0] == deadline);
  ASSERT(last_delivery[cpu][0] >= deadline);
  ASSERT(seen_at[cpu][0] >= deadline);
  ASSERT(!(rdmsr(HV_X64_MSR_STIMER0_CONFIG) & STIMER_ENABLE));

  /* A one-shot whose deadline has passed fires at once. */
  wrmsr(HV_X64_MSR_STIMER0_CONFIG, STIMER_AUTO_ENABLE | STIMER_SINT(SINT));
  wrmsr(HV_X64_MSR_STIMER0_COUNT, 1);
  ASSERT(wait_count(&messages[cpu][0], 2));

  /* Periodic, message mode: three ticks, expirations strictly increasing. */
  wrmsr(HV_X64_MSR_STIMER0_CONFIG + 2, STIMER_PERIODIC | STIMER_SINT(SINT));
  wrmsr(HV_X64_MSR_STIMER0_COUNT + 2, TICK);
  wrmsr(HV_X64_MSR_STIMER0_CONFIG + 2, STIMER_ENABLE | STIMER_PERIODIC | STIMER_SINT(SINT));
  uint64_t previous = 0;
  for (int n = 1; n <= 3; n++) {
    ASSERT(wait_count(&messages[cpu][1], n));
    ASSERT(last_expiration[cpu][1] > previous && last_delivery[cpu][1] >= last_expiration[cpu][1]);
    previous = last_expiration[cpu][1];
  }
  stop(1);

  /* Direct mode one-shot: its own vector, no message. */
  wrmsr(HV_X64_MSR_STIMER0_CONFIG + 4, STIMER_DIRECT | STIMER_VECTOR(DIRECT_VECTOR) | STIMER_AUTO_ENABLE);
  wrmsr(HV_X64_MSR_STIMER0_COUNT + 4, rdmsr(HV_X64_MSR_TIME_REF_COUNT) + TICK);
  ASSERT(wait_count(&direct_hits[cpu], 1));
  ASSERT(messages[cpu][2] == 0);

  /* Direct mode periodic: three more interrupts. */
  wrmsr(HV_X64_MSR_STIMER0_COUNT + 6, TICK);
  wrmsr(HV_X64_MSR_STIMER0_CONFIG + 6, STIMER_ENABLE | STIMER_PERIODIC | STIMER_DIRECT | STIMER_VECTOR(DIRECT_VECTOR));
  ASSERT(wait_count(&direct_hits[cpu], 4));
  stop(3);
  ASSERT(messages[cpu][3] == 0);
  return 0;
}
