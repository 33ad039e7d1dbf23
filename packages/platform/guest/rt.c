/* hvemu test-guest runtime: IDT, x2APIC, serial output, exit and assertion ports. */
#include "rt.h"

#include <stdarg.h>

struct idt_gate {
  uint16_t off0;
  uint16_t sel;
  uint8_t ist;
  uint8_t type;
  uint16_t off1;
  uint32_t off2;
  uint32_t zero;
} __attribute__((packed));

extern char isr_stubs[];
static struct idt_gate idt[256];
static isr_handler handlers[256];
/* Per-CPU "expect a #GP" flag for rdmsr_safe/wrmsr_safe (index: APIC id, small here). */
static volatile int gp_expected[64];
static volatile int gp_seen[64];

#define CODE64_SELECTOR 0x08
#define GATE_INTERRUPT 0x8e
#define APIC_BASE_MSR 0x1b
#define APIC_ENABLE (1u << 11)
#define APIC_X2APIC (1u << 10)

void *memcpy(void *d, const void *s, size_t n) {
  uint8_t *dd = d;
  const uint8_t *ss = s;
  while (n--) *dd++ = *ss++;
  return d;
}
void *memset(void *d, int c, size_t n) {
  uint8_t *dd = d;
  while (n--) *dd++ = (uint8_t)c;
  return d;
}
int memcmp(const void *a, const void *b, size_t n) {
  const uint8_t *x = a, *y = b;
  for (; n; n--, x++, y++)
    if (*x != *y) return *x - *y;
  return 0;
}

static void idt_init(void) {
  /* Every CPU writes the same gates; harmless, and no CPU depends on another's setup. */
  for (int v = 0; v < 256; v++) {
    uint64_t a = (uint64_t)(isr_stubs + v * 16);
    idt[v] = (struct idt_gate){(uint16_t)a, CODE64_SELECTOR, 0, GATE_INTERRUPT, (uint16_t)(a >> 16), (uint32_t)(a >> 32), 0};
  }
  struct { uint16_t limit; uint64_t base; } __attribute__((packed)) d = {sizeof idt - 1, (uint64_t)idt};
  __asm__ volatile("lidt %0" : : "m"(d));
}

static void x2apic_enable(void) {
  wrmsr(APIC_BASE_MSR, rdmsr(APIC_BASE_MSR) | APIC_ENABLE | APIC_X2APIC);
  wrmsr(X2APIC_SVR, 0x1ff); /* software-enable, spurious vector 0xff */
}

void rt_set_handler(int vector, isr_handler h) { handlers[vector & 0xff] = h; }

void rt_isr(struct isr_frame *f) {
  uint32_t cpu = apic_id() & 63;
  if (f->vector == 13 && gp_expected[cpu]) {
    gp_seen[cpu] = 1;
    f->rip += 2; /* rdmsr and wrmsr are both two bytes (0f 32 / 0f 30) */
    return;
  }
  if (handlers[f->vector]) {
    handlers[f->vector](f);
    return;
  }
  if (f->vector < 32) {
    rt_printf("unexpected exception %d (error 0x%lx) at rip 0x%lx\n", (int)f->vector, f->error, f->rip);
    rt_exit(0x80 + (uint32_t)f->vector);
  }
  apic_eoi(); /* an unclaimed external interrupt: acknowledge and carry on */
}

int rdmsr_safe(uint32_t msr, uint64_t *value) {
  uint32_t cpu = apic_id() & 63;
  gp_seen[cpu] = 0;
  gp_expected[cpu] = 1;
  *value = rdmsr(msr);
  gp_expected[cpu] = 0;
  return gp_seen[cpu] ? -1 : 0;
}

int wrmsr_safe(uint32_t msr, uint64_t value) {
  uint32_t cpu = apic_id() & 63;
  gp_seen[cpu] = 0;
  gp_expected[cpu] = 1;
  wrmsr(msr, value);
  gp_expected[cpu] = 0;
  return gp_seen[cpu] ? -1 : 0;
}

void rt_exit(uint32_t code) {
  outl(DEBUG_EXIT_PORT, code);
  for (;;) {
    cli();
    hlt();
  }
}

struct assert_report {
  uint64_t file;
  uint64_t expr;
  uint32_t line;
};

void rt_assert_fail(const char *file, int line, const char *expr) {
  /* On the stack: identity-mapped, so its address is also its guest-physical address. */
  struct assert_report r = {(uint64_t)file, (uint64_t)expr, (uint32_t)line};
  outl(ASSERT_PORT, (uint32_t)(uintptr_t)&r);
  rt_exit(0xa55e);
}

void rt_puts(const char *s) {
  /* The host's transmitter is always ready, so skip the LSR poll: one exit per byte, not two. */
  while (*s) outb(SERIAL_PORT, (uint8_t)*s++);
}

static void put_unsigned(uint64_t v, unsigned base) {
  char buf[24];
  int i = 0;
  do {
    buf[i++] = "0123456789abcdef"[v % base];
    v /= base;
  } while (v);
  while (i) outb(SERIAL_PORT, (uint8_t)buf[--i]);
}

/* %s %c %d %u %x %lx %lu %ld %p: enough for test output. */
void rt_printf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  for (; *fmt; fmt++) {
    if (*fmt != '%') {
      outb(SERIAL_PORT, (uint8_t)*fmt);
      continue;
    }
    int lng = 0;
    if (*++fmt == 'l') {
      lng = 1;
      fmt++;
    }
    switch (*fmt) {
      case 's': rt_puts(va_arg(ap, const char *)); break;
      case 'c': outb(SERIAL_PORT, (uint8_t)va_arg(ap, int)); break;
      case 'd': {
        int64_t v = lng ? va_arg(ap, int64_t) : va_arg(ap, int);
        if (v < 0) { outb(SERIAL_PORT, '-'); v = -v; }
        put_unsigned((uint64_t)v, 10);
        break;
      }
      case 'u': put_unsigned(lng ? va_arg(ap, uint64_t) : va_arg(ap, uint32_t), 10); break;
      case 'x': put_unsigned(lng ? va_arg(ap, uint64_t) : va_arg(ap, uint32_t), 16); break;
      case 'p': put_unsigned((uint64_t)va_arg(ap, void *), 16); break;
      case '%': outb(SERIAL_PORT, '%'); break;
      default: outb(SERIAL_PORT, '?'); break;
    }
  }
  va_end(ap);
}

void rt_main(int cpu) {
  idt_init();
  x2apic_enable();
  rt_exit((uint32_t)guest_main(cpu));
}
