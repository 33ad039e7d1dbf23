/* A hypercall whose handler also sets a register of the parked vCPU (RBX) besides RAX: with
 * KVM_CAP_SYNC_REGS the vCPU thread writes the run page's register copy back on re-entry, so
 * that copy must carry the handler's change too. */
#include "rt.h"

#define HYPERCALL_PAGE 0x200000UL
#define HYPERCALL_PORT 0x99

int guest_main(int cpu) {
  (void)cpu;
  volatile uint8_t *page = (volatile uint8_t *)HYPERCALL_PAGE;
  page[0] = 0xe6; /* out imm8, al */
  page[1] = HYPERCALL_PORT;
  page[2] = 0xc3; /* ret */
  for (uint64_t i = 1; i <= 3; i++) {
    uint64_t status, rbx = 0;
    uint64_t control = 0x77, input = i;
    register uint64_t r8 __asm__("r8") = 0;
    __asm__ volatile("call *%[page]"
                     : "=a"(status), "+b"(rbx), "+c"(control), "+d"(input), "+r"(r8)
                     : [page] "r"(HYPERCALL_PAGE)
                     : "memory", "r9", "r10", "r11");
    ASSERT(status == 0x100 + i);
    ASSERT(rbx == 0xabc0 + i);
  }
  return 0;
}
