/*
 * Synthetic-timer edge cases from the guest's side, on both vCPUs (each with its own pages):
 *  1. a message-mode expiry that finds its SINT slot busy is held (msg_pending set in the
 *     slot), then delivered after the guest frees the slot and writes EOM, with the original
 *     ExpirationTime and a DeliveryTime no earlier than the moment the slot was freed;
 *  2. an expiry while the SIMP is disabled is delivered once the SIMP is enabled;
 *  3. hostile configurations: reserved CONFIG bits #GP; a message-mode timer on SINT 0 does
 *     not enable; a 100 ns periodic direct timer neither starves the guest nor bursts; a
 *     one-shot at 2^64-1 never fires; a direct vector below 16 is never raised.
 */
#include "hv.h"

#define SINT 2
#define SINT_VECTOR 0x52
#define DIRECT_VECTOR 0x61
#define TICK 20000 /* 2 ms in 100 ns units */

static uint8_t simp[2][4096] __attribute__((aligned(4096)));
static volatile int messages[2][4];
static volatile int hold[2];
static volatile int direct_hits[2];
static volatile uint64_t last_expiration[2][4], last_delivery[2][4];

static struct hv_message *slot(int cpu) { return (struct hv_message *)(simp[cpu] + SINT * 256); }

static void on_sint(struct isr_frame *f) {
  (void)f;
  int cpu = apic_id() & 1;
  struct hv_message *m = slot(cpu);
  if (m->type == HVMSG_TIMER_EXPIRED) {
    uint32_t timer = *(volatile uint32_t *)&m->payload[0];
    ASSERT(timer < 4);
    last_expiration[cpu][timer] = *(volatile uint64_t *)&m->payload[8];
    last_delivery[cpu][timer] = *(volatile uint64_t *)&m->payload[16];
    messages[cpu][timer]++;
    if (!hold[cpu]) hv_free_slot(m);
  }
  apic_eoi();
}

static void on_direct(struct isr_frame *f) {
  (void)f;
  direct_hits[apic_id() & 1]++;
  apic_eoi();
}

static uint64_t now(void) { return rdmsr(HV_X64_MSR_TIME_REF_COUNT); }

/* Spins with interrupts on until the reference time passes t. */
static void run_until(uint64_t t) {
  sti();
  while (now() < t) __asm__ volatile("pause");
  cli();
}

/* Waits (interrupts on) until a one-shot timer has expired: the SynIC clears its Enable bit
 * when it fires, whether or not its message could be delivered. Bounded at 1 s. */
static int wait_fired(int timer) {
  uint64_t limit = now() + 10000000;
  sti();
  while ((rdmsr(HV_X64_MSR_STIMER0_CONFIG + 2 * timer) & STIMER_ENABLE) && now() < limit) __asm__ volatile("pause");
  cli();
  return !(rdmsr(HV_X64_MSR_STIMER0_CONFIG + 2 * timer) & STIMER_ENABLE);
}

static void busy_slot_retry(int cpu) {
  hold[cpu] = 1;
  wrmsr(HV_X64_MSR_STIMER0_CONFIG, STIMER_AUTO_ENABLE | STIMER_SINT(SINT));
  wrmsr(HV_X64_MSR_STIMER0_COUNT, now() + TICK);
  ASSERT(wait_count(&messages[cpu][0], 1)); /* timer 0's message stays in the slot */

  uint64_t deadline = now() + TICK;
  wrmsr(HV_X64_MSR_STIMER0_CONFIG + 2, STIMER_AUTO_ENABLE | STIMER_SINT(SINT));
  wrmsr(HV_X64_MSR_STIMER0_COUNT + 2, deadline);
  ASSERT(wait_fired(1));
  run_until(now() + TICK);              /* an interrupt, had there been one, arrives */
  ASSERT(messages[cpu][1] == 0);        /* held, not lost, not overwriting */
  ASSERT(slot(cpu)->flags & 1);         /* msg_pending: the SynIC asks for an EOM */
  ASSERT(*(volatile uint32_t *)&slot(cpu)->payload[0] == 0);

  hold[cpu] = 0;
  uint64_t freed_at = now();
  hv_free_slot(slot(cpu));              /* type NONE + EOM: the held expiry comes in */
  ASSERT(wait_count(&messages[cpu][1], 1));
  ASSERT(last_expiration[cpu][1] == deadline);
  ASSERT(last_delivery[cpu][1] >= freed_at);
}

