/**
 * The integration components every hvemu VM offers (heartbeat, shutdown, timesync, KVP, in
 * that order, so their relids are 1-4 on a fresh bus), built one way for the simulated VM,
 * the KVM VM and trace replay.
 */
import type { Clock, Logger } from '@hvemu/common';
import { attachDevice, type VmbusHost } from '@hvemu/vmbus';
import type { TraceDevice } from '@hvemu/trace';
import { HeartbeatService, IC_OFFERS, IcDevice, KvpService, ShutdownService, TimesyncService, type IcHostService, type IcKind } from '@hvemu/util';

export interface IntegrationComponents {
  heartbeat: IcDevice<HeartbeatService>;
  shutdown: IcDevice<ShutdownService>;
  timesync: IcDevice<TimesyncService>;
  kvp: IcDevice<KvpService>;
}

export const IC_KINDS: readonly IcKind[] = ['heartbeat', 'shutdown', 'timesync', 'kvp'];

export interface IcEnvironment {
  clock: Clock;
  logger: Logger;
  /** Host wall clock for timesync samples, Unix ms. */
  wallClockMs: () => number;
}

/** One IC device of `kind`. */
export function createIcDevice(kind: IcKind, env: IcEnvironment): IcDevice<IcHostService> {
  switch (kind) {
    case 'heartbeat':
      return new IcDevice(kind, (t) => new HeartbeatService(t, env.clock, env.logger));
    case 'shutdown':
      return new IcDevice(kind, (t) => new ShutdownService(t, env.logger));
    case 'timesync':
      return new IcDevice(kind, (t) => new TimesyncService(t, env.clock, env.wallClockMs, env.logger));
    case 'kvp':
      return new IcDevice(kind, (t) => new KvpService(t, env.logger));
  }
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
  return {
    vmbusVersion,
    devices: IC_KINDS.map((name, i) => ({ name, classId: IC_OFFERS[name].interfaceType, instanceId: IC_OFFERS[name].interfaceInstance, relid: i + 1 })),
    producer,
  };
}
