/**
 * A simulated partition with a NIC: guest memory, @hvemu/synic's HyperV with the SynIC on, the
 * hypercall dispatcher, a VmbusHost, a netvsp NIC on one port of an in-process pair (the test
 * holds the other), and the TypeScript guest: VMBus client + netvsc client.
 */
import { MemoryLogger } from '@hvemu/common';
import type { GuestMemory } from '@hvemu/memory';
import { attachDevice, BumpPageAllocator, type AttachedDevice, type VmbusClient, type VmbusHost } from '@hvemu/vmbus';
import { createSimulatedVmbus } from '@hvemu/vmbus/testing';
import { createPortPair, NetvspDevice, type NetBackend, type NetBackendSink, type NetvspOptions, type PairPort } from '@hvemu/net';
import { NetvscClient, type NetvscClientOptions } from '@hvemu/net/testing';

export const GUEST_MAC = Uint8Array.from([0x00, 0x15, 0x5d, 0x12, 0x34, 0x56]);
export const PEER_MAC = Uint8Array.from([0x02, 0x00, 0x00, 0x00, 0x00, 0x01]);

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
  const ramMiB = options.ramMiB ?? 32;
  const pages = new BumpPageAllocator(0x100, (ramMiB << 8) - 0x100);
  // Rings and the NIC's buffers share one allocator: the netvsc client takes its receive and send buffers from it.
  const {
    memory,
    host,
    client: vmbus,
    logger: simLogger,
  } = createSimulatedVmbus({ ram: ramMiB << 20, logger: new MemoryLogger(), ringPages: pages });
  const logger = simLogger as MemoryLogger;
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
