/* MSI injection-rate guest for bench/accel.ts: halts with interrupts on; each interrupt
 * increments a counter the host watches in guest memory and is EOI'd (in-kernel x2APIC,
 * no user-space exit). The host announces the end by setting `quit` and interrupting once
 * more. Port 0xe2 tells the host where the counter block is. */
#include "rt.h"

#define READY_PORT 0xe2
#define VECTOR 0x50

struct block {
  volatile uint32_t count;
  volatile uint32_t quit;
};
static struct block shared;

static void handler(struct isr_frame *f) {
  (void)f;
  shared.count++;
  apic_eoi();
}

int guest_main(int cpu) {
  (void)cpu;
  rt_set_handler(VECTOR, handler);
  outl(READY_PORT, (uint32_t)(uintptr_t)&shared);
  while (!shared.quit) sti_hlt();
  cli();
  return 0;
}
