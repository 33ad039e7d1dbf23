/**
 * A simulated partition for VMBus tests: guest memory, @hvemu/synic's HyperV with the SynIC
 * enabled on every VP, the HypercallDispatcher, a VmbusHost, and the TypeScript guest client
 * posting with HvPostMessage through the dispatcher and reading real SIMP slots.
 */
import { HV_X64_MSR_EOM, HV_X64_MSR_SCONTROL, HV_X64_MSR_SIEFP, HV_X64_MSR_SIMP, HV_X64_MSR_SINT0 } from '@hvemu/hvdef';
import { ManualClock, MemoryLogger } from '@hvemu/common';
import { GuestMemory } from '@hvemu/memory';
import { HyperV } from '@hvemu/synic';
import { HypercallDispatcher } from '@hvemu/hypercalls';
import { BumpPageAllocator, VmbusClient, VmbusHost, simpTransport } from '@hvemu/vmbus';

export const VPS = 2;
export const SIMP = [0x1000, 0x3000];
export const SIEFP = [0x2000, 0x4000];
export const INPUT_PAGE = 0x5000;
export const VMBUS_VECTOR = 0xf3n;
export const HEARTBEAT = '57164f39-9115-4e78-ab55-382f3bd5422d';
export const SHUTDOWN = '0e0b6031-5213-4934-818b-38d90ced39db';
export const NET = 'f8615163-df3e-46c5-913f-f2d2f965ed0e';

export function partition(
  options: { maxVersion?: number; waitForAnswers?: boolean; queueLimit?: number; maxBacklog?: number; hidePostReady?: boolean } = {},
) {
  const memory = GuestMemory.createShared(8 << 20);
  const interrupts: string[] = [];
  const logger = new MemoryLogger();
  const hv = new HyperV({
    memory,
    vpCount: VPS,
    clock: new ManualClock(),
    queueLimit: options.queueLimit,
    sink: { raise: (vp, vector) => interrupts.push(`${vp}:${vector}`) },
  });
  const dispatcher = new HypercallDispatcher({ memory, logger });
  // A port that cannot say when it is ready again (as a minimal third-party port would be).
  const synic = options.hidePostReady ? { postMessage: hv.postMessage.bind(hv), signalEvent: hv.signalEvent.bind(hv) } : hv;
  const host = new VmbusHost({
    memory,
    synic,
    connections: dispatcher.connections,
    vpCount: VPS,
    logger,
    maxVersion: options.maxVersion,
    maxBacklog: options.maxBacklog,
  });
  // The guest enables the SynIC on each VP: SIMP, SIEFP, SINT2 unmasked on the VMBus vector.
  hv.writeMsr(0, 0x40000000, 0x8100n); // GUEST_OS_ID
  for (let vp = 0; vp < VPS; vp++) {
    hv.writeMsr(vp, HV_X64_MSR_SIMP, BigInt(SIMP[vp]) | 1n);
    hv.writeMsr(vp, HV_X64_MSR_SIEFP, BigInt(SIEFP[vp]) | 1n);
    hv.writeMsr(vp, HV_X64_MSR_SINT0 + 2, VMBUS_VECTOR);
    hv.writeMsr(vp, HV_X64_MSR_SCONTROL, 1n);
  }
  let waits = 0;
  const transport = simpTransport({
    memory,
    vp: 0,
    simpGpa: SIMP[0],
    inputPageGpa: INPUT_PAGE,
    hypercall: (vp, rcx, rdx, r8) => dispatcher.dispatch(vp, { rcx, rdx, r8 }),
    writeEom: (vp) => hv.writeMsr(vp, HV_X64_MSR_EOM, 0n),
    // With devices that answer later (an async open): give the event loop a turn, a bounded number of times.
    wait: options.waitForAnswers
      ? async () => {
          if (++waits > 10_000) throw new Error('the host never answered');
          await new Promise((r) => setImmediate(r));
        }
      : undefined,
  });
  const client = new VmbusClient({ transport, memory, pages: new BumpPageAllocator(0x100, 1800), vp: 0 });
  /** Test-and-clear of the relid's bit in a VP's SIEFP, SINT 2 block (what Linux vmbus_chan_sched scans). */
  const takeEvent = (vp: number, relid: number): boolean => {
    const words = memory.u32Array(SIEFP[vp] + 2 * 256, 64);
    const bit = 1 << (relid & 31);
    return (Atomics.and(words, relid >>> 5, ~bit) & bit) !== 0;
  };
  return { memory, hv, dispatcher, host, client, transport, interrupts, logger, takeEvent };
}
