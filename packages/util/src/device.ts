/**
 * An integration component as a VMBus device: the offer (class and instance GUIDs) and a
 * ChannelHandler that starts the host service on each open and stops it on close. The
 * service object lives as long as the device; the channel may open and close many times.
 */
import type { Channel, ChannelHandler, OfferSpec } from '@hvemu/vmbus';
import { bindIcToRings, icRingTransport, type IcRingBinding } from './ring-transport.js';
import type { IcHostService, IcTransport } from './service.js';
import {
  HEARTBEAT_INSTANCE_GUID,
  HV_HEART_BEAT_GUID,
  HV_KVP_GUID,
  HV_SHUTDOWN_GUID,
  HV_TS_GUID,
  KVP_INSTANCE_GUID,
  SHUTDOWN_INSTANCE_GUID,
  TIMESYNC_INSTANCE_GUID,
} from './protocol.js';

export type IcKind = 'heartbeat' | 'shutdown' | 'timesync' | 'kvp';

export const IC_OFFERS: Readonly<Record<IcKind, OfferSpec>> = {
  heartbeat: { interfaceType: HV_HEART_BEAT_GUID, interfaceInstance: HEARTBEAT_INSTANCE_GUID },
  shutdown: { interfaceType: HV_SHUTDOWN_GUID, interfaceInstance: SHUTDOWN_INSTANCE_GUID },
  timesync: { interfaceType: HV_TS_GUID, interfaceInstance: TIMESYNC_INSTANCE_GUID },
  kvp: { interfaceType: HV_KVP_GUID, interfaceInstance: KVP_INSTANCE_GUID },
};

/** Routes a service's sends to whichever channel is open now. */
class SwitchableTransport implements IcTransport {
  target: IcTransport | null = null;
  send(payload: Uint8Array, transactionId: bigint): boolean {
    return this.target ? this.target.send(payload, transactionId) : false;
  }
}

export class IcDevice<S extends IcHostService> implements ChannelHandler {
  readonly service: S;
  private readonly transport = new SwitchableTransport();
  private binding: IcRingBinding | null = null;

  constructor(
    readonly kind: IcKind,
    make: (transport: IcTransport) => S,
  ) {
    this.service = make(this.transport);
  }

  get offer(): OfferSpec {
    return IC_OFFERS[this.kind];
  }

  onOpen(channel: Channel): void {
    this.transport.target = icRingTransport(channel.rings);
    this.binding = bindIcToRings(this.service, channel.rings);
    this.service.open();
  }

  onSignal(): void {
    this.binding?.onSignal();
  }

  onClose(): void {
    this.transport.target = null;
    this.binding = null;
    this.service.close();
  }
}
