/* An MSI (KVM_SIGNAL_MSI) and an irqfd interrupt wake a halted vCPU; the handler EOIs.
 * EOI is checked functionally: the same vector is delivered a second time, which a LAPIC
 * only does once the first is retired. (This KVM's x2APIC ISR registers read as 0 even inside
 * the handler, so they cannot be asserted on; the host test logs what they said.) */
#include "rt.h"

#define READY_PORT 0x510
#define VEC_MSI 0x40
#define VEC_IRQFD 0x41

static volatile int hits[256];
static volatile int was_in_service[256];

static void handler(struct isr_frame *f) {
  was_in_service[f->vector] = apic_in_service((int)f->vector);
  hits[f->vector]++;
  apic_eoi();
}

static void wait_for(int vector) {
  while (!hits[vector]) sti_hlt();
  cli();
}

int guest_main(int cpu) {
  (void)cpu;
  rt_set_handler(VEC_MSI, handler);
  rt_set_handler(VEC_IRQFD, handler);
  outb(READY_PORT, 1); /* host: inject VEC_MSI in a little while */
  wait_for(VEC_MSI);
  ASSERT(hits[VEC_MSI] == 1);
  outb(READY_PORT, 1); /* again: only deliverable after our EOI */
  while (hits[VEC_MSI] < 2) sti_hlt();
  cli();
  ASSERT(!apic_in_service(VEC_MSI));
  rt_printf("in service inside handler: %d\n", was_in_service[VEC_MSI]);
  outb(READY_PORT, 2); /* host: trigger the irqfd */
  wait_for(VEC_IRQFD);
  ASSERT(hits[VEC_IRQFD] == 1);
  ASSERT(!apic_in_service(VEC_IRQFD));
  return 0;
}
