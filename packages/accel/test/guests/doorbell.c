/* Doorbell writes that KVM turns into eventfd counts, with no exit to user space. */
#include "rt.h"

#define MMIO_DOORBELL 0xd0001000UL
#define PIO_DOORBELL 0x560

int guest_main(int cpu) {
  (void)cpu;
  for (int i = 0; i < 10; i++) mmio_write32(MMIO_DOORBELL, (uint32_t)i);
  for (int i = 0; i < 5; i++) outw(PIO_DOORBELL, 1);
  return 0;
}
