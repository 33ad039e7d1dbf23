/*
 * C baseline for the ring throughput benchmark: the same VMBus ring layout and the same
 * protocol steps as hvemu's RingWriter/RingReader (descriptor, payload, padding, trailer;
 * sequentially consistent index publication once per batch, interrupt_mask and pending_send_sz checks,
 * descriptor validation), moving the payload with memcpy in and memcpy out.
 *
 * Usage: ring_baseline <payload_bytes> <packets> <batch> <data_size>
 * Prints one JSON object: {"payload":..,"packets":..,"seconds":..}
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct ring_control {
	uint32_t write_index;
	uint32_t read_index;
	uint32_t interrupt_mask;
	uint32_t pending_send_sz;
	uint32_t reserved1[12];
	uint32_t feature_bits;
	uint8_t reserved2[4096 - 0x44];
};

struct ring {
	struct ring_control *ctl;
	uint8_t *data;
	uint32_t size;
	uint32_t priv_write;
	uint32_t priv_read;
	uint64_t signals;
};

static uint32_t bytes_to_write(uint32_t w, uint32_t r, uint32_t size)
{
	return w >= r ? size - (w - r) : r - w;
}

static uint32_t bytes_to_read(uint32_t w, uint32_t r, uint32_t size)
{
	return w >= r ? w - r : size - (r - w);
}

static uint32_t copy_in(struct ring *rb, uint32_t pos, const void *src, uint32_t len)
{
	uint32_t first = rb->size - pos;
	if (len <= first) {
		memcpy(rb->data + pos, src, len);
	} else {
		memcpy(rb->data + pos, src, first);
		memcpy(rb->data, (const uint8_t *)src + first, len - first);
	}
	pos += len;
	return pos >= rb->size ? pos - rb->size : pos;
}

static uint32_t copy_out(struct ring *rb, uint32_t pos, void *dst, uint32_t len)
{
	uint32_t first = rb->size - pos;
	if (len <= first) {
		memcpy(dst, rb->data + pos, len);
	} else {
		memcpy(dst, rb->data + pos, first);
		memcpy((uint8_t *)dst + first, rb->data, len - first);
	}
	pos += len;
	return pos >= rb->size ? pos - rb->size : pos;
}

static int ring_write(struct ring *rb, const void *payload, uint32_t len, uint64_t tid)
{
	static const uint8_t zeros[8];
	uint32_t packet_len = (16 + len + 7) & ~7u;
	uint32_t total = packet_len + 8;
	uint32_t read = __atomic_load_n(&rb->ctl->read_index, __ATOMIC_SEQ_CST);
	if (read >= rb->size || (read & 7))
		return -1;
	if (bytes_to_write(rb->priv_write, read, rb->size) <= total)
		return 0;
	uint32_t start = rb->priv_write;
	uint16_t desc16[4] = { 6, 2, (uint16_t)(packet_len / 8), 0 };
	uint32_t pos = copy_in(rb, start, desc16, 8);
	pos = copy_in(rb, pos, &tid, 8);
	pos = copy_in(rb, pos, payload, len);
	pos = copy_in(rb, pos, zeros, packet_len - 16 - len);
	uint64_t trailer = (uint64_t)start << 32;
	pos = copy_in(rb, pos, &trailer, 8);
	rb->priv_write = pos;
	return 1;
}

/* Publishes a batch of writes and makes the signal decision once (hv_signal_on_write). */
static void ring_publish(struct ring *rb, uint32_t old_write)
{
	if (rb->priv_write == old_write)
		return;
	/* seq_cst store = the full barrier before reading interrupt_mask. */
	__atomic_store_n(&rb->ctl->write_index, rb->priv_write, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&rb->ctl->interrupt_mask, __ATOMIC_SEQ_CST) == 0 &&
	    __atomic_load_n(&rb->ctl->read_index, __ATOMIC_SEQ_CST) == old_write)
		rb->signals++;
}

/* Reads every available packet, copying each payload out; commits once. Returns packets read. */
static int ring_read_batch(struct ring *rb, uint8_t *dst)
{
	int n = 0;
	uint32_t start_read = rb->priv_read;
	for (;;) {
		uint32_t write = __atomic_load_n(&rb->ctl->write_index, __ATOMIC_SEQ_CST);
		if (write >= rb->size || (write & 7))
			return -1;
		uint32_t avail = bytes_to_read(write, rb->priv_read, rb->size);
		if (avail == 0)
			break;
		if (avail < 24)
			return -1;
		uint16_t desc16[4];
		uint64_t tid;
		uint32_t pos = copy_out(rb, rb->priv_read, desc16, 8);
		pos = copy_out(rb, pos, &tid, 8);
		uint32_t len = desc16[2] * 8u, off = desc16[1] * 8u;
		if (len < 16 || len + 8 > avail || off < 16 || off > len || desc16[0] != 6)
			return -1;
		uint32_t at = rb->priv_read + off;
		if (at >= rb->size)
			at -= rb->size;
		copy_out(rb, at, dst, len - off);
		at = rb->priv_read + len + 8;
		rb->priv_read = at >= rb->size ? at - rb->size : at;
		n++;
	}
	if (n == 0)
		return 0;
	__atomic_store_n(&rb->ctl->read_index, rb->priv_read, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&rb->ctl->feature_bits, __ATOMIC_SEQ_CST) & 1) {
		uint32_t pending = __atomic_load_n(&rb->ctl->pending_send_sz, __ATOMIC_SEQ_CST);
		if (pending) {
			uint32_t w = __atomic_load_n(&rb->ctl->write_index, __ATOMIC_SEQ_CST);
			uint32_t free_now = bytes_to_write(w, rb->priv_read, rb->size);
			uint32_t freed = bytes_to_read(rb->priv_read, start_read, rb->size);
			if (free_now - freed <= pending && free_now > pending)
				rb->signals++;
		}
	}
	return n;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: %s payload packets batch data_size\n", argv[0]);
		return 2;
	}
	uint32_t payload_len = (uint32_t)atol(argv[1]);
	long packets = atol(argv[2]);
	int batch = atoi(argv[3]);
	uint32_t size = (uint32_t)atol(argv[4]);
	struct ring rb = { 0 };
	rb.ctl = aligned_alloc(4096, sizeof(struct ring_control));
	rb.data = aligned_alloc(4096, size);
	memset(rb.ctl, 0, sizeof(*rb.ctl));
	memset(rb.data, 0, size);
	rb.ctl->feature_bits = 1;
	rb.size = size;
	uint8_t *src = malloc(payload_len + 8), *dst = malloc(payload_len + 8);
	for (uint32_t i = 0; i < payload_len; i++)
		src[i] = (uint8_t)i;

	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	long done = 0;
	uint64_t checksum = 0;
	while (done < packets) {
		int wrote = 0;
		uint32_t old_write = rb.priv_write;
		while (wrote < batch && done + wrote < packets) {
			int r = ring_write(&rb, src, payload_len, (uint64_t)(done + wrote));
			if (r < 0)
				return 3;
			if (r == 0)
				break;
			wrote++;
		}
		ring_publish(&rb, old_write);
		int n = ring_read_batch(&rb, dst);
		if (n != wrote)
			return 4;
		checksum += dst[payload_len ? payload_len - 1 : 0];
		done += n;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double seconds = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("{\"payload\":%u,\"packets\":%ld,\"seconds\":%.9f,\"signals\":%llu,\"checksum\":%llu}\n", payload_len, packets,
	       seconds, (unsigned long long)rb.signals, (unsigned long long)checksum);
	return 0;
}
