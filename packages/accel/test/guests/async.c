/* vCPU 0 waits at an exit whose handler answers late; vCPU 1 keeps running meanwhile. */
#include "rt.h"

#define SLOW_PORT 0x530
#define COUNTER 0x400000UL
#define DONE 0x400008UL

int guest_main(int cpu) {
  volatile uint64_t *counter = (volatile uint64_t *)COUNTER;
  volatile uint64_t *done = (volatile uint64_t *)DONE;
  if (cpu == 0) {
    uint32_t v = inl(SLOW_PORT);
    *done = 1;
    return (int)v;
  }
  while (!*done) (*counter)++;
  return 0;
}
