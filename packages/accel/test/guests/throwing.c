/* Touches a port whose handler throws. */
#include "rt.h"

int guest_main(int cpu) {
  (void)cpu;
  outb(0x540, 1);
  return 1;
}
