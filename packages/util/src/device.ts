/**
 * An integration component as a VMBus device (VmbusDevice, plugged in with attachDevice): the
 * offer (class and instance GUIDs), the host service started on each open over the channel's
 * PacketQueue and stopped on close. The service object lives as long as the device; the
 * channel may open and close many times.
 */
import { HvemuError } from '@hvemu/common';
import type { DeviceChannel, HostCallable, HostCallObserver, OfferSpec, VmbusDevice } from '@hvemu/vmbus';
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

/** Routes a service's sends to whichever channel is open now. */
class SwitchableTransport implements IcTransport {
  target: IcTransport | null = null;
  send(payload: Uint8Array, transactionId: bigint): boolean {
    return this.target ? this.target.send(payload, transactionId) : false;
  }
}

export class IcDevice<S extends IcHostService> implements VmbusDevice, HostCallable {
  /** The service itself: its state and status. Calls made on it directly are not recorded. */
  readonly service: S;
  /**
   * The VMM's face of the service: the same object, but each host-API call (IC_HOST_API) made
   * through it is reported to the host-call observer before it runs (traces record it, replay
   * makes it again). What the service does on its own (KVP list's enumerates, timesync's sample
   * once ready) goes to `service` directly and is not reported: a replay gets it again by itself.
   */
  readonly host: S;
  private readonly transport = new SwitchableTransport();
  private binding: IcQueueBinding | null = null;
  private hostCallObserver: HostCallObserver | undefined;

  constructor(
    readonly kind: IcKind,
    make: (transport: IcTransport) => S,
  ) {
    this.service = make(this.transport);
    this.host = recordingFacade(this.service, IC_HOST_API[kind], (method, args) => this.hostCallObserver?.(method, args));
  }

  /** The host-API methods (IC_HOST_API of this kind). */
  get hostCalls(): readonly string[] {
    return IC_HOST_API[this.kind];
  }

  /** Reports each host-API call made through `host` to `observer` (one observer; the last one set). */
  observeHostCalls(observer: HostCallObserver): void {
    this.hostCallObserver = observer;
  }

  /** Makes a host-API call by name through `host` (replay). IcHostCallError for a method outside IC_HOST_API. */
  invokeHostCall(method: string, args: readonly unknown[]): unknown {
    if (!IC_HOST_API[this.kind].includes(method)) {
      throw new IcHostCallError(`${this.kind} has no host call ${method} (known: ${IC_HOST_API[this.kind].join(', ')})`);
    }
    const host = this.host as unknown as Record<string, (...args: unknown[]) => unknown>;
    return host[method](...args);
  }

  get offer(): OfferSpec {
    return IC_OFFERS[this.kind];
  }

  open(channel: DeviceChannel): void {
    this.transport.target = icQueueTransport(channel.queue);
    this.binding = bindIcToQueue(this.service, channel.queue);
    this.service.open();
  }

  onSignal(): void {
    this.binding?.onSignal();
  }

  close(): void {
    this.transport.target = null;
    this.binding = null;
    this.service.close();
  }
}

/**
 * `target` seen through a Proxy: each of `methods` reports (method, args) before it runs on
 * `target` itself (so the calls it makes on itself are not reported); everything else is
 * `target`'s own property.
 */
function recordingFacade<S extends object>(target: S, methods: readonly string[], report: HostCallObserver): S {
  const wrapped = new Map<string, (...args: unknown[]) => unknown>();
  for (const method of methods) {
    const fn = (target as Record<string, unknown>)[method];
    if (typeof fn !== 'function') continue;
    wrapped.set(method, (...args: unknown[]) => {
      report(method, args);
      return (fn as (...a: unknown[]) => unknown).apply(target, args);
    });
  }
  return new Proxy(target, {
    get: (t, prop) => (typeof prop === 'string' && wrapped.has(prop) ? wrapped.get(prop) : Reflect.get(t, prop, t)),
  });
}
