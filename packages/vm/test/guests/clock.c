/*
 * hyperv_clock-like: the reference TSC page (valid sequence, scale matching TSC_FREQUENCY)
 * read from rdtsc agrees with TIME_REF_COUNT (page <= MSR <= page, no drift), and reference
 * time is monotonic across reads and across the two vCPUs.
 */
#include "hv.h"

struct tsc_page {
  volatile uint32_t sequence;
  uint32_t reserved;
  volatile uint64_t scale;
  volatile int64_t offset;
};
static uint8_t tsc_page_mem[4096] __attribute__((aligned(4096)));
static struct tsc_page *const page = (struct tsc_page *)tsc_page_mem;
static volatile uint64_t published;
static volatile int turn;

static inline uint64_t rdtsc(void) {
  uint32_t lo, hi;
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return ((uint64_t)hi << 32) | lo;
}

static uint64_t page_time(void) {
  for (;;) {
    uint32_t seq = page->sequence;
    ASSERT(seq != 0 && seq != 0xffffffffu);
    uint64_t scale = page->scale;
    int64_t offset = page->offset;
    uint64_t t = (uint64_t)(((unsigned __int128)rdtsc() * scale) >> 64) + (uint64_t)offset;
    if (page->sequence == seq) return t;
  }
}

int guest_main(int cpu) {
  if (cpu == 0) wrmsr(HV_X64_MSR_REFERENCE_TSC, (uint64_t)tsc_page_mem | 1);
  barrier(1);
  ASSERT(rdmsr(HV_X64_MSR_REFERENCE_TSC) == ((uint64_t)tsc_page_mem | 1));

  /* scale = 2^64 * 10^7 / f, so f * scale / 2^64 is 10^7 (minus rounding). */
  uint64_t freq = rdmsr(HV_X64_MSR_TSC_FREQUENCY);
  uint64_t hz = (uint64_t)(((unsigned __int128)freq * page->scale) >> 64);
  ASSERT(freq > 0 && hz <= 10000000 && hz >= 9999999);

  /* The MSR and the page: the same formula on the same TSC, so they bracket each other. */
  uint64_t last = 0;
  for (int i = 0; i < 100; i++) {
    uint64_t t1 = page_time();
    uint64_t t2 = rdmsr(HV_X64_MSR_TIME_REF_COUNT);
    uint64_t t3 = page_time();
    if (!(t1 <= t2 && t2 <= t3)) rt_printf("cpu %d: page %lu msr %lu page %lu\n", cpu, t1, t2, t3);
    ASSERT(t1 <= t2 && t2 <= t3);
    ASSERT(t1 >= last);
    last = t3;
  }

  /* Across vCPUs: each reads its time after seeing the other's, and must not be behind it. */
  for (int round = 0; round < 20; round++) {
    while (__atomic_load_n(&turn, __ATOMIC_ACQUIRE) % 2 != cpu) __asm__ volatile("pause");
    uint64_t mine = (round & 1) ? rdmsr(HV_X64_MSR_TIME_REF_COUNT) : page_time();
    ASSERT(mine >= published);
    published = mine;
    __atomic_add_fetch(&turn, 1, __ATOMIC_RELEASE);
  }
  return 0;
}
