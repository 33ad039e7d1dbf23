/**
 * An integration component as a VMBus device (VmbusDevice, plugged in with attachDevice): the
 * offer (class and instance GUIDs), the host service started on each open over the channel's
 * PacketQueue and stopped on close. The service object lives as long as the device; the
 * channel may open and close many times.
 */
import { HvemuError } from '@hvemu/common';
import type { DeviceChannel, OfferSpec, VmbusDevice } from '@hvemu/vmbus';
import { bindIcToQueue, icQueueTransport, type IcQueueBinding } from './queue-transport.js';
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

/** A host call (replay) that names no host-API method of the device. */
export class IcHostCallError extends HvemuError {
  readonly outcome = 'host-error' as const;
}

export const IC_OFFERS: Readonly<Record<IcKind, OfferSpec>> = {
  heartbeat: { interfaceType: HV_HEART_BEAT_GUID, interfaceInstance: HEARTBEAT_INSTANCE_GUID },
  shutdown: { interfaceType: HV_SHUTDOWN_GUID, interfaceInstance: SHUTDOWN_INSTANCE_GUID },
  timesync: { interfaceType: HV_TS_GUID, interfaceInstance: TIMESYNC_INSTANCE_GUID },
  kvp: { interfaceType: HV_KVP_GUID, interfaceInstance: KVP_INSTANCE_GUID },
};

/**
 * The host API of each IC service: the calls a VMM makes that put a request on the wire.
 * Traces record these (HostCall) so replay can make the same requests.
 */
export const IC_HOST_API: Readonly<Record<IcKind, readonly string[]>> = {
  heartbeat: ['beat'],
  shutdown: ['shutdown'],
  timesync: ['sample'],
  kvp: ['set', 'get', 'delete', 'enumerate', 'list'],
};

/** Told of each host-API call before it runs: the method and its arguments. */
export type HostCallObserver = (method: string, args: readonly unknown[]) => void;

/** Routes a service's sends to whichever channel is open now. */
class SwitchableTransport implements IcTransport {
  target: IcTransport | null = null;
  send(payload: Uint8Array, transactionId: bigint): boolean {
    return this.target ? this.target.send(payload, transactionId) : false;
  }
}

export class IcDevice<S extends IcHostService> implements VmbusDevice {
  readonly service: S;
  private readonly transport = new SwitchableTransport();
  private binding: IcQueueBinding | null = null;
  private callDepth = 0;
  private handlingGuest = false;

  constructor(
    readonly kind: IcKind,
    make: (transport: IcTransport) => S,
  ) {
    this.service = make(this.transport);
  }

  /**
   * Calls `observer` before every host-API call on `service` (IC_HOST_API), including calls
   * the service makes on itself (KvpService.list enumerates), so a replay that makes the same
   * recorded calls makes the same requests.
   */
  observeHostCalls(observer: HostCallObserver): void {
    const service = this.service as unknown as Record<string, (...args: unknown[]) => unknown>;
    for (const method of IC_HOST_API[this.kind]) {
      const original = service[method];
      if (typeof original !== 'function') continue;
      service[method] = (...args: unknown[]) => {
        // Only the VMM's own calls: not the ones a host-API method makes on its way (list ->
        // enumerate), nor the ones the service makes while it handles the guest (timesync
        // samples once it is ready; list's next enumerate when an answer arrives). A replay
        // that makes the recorded calls gets those again by itself.
        if (this.callDepth === 0 && !this.handlingGuest) observer(method, args);
        this.callDepth++;
        try {
          return original.apply(this.service, args);
        } finally {
          this.callDepth--;
        }
      };
    }
  }

  /** Makes a host-API call by name (replay). Throws IcHostCallError for a method outside IC_HOST_API. */
  invokeHostCall(method: string, args: readonly unknown[]): unknown {
    if (!IC_HOST_API[this.kind].includes(method)) {
      throw new IcHostCallError(`${this.kind} has no host call ${method} (known: ${IC_HOST_API[this.kind].join(', ')})`);
    }
    const service = this.service as unknown as Record<string, (...args: unknown[]) => unknown>;
    return service[method](...args);
  }

  get offer(): OfferSpec {
    return IC_OFFERS[this.kind];
  }

  open(channel: DeviceChannel): void {
    this.transport.target = icQueueTransport(channel.queue);
    this.binding = bindIcToQueue(this.service, channel.queue);
    this.whileHandlingGuest(() => this.service.open());
  }

  onSignal(): void {
    this.whileHandlingGuest(() => this.binding?.onSignal());
  }

  close(): void {
    this.transport.target = null;
    this.binding = null;
    this.whileHandlingGuest(() => this.service.close());
  }

  private whileHandlingGuest(work: () => void): void {
    const outer = this.handlingGuest;
    this.handlingGuest = true;
    try {
      work();
    } finally {
      this.handlingGuest = outer;
    }
  }
}
