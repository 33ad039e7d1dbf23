/*
 * Instructions this KVM's instruction emulator cannot run (an emulation failure at RIP), which
 * the host finishes: fwait, fnclex, emms, and clac/stac where the CPU has SMAP. A CPU without
 * SMAP raises #UD for clac/stac: then the guest says so and skips them.
 */
#include "rt.h"

static volatile int ud_hits;

static void on_ud(struct isr_frame *f) {
  ud_hits++;
  f->rip += 3; /* clac and stac are 3 bytes */
}

static uint64_t flags(void) {
  uint64_t f;
  __asm__ volatile("pushfq\n\tpopq %0" : "=r"(f));
  return f;
}

int guest_main(int cpu) {
  (void)cpu;
  rt_set_handler(6, on_ud);
  __asm__ volatile("fnclex");
  __asm__ volatile("fwait");
  __asm__ volatile("emms");
  rt_puts("x87: fnclex, fwait, emms ran\n");
  __asm__ volatile("stac" ::: "memory");
  int stac_ud = ud_hits;
  if (!stac_ud) ASSERT(flags() & (1u << 18)); /* AC set */
  __asm__ volatile("clac" ::: "memory");
  if (!ud_hits) ASSERT(!(flags() & (1u << 18))); /* AC clear */
  rt_printf("clac/stac: %s\n", ud_hits ? "#UD (no SMAP on this CPU)" : "ran");
  return 0;
}
