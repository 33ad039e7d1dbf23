/* int3, which this KVM's emulator cannot run, is finished by the host as a #BP. */
#include "rt.h"

static volatile int bp_hits;
static volatile uint64_t bp_rip;

static void on_bp(struct isr_frame *f) {
  bp_hits++;
  bp_rip = f->rip;
}

int guest_main(int cpu) {
  (void)cpu;
  rt_set_handler(3, on_bp);
  uint64_t after;
  __asm__ volatile("int3\n\tlea 0(%%rip), %0" : "=r"(after));
  ASSERT(bp_hits == 1);
  ASSERT(bp_rip == after - 7); /* the trap frame points just past the int3, at the lea */
  return 0;
}
