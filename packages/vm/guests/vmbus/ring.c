/*
 * A channel's two rings (struct hv_ring_buffer control page + data area each), the way Linux
 * ring_buffer.c reads and writes them: 16-byte descriptor, payload padded to 8, 8-byte trailer,
 * wrap-around at the end of the data area. The host owns write_index of the inbound ring and
 * read_index of the outbound one; both are validated before use.
 */
#include "vmbus.h"

#define CTL_WRITE 0
#define CTL_READ 1
#define CTL_INTERRUPT_MASK 2
#define CTL_PENDING_SEND_SZ 3
#define CTL_FEATURE_BITS (0x40 / 4)
#define DESC 16
#define TRAILER 8
#define VM_PKT_DATA_INBAND 6

static void ring_init(struct ring *r, uint8_t *pages, uint32_t count) {
  r->ctl = (volatile uint32_t *)pages;
  r->data = pages + PAGE_SIZE;
  r->size = (count - 1) * PAGE_SIZE;
  r->ctl[CTL_WRITE] = 0;
  r->ctl[CTL_READ] = 0;
  r->ctl[CTL_INTERRUPT_MASK] = 0;
  r->ctl[CTL_PENDING_SEND_SZ] = 0;
  r->ctl[CTL_FEATURE_BITS] = 1; /* feat_pending_send_sz, as Linux sets on both rings */
}

void ring_pair_init(struct channel *ch, uint8_t *pages, uint32_t send_pages, uint32_t recv_pages) {
  ring_init(&ch->out, pages, send_pages);
  ring_init(&ch->in, pages + send_pages * PAGE_SIZE, recv_pages);
  ch->broken = 0;
}

/* Copies with wrap-around: `n` bytes at data offset `at` (< size). */
static void copy_out(const struct ring *r, uint32_t at, uint8_t *dst, uint32_t n) {
  uint32_t first = r->size - at < n ? r->size - at : n;
  memcpy(dst, r->data + at, first);
  memcpy(dst + first, r->data, n - first);
}
static void copy_in(struct ring *r, uint32_t at, const uint8_t *src, uint32_t n) {
  uint32_t first = r->size - at < n ? r->size - at : n;
  memcpy(r->data + at, src, first);
  memcpy(r->data, src + first, n - first);
}
static uint32_t wrap(const struct ring *r, uint32_t at) { return at >= r->size ? at - r->size : at; }
static uint32_t readable(uint32_t w, uint32_t rd, uint32_t size) { return w >= rd ? w - rd : size - (rd - w); }
static uint32_t writable(uint32_t w, uint32_t rd, uint32_t size) { return w >= rd ? size - (w - rd) : rd - w; }
static int index_ok(const struct ring *r, uint32_t i) { return i < r->size && (i & 7) == 0; }

int ring_read(struct channel *ch, uint8_t *buf, uint32_t cap, uint64_t *trans_id) {
  struct ring *r = &ch->in;
  uint32_t w = r->ctl[CTL_WRITE];
  uint32_t rd = r->ctl[CTL_READ];
  if (!index_ok(r, w) || !index_ok(r, rd)) return -1;
  uint32_t avail = readable(w, rd, r->size);
  if (avail == 0) return 0;
  mb(); /* read the packet only after seeing the write index that covers it */
  uint8_t d[DESC];
  if (avail < DESC + TRAILER) return -1;
  copy_out(r, rd, d, DESC);
  uint32_t len = get16(d, 4) * 8u, off = get16(d, 2) * 8u;
  if (len < DESC || off < DESC || off > len || len + TRAILER > avail) return -1;
  uint32_t n = len - off;
  int result = (int)n;
  if (n > cap) result = -2; /* Linux truncates to its max_pkt_size; this guest skips it */
  else copy_out(r, wrap(r, rd + off), buf, n);
  *trans_id = get64(d, 8);
  uint32_t before = writable(w, rd, r->size);
  mb();
  r->ctl[CTL_READ] = wrap(r, rd + len + TRAILER);
  mb();
  /* A host blocked on space asked to be signalled once pending_send_sz bytes are free. */
  uint32_t pending = r->ctl[CTL_PENDING_SEND_SZ];
  if (pending && before <= pending && before + len + TRAILER > pending) hv_signal(ch->connection_id);
  return result;
}

int ring_write(struct channel *ch, const uint8_t *payload, uint32_t len, uint64_t trans_id) {
  struct ring *r = &ch->out;
  uint32_t w = r->ctl[CTL_WRITE];
  uint32_t rd = r->ctl[CTL_READ];
  if (!index_ok(r, w) || !index_ok(r, rd)) return -1;
  uint32_t padded = (len + 7) & ~7u;
  uint32_t total = DESC + padded + TRAILER;
  if (writable(w, rd, r->size) <= total) return -1; /* never fill the ring: read == write means empty */
  uint8_t d[DESC];
  put16(d, 0, VM_PKT_DATA_INBAND);
  put16(d, 2, DESC / 8);
  put16(d, 4, (uint16_t)((DESC + padded) / 8));
  put16(d, 6, 0);
  put64(d, 8, trans_id);
  copy_in(r, w, d, DESC);
  copy_in(r, wrap(r, w + DESC), payload, len);
  static const uint8_t zeros[8];
  copy_in(r, wrap(r, w + DESC + len), zeros, padded - len);
  uint8_t t[TRAILER];
  put64(t, 0, (uint64_t)w << 32);
  copy_in(r, wrap(r, w + DESC + padded), t, TRAILER);
  mb();
  r->ctl[CTL_WRITE] = wrap(r, w + total);
  mb();
  /* Signal only on empty -> non-empty, and not while the host drains with interrupts masked. */
  if (r->ctl[CTL_INTERRUPT_MASK] == 0 && r->ctl[CTL_READ] == w) hv_signal(ch->connection_id);
  return 0;
}
