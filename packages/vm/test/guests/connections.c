/*
 * hyperv_connections-like, on both vCPUs: HvPostMessage to the host's message connection
 * (7 + cpu) is echoed into this vCPU's SINT 2 slot; HvSignalEvent on the event connection
 * (9 + cpu) makes the host set flag 9 + cpu in this vCPU's SINT 2 and interrupt, once per
 * 0 -> 1 transition. Fast signals with flag 0 go through the doorbell (no exit); slow ones,
 * unknown connections and a connection removed meanwhile go through the exit path, and each
 * path answers with the right status.
 */
#include "hv.h"

#define SINT 2
#define VECTOR 0x52
#define HVCALL_POST_MESSAGE 0x5c
#define HVCALL_SIGNAL_EVENT 0x5d
#define FAST (1ULL << 16)
#define STATUS(x) ((x) & 0xffff)
#define INVALID_CONNECTION_ID 0x12

static uint8_t simp[2][4096] __attribute__((aligned(4096)));
static uint8_t siefp[2][4096] __attribute__((aligned(4096)));
static uint8_t input[2][4096] __attribute__((aligned(4096)));
static volatile int hits[2];

static void on_sint(struct isr_frame *f) {
  (void)f;
  hits[apic_id() & 1]++;
  apic_eoi();
}

static uint64_t post(int cpu, uint32_t connection, uint8_t tag) {
  uint8_t *in = input[cpu];
  memset(in, 0, 32);
  *(uint32_t *)(in + 0) = connection;
  *(uint32_t *)(in + 8) = 1;
  *(uint32_t *)(in + 12) = 2;
  in[16] = tag;
  in[17] = (uint8_t)cpu;
  return STATUS(hypercall(HVCALL_POST_MESSAGE, (uint64_t)in, 0));
}

static uint64_t signal_slow(int cpu, uint32_t connection) {
  *(uint64_t *)input[cpu] = connection; /* flag number 0, reserved 0 */
  return STATUS(hypercall(HVCALL_SIGNAL_EVENT, (uint64_t)input[cpu], 0));
}

static uint64_t signal_fast(uint32_t connection, uint16_t flag) {
  return STATUS(hypercall(HVCALL_SIGNAL_EVENT | FAST, connection | ((uint64_t)flag << 32), 0));
}

static int flag_set(int cpu, int flag) { return (siefp[cpu][SINT * 256 + flag / 8] >> (flag % 8)) & 1; }
static void flag_clear(int cpu, int flag) { siefp[cpu][SINT * 256 + flag / 8] &= (uint8_t)~(1u << (flag % 8)); }

int guest_main(int cpu) {
  uint32_t event_conn = 9 + (uint32_t)cpu;
  rt_set_handler(VECTOR, on_sint);
  if (cpu == 0) hv_enable_hypercalls();
  wrmsr(HV_X64_MSR_SIMP, (uint64_t)simp[cpu] | 1);
  wrmsr(HV_X64_MSR_SIEFP, (uint64_t)siefp[cpu] | 1);
  wrmsr(HV_X64_MSR_SINT0 + SINT, VECTOR);
  wrmsr(HV_X64_MSR_SCONTROL, 1);
  barrier(1);

  /* Messages: posted, echoed back to this vCPU, several times (slot freed in between). */
  for (int i = 0; i < 4; i++) {
    ASSERT(post(cpu, 7 + (uint32_t)cpu, (uint8_t)(0x40 + i)) == 0);
    ASSERT(wait_count(&hits[cpu], i + 1));
    struct hv_message *m = (struct hv_message *)(simp[cpu] + SINT * 256);
    ASSERT(m->type == 1 && m->size == 2 && m->payload[0] == 0x40 + i && m->payload[1] == cpu);
    hv_free_slot(m);
  }
  ASSERT(post(cpu, 0x77, 1) == INVALID_CONNECTION_ID);

  /* Events through the doorbell (fast, flag 0): no exit; the host answers asynchronously. */
  int n = hits[cpu];
  ASSERT(signal_fast(event_conn, 0) == 0);
  ASSERT(wait_count(&hits[cpu], n + 1));
  ASSERT(flag_set(cpu, (int)event_conn));
  /* Again with the flag still set: the host sets it again, no 0 -> 1, no interrupt. Through
   * the exit path, so the host has answered by the time the call returns. */
  ASSERT(signal_slow(cpu, event_conn) == 0);
  for (volatile int i = 0; i < 3000; i++) {}
  ASSERT(hits[cpu] == n + 1);
  flag_clear(cpu, (int)event_conn);
  ASSERT(signal_slow(cpu, event_conn) == 0);
  ASSERT(wait_count(&hits[cpu], n + 2));
  flag_clear(cpu, (int)event_conn);
  /* Fast with a flag number: not the doorbell's case, so the exit path serves it. */
  ASSERT(signal_fast(event_conn, 1) == 0);
  ASSERT(wait_count(&hits[cpu], n + 3));
  flag_clear(cpu, (int)event_conn);

  /* Unknown connections: the same status on both paths. */
  ASSERT(signal_fast(0x55 + (uint32_t)cpu, 0) == INVALID_CONNECTION_ID);
  ASSERT(signal_slow(cpu, 0x55) == INVALID_CONNECTION_ID);
  ASSERT(signal_fast(0x1000000, 0) == 5); /* connection id beyond 24 bits: invalid parameter */
  barrier(2);

  /* A connection removed while the guest runs: its doorbell is gone, the exit path says so. */
  if (cpu == 0) {
    ASSERT(signal_fast(11, 0) == 0);
    request(REQ_UNREGISTER, 0, 0, 11);
    ASSERT(signal_fast(11, 0) == INVALID_CONNECTION_ID);
  }
  return 0;
}
