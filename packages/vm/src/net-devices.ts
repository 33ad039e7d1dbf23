/**
 * NICs for a composed VM: each NicSpec ({ tap: name, mac } or { backend, mac }) becomes a
 * device kind `nic0`, `nic1`, ... registered next to the VM's other kinds and offered after
 * them, so `buildVm({ nics: [{ tap: 'tap0', mac: '00:15:5d:00:00:01' }] })` is all a VMM (or
 * `hvemu run --net`) writes.
 */
import { HostUsageError } from '@hvemu/common';
import { DeviceRegistry } from '@hvemu/vmbus';
import { nicDeviceKind, NetvspDevice, type NicSpec } from '@hvemu/net';
import type { Vm } from './builder.js';

/** A registry with `base`'s kinds and one kind per NIC, and the NICs' kind names in order. */
export function withNics(base: DeviceRegistry, nics: readonly NicSpec[]): { registry: DeviceRegistry; names: string[] } {
  if (!Array.isArray(nics)) throw new HostUsageError('buildVm: nics must be a list of NIC specs');
  if (nics.length === 0) return { registry: base, names: [] };
  const registry = new DeviceRegistry();
  for (const name of base.names) registry.register(base.get(name)!);
  const names = nics.map((spec, i) => {
    const kind = nicDeviceKind(`nic${i}`, spec);
    registry.register(kind);
    return kind.name;
  });
  return { registry, names };
}

/** The NICs of a composed VM, in offer order. */
export function nicsOf(vm: Vm): NetvspDevice[] {
  return [...vm.devices.values()].map((d) => d.device).filter((d): d is NetvspDevice => d instanceof NetvspDevice);
}