static void simp_off_retry(int cpu) {
  wrmsr(HV_X64_MSR_SIMP, 0);
  uint64_t deadline = now() + TICK;
  wrmsr(HV_X64_MSR_STIMER0_CONFIG + 4, STIMER_AUTO_ENABLE | STIMER_SINT(SINT));
  wrmsr(HV_X64_MSR_STIMER0_COUNT + 4, deadline);
  ASSERT(wait_fired(2));
  ASSERT(messages[cpu][2] == 0);
  uint64_t enabled_at = now();
  wrmsr(HV_X64_MSR_SIMP, (uint64_t)simp[cpu] | 1);
  ASSERT(wait_count(&messages[cpu][2], 1));
  ASSERT(last_expiration[cpu][2] == deadline);
  ASSERT(last_delivery[cpu][2] >= enabled_at);
}

static void hostile_configs(int cpu) {
  uint64_t cfg = HV_X64_MSR_STIMER0_CONFIG + 6, count = HV_X64_MSR_STIMER0_COUNT + 6;
  ASSERT(wrmsr_safe(cfg, 1ULL << 63) != 0);                     /* reserved bit: #GP */
  ASSERT(wrmsr_safe(cfg, STIMER_ENABLE | (1ULL << 20)) != 0);   /* SINT field is 4 bits */
  ASSERT(wrmsr_safe(cfg, STIMER_ENABLE | STIMER_SINT(0)) == 0); /* message mode on SINT 0 ... */
  ASSERT(!(rdmsr(cfg) & STIMER_ENABLE));                         /* ... does not enable */

  /* 100 ns periodic, direct: the guest keeps running and sees a bounded number of ticks. */
  wrmsr(count, 1);
  wrmsr(cfg, STIMER_ENABLE | STIMER_PERIODIC | STIMER_DIRECT | STIMER_VECTOR(DIRECT_VECTOR));
  run_until(now() + 5 * TICK);                                   /* 10 ms = 100000 periods */
  wrmsr(cfg, 0);
  run_until(now() + TICK);  /* take a tick the host raised before it saw the stop */
  int hits = direct_hits[cpu];
  ASSERT(hits >= 1);
  ASSERT(hits < 100000);                                         /* lazy: no burst of missed ticks */

  /* A one-shot at the end of time never fires; a direct vector below 16 is never raised. */
  wrmsr(cfg, STIMER_AUTO_ENABLE | STIMER_DIRECT | STIMER_VECTOR(DIRECT_VECTOR));
  wrmsr(count, ~0ULL);
  wrmsr(HV_X64_MSR_STIMER0_CONFIG + 4, STIMER_AUTO_ENABLE | STIMER_DIRECT | STIMER_VECTOR(3));
  wrmsr(HV_X64_MSR_STIMER0_COUNT + 4, now() + TICK);
  run_until(now() + 3 * TICK);
  ASSERT(direct_hits[cpu] == hits);
  wrmsr(cfg, 0);
  wrmsr(HV_X64_MSR_STIMER0_CONFIG + 4, 0);
}

int guest_main(int cpu) {
  rt_set_handler(SINT_VECTOR, on_sint);
  rt_set_handler(DIRECT_VECTOR, on_direct);
  wrmsr(HV_X64_MSR_SIMP, (uint64_t)simp[cpu] | 1);
  wrmsr(HV_X64_MSR_SINT0 + SINT, SINT_VECTOR);
  wrmsr(HV_X64_MSR_SCONTROL, 1);
  busy_slot_retry(cpu);
  simp_off_retry(cpu);
  hostile_configs(cpu);
  return 0;
}
