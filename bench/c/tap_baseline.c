/*
 * C baseline for the network benchmark: the same frames through the same TAP as hvemu's
 * netvsp + TapBackend, with nothing in between.
 *
 *   tap_baseline tx <ifname> <frame_bytes> <frames>      write(2) frames to the TAP (guest -> network)
 *   tap_baseline rx <ifname> <seconds>                   read(2) frames from the TAP (network -> guest)
 *   tap_baseline inject <ifname> <frame_bytes> <seconds> <dst_mac>
 *                                                        AF_PACKET frames out of the interface, so that
 *                                                        they arrive at the TAP's reader (the RX source)
 *
 * tx and rx attach to an existing TAP by name (TUNSETIFF, IFF_TAP | IFF_NO_PI), as hvemu does;
 * run them in the TAP's network namespace. Prints one JSON object.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/ethernet.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int open_tap(const char *name)
{
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		perror("open /dev/net/tun");
		exit(1);
	}
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		perror("TUNSETIFF");
		exit(1);
	}
	return fd;
}

static void fill_frame(uint8_t *f, int size, const uint8_t *dst)
{
	memcpy(f, dst, 6);
	const uint8_t src[6] = { 0x02, 0, 0, 0, 0, 0x42 };
	memcpy(f + 6, src, 6);
	f[12] = 0x88; /* local experimental ethertype: the kernel drops it early */
	f[13] = 0xb5;
	for (int i = 14; i < size; i++)
		f[i] = (uint8_t)i;
}

static int tx(const char *name, int size, long frames)
{
	int fd = open_tap(name);
	uint8_t frame[65536];
	const uint8_t dst[6] = { 0x02, 0, 0, 0, 0, 0x01 };
	fill_frame(frame, size, dst);
	double t0 = now();
	long done = 0;
	for (; done < frames; done++) {
		if (write(fd, frame, size) != size) {
			perror("write");
			break;
		}
	}
	printf("{\"frames\":%ld,\"seconds\":%.6f}\n", done, now() - t0);
	return 0;
}

static int rx(const char *name, double seconds)
{
	int fd = open_tap(name);
	fcntl(fd, F_SETFL, O_NONBLOCK);
	uint8_t buf[65536];
	long frames = 0, bytes = 0;
	double t0 = now(), end = t0 + seconds;
	struct pollfd p = { .fd = fd, .events = POLLIN };
	while (now() < end) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n > 0) {
			frames++;
			bytes += n;
			continue;
		}
		poll(&p, 1, 10);
	}
	printf("{\"frames\":%ld,\"bytes\":%ld,\"seconds\":%.6f}\n", frames, bytes, now() - t0);
	return 0;
}

static int inject(const char *name, int size, double seconds, const char *mac)
{
	int s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
	if (s < 0) {
		perror("socket");
		return 1;
	}
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
	if (ioctl(s, SIOCGIFINDEX, &ifr) < 0) {
		perror("SIOCGIFINDEX");
		return 1;
	}
	struct sockaddr_ll sll;
	memset(&sll, 0, sizeof sll);
	sll.sll_family = AF_PACKET;
	sll.sll_ifindex = ifr.ifr_ifindex;
	sll.sll_protocol = htons(ETH_P_ALL);
	if (bind(s, (struct sockaddr *)&sll, sizeof sll) < 0) {
		perror("bind");
		return 1;
	}
	uint8_t dst[6];
	sscanf(mac, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &dst[0], &dst[1], &dst[2], &dst[3], &dst[4], &dst[5]);
	uint8_t frame[65536];
	fill_frame(frame, size, dst);
	enum { BATCH = 64 };
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	memset(msgs, 0, sizeof msgs);
	for (int i = 0; i < BATCH; i++) {
		iov[i].iov_base = frame;
		iov[i].iov_len = size;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	long sent = 0;
	double end = now() + seconds;
	while (now() < end) {
		int n = sendmmsg(s, msgs, BATCH, 0);
		if (n > 0)
			sent += n;
		else
			usleep(50);
	}
	printf("{\"sent\":%ld}\n", sent);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 5 && !strcmp(argv[1], "tx"))
		return tx(argv[2], atoi(argv[3]), atol(argv[4]));
	if (argc >= 4 && !strcmp(argv[1], "rx"))
		return rx(argv[2], atof(argv[3]));
	if (argc >= 6 && !strcmp(argv[1], "inject"))
		return inject(argv[2], atoi(argv[3]), atof(argv[4]), argv[5]);
	fprintf(stderr, "usage: tap_baseline tx IF BYTES FRAMES | rx IF SECONDS | inject IF BYTES SECONDS DSTMAC\n");
	return 2;
}
