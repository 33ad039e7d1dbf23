/* A doorbell write (ioeventfd, no exit) that the host notices by itself: the native eventfd
 * watcher wakes the JS thread, which answers with an interrupt. No host timer is involved,
 * and the guest makes no exit until the interrupt arrives. Three rounds. */
#include "rt.h"

#define PIO_DOORBELL 0x560
#define VEC_ANSWER 0x42

static volatile int answers;

static void handler(struct isr_frame *f) {
  (void)f;
  answers++;
  apic_eoi();
}

int guest_main(int cpu) {
  (void)cpu;
  rt_set_handler(VEC_ANSWER, handler);
  for (int round = 1; round <= 3; round++) {
    outw(PIO_DOORBELL, (uint16_t)round);
    while (answers < round) sti_hlt();
    cli();
  }
  return 0;
}
