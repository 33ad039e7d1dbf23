/**
 * A simulated partition to run a VSP against, with no hypervisor: guest RAM in a
 * SharedArrayBuffer, @hvemu/synic's HyperV with vCPU 0's SynIC set up the way Linux does it
 * (SIMP, SIEFP, SINT2 on vector 0xF3, SCONTROL), @hvemu/hypercalls' dispatcher, a VmbusHost,
 * and the TypeScript VMBus client talking to it through real HvPostMessage / HvSignalEvent
 * hypercalls and the SIMP slot. Attach your device to `host`, connect `client`, and drive it
 * with your own guest-side client (as @hvemu/storage/testing and @hvemu/net/testing do).
 */
import { ManualClock, MemoryLogger, type Clock, type Logger } from '@hvemu/common';
import {
  HV_X64_MSR_EOM,
  HV_X64_MSR_GUEST_OS_ID,
  HV_X64_MSR_SCONTROL,
  HV_X64_MSR_SIEFP,
  HV_X64_MSR_SIMP,
  HV_X64_MSR_SINT0,
} from '@hvemu/hvdef';
import { HypercallDispatcher } from '@hvemu/hypercalls';
import { GuestMemory, type RamRegionSpec } from '@hvemu/memory';
import { HyperV } from '@hvemu/synic';
import { BumpPageAllocator, simpTransport, VmbusClient, type PageAllocator } from '../client/index.js';
import { VmbusHost } from '../server/index.js';

/** Where the simulated guest keeps its SynIC pages and hypercall input page (below the default ring pages at 0x100000). */
const SIMP_GPA = 0x1000;
const SIEFP_GPA = 0x2000;
const INPUT_PAGE_GPA = 0x5000;
/** The guest OS id Linux writes (any non-zero value enables the hypercall interface). */
const GUEST_OS_ID = 0x8100n;
/** Linux's VMBus SINT and vector. */
const VMBUS_SINT = 2;
const VMBUS_VECTOR = 0xf3n;

export interface SimulatedVmbusOptions {
  /** Guest RAM: bytes from GPA 0 (default 32 MiB) or a region list (e.g. RAM above 4 GiB). */
  ram?: number | readonly RamRegionSpec[];
  vpCount?: number;
  clock?: Clock;
  logger?: Logger;
  /** Pages for the client's ring GPADLs (default: 2000 pages from GPA 0x100000). */
  ringPages?: PageAllocator;
  /** How many event-loop turns the client waits for a host answer before it fails (default 100,000). */
  maxWaits?: number;
}

export interface SimulatedVmbus {
  readonly memory: GuestMemory;
  readonly hyperv: HyperV;
  readonly dispatcher: HypercallDispatcher;
  readonly host: VmbusHost;
  /** The guest's VMBus client (connect() and requestOffers() are the caller's). */
  readonly client: VmbusClient;
  readonly logger: Logger;
}

export function createSimulatedVmbus(options: SimulatedVmbusOptions = {}): SimulatedVmbus {
  const ram = options.ram ?? 32 << 20;
  const memory = GuestMemory.createShared(typeof ram === 'number' ? ram : [...ram]);
  const logger = options.logger ?? new MemoryLogger();
  const vpCount = options.vpCount ?? 1;
  const hyperv = new HyperV({ memory, vpCount, clock: options.clock ?? new ManualClock(), logger, sink: { raise: () => {} } });
  const dispatcher = new HypercallDispatcher({ memory, logger });
  const host = new VmbusHost({ memory, synic: hyperv, connections: dispatcher.connections, vpCount, logger });
  enableSynic(hyperv);
  const maxWaits = options.maxWaits ?? 100_000;
  let waits = 0;
  const transport = simpTransport({
    memory,
    vp: 0,
    simpGpa: SIMP_GPA,
    inputPageGpa: INPUT_PAGE_GPA,
    hypercall: (vp, rcx, rdx, r8) => dispatcher.dispatch(vp, { rcx, rdx, r8 }),
    writeEom: (vp) => hyperv.writeMsr(vp, HV_X64_MSR_EOM, 0n),
    wait: async () => {
      if (++waits > maxWaits) throw new Error(`the simulated host never answered (${maxWaits} event-loop turns)`);
      await new Promise((r) => setImmediate(r));
    },
  });
  const client = new VmbusClient({ transport, memory, pages: options.ringPages ?? new BumpPageAllocator(0x100, 2000), vp: 0 });
  return { memory, hyperv, dispatcher, host, client, logger };
}

/** vCPU 0's SynIC the way Linux's hv_synic_enable_regs leaves it, after its guest OS id. */
function enableSynic(hyperv: HyperV): void {
  hyperv.writeMsr(0, HV_X64_MSR_GUEST_OS_ID, GUEST_OS_ID);
  hyperv.writeMsr(0, HV_X64_MSR_SIMP, BigInt(SIMP_GPA) | 1n);
  hyperv.writeMsr(0, HV_X64_MSR_SIEFP, BigInt(SIEFP_GPA) | 1n);
  hyperv.writeMsr(0, HV_X64_MSR_SINT0 + VMBUS_SINT, VMBUS_VECTOR);
  hyperv.writeMsr(0, HV_X64_MSR_SCONTROL, 1n);
}
