/**
 * The integration components every hvemu VM offers (heartbeat, shutdown, timesync, KVP, in
 * that order, so their relids are 1-4 on a fresh bus), built one way for the simulated VM,
 * the KVM VM and trace replay.
 */
import { HostUsageError } from '@hvemu/common';
import { attachDevice, DeviceRegistry, type DeviceEnvironment, type VmbusHost } from '@hvemu/vmbus';
import type { TraceDevice } from '@hvemu/trace';
import { storageDeviceKind, type StorageControllerSpec } from '@hvemu/storage';
import { balloonDeviceKind, type BalloonSpec } from '@hvemu/balloon';
import { deviceTraceHeader, type Vm } from './builder.js';
import {
  IC_DEVICE_KINDS,
  IC_KINDS,
  type HeartbeatService,
  type IcDevice,
  type IcHostService,
  type IcKind,
  type KvpService,
  type ShutdownService,
  type TimesyncService,
} from '@hvemu/util';

export interface IntegrationComponents {
  heartbeat: IcDevice<HeartbeatService>;
  shutdown: IcDevice<ShutdownService>;
  timesync: IcDevice<TimesyncService>;
  kvp: IcDevice<KvpService>;
}

export { IC_KINDS };

export type IcEnvironment = DeviceEnvironment;

/**
 * The device kinds every hvemu VM knows: the integration components, in offer order, then a
 * SCSI controller (kind 'scsi', @hvemu/storage) when `storage` names one, then the dynamic memory
 * device (kind 'balloon', @hvemu/balloon) when `balloon` is given.
 */
export function defaultDevices(options: { storage?: StorageControllerSpec; balloon?: BalloonSpec } = {}): DeviceRegistry {
  const registry = new DeviceRegistry().register(...IC_DEVICE_KINDS);
  if (options.storage) registry.register(storageDeviceKind(options.storage));
  if (options.balloon) registry.register(balloonDeviceKind(options.balloon));
  return registry;
}

/** One IC device of `kind`. */
export function createIcDevice(kind: IcKind, env: IcEnvironment): IcDevice<IcHostService> {
  const found = IC_DEVICE_KINDS.find((k) => k.name === kind);
  if (!found) throw new HostUsageError(`no integration component ${String(kind)} (known: ${IC_KINDS.join(', ')})`);
  return found.create(env);
}

/** The integration components of a composed VM (it must offer all four). */
export function integrationComponentsOf(vm: Vm): IntegrationComponents {
  const ic = (name: IcKind): IcDevice<IcHostService> => {
    const attached = vm.devices.get(name);
    if (!attached) throw new HostUsageError(`the VM offers no ${name}`);
    return attached.device as IcDevice<IcHostService>;
  };
  return {
    heartbeat: ic('heartbeat') as IcDevice<HeartbeatService>,
    shutdown: ic('shutdown') as IcDevice<ShutdownService>,
    timesync: ic('timesync') as IcDevice<TimesyncService>,
    kvp: ic('kvp') as IcDevice<KvpService>,
  };
}

export function createIntegrationComponents(env: IcEnvironment): IntegrationComponents {
  return {
    heartbeat: createIcDevice('heartbeat', env) as IcDevice<HeartbeatService>,
    shutdown: createIcDevice('shutdown', env) as IcDevice<ShutdownService>,
    timesync: createIcDevice('timesync', env) as IcDevice<TimesyncService>,
    kvp: createIcDevice('kvp', env) as IcDevice<KvpService>,
  };
}

/**
 * Offers each IC on `vmbus` in IC_KINDS order; `onHostCall` (traces) hears every host-API
 * call with the channel's relid; `log` gets one line per offer.
 */
export function offerIntegrationComponents(
  vmbus: VmbusHost,
  ics: IntegrationComponents,
  options: {
    log?: (what: string) => void;
    onHostCall?: (relid: number, device: string, method: string, args: readonly unknown[]) => void;
  } = {},
): void {
  for (const kind of IC_KINDS) {
    const ic = ics[kind];
    const { channel } = attachDevice(vmbus, ic);
    options.log?.(`offers ${ic.kind} as relid ${channel.relid}`);
    const onHostCall = options.onHostCall;
    if (onHostCall) ic.observeHostCalls((method, args) => onHostCall(channel.relid, kind, method, args));
  }
}

/** The trace header (without schema version and creation time) of a VM with the ICs at relids 1-4. */
export function icTraceHeader(producer: string, vmbusVersion = 0): { vmbusVersion: number; devices: TraceDevice[]; producer: string } {
  return deviceTraceHeader(producer, { devices: IC_KINDS, vmbusVersion });
}
