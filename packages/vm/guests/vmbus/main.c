/*
 * The KVM VMBus demo guest: SynIC on, VMBus version negotiated, offers listed, the heartbeat
 * and shutdown channels opened (ring GPADL, ring headers, OPENCHANNEL), then IC packets
 * answered until the host's shutdown request. Exit code 0 when the shutdown was accepted after
 * at least MIN_HEARTBEATS heartbeats; 2 if it came earlier.
 */
#include "vmbus.h"

#ifndef MIN_HEARTBEATS
#define MIN_HEARTBEATS 3
#endif
/* Util channels: 3 pages each way (control page + 8 KiB of data), as Linux hv_utils uses. */
#define SEND_PAGES 3
#define RECV_PAGES 3
#define RING_PAGES (SEND_PAGES + RECV_PAGES)
/* Largest IC packet this guest accepts (shutdown is 2088 bytes; Linux reads 4 KiB). */
#define IC_BUFFER 4096

static uint8_t rings[2][RING_PAGES * PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));
static uint8_t packet[IC_BUFFER] __attribute__((aligned(8)));
static struct vmbus vb;

struct ic_channel {
  struct ic_state ic;
  struct channel ch;
  uint32_t relid;
};
static struct ic_channel ics[2] = {{.ic = {.name = "heartbeat", .service = IC_HEARTBEAT}}, {.ic = {.name = "shutdown", .service = IC_SHUTDOWN}}};

static int streq(const char *a, const char *b) {
  while (*a && *a == *b) a++, b++;
  return *a == *b;
}

static void open_ic(struct ic_channel *c, uint8_t *pages) {
  const struct offer *o = 0;
  for (uint32_t i = 0; i < vb.offer_count && !o; i++)
    if (streq(vmbus_class_name(vb.offers[i].if_type), c->ic.name)) o = &vb.offers[i];
  if (!o) {
    rt_printf("%s: not offered\n", c->ic.name);
    rt_exit(4);
  }
  c->relid = o->relid;
  c->ch.connection_id = o->connection_id;
  uint32_t gpadl = vmbus_create_gpadl(&vb, o->relid, pages, RING_PAGES);
  /* Ring headers are set before OPENCHANNEL: the host may write as soon as it accepts. */
  ring_pair_init(&c->ch, pages, SEND_PAGES, RECV_PAGES);
  uint32_t status = vmbus_open(&vb, o->relid, gpadl, SEND_PAGES);
  rt_printf("%s: opened relid %u, status %u\n", c->ic.name, o->relid, status);
  ASSERT(status == 0);
}

/* Answers every packet waiting on one channel. */
static void serve(struct ic_channel *c) {
  while (!c->ch.broken) {
    uint64_t trans_id;
    int n = ring_read(&c->ch, packet, sizeof packet, &trans_id);
    if (n == 0) return;
    if (n == -2) {
      rt_printf("%s: oversized packet skipped\n", c->ic.name);
      continue;
    }
    if (n < 0) {
      rt_printf("%s: the host broke the ring; channel abandoned\n", c->ic.name);
      c->ch.broken = 1;
      return;
    }
    if (ic_answer(&c->ic, packet, (uint32_t)n) != 0) continue;
    if (ring_write(&c->ch, packet, (uint32_t)n, trans_id) != 0) rt_printf("%s: no room for the answer\n", c->ic.name);
  }
}

/* A channel message after the opens (a late offer, a rescind): this guest only drains it. */
static void drain_messages(void) {
  uint8_t m[HV_MESSAGE_PAYLOAD];
  int len;
  while ((len = hv_take_message(m)) >= 0) rt_printf("vmbus: message type %u ignored\n", len >= 8 ? get32(m, 0) : 0);
}

int guest_main(int cpu) {
  (void)cpu;
  hv_init();
  rt_puts("guest: SynIC enabled (SINT2 -> vector 0xf3)\n");
  vmbus_connect(&vb);
  vmbus_request_offers(&vb);
  open_ic(&ics[0], rings[0]);
  open_ic(&ics[1], rings[1]);
  /* A NEGOTIATE may have been signalled before the open completed: look once regardless. */
  serve(&ics[0]);
  serve(&ics[1]);
  while (ics[1].ic.shutdowns == 0) {
    int any = 0;
    drain_messages();
    for (int i = 0; i < 2; i++)
      if (hv_take_event(ics[i].relid)) {
        serve(&ics[i]);
        any = 1;
      }
    if (!any && ics[1].ic.shutdowns == 0) hv_wait();
  }
  uint32_t beats = ics[0].ic.heartbeats;
  rt_printf("guest: done after %u heartbeats and a shutdown request\n", beats);
  return beats >= MIN_HEARTBEATS ? 0 : 2;
}
