/* hvemu test-guest runtime: freestanding, 64-bit long mode, identity-mapped. */
#ifndef HVEMU_RT_H
#define HVEMU_RT_H

typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef unsigned long uint64_t;
typedef short int16_t;
typedef int int32_t;
typedef long int64_t;
typedef unsigned long uintptr_t;
typedef unsigned long size_t;

/* Ports of the host test platform (packages/platform/src/platform.ts). */
#define SERIAL_PORT 0x3f8
#define DEBUG_EXIT_PORT 0xf4
#define ASSERT_PORT 0xf6

/* Register frame pushed by the interrupt stubs (start.S). */
struct isr_frame {
  uint64_t r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
  uint64_t vector, error, rip, cs, rflags, rsp, ss;
};
typedef void (*isr_handler)(struct isr_frame *f);

/* Each test guest defines this; its return value is the vCPU's exit code. */
int guest_main(int cpu);

void rt_set_handler(int vector, isr_handler h);
void rt_exit(uint32_t code) __attribute__((noreturn));
void rt_assert_fail(const char *file, int line, const char *expr) __attribute__((noreturn));
void rt_puts(const char *s);
void rt_printf(const char *fmt, ...);
/* rdmsr that reports #GP instead of taking it: 0 on success, -1 on #GP. */
int rdmsr_safe(uint32_t msr, uint64_t *value);
int wrmsr_safe(uint32_t msr, uint64_t value);

void *memcpy(void *d, const void *s, size_t n);
void *memset(void *d, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);

#define ASSERT(e) do { if (!(e)) rt_assert_fail(__FILE__, __LINE__, #e); } while (0)

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint16_t inw(uint16_t port) { uint16_t v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint32_t inl(uint16_t port) { uint32_t v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static inline uint64_t rdmsr(uint32_t msr) {
  uint32_t lo, hi;
  __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
  return ((uint64_t)hi << 32) | lo;
}
static inline void wrmsr(uint32_t msr, uint64_t v) {
  __asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)) : "memory");
}
static inline void cpuid(uint32_t leaf, uint32_t sub, uint32_t *a, uint32_t *b, uint32_t *c, uint32_t *d) {
  __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(sub));
}
static inline void sti(void) { __asm__ volatile("sti" ::: "memory"); }
static inline void cli(void) { __asm__ volatile("cli" ::: "memory"); }
static inline void hlt(void) { __asm__ volatile("hlt" ::: "memory"); }
/* sti;hlt as one sequence: an interrupt pending at sti wakes the hlt instead of being lost. */
static inline void sti_hlt(void) { __asm__ volatile("sti; hlt" ::: "memory"); }
static inline uint64_t mmio_read64(uint64_t a) { return *(volatile uint64_t *)a; }
static inline uint32_t mmio_read32(uint64_t a) { return *(volatile uint32_t *)a; }
static inline void mmio_write32(uint64_t a, uint32_t v) { *(volatile uint32_t *)a = v; }
static inline void mmio_write64(uint64_t a, uint64_t v) { *(volatile uint64_t *)a = v; }

/* x2APIC (enabled by the runtime before guest_main). */
#define X2APIC_ID 0x802
#define X2APIC_EOI 0x80b
#define X2APIC_SVR 0x80f
#define X2APIC_ISR0 0x810
static inline void apic_eoi(void) { wrmsr(X2APIC_EOI, 0); }
static inline uint32_t apic_id(void) { return (uint32_t)rdmsr(X2APIC_ID); }
/* True while `vector` is in service (between delivery and EOI). */
static inline int apic_in_service(int vector) {
  return (rdmsr(X2APIC_ISR0 + vector / 32) >> (vector % 32)) & 1;
}

#endif
