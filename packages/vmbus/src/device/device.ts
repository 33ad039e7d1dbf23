/**
 * The device layer: what a VSP (the host end of a guest driver) implements, and the adapter that
 * plugs it into a VmbusHost. A device sees each open channel as a DeviceChannel: a PacketQueue
 * over its rings and the channel's GPADLs as GuestData. Open may finish later (a backend to
 * open, a disk to check): the guest gets OPENCHANNEL_RESULT when the device's promise settles.
 * Close is safe whenever the device's own work finishes: the queue and every GuestData of the
 * channel are revoked at the close itself, so nothing can reach pages the guest takes back.
 */
import { HostUsageError, HvemuError, silentLogger, type Logger } from '@hvemu/common';
import type { ChannelCloseReason, Channel, ChannelHandler } from '../server/channel.js';
import type { OfferSpec } from '../server/server.js';
import type { VmbusHost } from '../server/vmbus-host.js';
import { GuestData, GuestDataLease } from './guest-data.js';
import { PacketQueue, type PacketQueueOptions } from './packet-queue.js';

/** One open channel of a device. Valid from open() until close(); a reopen makes a new one. */
export interface DeviceChannel {
  readonly relid: number;
  /** 0 for the primary channel, 1..n for subchannels. */
  readonly subChannelIndex: number;
  readonly offer: OfferSpec;
  /** OPENCHANNEL.userdata (120 bytes): some protocols pass parameters in it. */
  readonly userData: Uint8Array;
  /** The VP this channel's interrupts go to (MODIFYCHANNEL moves it). */
  readonly targetVp: number;
  readonly queue: PacketQueue;
  /**
   * A GPADL of this channel (receive/send buffers) as GuestData, every range in order.
   * Revoked when the guest tears it down or the channel closes. HostUsageError for a handle
   * that is not one of this channel's ready GPADLs.
   */
  gpadl(handle: number): GuestData;
  /** Handles of the channel's ready GPADLs. */
  gpadlHandles(): number[];
  /**
   * Offers `count` more subchannels of this device (guest-requested multi-queue, e.g. storvsc
   * CREATE_SUB_CHANNELS, netvsc SUBCHANNEL): the device answers the guest's request from its
   * primary channel, so it needs this without the AttachedDevice its VMM holds. Returns their
   * relids. HostUsageError on a subchannel, or beyond the server's subchannel limit.
   */
  offerSubchannels(count: number): number[];
  /**
   * Fails this channel for a guest fault found outside onSignal (a ring read deferred to a
   * completion): what throwing from onSignal does. The device's close() follows with 'failed'.
   */
  fail(error: unknown): void;
  /**
   * Rescinds the subchannels this device offered (the primary's; a multi-queue device ends its
   * session, as netvsp does when the guest closes the primary: the guest asks again and gets new
   * ones numbered from 1). HostUsageError on a subchannel.
   */
  rescindSubchannels(): void;
}

/** What a device implements. Only open() and onSignal() are required. */
export interface VmbusDevice {
  /** The primary channel's offer. */
  readonly offer: OfferSpec;
  /**
   * The guest opened a channel. Return (or resolve) to accept; throw (or reject) to refuse:
   * the guest gets OPENCHANNEL_RESULT with a failure status.
   */
  open(channel: DeviceChannel): void | Promise<void>;
  /** The guest signalled: read packets with `channel.queue.read`. Waiting sends were retried already. */
  onSignal(channel: DeviceChannel): void;
  /**
   * The channel closed (guest close, rescind, disconnect, or a ring the guest broke:
   * 'failed'). The queue and the channel's GuestData are already revoked; a returned promise
   * is for the device's own cleanup.
   */
  close?(channel: DeviceChannel, reason: ChannelCloseReason): void | Promise<void>;
  /** MODIFYCHANNEL moved the channel's interrupts. */
  retarget?(channel: DeviceChannel, targetVp: number): void;
  /** The VM starts running (the device may start its backends). */
  start?(): void | Promise<void>;
  /** The VM stops: resolve when no request is in flight. */
  stop?(): void | Promise<void>;
  /**
   * The VM is gone: release what the device holds outside guest memory (image files, sockets,
   * TAP devices). Called once, after the channels are closed; resolve when released.
   */
  dispose?(): void | Promise<void>;
  /** State that outlives a save/restore of the VM (optional; a device without it cannot be saved). */
  save?(): unknown;
  restore?(state: unknown): void;
}

/** A device's save() refused, or its restore() got state it cannot take. */
export class DeviceStateError extends HvemuError {
  readonly outcome = 'host-error' as const;
}

export interface AttachOptions extends Omit<PacketQueueOptions, 'memory' | 'name' | 'logger'> {
  logger?: Logger;
}

/** A device plugged into a VmbusHost: its primary channel, and subchannels as they are offered. */
export interface AttachedDevice {
  readonly device: VmbusDevice;
  readonly channel: Channel;
  /** The open DeviceChannels now (primary and subchannels). */
  openChannels(): DeviceChannel[];
  /** Offers `count` more subchannels of the device's primary channel. */
  offerSubchannels(count: number): Channel[];
  /** Rescinds the device's channels (hot remove). */
  rescind(): void;
}

