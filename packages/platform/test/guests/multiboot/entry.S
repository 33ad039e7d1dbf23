/* Multiboot v1 test kernel: header, 32-bit entry, and the real-mode AP trampoline. */
#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x00000002 /* bit 1: memory information required */

    .section .multiboot, "a"
    .align 4
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)

    .text
    .code32
    .globl _start
_start:
    /* Multiboot state: protected mode, flat segments, EAX = magic, EBX = info, ESP undefined. */
    mov $boot_stack_top, %esp
    lgdt gdt_desc
    ljmp $0x08, $1f
1:  mov $0x10, %cx
    mov %cx, %ds
    mov %cx, %es
    mov %cx, %fs
    mov %cx, %gs
    mov %cx, %ss
    push %ebx
    push %eax
    call kernel_main
2:  hlt
    jmp 2b

/* Copied by kernel_main to the SIPI page (0x8000): real mode, CS base = 0x8000. */
    .globl ap_trampoline, ap_trampoline_end
    .code16
ap_trampoline:
    cli
    lgdtl %cs:(ap_gdt_desc - ap_trampoline)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x08, $ap_entry32
    .align 4
ap_gdt_desc:
    .word gdt_end - gdt - 1
    .long gdt
ap_trampoline_end:

    .code32
ap_entry32:
    mov $0x10, %cx
    mov %cx, %ds
    mov %cx, %es
    mov %cx, %ss
    mov $ap_stack_top, %esp
    call ap_main
3:  hlt
    jmp 3b

    .data
    .align 8
gdt:
    .quad 0
    .quad 0x00cf9b000000ffff /* 0x08: flat 32-bit code */
    .quad 0x00cf93000000ffff /* 0x10: flat data */
gdt_end:
gdt_desc:
    .word gdt_end - gdt - 1
    .long gdt

    .bss
    .align 16
    .space 4096
boot_stack_top:
    .space 4096
ap_stack_top:
