/**
 * A simulated partition with a NIC: guest memory, @hvemu/synic's HyperV with the SynIC on, the
 * hypercall dispatcher, a VmbusHost, a netvsp NIC on one port of an in-process pair (the test
 * holds the other), and the TypeScript guest: VMBus client + netvsc client.
 */
import { HV_X64_MSR_SCONTROL, HV_X64_MSR_SIEFP, HV_X64_MSR_SIMP, HV_X64_MSR_SINT0, HV_X64_MSR_EOM } from '@hvemu/hvdef';
import { ManualClock, MemoryLogger } from '@hvemu/common';
import { GuestMemory } from '@hvemu/memory';
import { HyperV } from '@hvemu/synic';
import { HypercallDispatcher } from '@hvemu/hypercalls';
import { attachDevice, BumpPageAllocator, VmbusClient, VmbusHost, simpTransport, type AttachedDevice } from '@hvemu/vmbus';
import { createPortPair, NetvspDevice, type NetBackend, type NetBackendSink, type NetvspOptions, type PairPort } from '@hvemu/net';
import { NetvscClient, type NetvscClientOptions } from '@hvemu/net/testing';

export const GUEST_MAC = Uint8Array.from([0x00, 0x15, 0x5d, 0x12, 0x34, 0x56]);
export const PEER_MAC = Uint8Array.from([0x02, 0x00, 0x00, 0x00, 0x00, 0x01]);
const SIMP = 0x1000;
const SIEFP = 0x2000;
const INPUT_PAGE = 0x5000;

/** What the test's end of the pair heard, and a switch to stop taking frames. */
export class PeerSink implements NetBackendSink {
  readonly frames: Uint8Array[] = [];
  accept = true;
  receive(frame: Uint8Array): boolean {
    if (!this.accept) return false;
    this.frames.push(frame.slice());
    return true;
  }
  writable(): void {}
}

export interface NicSim {
  memory: GuestMemory;
  host: VmbusHost;
  vmbus: VmbusClient;
  nic: NetvspDevice;
  attached: AttachedDevice;
  peer: PairPort;
  peerSink: PeerSink;
  guest: NetvscClient;
  logger: MemoryLogger;
}

export async function nicSim(
  options: {
    nic?: Partial<NetvspOptions>;
    guest?: Partial<NetvscClientOptions>;
    capacity?: number;
    backend?: NetBackend;
    ramMiB?: number;
  } = {},
): Promise<NicSim> {
  const memory = GuestMemory.createShared((options.ramMiB ?? 32) << 20);
  const logger = new MemoryLogger();
  const hv = new HyperV({ memory, vpCount: 1, clock: new ManualClock(), sink: { raise: () => {} } });
  const dispatcher = new HypercallDispatcher({ memory, logger });
  const host = new VmbusHost({ memory, synic: hv, connections: dispatcher.connections, vpCount: 1, logger });
  hv.writeMsr(0, 0x40000000, 0x8100n);
  hv.writeMsr(0, HV_X64_MSR_SIMP, BigInt(SIMP) | 1n);
  hv.writeMsr(0, HV_X64_MSR_SIEFP, BigInt(SIEFP) | 1n);
  hv.writeMsr(0, HV_X64_MSR_SINT0 + 2, 0xf3n);
  hv.writeMsr(0, HV_X64_MSR_SCONTROL, 1n);
  let waits = 0;
  const transport = simpTransport({
    memory,
    vp: 0,
    simpGpa: SIMP,
    inputPageGpa: INPUT_PAGE,
    hypercall: (vp, rcx, rdx, r8) => dispatcher.dispatch(vp, { rcx, rdx, r8 }),
    writeEom: (vp) => hv.writeMsr(vp, HV_X64_MSR_EOM, 0n),
    wait: async () => {
      if (++waits > 100_000) throw new Error('the host never answered');
      await new Promise((r) => setImmediate(r));
    },
  });
  const pages = new BumpPageAllocator(0x100, ((options.ramMiB ?? 32) << 8) - 0x100);
  const vmbus = new VmbusClient({ transport, memory, pages, vp: 0 });
  const [port, peer] = createPortPair({ capacity: options.capacity ?? 64 });
  const nic = new NetvspDevice({ backend: options.backend ?? port, mac: GUEST_MAC, logger, ...options.nic });
  const attached = attachDevice(host, nic, { logger });
  const peerSink = new PeerSink();
  peer.attach(peerSink);
  await vmbus.connect();
  await vmbus.requestOffers();
  const guest = new NetvscClient({ vmbus, memory, pages, relid: attached.channel.relid, ...options.guest });
  return { memory, host, vmbus, nic, attached, peer, peerSink, guest, logger };
}

export const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a).equals(Buffer.from(b));
