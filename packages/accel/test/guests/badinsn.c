/* Executes an instruction the host cannot finish (int3 with the fixup off). */
#include "rt.h"

int guest_main(int cpu) {
  (void)cpu;
  __asm__ volatile("int3");
  return 1;
}
