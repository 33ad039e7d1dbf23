/*
 * 64-bit SYSCALL/SYSRET between CPL 3 and CPL 0. This kind of KVM's emulator leaves the vCPU at
 * CPL 3 on SYSCALL, so the fetch at the entry faults; the host completes the SYSCALL
 * (native/src/syscall_entry.cc). The guest checks what the CPU promises: the entry runs with
 * IA32_STAR's kernel CS/SS, RFLAGS masked by IA32_FMASK, RCX/R11 the return address and flags;
 * SYSRETQ goes back to CPL 3. And what must not change: an ordinary user #PF reaches the guest,
 * and a user jump to the entry still faults.
 *
 * Exit codes: 0 all good; 2 the SYSCALL entry faulted at CPL 3 (the KVM bug, not finished).
 */
#include "rt.h"

#define MSR_EFER 0xc0000080
#define MSR_STAR 0xc0000081
#define MSR_LSTAR 0xc0000082
#define MSR_FMASK 0xc0000084
#define EFER_SCE 1
#define RFLAGS_DF (1ul << 10)
#define RFLAGS_IF (1ul << 9)
#define RFLAGS_TF (1ul << 8)

/* GDT: the loader's 0x08 code64, 0x10 data, 0x18 TSS (16 bytes); then SYSRETQ's layout from
 * STAR[63:48] = 0x20: 0x28 user data, 0x30 user code64 (SYSRETQ loads +8 and +16; the 32-bit
 * user CS at +0 is not used). User CS/SS come out as Linux's 0x33/0x2b: this kind of KVM's
 * SYSRETQ loads exactly those whatever IA32_STAR says (measured with STAR[63:48] = 0x28: CS 0x33,
 * SS 0x2b instead of 0x3b, 0x33), so a layout other than Linux's would not show it the CPU's way. */
#define KERNEL_CS 0x08
#define KERNEL_SS 0x10
#define USER_BASE 0x20
#define USER_SS (0x28 | 3)
#define USER_CS (0x30 | 3)
/* VA 8-10 MiB: a supervisor-only alias of physical 0-2 MiB (the image). The kernel side runs
 * there, as a kernel's entry sits on supervisor pages: a fetch at CPL 3 faults. */
#define SUPERVISOR_ALIAS 0x800000ul
#define ALIAS(p) ((uint64_t)(p) + SUPERVISOR_ALIAS)

static uint64_t gdt[7] __attribute__((aligned(16)));
static uint8_t kernel_stack[16384] __attribute__((aligned(16)));
static uint8_t user_stack[16384] __attribute__((aligned(16)));

/* Results, written by the user code and the entry. */
uint64_t res_user_ss, res_rax, res_entry_cs, res_entry_ss, res_entry_flags, res_rcx, res_r11, res_user_cs;
uint64_t saved_ksp;
extern char user_main[], user_after_syscall[], user_resume_read[], user_resume_jump[], syscall_entry[];
void enter_user(uint64_t rip, uint64_t rsp);

__asm__(
    ".text\n"
    ".globl enter_user\n"
    "enter_user:\n" /* rdi = user RIP, rsi = user RSP; returns when the user makes syscall 0 */
    "  push %rbx; push %rbp; push %r12; push %r13; push %r14; push %r15\n"
    "  mov %rsp, saved_ksp(%rip)\n"
    "  pushq $0x2b\n" /* SS */
    "  pushq %rsi\n"
    "  pushq $0x2\n" /* RFLAGS: interrupts stay off */
    "  pushq $0x33\n" /* CS */
    "  pushq %rdi\n"
    "  iretq\n"
    ".globl syscall_entry\n"
    "syscall_entry:\n" /* entered through the alias; CPL 0 if SYSCALL worked, still on the user stack */
    "  mov %cs, %r8\n"
    "  mov %ss, %r9\n"
    "  pushfq\n"
    "  pop %r10\n"
    "  test %rax, %rax\n"
    "  jz 1f\n"
    "  inc %rax\n"
    "  sysretq\n"
    "1:mov saved_ksp(%rip), %rsp\n"
    "  pop %r15; pop %r14; pop %r13; pop %r12; pop %rbp; pop %rbx\n"
    "  ret\n"
    ".globl user_main\n"
    "user_main:\n"
    "  std\n" /* DF set in user mode: FMASK clears it for the kernel, R11 keeps it */
    "  mov $41, %eax\n"
    "  syscall\n"
    ".globl user_after_syscall\n"
    "user_after_syscall:\n"
    "  cld\n"
    "  mov %rax, res_rax(%rip)\n"
    "  mov %r8, res_entry_cs(%rip)\n"
    "  mov %r9, res_entry_ss(%rip)\n"
    "  mov %r10, res_entry_flags(%rip)\n"
    "  mov %rcx, res_rcx(%rip)\n"
    "  mov %r11, res_r11(%rip)\n"
    "  mov %cs, %rax\n"
    "  mov %rax, res_user_cs(%rip)\n"
    "  mov %ss, %rax\n"
    "  mov %rax, res_user_ss(%rip)\n"
    "  mov $0x800000, %rbx\n"
    "  mov (%rbx), %rax\n" /* a user read of the supervisor alias: #PF, resumed below */
    ".globl user_resume_read\n"
    "user_resume_read:\n"
    "  xor %ecx, %ecx\n"
    "  lea syscall_entry(%rip), %rbx\n"
    "  add $0x800000, %rbx\n"
    "  jmp *%rbx\n" /* a user jump to the entry (its supervisor alias): #PF at CPL 3 as on any CPU */
    ".globl user_resume_jump\n"
    "user_resume_jump:\n"
    "  xor %eax, %eax\n"
    "  syscall\n" /* syscall 0: back to enter_user's caller */
    "  ud2\n");

