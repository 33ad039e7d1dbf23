/* The VMBus channel protocol from the guest side, in the order Linux hv_vmbus speaks it. */
#include "vmbus.h"

/* Versions Linux tries, newest first (connection.c vmbus_versions); 2.4 is its lowest. */
static const uint32_t versions[] = {0x50003, 0x50002, 0x50001, 0x50000, 0x40001, 0x40000, 0x30000, 0x20004};
#define VERSION_WIN10_V5 0x50000
#define VMBUS_MESSAGE_CONNECTION_ID 1
#define VMBUS_MESSAGE_CONNECTION_ID_4 4
#define GPADL_HANDLE_BASE 0xe1e10
/* PFNs per GPADL_HEADER after its one range header, and per GPADL_BODY. */
#define GPADL_HEADER_PFNS 26
#define GPADL_BODY_PFNS 28

/* Pre-5.0 hosts want an interrupt page in INITIATE_CONTACT. */
static uint8_t interrupt_page[PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));
static uint8_t msg[HV_MESSAGE_PAYLOAD] __attribute__((aligned(8)));

/* The struct size Linux requires of each host message it handles (shorter ones are dropped). */
static uint32_t min_size(uint32_t type) {
  switch (type) {
  case CHANNELMSG_OFFERCHANNEL: return 196;
  case CHANNELMSG_ALLOFFERS_DELIVERED: return 8;
  case CHANNELMSG_OPENCHANNEL_RESULT: return 20;
  case CHANNELMSG_GPADL_CREATED: return 20;
  case CHANNELMSG_VERSION_RESPONSE: return 16;
  default: return 0xffff; /* not a message this guest handles */
  }
}

static void record_offer(struct vmbus *vb, const uint8_t *m) {
  uint32_t relid = get32(m, 184);
  if (relid == 0 || relid > MAX_RELID || vb->offer_count == MAX_OFFERS) {
    rt_printf("vmbus: offer of relid %u ignored\n", relid);
    return;
  }
  struct offer *o = &vb->offers[vb->offer_count++];
  memcpy(o->if_type, m + 8, 16);
  o->relid = relid;
  o->monitor_allocated = m[189] & 1;
  o->dedicated_interrupt = get16(m, 190) & 1;
  o->connection_id = get32(m, 192);
}

/*
 * Waits for a message of `type` (and, if `relid` is non-zero, with that u32 at byte 8).
 * Offers are recorded whenever they come; anything else is dropped with a line on serial.
 */
static const uint8_t *wait_message(struct vmbus *vb, uint32_t type, uint32_t relid) {
  for (;;) {
    int len = hv_take_message(msg);
    if (len < 0) {
      hv_wait();
      continue;
    }
    uint32_t t = len >= 8 ? get32(msg, 0) : CHANNELMSG_COUNT;
    if (t >= CHANNELMSG_COUNT || (uint32_t)len < min_size(t)) {
      rt_printf("vmbus: dropped message type %u of %d bytes\n", t, len);
      continue;
    }
    if (t == CHANNELMSG_OFFERCHANNEL) record_offer(vb, msg);
    if (t == type && (relid == 0 || get32(msg, 8) == relid)) return msg;
    if (t != CHANNELMSG_OFFERCHANNEL) rt_printf("vmbus: unexpected message type %u\n", t);
  }
}

/* INITIATE_CONTACT from the newest version down; returns 1 when the host accepted `version`. */
static int try_version(struct vmbus *vb, uint32_t version) {
  uint8_t m[40];
  memset(m, 0, sizeof m);
  put32(m, 0, CHANNELMSG_INITIATE_CONTACT);
  put32(m, 8, version);
  put32(m, 12, hv_vp_index()); /* target_vcpu: the VP that takes channel messages */
  int modern = version >= VERSION_WIN10_V5;
  if (modern) m[16] = VMBUS_SINT; /* msg_sint; msg_vtl 0, feature_flags 0 */
  else put64(m, 16, (uint64_t)interrupt_page);
  uint32_t status = hv_post(modern ? VMBUS_MESSAGE_CONNECTION_ID_4 : VMBUS_MESSAGE_CONNECTION_ID, m, sizeof m);
  if (status == HV_STATUS_INVALID_CONNECTION_ID) return 0; /* "host too old" */
  ASSERT(status == 0);
  const uint8_t *r = wait_message(vb, CHANNELMSG_VERSION_RESPONSE, 0);
  if (!r[8]) return 0;
  vb->version = version;
  vb->msg_conn_id = modern ? get32(r, 12) : VMBUS_MESSAGE_CONNECTION_ID;
  return 1;
}

void vmbus_connect(struct vmbus *vb) {
  vb->next_gpadl = GPADL_HANDLE_BASE;
  for (uint32_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
    if (try_version(vb, versions[i])) {
      rt_printf("vmbus: version %u.%u accepted (message connection %u)\n", vb->version >> 16, vb->version & 0xffff, vb->msg_conn_id);
      return;
    }
    rt_printf("vmbus: version %u.%u refused\n", versions[i] >> 16, versions[i] & 0xffff);
  }
  rt_puts("vmbus: no version accepted\n");
  rt_exit(3);
}

