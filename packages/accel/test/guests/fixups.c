/*
 * Instructions this KVM's instruction emulator cannot run (an emulation failure at RIP), which
 * the host finishes: fwait, fnclex, emms, popcnt (register forms), and clac/stac where the CPU has SMAP. A CPU without
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

  /* POPCNT, register forms (what a kernel's hweight uses), where the CPU reports it. */
  uint32_t a, b, c, d;
  cpuid(1, 0, &a, &b, &c, &d);
  if (c & (1u << 23)) {
    uint64_t src = 0xf0f0f0f0f0f0f0f1ull, out64, f64;
    uint32_t src32 = 0x80000003u, out32;
    __asm__ volatile("popcnt %2, %0\n\tpushfq\n\tpopq %1" : "=&r"(out64), "=r"(f64) : "r"(src) : "cc");
    ASSERT(out64 == 33);
    ASSERT(!(f64 & 0x40)); /* ZF clear: the source was not zero */
    __asm__ volatile("popcnt %1, %0" : "=r"(out32) : "r"(src32) : "cc");
    ASSERT(out32 == 3);
    uint64_t zero = 0;
    __asm__ volatile("popcnt %2, %0\n\tpushfq\n\tpopq %1" : "=&r"(out64), "=r"(f64) : "r"(zero) : "cc");
    ASSERT(out64 == 0 && (f64 & 0x40)); /* ZF set for a zero source */
    rt_puts("popcnt: ran\n");
  } else {
    rt_puts("popcnt: not on this CPU\n");
  }
  return 0;
}
