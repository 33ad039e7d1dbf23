/* A triple fault: no usable IDT, then a #GP (non-canonical access). */
#include "rt.h"

int guest_main(int cpu) {
  (void)cpu;
  struct { uint16_t limit; uint64_t base; } __attribute__((packed)) none = {0, 0};
  __asm__ volatile("cli; lidt %0" : : "m"(none));
  __asm__ volatile("movq (%0), %%rax" : : "r"(0x8000000000000000UL) : "rax");
  return 1; /* not reached */
}
