/*
 * Instructions this KVM's instruction emulator cannot run (an emulation failure at RIP), which
 * the host finishes: fwait, fnclex, emms, fild (memory operands), popcnt (register forms), and clac/stac where the CPU has SMAP. A CPU without
 * SMAP raises #UD for clac/stac: then the guest says so and skips them.
 */
#include "rt.h"

static volatile int ud_hits;

static void on_ud(struct isr_frame *f) {
  ud_hits++;
  f->rip += 3; /* clac and stac are 3 bytes */
}

static uint64_t flags(void) {
  uint64_t f;
  __asm__ volatile("pushfq\n\tpopq %0" : "=r"(f));
  return f;
}

/* FXSAVE image: FSW at 2, abridged tag word at 4, ST(i) at 32 + 16 i (SDM Vol. 1, 10.5.1). */
static uint8_t fx[512] __attribute__((aligned(16)));
static const int32_t fild_static = -123456; /* a RIP-relative operand */

static void fxsave(void) { __asm__ volatile("fxsave %0" : "=m"(fx)); }
static uint16_t fx_u16(int at) { return (uint16_t)(fx[at] | fx[at + 1] << 8); }
static uint64_t fx_u64(int at) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | fx[at + i];
  return v;
}
/* ST(i) as significand and sign/exponent word. */
static int st_is(int i, uint64_t significand, uint16_t sign_exponent) {
  return fx_u64(32 + 16 * i) == significand && fx_u16(32 + 16 * i + 8) == sign_exponent;
}

/* FILD m32int (the kernel's `db 07`, fildl (%rdi)), m16int and m64int: exact values on the x87 stack. */
static void fild_checks(void) {
  __asm__ volatile("fnclex\n\temms"); /* every register empty */
  fxsave();
  int top0 = (fx_u16(2) >> 11) & 7;
  int16_t i16 = 300;
  int64_t i64 = 0x0123456789abcdefl;
  int32_t zero = 0;
  const int32_t *p = &fild_static;
  __asm__ volatile("fildl (%0)" : : "D"(p) : "memory"); /* db 07, as in the kernel */
  __asm__ volatile("filds %0" : : "m"(i16));
  __asm__ volatile("fildll %0" : : "m"(i64));
  __asm__ volatile("fildl %0" : : "m"(zero));
  fxsave();
  ASSERT(((fx_u16(2) >> 11) & 7) == ((top0 - 4) & 7)); /* four pushes */
  ASSERT(fx[4] == (uint8_t)((0xf0u >> (8 - top0)) | (0xf0u << top0))); /* the four registers below the old TOP */
  ASSERT(!(fx_u16(2) & 0x241));                               /* no IE, SF or C1 */
  ASSERT(st_is(0, 0, 0));                                     /* +0 */
  ASSERT(st_is(1, 0x91a2b3c4d5e6f780ul, 0x4037));             /* 0x0123456789abcdef */
  ASSERT(st_is(2, 0x9600000000000000ul, 0x4007));             /* 300 */
  ASSERT(st_is(3, 0xf120000000000000ul, 0xc00f));             /* -123456 */
  for (int i = 0; i < 4; i++) __asm__ volatile("fildl %0" : : "m"(zero)); /* the stack is full */
  __asm__ volatile("fildl (%0)" : : "D"(p) : "memory");                  /* overflow, masked */
  fxsave();
  ASSERT((fx_u16(2) & 0x241) == 0x241);                /* IE, SF, C1 */
  ASSERT(st_is(0, 0xc000000000000000ul, 0xffff));      /* the real indefinite */
  __asm__ volatile("fnclex\n\temms");
  rt_puts("fild: ran\n");
}

int guest_main(int cpu) {
  (void)cpu;
  rt_set_handler(6, on_ud);
  __asm__ volatile("fnclex");
  __asm__ volatile("fwait");
  __asm__ volatile("emms");
  rt_puts("x87: fnclex, fwait, emms ran\n");
  fild_checks();
  __asm__ volatile("stac" ::: "memory");
  int stac_ud = ud_hits;
  if (!stac_ud) ASSERT(flags() & (1u << 18)); /* AC set */
  __asm__ volatile("clac" ::: "memory");
  if (!ud_hits) ASSERT(!(flags() & (1u << 18))); /* AC clear */
  rt_printf("clac/stac: %s\n", ud_hits ? "#UD (no SMAP on this CPU)" : "ran");

  /* POPCNT, register forms (what a kernel's hweight uses), where the CPU reports it. */
  uint32_t a, b, c, d;
  cpuid(1, 0, &a, &b, &c, &d);
  if (c & (1u << 23)) {
    uint64_t src = 0xf0f0f0f0f0f0f0f1ull, out64, f64;
    uint32_t src32 = 0x80000003u, out32;
    __asm__ volatile("popcnt %2, %0\n\tpushfq\n\tpopq %1" : "=&r"(out64), "=r"(f64) : "r"(src) : "cc");
    ASSERT(out64 == 33);
    ASSERT(!(f64 & 0x40)); /* ZF clear: the source was not zero */
    __asm__ volatile("popcnt %1, %0" : "=r"(out32) : "r"(src32) : "cc");
    ASSERT(out32 == 3);
    uint64_t zero = 0;
    __asm__ volatile("popcnt %2, %0\n\tpushfq\n\tpopq %1" : "=&r"(out64), "=r"(f64) : "r"(zero) : "cc");
    ASSERT(out64 == 0 && (f64 & 0x40)); /* ZF set for a zero source */
    rt_puts("popcnt: ran\n");
  } else {
    rt_puts("popcnt: not on this CPU\n");
  }
  return 0;
}
