/* Multiboot v1 test kernel (32-bit, no paging). Checks what a kvm-unit-tests kernel relies on:
 * the boot magic and info (mem_upper, command line), fw_cfg's signature and CPU count, and an
 * application processor started with INIT/SIPI. Prints one report line on the serial port and
 * exits through isa-debug-exit with the code given as "exit=N" on the command line, or with
 * 0x40 | failure bits. */
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define SERIAL 0x3f8
#define FW_CFG_SELECTOR 0x510
#define FW_CFG_DATA 0x511
#define FW_CFG_SIGNATURE 0x00
#define FW_CFG_NB_CPUS 0x05
#define DEBUG_EXIT 0xf4
#define SIPI_PAGE 0x8000
#define X2APIC_ICR 0x830
#define ICR_INIT 0x4500    /* INIT, level assert */
#define ICR_STARTUP 0x4600 /* STARTUP, level assert; | vector */

static inline void outb(u16 p, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(p)); }
static inline void outw(u16 p, u16 v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(p)); }
static inline void outl(u16 p, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(p)); }
static inline u8 inb(u16 p) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(p)); return v; }
static inline u64 rdmsr(u32 m) { u32 lo, hi; __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(m)); return ((u64)hi << 32) | lo; }
static inline void wrmsr(u32 m, u64 v) { __asm__ volatile("wrmsr" : : "c"(m), "a"((u32)v), "d"((u32)(v >> 32)) : "memory"); }
static inline void pause(void) { __asm__ volatile("pause" ::: "memory"); }

extern char ap_trampoline[], ap_trampoline_end[];
static volatile u32 ap_up;
static volatile u32 ap_apic_id = 0xffffffff;

/* Runs on the AP in 32-bit protected mode, after the trampoline. */
void ap_main(void) {
  u32 a = 1, b, c = 0, d;
  __asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
  ap_apic_id = b >> 24; /* initial APIC id */
  ap_up = 1;
}

static void putc(char ch) {
  while (!(inb(SERIAL + 5) & 0x20)) pause(); /* LSR: transmitter holding register empty */
  outb(SERIAL, (u8)ch);
}
static void puts(const char *s) { while (*s) putc(*s++); }
static void putu(u32 v) {
  char buf[11];
  int i = 10;
  buf[i] = 0;
  do buf[--i] = (char)('0' + v % 10); while ((v /= 10) != 0);
  puts(buf + i);
}

static u32 fwcfg(u16 key, int bytes) {
  u32 v = 0;
  outw(FW_CFG_SELECTOR, key);
  for (int i = 0; i < bytes; i++) v |= (u32)inb(FW_CFG_DATA) << (8 * i);
  return v;
}

/* "exit=N" anywhere in the command line, else -1. */
static int exit_code_from(const char *cmd) {
  for (const char *p = cmd; *p; p++) {
    if (p[0] == 'e' && p[1] == 'x' && p[2] == 'i' && p[3] == 't' && p[4] == '=') {
      int v = 0;
      for (p += 5; *p >= '0' && *p <= '9'; p++) v = v * 10 + (*p - '0');
      return v;
    }
  }
  return -1;
}

static int wait_for_ap(u32 spins) {
  for (u32 i = 0; i < spins && !ap_up; i++) pause();
  return ap_up;
}

/* INIT, then STARTUP (twice if needed) to APIC id 1 through the x2APIC ICR. */
static int start_ap(void) {
  volatile u8 *dst = (volatile u8 *)SIPI_PAGE;
  for (char *s = ap_trampoline; s < ap_trampoline_end; s++) *dst++ = (u8)*s;
  wrmsr(0x1b, rdmsr(0x1b) | (1u << 11) | (1u << 10)); /* APIC global enable + x2APIC */
  u64 dest = (u64)1 << 32;
  wrmsr(X2APIC_ICR, dest | ICR_INIT);
  wrmsr(X2APIC_ICR, dest | ICR_STARTUP | (SIPI_PAGE >> 12));
  if (wait_for_ap(20000)) return 1;
  wrmsr(X2APIC_ICR, dest | ICR_STARTUP | (SIPI_PAGE >> 12));
  return wait_for_ap(200000);
}

void kernel_main(u32 magic, const u32 *info) {
  u32 fail = 0;
  if (magic != 0x2BADB002) fail |= 1;
  const char *cmd = (info[0] & (1u << 2)) ? (const char *)info[4] : "";
  if (!(info[0] & 1)) fail |= 2;
  char sig[5];
  outw(FW_CFG_SELECTOR, FW_CFG_SIGNATURE);
  for (int i = 0; i < 4; i++) sig[i] = (char)inb(FW_CFG_DATA);
  sig[4] = 0;
  u32 cpus = fwcfg(FW_CFG_NB_CPUS, 2);
  int ap = cpus > 1 ? start_ap() : 0;
  puts("multiboot: cmdline='");
  puts(cmd);
  puts("' mem_upper=");
  putu(info[2]);
  puts(" fw_cfg=");
  puts(sig);
  puts(" cpus=");
  putu(cpus);
  puts(" ap=");
  putu(ap ? ap_apic_id : 0xffffffffu);
  puts("\n");
  int code = exit_code_from(cmd);
  outl(DEBUG_EXIT, fail ? 0x40 | fail : code < 0 ? 0 : (u32)code);
}
