/* A hypercall page whose exit sequence is an OUT to the hypercall port. */
#include "rt.h"

#define HYPERCALL_PAGE 0x200000UL
#define HYPERCALL_PORT 0x99

static uint64_t hypercall(uint64_t control, uint64_t input, uint64_t output) {
  uint64_t status;
  register uint64_t r8 __asm__("r8") = output;
  __asm__ volatile("call *%[page]"
                   : "=a"(status), "+c"(control), "+d"(input), "+r"(r8)
                   : [page] "r"(HYPERCALL_PAGE)
                   : "memory", "r9", "r10", "r11");
  return status;
}

int guest_main(int cpu) {
  (void)cpu;
  volatile uint8_t *page = (volatile uint8_t *)HYPERCALL_PAGE;
  page[0] = 0xe6; /* out imm8, al */
  page[1] = HYPERCALL_PORT;
  page[2] = 0xc3; /* ret */
  ASSERT(hypercall(0x5c, 0x1000, 0x2000) == 0x5c + 0x1000 + 0x2000);
  /* A fast call with XMM input: XMM0-5 low quadwords carry 0x100..0x105. Loaded with movdqu
   * from memory: this KVM's emulator cannot run movq from a general register (66 48 0f 6e). */
  static const uint64_t xmm_in[12] = {0x100, 0, 0x101, 0, 0x102, 0, 0x103, 0, 0x104, 0, 0x105, 0};
  __asm__ volatile("movdqu 0(%0), %%xmm0\n\tmovdqu 16(%0), %%xmm1\n\tmovdqu 32(%0), %%xmm2\n\t"
                   "movdqu 48(%0), %%xmm3\n\tmovdqu 64(%0), %%xmm4\n\tmovdqu 80(%0), %%xmm5"
                   : : "r"(xmm_in) : "memory");
  ASSERT(hypercall(0x10001, 7, 9) == 0x10001 + 7 + 9);
  uint64_t out[2];
  __asm__ volatile("movdqu %%xmm5, %0" : "=m"(out));
  ASSERT(out[0] == 0x105 && out[1] == 0x77);
  return 0;
}
