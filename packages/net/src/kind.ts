/**
 * The NIC as a registrable device kind: what buildVm, the CLI (`--net tap=NAME,mac=...`) and
 * replay build NICs from. A spec names its backend: a TAP by name (opened when the VM is
 * built) or any NetBackend object (the in-process pair in tests).
 */
import { HostUsageError } from '@hvemu/common';
import type { DeviceKind } from '@hvemu/vmbus';
import type { NetBackend } from './backend/backend.js';
import { TapBackend } from './backend/tap.js';
import { parseMac } from './ethernet.js';
import { NetvspDevice, nicOffer, type NetvspOptions } from './netvsp.js';

export interface NicSpec extends Omit<NetvspOptions, 'backend' | 'logger'> {
  /** A TAP interface to open (created if missing). */
  tap?: string;
  /** Or a backend object (exactly one of tap and backend). */
  backend?: NetBackend;
}

/** A device kind named `name` whose device is a netvsp NIC on `spec`'s backend. */
export function nicDeviceKind(name: string, spec: NicSpec): DeviceKind<NetvspDevice> {
  if ((spec.tap === undefined) === (spec.backend === undefined))
    throw new HostUsageError(`${name}: a NIC needs exactly one of tap and backend`);
  const mac = parseMac(spec.mac);
  return {
    name,
    offer: nicOffer(mac, spec.instanceId),
    create: (env) => {
      const backend = spec.backend ?? TapBackend.open({ name: spec.tap!, logger: env.logger });
      return new NetvspDevice({ ...spec, mac, backend, logger: env.logger });
    },
  };
}
