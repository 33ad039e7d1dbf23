/**
 * The device-facing Channel: what a VSP sees of one offered channel. Two rings while open (the
 * host reads the guest-to-host ring and writes the host-to-guest one), a signal in each
 * direction, views of the channel's other GPADLs, and events through its ChannelHandler.
 * Nothing device-specific lives here.
 */
import { HostUsageError } from '@hvemu/common';
import type { GuestBuffer } from '@hvemu/memory';
import type { RingEndpoint } from '../ring/pair.js';
import type { CloseReason } from './actions.js';
import type { GpadlRange } from './gpadl.js';
import type { OfferSpec } from './server.js';

/** Why the device lost the channel: the server's reasons, or a ring the guest broke. */
export type ChannelCloseReason = CloseReason | 'failed';

/** What a device implements for each of its channels. */
export interface ChannelHandler {
  /**
   * The guest opened the channel; `channel.rings` is ready. Throw (or return false) to refuse:
   * the guest gets OPENCHANNEL_RESULT with a failure status. A Promise defers the answer until
   * it settles (rejected or false: refused); a guest close meanwhile wins (onClose is called).
   */
  onOpen(channel: Channel): boolean | void | Promise<boolean | void>;
  /** The guest signalled: drain the inbound ring, retry blocked writes. */
  onSignal?(channel: Channel): void;
  /** The rings are gone (guest close, rescind, disconnect, or a ring the guest corrupted). */
  onClose?(channel: Channel, reason: ChannelCloseReason): void;
  /** MODIFYCHANNEL: host-to-guest interrupts now go to `targetVp`. */
  onRetarget?(channel: Channel, targetVp: number): void;
  /** A GPADL of this channel was torn down: drop views of it. */
  onGpadlTorndown?(channel: Channel, gpadl: number): void;
}

/** What the Channel needs from the host wiring. */
export interface ChannelHost {
  signalGuest(relid: number): void;
  gpadlBuffer(relid: number, gpadl: number): GuestBuffer;
  gpadlHandles(relid: number): number[];
  gpadlRanges(relid: number, gpadl: number): readonly GpadlRange[];
}

export class Channel {
  /** The rings while open, else null. */
  private endpoint: RingEndpoint | null = null;
  private openUserData: Uint8Array | null = null;
  private vp = 0;
  /** Set when the device failed the channel (broken ring): no more signals reach it until the next open. */
  failed = false;
  /** Statistics. */
  guestSignals = 0;
  hostSignals = 0;

  constructor(
    private readonly host: ChannelHost,
    readonly relid: number,
    /** The connection id the guest signals (HvSignalEvent). */
    readonly connectionId: number,
    readonly offer: OfferSpec,
    /** 0 for a primary, 1..n for subchannels. */
    readonly subChannelIndex: number,
    readonly handler: ChannelHandler,
  ) {}

  get isOpen(): boolean {
    return this.endpoint !== null;
  }

  /** The host end of the rings: `inbound` (guest-to-host), `outbound` (host-to-guest). */
  get rings(): RingEndpoint {
    if (!this.endpoint) throw new HostUsageError(`relid ${this.relid} is not open`);
    return this.endpoint;
  }

  /** OPENCHANNEL.userdata of the current open. */
  get userData(): Uint8Array {
    if (!this.openUserData) throw new HostUsageError(`relid ${this.relid} is not open`);
    return this.openUserData;
  }

  /** The VP host-to-guest interrupts go to. */
  get targetVp(): number {
    return this.vp;
  }

  /** Raises the channel's interrupt in the guest (the rings call this as they need to). */
  signalGuest(): void {
    this.hostSignals++;
    this.host.signalGuest(this.relid);
  }

  /** A view of another GPADL of this channel (receive/send buffers). */
  gpadlBuffer(gpadl: number): GuestBuffer {
    return this.host.gpadlBuffer(this.relid, gpadl);
  }

  /** The page ranges of a ready GPADL of this channel (HostUsageError for another channel's). */
  gpadlRanges(gpadl: number): readonly GpadlRange[] {
    return this.host.gpadlRanges(this.relid, gpadl);
  }

  /** Handles of this channel's ready GPADLs. */
  gpadlHandles(): number[] {
    return this.host.gpadlHandles(this.relid);
  }

  /** @internal wiring: the channel opened. */
  attach(endpoint: RingEndpoint, userData: Uint8Array, targetVp: number): void {
    this.endpoint = endpoint;
    this.openUserData = userData;
    this.vp = targetVp;
    this.failed = false;
  }

  /**
   * @internal wiring: the channel closed. The rings are retired first: a device that kept the
   * reader or writer gets RingClosedError instead of touching pages the guest may reuse.
   */
  detach(): void {
    this.endpoint?.inbound.close(`relid ${this.relid} closed`);
    this.endpoint?.outbound.close(`relid ${this.relid} closed`);
    this.endpoint = null;
    this.openUserData = null;
  }

  /** @internal wiring: MODIFYCHANNEL. */
  retarget(vp: number): void {
    this.vp = vp;
  }
}
