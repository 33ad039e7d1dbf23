/*
 * What the test's static /init programs share (no libc): a 3-argument system call through
 * SYSCALL, and writing text and numbers to fd 1 (/dev/console, opened by the kernel for init).
 */
#pragma once

static long sys3(long nr, long a, long b, long c) {
  long ret;
  __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
  return ret;
}

static unsigned long length(const char *s) {
  unsigned long n = 0;
  while (s[n]) n++;
  return n;
}

#define SYS_write 1

static void say(const char *s) { sys3(SYS_write, 1, (long)s, (long)length(s)); }

static void say_number(unsigned long v) {
  char digits[24];
  int i = sizeof digits - 1;
  digits[i] = 0;
  do {
    digits[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v > 0 && i > 0);
  say(&digits[i]);
}
