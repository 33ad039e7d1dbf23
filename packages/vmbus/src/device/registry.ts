/**
 * Devices registered once: a registry of device kinds (name, offer, factory) that the VM, trace
 * replay and the CLI share, so none of them names a device by hand. A device with a host API
 * (calls the VMM makes that put requests on the wire) says which methods those are, reports
 * them as they are made (traces record them) and makes them by name (replay).
 */
import { HostUsageError, type Clock, type Logger } from '@hvemu/common';
import type { OfferSpec } from '../server/server.js';
import type { VmbusDevice } from './device.js';

/** What a device factory gets from the VM it is built for. */
export interface DeviceEnvironment {
  readonly clock: Clock;
  readonly logger: Logger;
  /** Host wall clock, Unix ms (time synchronisation). */
  readonly wallClockMs: () => number;
}

/** Told of each host-API call before it runs: the method and its arguments. */
export type HostCallObserver = (method: string, args: readonly unknown[]) => void;

/** A device the VMM drives through a host API. */
export interface HostCallable {
  /** The host-API methods: what traces record and replay makes again. */
  readonly hostCalls: readonly string[];
  observeHostCalls(observer: HostCallObserver): void;
  /** Makes a host-API call by name; throws for a name outside `hostCalls`. */
  invokeHostCall(method: string, args: readonly unknown[]): unknown;
}

/** One kind of device: its name in traces and on the command line, its offer, its factory. */
export interface DeviceKind<D extends VmbusDevice = VmbusDevice> {
  readonly name: string;
  readonly offer: OfferSpec;
  create(env: DeviceEnvironment): D;
}

/** True when `device` has a host API. */
export function isHostCallable(device: VmbusDevice): device is VmbusDevice & HostCallable {
  const d = device as Partial<HostCallable>;
  return Array.isArray(d.hostCalls) && typeof d.observeHostCalls === 'function' && typeof d.invokeHostCall === 'function';
}

export class DeviceRegistry {
  private readonly kinds = new Map<string, DeviceKind>();

  /** Adds kinds; a name registered twice is a HostUsageError. */
  register(...kinds: DeviceKind[]): this {
    for (const kind of kinds) {
      if (typeof kind?.name !== 'string' || kind.name === '' || typeof kind.create !== 'function' || typeof kind.offer !== 'object') {
        throw new HostUsageError('a device kind is { name, offer, create(env) }');
      }
      if (this.kinds.has(kind.name)) throw new HostUsageError(`device kind ${kind.name} is registered already`);
      this.kinds.set(kind.name, kind);
    }
    return this;
  }

  get(name: string): DeviceKind | undefined {
    return this.kinds.get(name);
  }

  /** The kind named `name`; a HostUsageError listing the known names if there is none. */
  require(name: string): DeviceKind {
    const kind = this.kinds.get(name);
    if (!kind) throw new HostUsageError(`no device kind ${String(name)} (known: ${this.names.join(', ') || 'none'})`);
    return kind;
  }

  /** Registered names, in registration order. */
  get names(): string[] {
    return [...this.kinds.keys()];
  }
}
