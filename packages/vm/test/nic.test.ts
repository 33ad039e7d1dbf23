/** NICs in a composed VM: buildVm({ nics }) registers and offers netvsp devices after the other kinds. */
import { describe, expect, it } from 'vitest';
import { HostUsageError } from '@hvemu/common';
import { createPortPair, HV_NIC_GUID, NetvspDevice } from '@hvemu/net';
import { buildVm, defaultDevices, nicsOf } from '@hvemu/vm';

describe('buildVm with NICs', () => {
  it('offers each NIC after the integration components, as nic0, nic1, with the network class', () => {
    const [a] = createPortPair();
    const [b] = createPortPair();
    const offered: [string, number][] = [];
    const vm = buildVm({
      nics: [
        { backend: a, mac: '00:15:5d:00:00:01' },
        { backend: b, mac: '00:15:5d:00:00:02', mtu: 9000 },
      ],
      onOffer: (name, relid) => offered.push([name, relid]),
    });
    expect(offered.map(([n]) => n)).toEqual(['heartbeat', 'shutdown', 'timesync', 'kvp', 'nic0', 'nic1']);
    const nics = nicsOf(vm);
    expect(nics).toHaveLength(2);
    expect(nics[1]).toBeInstanceOf(NetvspDevice);
    expect(vm.devices.get('nic0')!.channel.offer.interfaceType).toBe(HV_NIC_GUID);
    // Instances differ per MAC, so a guest tells the NICs apart.
    expect(vm.devices.get('nic0')!.channel.offer.interfaceInstance).not.toBe(vm.devices.get('nic1')!.channel.offer.interfaceInstance);
    expect(defaultDevices().names).not.toContain('nic0'); // the caller's registry is not changed
    vm.dispose();
  });

  it('refuses a NIC spec with both or neither of tap and backend, and a bad MAC', () => {
    const [a] = createPortPair();
    expect(() => buildVm({ nics: [{ backend: a, tap: 'x', mac: '00:15:5d:00:00:01' }] })).toThrow(HostUsageError);
    expect(() => buildVm({ nics: [{ mac: '00:15:5d:00:00:01' }] })).toThrow(HostUsageError);
    expect(() => buildVm({ nics: [{ backend: a, mac: '01:00:5e:00:00:01' }] })).toThrow(HostUsageError);
    expect(() => buildVm({ nics: 'tap0' as never })).toThrow(HostUsageError);
  });
});