/** Offers `device` on `host` and routes its channels' events to it. */
export function attachDevice(host: VmbusHost, device: VmbusDevice, options: AttachOptions = {}): AttachedDevice {
  const logger = options.logger ?? silentLogger;
  const open = new Map<number, OpenChannel>();
  const handler: ChannelHandler = {
    onOpen: (channel) => {
      const dc = new OpenChannel(
        channel,
        host,
        { offer: offerSubchannels, rescind: rescindSubchannels },
        {
          ...options,
          memory: host.memory,
          logger,
          name: `relid ${channel.relid}`,
        },
      );
      open.set(channel.relid, dc);
      const refused = (error: unknown): never => {
        dc.revoke('the device refused the open');
        if (open.get(channel.relid) === dc) open.delete(channel.relid);
        throw error;
      };
      try {
        const answer = device.open(dc);
        // A synchronous open is answered at once (as the ICs' traces were recorded); a promise later.
        return answer ? answer.then(() => true, refused) : true;
      } catch (error) {
        return refused(error);
      }
    },
    onSignal: (channel) => {
      const dc = open.get(channel.relid);
      if (!dc) return;
      dc.queue.onGuestSignal();
      device.onSignal(dc);
    },
    onClose: (channel, reason) => {
      const dc = open.get(channel.relid);
      if (!dc) return;
      open.delete(channel.relid);
      dc.revoke(`relid ${channel.relid} closed (${reason})`);
      const done = device.close?.(dc, reason);
      if (done) done.catch((error: unknown) => logger.error(`vmbus: relid ${channel.relid} device close failed`, { error: String(error) }));
    },
    onRetarget: (channel, vp) => {
      const dc = open.get(channel.relid);
      if (dc) device.retarget?.(dc, vp);
    },
    onGpadlTorndown: (channel, gpadl) => open.get(channel.relid)?.gpadlTorndown(gpadl),
  };
  const primary = host.offerChannel(device.offer, handler);
  const subchannels: Channel[] = [];
  function offerSubchannels(count: number): Channel[] {
    const subs = host.offerSubchannels(primary, count, () => handler);
    subchannels.push(...subs);
    return subs;
  }
  function rescindSubchannels(): void {
    for (const sub of subchannels.splice(0)) host.rescind(sub);
  }
  return {
    device,
    channel: primary,
    openChannels: () => [...open.values()],
    offerSubchannels,
    rescind: () => host.rescind(primary),
  };
}

class OpenChannel implements DeviceChannel {
  readonly queue: PacketQueue;
  private readonly gpadlLeases = new Map<number, GuestDataLease>();

  constructor(
    private readonly channel: Channel,
    private readonly host: VmbusHost,
    private readonly subchannels: { offer(count: number): Channel[]; rescind(): void },
    queueOptions: PacketQueueOptions,
  ) {
    this.queue = new PacketQueue(channel.rings, queueOptions);
  }

  get relid(): number {
    return this.channel.relid;
  }
  get subChannelIndex(): number {
    return this.channel.subChannelIndex;
  }
  get offer(): OfferSpec {
    return this.channel.offer;
  }
  get userData(): Uint8Array {
    return this.channel.userData;
  }
  get targetVp(): number {
    return this.channel.targetVp;
  }

  gpadl(handle: number): GuestData {
    const ranges = this.channel.gpadlRanges(handle);
    let lease = this.gpadlLeases.get(handle);
    if (!lease) this.gpadlLeases.set(handle, (lease = new GuestDataLease(this.queue.dataLease)));
    return GuestData.fromRanges(this.host.memory, ranges, { lease });
  }

  gpadlHandles(): number[] {
    return this.channel.gpadlHandles();
  }

  fail(error: unknown): void {
    this.host.failChannel(this.channel, error);
  }

  offerSubchannels(count: number): number[] {
    if (this.channel.subChannelIndex !== 0) {
      throw new HostUsageError(`relid ${this.relid} is subchannel ${this.channel.subChannelIndex}: only a primary offers subchannels`);
    }
    return this.subchannels.offer(count).map((c) => c.relid);
  }

  rescindSubchannels(): void {
    if (this.channel.subChannelIndex !== 0) {
      throw new HostUsageError(`relid ${this.relid} is subchannel ${this.channel.subChannelIndex}: only a primary rescinds subchannels`);
    }
    this.subchannels.rescind();
  }

  /** @internal the guest tore the GPADL down. */
  gpadlTorndown(handle: number): void {
    this.gpadlLeases.get(handle)?.revoke(`GPADL 0x${handle.toString(16)} was torn down`);
    this.gpadlLeases.delete(handle);
  }

  /** @internal the channel closed: the queue (and with it every GuestData of the channel) is revoked. */
  revoke(reason: string): void {
    this.queue.close(reason);
  }
}
