/**
 * A NIC on a simulated partition, for testing a network backend (or netvsp itself) without a
 * VM: guest memory, the SynIC and hypercall dispatcher, a VmbusHost with a netvsp NIC on the
 * backend under test, and the TypeScript netvsc guest on the other side of the VMBus.
 *
 *     const bed = await createNicTestbed({ backend: myBackend });
 *     await bed.guest.connect();
 *     bed.guest.send(frame);  // reaches myBackend.send()
 *
 * Without a backend, the NIC gets one port of an in-process pair and the test holds the other
 * (`peer`, with what it heard in `peerSink`).
 */
import { execFileSync } from 'node:child_process';
import { MemoryLogger } from '@hvemu/common';
import type { GuestMemory } from '@hvemu/memory';
import { attachDevice, BumpPageAllocator, type AttachedDevice, type VmbusClient, type VmbusHost } from '@hvemu/vmbus';
import { createSimulatedVmbus } from '@hvemu/vmbus/testing';
import type { NetBackend, NetBackendSink } from '../backend/backend.js';
import { createPortPair, type PairPort } from '../backend/pair.js';
import { tapUnavailableReason } from '../backend/tap.js';
import { NetvspDevice, type NetvspOptions } from '../netvsp.js';
import { NetvscClient, type NetvscClientOptions } from './client.js';

/** The guest's MAC in a testbed unless the options give another. */
export const TESTBED_GUEST_MAC = Uint8Array.from([0x00, 0x15, 0x5d, 0x12, 0x34, 0x56]);

/** What the test's end of the in-process pair heard, and a switch to stop taking frames. */
export class PeerSink implements NetBackendSink {
  readonly frames: Uint8Array[] = [];
  /** False: refuse frames (backpressure towards the NIC) until set again and the port resumed. */
  accept = true;
  receive(frame: Uint8Array): boolean {
    if (!this.accept) return false;
    this.frames.push(frame.slice());
    return true;
  }
  writable(): void {}
}

export interface NicTestbedOptions {
  /** The backend under test; default: one port of an in-process pair (see `peer`). */
  backend?: NetBackend;
  /** NetvspDevice options (mtu, maxQueues, ...); the MAC defaults to TESTBED_GUEST_MAC. */
  nic?: Partial<NetvspOptions>;
  /** NetvscClient options (buffer sizes, ring pages, mtu, onFrame, ...). */
  guest?: Partial<NetvscClientOptions>;
  /** Frames the in-process pair queues each way (default 64). */
  pairCapacity?: number;
  /** Guest RAM in MiB (default 32). */
  ramMiB?: number;
}

export interface NicTestbed {
  memory: GuestMemory;
  host: VmbusHost;
  vmbus: VmbusClient;
  nic: NetvspDevice;
  attached: AttachedDevice;
  /** The guest; call connect() first. */
  guest: NetvscClient;
  /** Where the guest's rings and buffers come from (a second client, after close(), takes its own from it). */
  pages: BumpPageAllocator;
  /** The test's end of the in-process pair (unused when a backend was given). */
  peer: PairPort;
  peerSink: PeerSink;
  logger: MemoryLogger;
}

/** Builds the testbed and connects the VMBus (the netvsc session is the caller's: guest.connect()). */
export async function createNicTestbed(options: NicTestbedOptions = {}): Promise<NicTestbed> {
  const ramMiB = options.ramMiB ?? 32;
  // Rings and the NIC's buffers share one allocator: the netvsc client takes its receive and send buffers from it.
  const pages = new BumpPageAllocator(0x100, (ramMiB << 8) - 0x100);
  const sim = createSimulatedVmbus({ ram: ramMiB << 20, logger: new MemoryLogger(), ringPages: pages });
  const logger = sim.logger as MemoryLogger;
  const [port, peer] = createPortPair({ capacity: options.pairCapacity ?? 64 });
  const nic = new NetvspDevice({ backend: options.backend ?? port, mac: TESTBED_GUEST_MAC, logger, ...options.nic });
  const attached = attachDevice(sim.host, nic, { logger });
  const peerSink = new PeerSink();
  peer.attach(peerSink);
  await sim.client.connect();
  await sim.client.requestOffers();
  const guest = new NetvscClient({ vmbus: sim.client, memory: sim.memory, pages, relid: attached.channel.relid, ...options.guest });
  return { memory: sim.memory, host: sim.host, vmbus: sim.client, nic, attached, guest, pages, peer, peerSink, logger };
}

/**
 * Why tests that make their own network namespace and TAP (with iproute2's `ip`) cannot run
 * here, or null: no usable /dev/net/tun or CAP_NET_ADMIN, or no `ip` command. Such tests skip
 * with this reason instead of passing without asserting.
 */
export function tapTestUnavailableReason(): string | null {
  const tap = tapUnavailableReason();
  if (tap) return tap;
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
    return null;
  } catch {
    return 'the ip command (iproute2) is missing';
  }
}
