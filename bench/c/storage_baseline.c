/*
 * C baseline for the storage benchmark: the same I/O as hvemu's storvsp case does on the same
 * page-cache-resident image (4 KiB random reads or writes, or 1 MiB sequential reads), at the
 * same queue depth: one thread per outstanding request, each doing synchronous pread/pwrite.
 *
 * Usage: storage_baseline <file> <randread|randwrite|seqread> <block_bytes> <queue_depth> <ops>
 * Prints one JSON object: {"ops":..,"seconds":..}
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct job {
	int fd;
	int write;
	int sequential;
	size_t block;
	uint64_t blocks;
	long ops;
	uint64_t seed;
	uint64_t next;
	uint64_t stride;
};

static void *worker(void *arg)
{
	struct job *j = arg;
	uint8_t *buf = aligned_alloc(4096, j->block);
	memset(buf, 0x5a, j->block);
	for (long i = 0; i < j->ops; i++) {
		uint64_t b;
		if (j->sequential) {
			b = j->next;
			j->next = (j->next + j->stride) % j->blocks;
		} else {
			j->seed ^= j->seed << 13;
			j->seed ^= j->seed >> 7;
			j->seed ^= j->seed << 17;
			b = j->seed % j->blocks;
		}
		ssize_t n = j->write ? pwrite(j->fd, buf, j->block, (off_t)(b * j->block)) : pread(j->fd, buf, j->block, (off_t)(b * j->block));
		if (n != (ssize_t)j->block) {
			perror("io");
			exit(1);
		}
	}
	free(buf);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: %s file randread|randwrite|seqread block qd ops\n", argv[0]);
		return 2;
	}
	int write = strcmp(argv[2], "randwrite") == 0;
	int sequential = strcmp(argv[2], "seqread") == 0;
	size_t block = strtoul(argv[3], NULL, 10);
	int qd = atoi(argv[4]);
	long ops = atol(argv[5]);
	int fd = open(argv[1], write ? O_RDWR : O_RDONLY);
	if (fd < 0) {
		perror("open");
		return 1;
	}
	struct stat st;
	fstat(fd, &st);
	uint64_t blocks = st.st_size / block;
	pthread_t threads[256];
	struct job jobs[256];
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < qd; i++) {
		jobs[i] = (struct job){ fd, write, sequential, block, blocks, ops / qd, 0x9e3779b97f4a7c15ull * (i + 1), (uint64_t)i, (uint64_t)qd };
		pthread_create(&threads[i], NULL, worker, &jobs[i]);
	}
	for (int i = 0; i < qd; i++) pthread_join(threads[i], NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double seconds = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("{\"ops\":%ld,\"seconds\":%.6f}\n", (ops / qd) * qd, seconds);
	close(fd);
	return 0;
}
