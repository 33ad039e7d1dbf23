/*
 * The VMBus demo guest (`hvemu demo`, KvmVm's buildVmbusDemoGuest, and the KVM tests): the steps Linux hv_vmbus + hv_utils take to reach the
 * heartbeat and shutdown integration components, written from the protocol facts in
 * shared/reference/linux-guest-protocols.md. Everything the host writes (messages, ring
 * indices, packet lengths) is bounds-checked before use.
 */
#ifndef VMBUS_GUEST_H
#define VMBUS_GUEST_H
#include "../hv-abi.h"

#define PAGE_SIZE 4096
#define VMBUS_SINT 2
#define VMBUS_VECTOR 0xf3 /* Linux HYPERVISOR_CALLBACK_VECTOR */
#define MAX_RELID 2047

/* Channel message types (enum vmbus_channel_message_type). */
#define CHANNELMSG_OFFERCHANNEL 1
#define CHANNELMSG_REQUESTOFFERS 3
#define CHANNELMSG_ALLOFFERS_DELIVERED 4
#define CHANNELMSG_OPENCHANNEL 5
#define CHANNELMSG_OPENCHANNEL_RESULT 6
#define CHANNELMSG_GPADL_HEADER 8
#define CHANNELMSG_GPADL_BODY 9
#define CHANNELMSG_GPADL_CREATED 10
#define CHANNELMSG_INITIATE_CONTACT 14
#define CHANNELMSG_VERSION_RESPONSE 15
#define CHANNELMSG_COUNT 25

/* Unaligned, alias-safe little-endian field access into message and packet buffers. */
typedef uint16_t __attribute__((may_alias, aligned(1))) u16_ua;
typedef uint32_t __attribute__((may_alias, aligned(1))) u32_ua;
typedef uint64_t __attribute__((may_alias, aligned(1))) u64_ua;
static inline uint16_t get16(const void *p, size_t at) { return *(const u16_ua *)((const uint8_t *)p + at); }
static inline uint32_t get32(const void *p, size_t at) { return *(const u32_ua *)((const uint8_t *)p + at); }
static inline uint64_t get64(const void *p, size_t at) { return *(const u64_ua *)((const uint8_t *)p + at); }
static inline void put16(void *p, size_t at, uint16_t v) { *(u16_ua *)((uint8_t *)p + at) = v; }
static inline void put32(void *p, size_t at, uint32_t v) { *(u32_ua *)((uint8_t *)p + at) = v; }
static inline void put64(void *p, size_t at, uint64_t v) { *(u64_ua *)((uint8_t *)p + at) = v; }
static inline void mb(void) { __asm__ volatile("mfence" ::: "memory"); }

/* ---- hv.c: hypercalls and the SynIC */
void hv_init(void);
/* HvPostMessage of a channel message; returns the hypercall status. */
uint32_t hv_post(uint32_t connection_id, const void *msg, uint32_t len);
/* Fast HvSignalEvent on a channel's connection id. */
uint32_t hv_signal(uint32_t connection_id);
/* Copies the next SINT 2 message into `out` (>= 240 bytes), freeing the slot (EOM when
 * pending); returns its length, or -1 when the slot is empty. */
int hv_take_message(uint8_t *out);
/* Test-and-clears the SINT 2 event flag of `relid`. */
int hv_take_event(uint32_t relid);
/* Sleeps (sti;hlt) until an interrupt; counts sleeps to bound every wait. */
void hv_wait(void);
uint32_t hv_vp_index(void);

/* ---- vmbus.c: the channel protocol */
struct offer {
  uint8_t if_type[16];
  uint32_t relid;
  uint32_t connection_id;
  uint8_t dedicated_interrupt;
  uint8_t monitor_allocated;
};
#define MAX_OFFERS 16
struct vmbus {
  uint32_t version;
  uint32_t msg_conn_id;
  uint32_t offer_count;
  struct offer offers[MAX_OFFERS];
  uint32_t next_gpadl;
};
void vmbus_connect(struct vmbus *vb);
void vmbus_request_offers(struct vmbus *vb);
const char *vmbus_class_name(const uint8_t guid[16]);
/* GPADL_HEADER (+ BODYs) for `pages` contiguous pages at `base`; returns the handle. */
uint32_t vmbus_create_gpadl(struct vmbus *vb, uint32_t relid, const void *base, uint32_t pages);
/* OPENCHANNEL with the ring GPADL split at `send_pages`; returns OPENCHANNEL_RESULT.status. */
uint32_t vmbus_open(struct vmbus *vb, uint32_t relid, uint32_t gpadl, uint32_t send_pages);

/* ---- ring.c: one channel's two rings */
struct ring {
  volatile uint32_t *ctl; /* write_index, read_index, interrupt_mask, pending_send_sz, ..., feature_bits @0x40 */
  uint8_t *data;
  uint32_t size;
};
struct channel {
  struct ring out; /* guest-to-host */
  struct ring in;  /* host-to-guest */
  uint32_t connection_id;
  int broken;
};
void ring_pair_init(struct channel *ch, uint8_t *pages, uint32_t send_pages, uint32_t recv_pages);
/* Reads the next packet's payload into buf (cap bytes): returns its length, 0 when the ring is
 * empty, -1 when the host broke the ring, -2 when a packet was skipped as too large. */
int ring_read(struct channel *ch, uint8_t *buf, uint32_t cap, uint64_t *trans_id);
/* Writes an inband packet and signals the host on empty -> non-empty; 0 or -1 (no room). */
int ring_write(struct channel *ch, const uint8_t *payload, uint32_t len, uint64_t trans_id);

/* ---- ic.c: integration-component answers */
#define IC_HEARTBEAT 1
#define IC_SHUTDOWN 3
struct ic_state {
  const char *name;
  int service; /* IC_HEARTBEAT / IC_SHUTDOWN */
  uint16_t framework[2], version[2]; /* negotiated (major, minor) */
  int negotiated;
  uint32_t heartbeats;
  uint64_t last_seq;
  int shutdowns;
  uint32_t shutdown_flags;
};
/* Answers one IC message in place (same length); returns 0 to send it back, -1 to drop it. */
int ic_answer(struct ic_state *ic, uint8_t *msg, uint32_t len);

#endif
