/* Hypercalls and the SynIC, as Linux hv_common/hv.c set them up on the CPU that runs VMBus. */
#include "vmbus.h"

static uint8_t hypercall_page[PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));
static uint8_t simp[PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));
static uint8_t siefp[PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));
static uint8_t input_page[PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));
static void *hypercall_ptr = hypercall_page;
static volatile uint32_t interrupts;
static uint32_t sleeps;

/* Every wait in this guest is bounded: a host that stops answering fails the run, not hangs it. */
#define MAX_SLEEPS 20000

static void on_vmbus_interrupt(struct isr_frame *f) {
  (void)f;
  interrupts++;
  apic_eoi();
}

static uint64_t hypercall(uint64_t control, uint64_t in, uint64_t out) { return hv_hypercall(&hypercall_ptr, control, in, out); }

void hv_init(void) {
  /* Linux writes the guest OS id before the hypercall page: the page is refused without it. */
  wrmsr(HV_X64_MSR_GUEST_OS_ID, 0x8100ULL << 48);
  wrmsr(HV_X64_MSR_HYPERCALL, (uint64_t)hypercall_page | 1);
  ASSERT(rdmsr(HV_X64_MSR_HYPERCALL) & 1);
  rt_set_handler(VMBUS_VECTOR, on_vmbus_interrupt);
  wrmsr(HV_X64_MSR_SIMP, (uint64_t)simp | 1);
  wrmsr(HV_X64_MSR_SIEFP, (uint64_t)siefp | 1);
  wrmsr(HV_X64_MSR_SINT0 + VMBUS_SINT, VMBUS_VECTOR); /* unmasked, no auto-EOI */
  wrmsr(HV_X64_MSR_SCONTROL, 1);
}

uint32_t hv_vp_index(void) { return (uint32_t)rdmsr(HV_X64_MSR_VP_INDEX); }

uint32_t hv_post(uint32_t connection_id, const void *msg, uint32_t len) {
  ASSERT(len <= HV_MESSAGE_PAYLOAD);
  put32(input_page, 0, connection_id);
  put32(input_page, 4, 0);
  put32(input_page, 8, 1); /* hv_message type: Linux always posts 1 */
  put32(input_page, 12, len);
  memcpy(input_page + 16, msg, len);
  return hypercall(HVCALL_POST_MESSAGE, (uint64_t)input_page, 0) & 0xffff;
}

uint32_t hv_signal(uint32_t connection_id) {
  return hypercall(HVCALL_SIGNAL_EVENT | HV_HYPERCALL_FAST, connection_id, 0) & 0xffff;
}

int hv_take_message(uint8_t *out) {
  volatile uint8_t *slot = simp + VMBUS_SINT * 256;
  if (get32((const void *)slot, 0) == 0) return -1;
  mb();
  uint32_t len = slot[4];
  uint8_t flags = slot[5];
  /* payload_size is the host's word: a message claiming more than a slot holds is dropped
   * (returned empty, which the caller rejects), as vmbus_on_msg_dpc does. */
  if (len > HV_MESSAGE_PAYLOAD) len = 0;
  memcpy(out, (const void *)(slot + 16), len);
  /* Free the slot, then EOM if the host has more queued (vmbus_signal_eom). */
  put32((void *)slot, 0, 0);
  mb();
  if (flags & 1) wrmsr(HV_X64_MSR_EOM, 0);
  return (int)len;
}

int hv_take_event(uint32_t relid) {
  if (relid == 0 || relid > MAX_RELID) return 0;
  volatile uint32_t *word = (volatile uint32_t *)(siefp + VMBUS_SINT * 256) + relid / 32;
  uint32_t bit = 1u << (relid % 32);
  if ((*word & bit) == 0) return 0;
  /* The host sets bits concurrently: clear ours with a locked instruction. */
  __asm__ volatile("lock andl %1, %0" : "+m"(*word) : "r"(~bit) : "memory");
  return 1;
}

void hv_wait(void) {
  ASSERT(++sleeps < MAX_SLEEPS);
  sti_hlt();
  cli();
}