static void post(struct vmbus *vb, const void *m, uint32_t len) {
  ASSERT(hv_post(vb->msg_conn_id, m, len) == 0);
}

void vmbus_request_offers(struct vmbus *vb) {
  uint8_t m[8] = {CHANNELMSG_REQUESTOFFERS};
  post(vb, m, sizeof m);
  wait_message(vb, CHANNELMSG_ALLOFFERS_DELIVERED, 0);
  rt_printf("vmbus: %u offers\n", vb->offer_count);
  for (uint32_t i = 0; i < vb->offer_count; i++) {
    const struct offer *o = &vb->offers[i];
    rt_printf("vmbus: offer relid %u %s connection 0x%x%s\n", o->relid, vmbus_class_name(o->if_type), o->connection_id,
              o->monitor_allocated ? " monitored" : "");
  }
}

/* Class GUIDs in wire order (first three groups little-endian). */
static const struct { const char *name; uint8_t guid[16]; } classes[] = {
    {"heartbeat", {0x39, 0x4f, 0x16, 0x57, 0x15, 0x91, 0x78, 0x4e, 0xab, 0x55, 0x38, 0x2f, 0x3b, 0xd5, 0x42, 0x2d}},
    {"shutdown", {0x31, 0x60, 0x0b, 0x0e, 0x13, 0x52, 0x34, 0x49, 0x81, 0x8b, 0x38, 0xd9, 0x0c, 0xed, 0x39, 0xdb}},
    {"timesync", {0x30, 0xe6, 0x27, 0x95, 0xae, 0xd0, 0x7b, 0x49, 0xad, 0xce, 0xe8, 0x0a, 0xb0, 0x17, 0x5c, 0xaf}},
    {"kvp", {0xe7, 0xf4, 0xa0, 0xa9, 0x45, 0x5a, 0x96, 0x4d, 0xb8, 0x27, 0x8a, 0x84, 0x1e, 0x8c, 0x03, 0xe6}},
};

const char *vmbus_class_name(const uint8_t guid[16]) {
  for (uint32_t i = 0; i < sizeof classes / sizeof classes[0]; i++)
    if (memcmp(guid, classes[i].guid, 16) == 0) return classes[i].name;
  return "unknown-class";
}

uint32_t vmbus_create_gpadl(struct vmbus *vb, uint32_t relid, const void *base, uint32_t pages) {
  uint8_t m[HV_MESSAGE_PAYLOAD];
  uint32_t gpadl = vb->next_gpadl++;
  uint64_t pfn0 = (uint64_t)base / PAGE_SIZE; /* identity-mapped: the address is the GPA */
  uint32_t n = pages < GPADL_HEADER_PFNS ? pages : GPADL_HEADER_PFNS;
  memset(m, 0, sizeof m);
  put32(m, 0, CHANNELMSG_GPADL_HEADER);
  put32(m, 8, relid);
  put32(m, 12, gpadl);
  put16(m, 16, (uint16_t)(8 + 8 * pages)); /* range_buflen: the whole range, over all messages */
  put16(m, 18, 1);                          /* rangecount */
  put32(m, 20, pages * PAGE_SIZE);          /* byte_count; byte_offset 0 */
  for (uint32_t i = 0; i < n; i++) put64(m, 28 + 8 * i, pfn0 + i);
  post(vb, m, 28 + 8 * n);
  for (uint32_t done = n; done < pages;) {
    uint32_t k = pages - done < GPADL_BODY_PFNS ? pages - done : GPADL_BODY_PFNS;
    memset(m, 0, 16);
    put32(m, 0, CHANNELMSG_GPADL_BODY);
    put32(m, 12, gpadl);
    for (uint32_t i = 0; i < k; i++) put64(m, 16 + 8 * i, pfn0 + done + i);
    post(vb, m, 16 + 8 * k);
    done += k;
  }
  const uint8_t *r = wait_message(vb, CHANNELMSG_GPADL_CREATED, relid);
  ASSERT(get32(r, 12) == gpadl);
  ASSERT(get32(r, 16) == 0); /* creation_status */
  rt_printf("vmbus: GPADL 0x%x of %u pages for relid %u created\n", gpadl, pages, relid);
  return gpadl;
}

uint32_t vmbus_open(struct vmbus *vb, uint32_t relid, uint32_t gpadl, uint32_t send_pages) {
  uint8_t m[148];
  memset(m, 0, sizeof m);
  put32(m, 0, CHANNELMSG_OPENCHANNEL);
  put32(m, 8, relid);
  put32(m, 12, relid); /* openid: Linux uses the relid */
  put32(m, 16, gpadl);
  put32(m, 20, hv_vp_index()); /* target_vp: utilities are bound to CPU 0 */
  put32(m, 24, send_pages);    /* downstream_ringbuffer_pageoffset */
  post(vb, m, sizeof m);
  const uint8_t *r = wait_message(vb, CHANNELMSG_OPENCHANNEL_RESULT, relid);
  ASSERT(get32(r, 12) == relid);
  return get32(r, 16);
}
