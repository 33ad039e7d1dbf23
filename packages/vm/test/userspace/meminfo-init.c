/*
 * /init for the dynamic-memory test: a static 64-bit program with no libc that prints the
 * guest's RAM as the kernel counts it (sysinfo(2): totalram, which hv_balloon lowers by the
 * pages it gives the host and raises by hot-added memory it onlines) whenever it changes,
 * checking once a second, forever. fd 1 is /dev/console, opened by the kernel for init.
 */
#include "nolibc.h"

#define SYS_nanosleep 35
#define SYS_sysinfo 99

struct timespec {
  long tv_sec;
  long tv_nsec;
};

/* struct sysinfo from include/uapi/linux/sysinfo.h (x86-64). */
struct sysinfo {
  long uptime;
  unsigned long loads[3];
  unsigned long totalram;
  unsigned long freeram;
  unsigned long sharedram;
  unsigned long bufferram;
  unsigned long totalswap;
  unsigned long freeswap;
  unsigned short procs;
  unsigned short pad;
  unsigned long totalhigh;
  unsigned long freehigh;
  unsigned int mem_unit;
  char _f[20 - 2 * sizeof(long) - sizeof(int)];
};

void _start(void) {
  unsigned long last = 0;
  struct timespec second = {1, 0};
  for (;;) {
    struct sysinfo info;
    if (sys3(SYS_sysinfo, (long)&info, 0, 0) == 0) {
      unsigned long kib = info.totalram * info.mem_unit / 1024;
      if (kib != last) {
        say("hvemu-meminfo: MemTotal ");
        say_number(kib);
        say(" kB\n");
        last = kib;
      }
    }
    sys3(SYS_nanosleep, (long)&second, 0, 0);
  }
}
