/**
 * SynIC and hypercall benchmarks (issue #4), on this machine's KVM, one guest, one run:
 *
 * 1. host->guest message delivery rate: the host queues bursts of messages on SINT 2; the
 *    guest's handler frees the slot and writes EOM (msg_pending), and that EOM exit delivers
 *    the next one: messages per second with the TLFS slot protocol end to end.
 * 2. event signal latency: host signalEvent (flag set + MSI) until the guest's handler has run
 *    and told the host (one port exit): a round trip, µs.
 * 3. guest->host fast HvSignalEvent through the hypercall page: flag 0 rings the ioeventfd
 *    doorbell (no user-space exit), flag 1 takes the exit path to the dispatcher; µs per call
 *    and the ratio, measured back to back in the same guest.
 * Where /dev/kvm is unusable, the suite says so and returns only that fact.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HV_STATUS_SUCCESS } from '@hvemu/hvdef';
import { KvmPartition } from '@hvemu/accel';
import { TestPlatform, buildLongModeGuest, enterLongMode, loadElf64 } from '@hvemu/platform';
import { attachHyperV, enlightenedPartitionOptions } from '@hvemu/vm';

type Figures = Record<string, number | string>;

const BURST = 200;
const BURSTS = 10;
const LATENCY_ROUNDS = 1000;
const SIGNALS = 2000;
const REQUEST_PORT = 0xe0; // 1: post a burst, 2: signal an event
const ACK_PORT = 0xe3; // the guest's event handler ran
const MARK_PORT = 0xe1; // phase marks
const SIGNAL_CONNECTION = 20;

const GUEST = String.raw`
#include "rt.h"
#define SINT 2
#define VECTOR 0x52
static uint8_t hcall_page[4096] __attribute__((aligned(4096)));
static uint8_t simp[4096] __attribute__((aligned(4096)));
static uint8_t siefp[4096] __attribute__((aligned(4096)));
static void *hcall_ptr = hcall_page;
static volatile int messages, events;
static void on_sint(struct isr_frame *f) {
  (void)f;
  volatile uint32_t *slot = (volatile uint32_t *)(simp + SINT * 256);
  if (slot[0]) {
    messages++;
    slot[0] = 0;
    __asm__ volatile("mfence" ::: "memory");
    if ((slot[1] >> 8) & 1) wrmsr(0x40000084, 0);
  }
  if (siefp[SINT * 256]) {
    siefp[SINT * 256] = 0;
    events++;
    outb(${ACK_PORT}, 1);
  }
  apic_eoi();
}
static uint64_t hypercall(uint64_t control, uint64_t in) {
  uint64_t status;
  register uint64_t r8 __asm__("r8") = 0;
  __asm__ volatile("call *%[page]" : "=a"(status), "+c"(control), "+d"(in), "+r"(r8) : [page] "m"(hcall_ptr) : "memory", "cc", "r9", "r10", "r11");
  return status;
}
/* sti;hlt, not a pause loop: this KVM notices an MSI for a spinning vCPU only at its next tick (~1 ms). */
static void wait_for(volatile int *c, int n) { while (*c < n) sti_hlt(); cli(); }
int guest_main(int cpu) {
  (void)cpu;
  rt_set_handler(VECTOR, on_sint);
  wrmsr(0x40000000, 0x8100ULL << 48);
  wrmsr(0x40000001, (uint64_t)hcall_page | 1);
  wrmsr(0x40000083, (uint64_t)simp | 1);
  wrmsr(0x40000082, (uint64_t)siefp | 1);
  wrmsr(0x40000090 + SINT, VECTOR);
  wrmsr(0x40000080, 1);
  outb(${MARK_PORT}, 1);
  for (int b = 1; b <= ${BURSTS}; b++) { outb(${REQUEST_PORT}, 1); wait_for(&messages, b * ${BURST}); }
  outb(${MARK_PORT}, 2);
  for (int i = 1; i <= ${LATENCY_ROUNDS}; i++) { outb(${REQUEST_PORT}, 2); wait_for(&events, i); }
  outb(${MARK_PORT}, 3);
  for (int i = 0; i < ${SIGNALS}; i++) ASSERT((hypercall(0x1005d, ${SIGNAL_CONNECTION}) & 0xffff) == 0);
  outb(${MARK_PORT}, 4);
  for (int i = 0; i < ${SIGNALS}; i++) ASSERT((hypercall(0x1005d, ${SIGNAL_CONNECTION} | (1ULL << 32)) & 0xffff) == 0);
  outb(${MARK_PORT}, 5);
  return 0;
}
`;

export async function benchSynic(): Promise<Figures> {
  const probe = KvmPartition.probe();
  if (!probe.ok) return { synic_skipped: `KVM unusable: ${probe.reason}` };
  const dir = mkdtempSync(join(tmpdir(), 'hvemu-bench-synic-'));
  const source = join(dir, 'synic-bench.c');
  writeFileSync(source, GUEST);
  const image = buildLongModeGuest(source);
  const partition = KvmPartition.create({ memory: [{ gpa: 0, size: 16 << 20 }], ...enlightenedPartitionOptions() });
  const platform = new TestPlatform(partition);
  const hv = attachHyperV(partition);
  const marks: bigint[] = [];
  const latencies: bigint[] = [];
  let signalledAt = 0n;
  let signals = 0;
  hv.hypercalls.connections.registerEvent(SIGNAL_CONNECTION, { onSignal: () => (signals++, HV_STATUS_SUCCESS) });
  partition.addIoDevice({ port: MARK_PORT, count: 1, write: () => void marks.push(process.hrtime.bigint()) });
  partition.addIoDevice({ port: ACK_PORT, count: 1, write: () => void latencies.push(process.hrtime.bigint() - signalledAt) });
  partition.addIoDevice({
    port: REQUEST_PORT,
    count: 1,
    write: (_p, _s, op) => {
      if (op === 1) for (let i = 0; i < BURST; i++) hv.hyperv.postMessage(0, 2, { type: 1, payload: Uint8Array.of(i) });
      else {
        signalledAt = process.hrtime.bigint();
        hv.hyperv.signalEvent(0, 2, 1);
      }
    },
  });
  try {
    const { entry } = loadElf64(partition.memory, image);
    enterLongMode(partition, entry);
    await partition.run();
    hv.drainDoorbells();
    if (platform.debugExit.codes.get(0) !== 0 || marks.length !== 5)
      throw new Error(`synic bench guest failed: ${platform.assertionSummary()}`);
  } finally {
    hv.dispose();
    partition.close();
  }
  const us = (a: number, b: number, n: number): number => Number(marks[b] - marks[a]) / 1000 / n;
  latencies.sort((a, b) => (a < b ? -1 : 1));
  const doorbellUs = us(2, 3, SIGNALS);
  const exitUs = us(3, 4, SIGNALS);
  const figures: Figures = {
    synic_message_rate_per_s: Math.round((BURST * BURSTS) / (Number(marks[1] - marks[0]) / 1e9)),
    synic_event_latency_us_median: Number(latencies[latencies.length >> 1]) / 1000,
    synic_event_latency_us_p90: Number(latencies[Math.floor(latencies.length * 0.9)]) / 1000,
    synic_signal_doorbell_us: round(doorbellUs),
    synic_signal_exit_us: round(exitUs),
    synic_signal_exit_over_doorbell: round(exitUs / doorbellUs),
    synic_signal_doorbell_writes: Number(hv.doorbell?.doorbellWrites ?? 0n),
    synic_signal_handler_calls: signals,
  };
  console.log('SynIC and hypercalls (issue #4), KVM:');
  console.log(`  host->guest messages (EOM-driven):      ${figures.synic_message_rate_per_s} /s`);
  console.log(
    `  event signal -> guest handler -> ack:   ${figures.synic_event_latency_us_median} µs median, ${figures.synic_event_latency_us_p90} µs p90`,
  );
  console.log(`  guest HvSignalEvent, doorbell:          ${figures.synic_signal_doorbell_us} µs/call`);
  console.log(
    `  guest HvSignalEvent, exit path:         ${figures.synic_signal_exit_us} µs/call  (x${figures.synic_signal_exit_over_doorbell})`,
  );
  return figures;
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}
