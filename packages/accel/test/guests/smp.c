/* Two vCPUs ping-pong through shared memory: only possible if both really run at once. */
#include "rt.h"

#define ROUNDS 50
static volatile uint32_t turn;
static volatile uint32_t seen_id[2];

int guest_main(int cpu) {
  ASSERT(cpu < 2);
  seen_id[cpu] = apic_id();
  for (uint32_t r = 0; r < ROUNDS; r++) {
    uint32_t mine = r * 2 + (uint32_t)cpu;
    while (__atomic_load_n(&turn, __ATOMIC_ACQUIRE) != mine) __asm__ volatile("pause");
    __atomic_store_n(&turn, mine + 1, __ATOMIC_RELEASE);
  }
  ASSERT(seen_id[cpu] == (uint32_t)cpu);
  return 0x50 + cpu;
}
