/*
 * Integration-component answers as Linux hv_utils gives them: the request's own buffer and
 * length, status filled in, icflags TRANSACTION | RESPONSE. Payload = vmbuspipe_hdr (8) +
 * icmsg_hdr (20) + body at 28.
 */
#include "vmbus.h"

#define ICMSG_HDR 28
#define IC_TYPE 12 /* icmsgtype u16 */
#define IC_SIZE 18 /* icmsgsize u16 */
#define IC_STATUS 20
#define IC_FLAGS 25
#define ICMSGTYPE_NEGOTIATE 0
#define ICMSGHDRFLAG_TRANSACTION 1
#define ICMSGHDRFLAG_RESPONSE 4
#define HV_S_OK 0
#define HV_E_FAIL 0x80004005u
#define IC_MAX_VERSIONS 100

/* Preference lists (major, minor), newest first. */
static const uint16_t frameworks[][2] = {{3, 0}, {1, 0}, {0, 0}};
static const uint16_t heartbeat_versions[][2] = {{3, 0}, {1, 0}, {0, 0}};
static const uint16_t shutdown_versions[][2] = {{3, 2}, {3, 1}, {3, 0}, {1, 0}, {0, 0}};

/* The first of `mine` (ending in 0.0) that the host lists among `count` entries at `list`. */
static int pick(const uint16_t (*mine)[2], const uint8_t *list, uint32_t count, uint16_t out[2]) {
  for (; mine[0][0] | mine[0][1]; mine++)
    for (uint32_t i = 0; i < count; i++)
      if (get16(list, 4 * i) == mine[0][0] && get16(list, 4 * i + 2) == mine[0][1]) {
        out[0] = mine[0][0];
        out[1] = mine[0][1];
        return 1;
      }
  return 0;
}

static uint32_t negotiate(struct ic_state *ic, uint8_t *m, uint32_t len) {
  uint8_t *body = m + ICMSG_HDR;
  uint32_t fc = get16(body, 0), sc = get16(body, 2);
  if (fc > IC_MAX_VERSIONS || sc > IC_MAX_VERSIONS || len < ICMSG_HDR + 8 + 4 * (fc + sc) || len < ICMSG_HDR + 16) return HV_E_FAIL;
  const uint16_t (*services)[2] = ic->service == IC_HEARTBEAT ? heartbeat_versions : shutdown_versions;
  int ok = pick(frameworks, body + 8, fc, ic->framework) && pick(services, body + 8 + 4 * fc, sc, ic->version);
  /* The answer lists one framework and one service version (none if nothing matched). */
  put16(body, 0, ok);
  put16(body, 2, ok);
  if (ok) {
    put16(body, 8, ic->framework[0]);
    put16(body, 10, ic->framework[1]);
    put16(body, 12, ic->version[0]);
    put16(body, 14, ic->version[1]);
  }
  put16(m, IC_SIZE, 0x10);
  ic->negotiated = ok;
  if (ok) rt_printf("%s: negotiated framework %u.%u, service %u.%u\n", ic->name, ic->framework[0], ic->framework[1], ic->version[0], ic->version[1]);
  else rt_printf("%s: no common version\n", ic->name);
  return HV_S_OK;
}

static uint32_t heartbeat(struct ic_state *ic, uint8_t *m, uint32_t len) {
  if (len < ICMSG_HDR + 8) return HV_E_FAIL;
  uint64_t seq = get64(m, ICMSG_HDR);
  put64(m, ICMSG_HDR, seq + 1);
  ic->heartbeats++;
  ic->last_seq = seq;
  rt_printf("heartbeat: sequence %lu, answered %lu\n", seq, seq + 1);
  return HV_S_OK;
}

static uint32_t shutdown(struct ic_state *ic, uint8_t *m, uint32_t len) {
  if (len < ICMSG_HDR + 12) return HV_E_FAIL;
  uint32_t reason = get32(m, ICMSG_HDR), flags = get32(m, ICMSG_HDR + 8);
  const char *kind = flags & 4 ? "hibernate" : flags & 2 ? "reboot" : "poweroff";
  rt_printf("shutdown: %s requested (flags 0x%x, reason 0x%x)\n", kind, flags, reason);
  if (flags & 4) return HV_E_FAIL; /* no hibernation here, as Linux without a swap device */
  ic->shutdowns++;
  ic->shutdown_flags = flags;
  return HV_S_OK;
}

int ic_answer(struct ic_state *ic, uint8_t *m, uint32_t len) {
  if (len < ICMSG_HDR) return -1;
  uint32_t type = get16(m, IC_TYPE), status;
  if (type == ICMSGTYPE_NEGOTIATE) status = negotiate(ic, m, len);
  else if (!ic->negotiated || type != (uint32_t)ic->service) status = HV_E_FAIL;
  else if (type == IC_HEARTBEAT) status = heartbeat(ic, m, len);
  else status = shutdown(ic, m, len);
  put32(m, IC_STATUS, status);
  m[IC_FLAGS] = ICMSGHDRFLAG_TRANSACTION | ICMSGHDRFLAG_RESPONSE;
  return 0;
}
