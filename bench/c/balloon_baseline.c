/*
 * The balloon release baseline: the same fallocate(FALLOC_FL_PUNCH_HOLE) calls hvemu's
 * batched discard makes, on the same memory (the KVM partition's memfd, opened through
 * /proc/PID/fd/N, so every punch also runs KVM's invalidation of that memslot; or a memfd of
 * its own), MAP_SHARED, every page touched first, in a plain C loop. Usage: balloon_baseline MiB
 * run_pages stride_pages trials [memfd-path] (a range of run_pages pages every stride_pages
 * pages). Prints {"pages":N,"seconds":S} summed over the trials (only the punching is timed).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc < 5) return 2;
  size_t bytes = (size_t)atol(argv[1]) << 20;
  long run = atol(argv[2]), stride = atol(argv[3]), trials = atol(argv[4]);
  const long page = 4096;
  int fd = argc > 5 ? open(argv[5], O_RDWR | O_CLOEXEC) : memfd_create("balloon-baseline", MFD_CLOEXEC);
  if (fd < 0 || (argc <= 5 && ftruncate(fd, (off_t)bytes) != 0)) return perror("memfd"), 1;
  unsigned char *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (mem == MAP_FAILED) return perror("mmap"), 1;
  long pages_total = 0;
  double seconds = 0;
  for (long t = 0; t < trials; t++) {
    for (size_t off = 0; off < bytes; off += page) mem[off] = 1;
    double t0 = now();
    for (size_t off = 0; off + run * page <= bytes; off += stride * page) {
      if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, run * page) != 0) return perror("fallocate"), 1;
      pages_total += run;
    }
    seconds += now() - t0;
  }
  printf("{\"pages\":%ld,\"seconds\":%.9f}\n", pages_total, seconds);
  return 0;
}
