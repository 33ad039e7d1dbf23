/* vCPU 0 spins forever bumping a counter; vCPU 1 halts with interrupts off. Only a host stop ends them. */
#include "rt.h"

#define COUNTER 0x400000UL

int guest_main(int cpu) {
  if (cpu == 0) {
    for (;;) __atomic_fetch_add((volatile uint64_t *)COUNTER, 1, __ATOMIC_RELAXED);
  }
  for (;;) {
    cli();
    hlt();
  }
}
