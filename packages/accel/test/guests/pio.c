/* Port I/O of every size, string I/O, and MMIO reads/writes in a RAM hole. */
#include "rt.h"

#define TEST_PORT 0x500
#define STRING_PORT 0x502
#define MMIO_LOW 0x10000000UL
#define MMIO_HIGH 0xd0000000UL

int guest_main(int cpu) {
  (void)cpu;
  outb(TEST_PORT, 0x11);
  outw(TEST_PORT, 0x2233);
  outl(TEST_PORT, 0x44556677);
  ASSERT(inb(TEST_PORT) == 0xa1);
  ASSERT(inw(TEST_PORT) == 0xa2a2);
  ASSERT(inl(TEST_PORT) == 0xa4a4a4a4);
  ASSERT(inb(0x5f0) == 0xff); /* nobody there: all ones */

  static const char msg[] = "hello";
  const char *p = msg;
  uint64_t n = 5;
  __asm__ volatile("rep outsb" : "+S"(p), "+c"(n) : "d"(STRING_PORT) : "memory");
  char in[4];
  char *q = in;
  n = 4;
  __asm__ volatile("rep insb" : "+D"(q), "+c"(n) : "d"(STRING_PORT) : "memory");
  ASSERT(memcmp(in, "abcd", 4) == 0);

  mmio_write32(MMIO_LOW + 8, 0xdeadbeef);
  ASSERT(mmio_read32(MMIO_LOW + 8) == 0xdeadbeef);
  mmio_write64(MMIO_HIGH, 0x0123456789abcdefUL);
  ASSERT(mmio_read64(MMIO_HIGH) == 0x0123456789abcdefUL);
  rt_puts("pio done\n");
  return 7;
}