static volatile uint64_t pf_read_error, pf_jump_error;

static void on_pf(struct isr_frame *f) {
  if ((f->cs & 3) != 3) {
    rt_printf("kernel #PF at rip 0x%lx error 0x%lx\n", f->rip, f->error);
    rt_exit(0x8e);
  }
  if (f->rip == ALIAS(syscall_entry) && f->rcx != 0) {
    rt_printf("syscall: entry at CPL 3 (#PF error 0x%lx at the entry)\n", f->error);
    rt_exit(2);
  }
  if (f->rip == ALIAS(syscall_entry)) {
    pf_jump_error = f->error;
    f->rip = (uint64_t)user_resume_jump;
  } else {
    pf_read_error = f->error;
    f->rip = (uint64_t)user_resume_read;
  }
}

/* The loader's GDT plus the user segments; RSP0 in the loader's TSS for faults from CPL 3. */
static void setup_segments(void) {
  struct { uint16_t limit; uint64_t base; } __attribute__((packed)) d;
  __asm__ volatile("sgdt %0" : "=m"(d));
  memcpy(gdt, (void *)d.base, 40); /* null, code64, data, TSS (two slots) */
  gdt[5] = 0x00cff2000000fffful;   /* user data */
  gdt[6] = 0x00affa000000fffful;   /* user code64 */
  d.limit = sizeof gdt - 1;
  d.base = (uint64_t)gdt;
  __asm__ volatile("lgdt %0" : : "m"(d));
  uint64_t tss = ((gdt[3] >> 16) & 0xffffff) | ((gdt[3] >> 32) & 0xff000000) | (gdt[4] << 32);
  uint64_t rsp0 = (uint64_t)(kernel_stack + sizeof kernel_stack);
  memcpy((void *)(tss + 4), &rsp0, 8);
}

/* User access on the first 8 MiB (image, stacks, page tables); 8-10 MiB the supervisor alias. */
static void setup_user_pages(void) {
  uint64_t cr3;
  __asm__ volatile("mov %%cr3, %0" : "=r"(cr3));
  uint64_t *pml4 = (uint64_t *)(cr3 & ~0xffful);
  uint64_t *pdpt = (uint64_t *)(pml4[0] & ~0xffful);
  uint64_t *pd = (uint64_t *)(pdpt[0] & ~0xffful);
  pml4[0] |= 4;
  pdpt[0] |= 4;
  for (int i = 0; i < 4; i++) pd[i] |= 4;
  pd[SUPERVISOR_ALIAS >> 21] = 0x83; /* physical 0, present, writable, 2 MiB, no user access */
  __asm__ volatile("mov %0, %%cr3" : : "r"(cr3) : "memory");
}

int guest_main(int cpu) {
  (void)cpu;
  rt_set_handler(14, on_pf);
  setup_segments();
  setup_user_pages();
  wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_SCE);
  wrmsr(MSR_STAR, ((uint64_t)USER_BASE << 48) | ((uint64_t)KERNEL_CS << 32));
  wrmsr(MSR_FMASK, RFLAGS_DF | RFLAGS_IF | RFLAGS_TF);
  wrmsr(MSR_LSTAR, ALIAS(syscall_entry));
  ASSERT(rdmsr(MSR_LSTAR) == ALIAS(syscall_entry));
  enter_user((uint64_t)user_main, (uint64_t)(user_stack + sizeof user_stack));

  ASSERT(res_rax == 42);                             /* the entry ran and SYSRETQ returned */
  ASSERT(res_entry_cs == KERNEL_CS);                 /* CPL 0 at the entry */
  ASSERT(res_entry_ss == KERNEL_SS);
  ASSERT(!(res_entry_flags & RFLAGS_DF));            /* masked by FMASK */
  ASSERT(res_r11 & RFLAGS_DF);                       /* the user's RFLAGS */
  ASSERT(res_rcx == (uint64_t)user_after_syscall);   /* the return address */
  ASSERT(res_user_cs == USER_CS);                    /* back at CPL 3 */
  ASSERT(res_user_ss == USER_SS);
  ASSERT(pf_read_error == 0x5);                      /* present, user, read */
  ASSERT((pf_jump_error & 0x15) == 0x15);            /* present, user, fetch */
  rt_puts("syscall: entry at CPL 0, sysretq to CPL 3; user faults delivered\n");
  return 0;
}
