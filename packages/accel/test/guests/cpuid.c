/* The hypervisor vendor leaf and the CPUID bits hvemu sets, as the guest sees them.
 * Only what hvemu controls is asserted (the hypervisor leaves; x2APIC, "hypervisor present"
 * and the APIC id, which every KVM seen so far passes through). Basic-leaf values hvemu
 * models (max leaf, POPCNT, XSAVE, AVX, leaf 7) are NOT asserted: KVMs of this project's
 * kind report host values for many of them whatever KVM_SET_CPUID2 says (KVM-NOTES.md). */
#include "rt.h"

int guest_main(int cpu) {
  uint32_t a, b, c, d;
  char vendor[13];
  cpuid(0x40000000, 0, &a, &b, &c, &d);
  memcpy(vendor, &b, 4);
  memcpy(vendor + 4, &c, 4);
  memcpy(vendor + 8, &d, 4);
  vendor[12] = 0;
  rt_printf("hypervisor vendor: %s max leaf 0x%x\n", vendor, a);
  ASSERT(memcmp(vendor, "Microsoft Hv", 12) == 0);
  ASSERT(a == 0x40000005);
  cpuid(1, 0, &a, &b, &c, &d);
  rt_printf("leaf1 ecx 0x%x edx 0x%x\n", c, d);
  ASSERT(c & (1u << 21));    /* x2APIC */
  ASSERT(c & (1u << 31));    /* hypervisor present */
  ASSERT((b >> 24) == (uint32_t)cpu); /* initial APIC id */
  /* Leaf 0's max basic leaf is printed, not asserted: some KVMs (an AMD EPYC host of this
   * project's kind) return the host's value whatever KVM_SET_CPUID2 says. */
  cpuid(0, 0, &a, &b, &c, &d);
  rt_printf("leaf0 eax 0x%x\n", a);
  return 0;
}
