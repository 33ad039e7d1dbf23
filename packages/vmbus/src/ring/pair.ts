/**
 * A channel's two rings in one GPADL, as the guest lays them out at OPENCHANNEL: pages
 * [0, downstreamPageOffset) are the guest-to-host ring, pages [downstreamPageOffset, n) the
 * host-to-guest ring, each a control page followed by its data area. Host and guest use the
 * same RingReader/RingWriter; only which ring each one reads differs.
 */
import { HostUsageError, type Logger } from '@hvemu/common';
import type { GuestMemory } from '@hvemu/memory';
import { RingReader } from './reader.js';
import { RingBuffer } from './ring-buffer.js';
import { RingWriter, type RingTap } from './writer.js';

export type RingRole = 'host' | 'guest';

export interface RingEndpoint {
  /** Packets from the other side. */
  readonly inbound: RingReader;
  /** Packets to the other side. */
  readonly outbound: RingWriter;
}

export interface RingPairLayout {
  /** The guest-to-host ring (first in the GPADL). */
  readonly guestToHost: RingBuffer;
  /** The host-to-guest ring (at downstreamPageOffset). */
  readonly hostToGuest: RingBuffer;
}

/** Splits a ring GPADL's pages into the two rings; every PFN is bounds-checked. */
export function ringPairFromPages(memory: GuestMemory, pfns: ArrayLike<number>, downstreamPageOffset: number): RingPairLayout {
  const total = pfns.length;
  if (!Number.isInteger(downstreamPageOffset) || downstreamPageOffset < 2 || total - downstreamPageOffset < 2) {
    throw new HostUsageError(`ring split at page ${downstreamPageOffset} of ${total} leaves a ring under 2 pages`);
  }
  return {
    guestToHost: RingBuffer.fromPages(memory, pfns, 0, downstreamPageOffset),
    hostToGuest: RingBuffer.fromPages(memory, pfns, downstreamPageOffset, total - downstreamPageOffset),
  };
}

/**
 * One side's reader and writer over a ring pair. `signalPeer` raises the other side's
 * interrupt; it is called both for "data available" and for "space available".
 */
export function openRingEndpoint(
  layout: RingPairLayout,
  role: RingRole,
  signalPeer: () => void,
  options: { logger?: Logger; name?: string; inboundTap?: RingTap; outboundTap?: RingTap } = {},
): RingEndpoint {
  const [inRing, outRing] = role === 'host' ? [layout.guestToHost, layout.hostToGuest] : [layout.hostToGuest, layout.guestToHost];
  const name = options.name ?? role;
  return {
    inbound: new RingReader(inRing, { signal: signalPeer, logger: options.logger, name: `${name} inbound`, tap: options.inboundTap }),
    outbound: new RingWriter(outRing, { signal: signalPeer, logger: options.logger, name: `${name} outbound`, tap: options.outboundTap }),
  };
}
