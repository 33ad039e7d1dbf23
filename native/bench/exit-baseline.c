/*
 * Baseline for the exit round-trip benchmark: the same guest loop as the TypeScript
 * measurement (N x rdmsr of a user-space MSR in 64-bit long mode), answered by a C handler
 * on the vCPU thread itself. Prints one JSON line. Build: cc -O2 -o exit-baseline exit-baseline.c
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MEM_SIZE (4u << 20)
#define CODE_GPA 0x100000u
#define MSR 0x40000020u

static void die(const char *what) {
  fprintf(stderr, "exit-baseline: %s: %s\n", what, strerror(errno));
  exit(1);
}

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* Identity-map the first 2 MiB... 4 MiB with two 2 MiB pages; GDT with a 64-bit code segment. */
static void setup_long_mode(uint8_t *mem, int vcpu) {
  uint64_t *pml4 = (uint64_t *)(mem + 0x1000), *pdpt = (uint64_t *)(mem + 0x2000), *pd = (uint64_t *)(mem + 0x3000);
  pml4[0] = 0x2000 | 3;
  pdpt[0] = 0x3000 | 3;
  pd[0] = 0x000000 | 0x83;
  pd[1] = 0x200000 | 0x83;
  uint64_t *gdt = (uint64_t *)(mem + 0x7000);
  gdt[1] = 0x00af9a000000ffffULL;
  gdt[2] = 0x00cf92000000ffffULL;
  struct kvm_sregs s;
  if (ioctl(vcpu, KVM_GET_SREGS, &s)) die("KVM_GET_SREGS");
  struct kvm_segment code = {.base = 0, .limit = 0xffffffff, .selector = 8, .type = 11, .present = 1, .s = 1, .l = 1, .g = 1};
  struct kvm_segment data = {.base = 0, .limit = 0xffffffff, .selector = 16, .type = 3, .present = 1, .s = 1, .db = 1, .g = 1};
  s.cs = code;
  s.ds = s.es = s.fs = s.gs = s.ss = data;
  s.gdt.base = 0x7000;
  s.gdt.limit = 23;
  s.cr0 = 0x80050033;
  s.cr3 = 0x1000;
  s.cr4 = 0x620;
  s.efer = 0xd01;
  if (ioctl(vcpu, KVM_SET_SREGS, &s)) die("KVM_SET_SREGS");
}

int main(int argc, char **argv) {
  uint32_t n = argc > 1 ? (uint32_t)atoi(argv[1]) : 2000;
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) die("open /dev/kvm");
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) die("KVM_CREATE_VM");
  uint8_t *mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  struct kvm_userspace_memory_region r = {.slot = 0, .guest_phys_addr = 0, .memory_size = MEM_SIZE, .userspace_addr = (uint64_t)mem};
  if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r)) die("KVM_SET_USER_MEMORY_REGION");
  if (ioctl(vm, KVM_CREATE_IRQCHIP, 0)) die("KVM_CREATE_IRQCHIP");
  struct kvm_enable_cap cap = {.cap = KVM_CAP_X86_USER_SPACE_MSR, .args = {KVM_MSR_EXIT_REASON_UNKNOWN | KVM_MSR_EXIT_REASON_FILTER}};
  if (ioctl(vm, KVM_ENABLE_CAP, &cap)) die("KVM_ENABLE_CAP");
  static uint8_t deny[32];
  struct kvm_msr_filter f = {.flags = KVM_MSR_FILTER_DEFAULT_ALLOW};
  f.ranges[0] = (struct kvm_msr_filter_range){.flags = KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE, .nmsrs = 256, .base = 0x40000000, .bitmap = deny};
  if (ioctl(vm, KVM_X86_SET_MSR_FILTER, &f)) die("KVM_X86_SET_MSR_FILTER");
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  if (vcpu < 0) die("KVM_CREATE_VCPU");
  struct kvm_run *run = mmap(NULL, (size_t)ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0), PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  /* Long mode needs a CPUID that offers it; take what KVM supports (no Hyper-V leaves needed). */
  struct { struct kvm_cpuid2 h; struct kvm_cpuid_entry2 e[256]; } cpuid = {.h = {.nent = 256}};
  if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, &cpuid)) die("KVM_GET_SUPPORTED_CPUID");
  if (ioctl(vcpu, KVM_SET_CPUID2, &cpuid)) die("KVM_SET_CPUID2");
  setup_long_mode(mem, vcpu);
  /* out 0xe0,al; mov ebx,n; mov ecx,MSR; 1: rdmsr; dec ebx; jnz 1b; out 0xe1,al; hlt  (0xe0/0xe1: ports the in-kernel irqchip does not claim) */
  uint8_t code[] = {0xe6, 0xe0, 0xbb, 0, 0, 0, 0, 0xb9, 0, 0, 0, 0, 0x0f, 0x32, 0xff, 0xcb, 0x75, 0xfa, 0xe6, 0xe1, 0xf4};
  memcpy(code + 3, &n, 4);
  uint32_t msr = MSR;
  memcpy(code + 8, &msr, 4);
  memcpy(mem + CODE_GPA, code, sizeof code);
  struct kvm_regs regs = {.rip = CODE_GPA, .rsp = 0x80000, .rflags = 2};
  if (ioctl(vcpu, KVM_SET_REGS, &regs)) die("KVM_SET_REGS");
  double t0 = 0, t1 = 0;
  for (;;) {
    if (ioctl(vcpu, KVM_RUN, 0)) die("KVM_RUN");
    if (run->exit_reason == KVM_EXIT_X86_RDMSR) {
      run->msr.data = 3;
      run->msr.error = 0;
    } else if (run->exit_reason == KVM_EXIT_IO && run->io.port == 0xe0) {
      t0 = now_us();
    } else if (run->exit_reason == KVM_EXIT_IO && run->io.port == 0xe1) {
      t1 = now_us();
      break;
    } else {
      fprintf(stderr, "exit-baseline: unexpected exit %u\n", run->exit_reason);
      return 1;
    }
  }
  printf("{\"name\":\"exit-round-trip-c\",\"exits\":%u,\"us_per_exit\":%.2f}\n", n, (t1 - t0) / n);
  return 0;
}
