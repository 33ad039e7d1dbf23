/**
 * The integration components as registrable device kinds, in the order every hvemu VM offers
 * them (so their relids are 1-4 on a fresh bus).
 */
import type { DeviceKind } from '@hvemu/vmbus';
import { IC_OFFERS, IcDevice, type IcKind } from './device.js';
import type { IcHostService } from './service.js';
import { HeartbeatService } from './services/heartbeat.js';
import { KvpService } from './services/kvp.js';
import { ShutdownService } from './services/shutdown.js';
import { TimesyncService } from './services/timesync.js';

export const IC_KINDS: readonly IcKind[] = ['heartbeat', 'shutdown', 'timesync', 'kvp'];

export const IC_DEVICE_KINDS: readonly DeviceKind<IcDevice<IcHostService>>[] = [
  {
    name: 'heartbeat',
    offer: IC_OFFERS.heartbeat,
    create: (env) => new IcDevice('heartbeat', (t) => new HeartbeatService(t, env.clock, env.logger)),
  },
  { name: 'shutdown', offer: IC_OFFERS.shutdown, create: (env) => new IcDevice('shutdown', (t) => new ShutdownService(t, env.logger)) },
  {
    name: 'timesync',
    offer: IC_OFFERS.timesync,
    create: (env) => new IcDevice('timesync', (t) => new TimesyncService(t, env.clock, env.wallClockMs, env.logger)),
  },
  { name: 'kvp', offer: IC_OFFERS.kvp, create: (env) => new IcDevice('kvp', (t) => new KvpService(t, env.logger)) },
];
