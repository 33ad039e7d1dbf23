/**
 * The smallest simulated VMBus: guest RAM, HyperV with the guest's SynIC already enabled on
 * VP 0 (SIMP, SIEFP, SINT 2 on vector 0xf3), the hypercall dispatcher, a VmbusHost, and the
 * TypeScript guest client posting through the HvPostMessage input page. For protocol tests and
 * benchmarks that want the real path without a full SimulatedVm and its devices.
 */
import {
  HV_X64_MSR_EOM,
  HV_X64_MSR_GUEST_OS_ID,
  HV_X64_MSR_SCONTROL,
  HV_X64_MSR_SIEFP,
  HV_X64_MSR_SIMP,
  HV_X64_MSR_SINT0,
} from '@hvemu/hvdef';
import { ManualClock, MemoryLogger } from '@hvemu/common';
import { GuestMemory } from '@hvemu/memory';
import { HypercallDispatcher } from '@hvemu/hypercalls';
import { HyperV, type SynicObserver } from '@hvemu/synic';
import { BumpPageAllocator, simpTransport, VmbusClient, VmbusHost, type VmbusClientOptions } from '@hvemu/vmbus';

/** Guest-physical pages the bus's guest side uses; pages from 0x10 up are free for GPADLs. */
export const SIM_BUS_LAYOUT = { simp: 0x1000, siefp: 0x2000, input: 0x3000, firstFreePfn: 0x10 } as const;

export interface SimulatedBusOptions {
  ramBytes?: number;
  /** Client settings beyond transport/memory/pages (versions, interrupt page, monitor pages). */
  client?: Omit<VmbusClientOptions, 'transport' | 'memory' | 'pages'>;
  observer?: SynicObserver;
}

export function createSimulatedBus(options: SimulatedBusOptions = {}) {
  const memory = GuestMemory.createShared(options.ramBytes ?? 4 << 20);
  const logger = new MemoryLogger();
  const hyperv = new HyperV({ memory, vpCount: 1, clock: new ManualClock(), sink: { raise: () => {} }, observer: options.observer });
  const dispatcher = new HypercallDispatcher({ memory, logger });
  const host = new VmbusHost({ memory, synic: hyperv, connections: dispatcher.connections, vpCount: 1, logger });
  hyperv.writeMsr(0, HV_X64_MSR_GUEST_OS_ID, 0x8100n);
  hyperv.writeMsr(0, HV_X64_MSR_SIMP, BigInt(SIM_BUS_LAYOUT.simp) | 1n);
  hyperv.writeMsr(0, HV_X64_MSR_SIEFP, BigInt(SIM_BUS_LAYOUT.siefp) | 1n);
  hyperv.writeMsr(0, HV_X64_MSR_SINT0 + 2, 0xf3n);
  hyperv.writeMsr(0, HV_X64_MSR_SCONTROL, 1n);
  const transport = simpTransport({
    memory,
    vp: 0,
    simpGpa: SIM_BUS_LAYOUT.simp,
    inputPageGpa: SIM_BUS_LAYOUT.input,
    hypercall: (vp, rcx, rdx, r8) => dispatcher.dispatch(vp, { rcx, rdx, r8 }),
    writeEom: (vp) => hyperv.writeMsr(vp, HV_X64_MSR_EOM, 0n),
  });
  const freePages = memory.ramSize / 4096 - SIM_BUS_LAYOUT.firstFreePfn;
  const client = new VmbusClient({
    vp: 0,
    ...options.client,
    transport,
    memory,
    pages: new BumpPageAllocator(SIM_BUS_LAYOUT.firstFreePfn, freePages),
  });
  return { memory, logger, hyperv, dispatcher, host, client };
}
