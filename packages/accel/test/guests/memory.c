/* Guest RAM is the host's ArrayBuffer: both sides see each other's writes, live. */
#include "rt.h"

#define HOST_PATTERN 0x300000UL
#define GUEST_PATTERN 0x301000UL
#define SYNC_PORT 0x510

int guest_main(int cpu) {
  (void)cpu;
  volatile uint32_t *host = (volatile uint32_t *)HOST_PATTERN;
  for (uint32_t i = 0; i < 256; i++) ASSERT(host[i] == (0xc0de0000u | i));
  volatile uint32_t *mine = (volatile uint32_t *)GUEST_PATTERN;
  for (uint32_t i = 0; i < 256; i++) mine[i] = 0x600d0000u | i;
  /* The host checks our pattern and writes a reply while we wait at this exit. */
  outb(SYNC_PORT, 1);
  ASSERT(host[0] == 0x12345678u);
  return 0;
}
