/* Entry and interrupt stubs of the hvemu test-guest runtime. */
    .section .text.entry, "ax"
    .globl _start
_start:
    /* The loader set RSP to this vCPU's stack and RDI to its index. */
    call rt_main
1:  hlt
    jmp 1b

/* 256 stubs, 16 bytes apart, so rt.c can compute each gate from the vector. Vectors for
 * which the CPU pushes an error code skip the dummy push, so every frame has the same shape. */
    .text
    .align 16
    .globl isr_stubs
isr_stubs:
    .set vec, 0
    .rept 256
    .align 16
    .if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushq $0
    .endif
    pushq $vec
    jmp isr_common
    .set vec, vec + 1
    .endr

isr_common:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi
    cld
    call rt_isr
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp
    iretq
