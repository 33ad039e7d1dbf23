/**
 * The tests' NIC: @hvemu/net/testing's testbed (a simulated partition, netvsp on one port of an
 * in-process pair, the TypeScript netvsc guest), under the names these tests use.
 */
import type { NetBackend, NetvspOptions } from '@hvemu/net';
import { createNicTestbed, TESTBED_GUEST_MAC, type NetvscClientOptions, type NicTestbed } from '@hvemu/net/testing';

export { PeerSink } from '@hvemu/net/testing';

export const GUEST_MAC = TESTBED_GUEST_MAC;
export const PEER_MAC = Uint8Array.from([0x02, 0x00, 0x00, 0x00, 0x00, 0x01]);

export type NicSim = NicTestbed;

export function nicSim(
  options: {
    nic?: Partial<NetvspOptions>;
    guest?: Partial<NetvscClientOptions>;
    capacity?: number;
    backend?: NetBackend;
    ramMiB?: number;
  } = {},
): Promise<NicSim> {
  return createNicTestbed({ ...options, pairCapacity: options.capacity });
}

export const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a).equals(Buffer.from(b));
