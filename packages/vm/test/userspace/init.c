/*
 * /init for the Linux user-space test: a static 64-bit program with no libc. It writes a line
 * to the console (fd 1 is /dev/console, opened by the kernel for init), asks for its pid to show
 * a system call's result coming back, waits until the console has sent the line (tcdrain: hvemu's
 * UART raises no interrupts, so the kernel's 8250 driver drains its buffer from a backup timer,
 * and a poweroff right after write() would lose it), and powers the machine off. Every kernel entry is a
 * SYSCALL from CPL 3, which this kind of KVM needs hvemu to complete (syscall_entry.cc).
 */
#include "nolibc.h"

#define SYS_ioctl 16
#define SYS_getpid 39
#define TCSBRK 0x5409 /* with a non-zero argument: tcdrain() */
#define SYS_reboot 169
#define LINUX_REBOOT_MAGIC1 0xfee1deadL
#define LINUX_REBOOT_MAGIC2 672274793L
#define LINUX_REBOOT_CMD_POWER_OFF 0x4321fedcL

void _start(void) {
  say("hvemu-userspace: hello from /init, pid ");
  say_number((unsigned long)sys3(SYS_getpid, 0, 0, 0));
  say("\n");
  sys3(SYS_ioctl, 1, TCSBRK, 1);
  sys3(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_POWER_OFF);
  say("hvemu-userspace: reboot returned\n");
  for (;;) {
  }
}
