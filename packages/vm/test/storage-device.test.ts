/** The VM builder offers a SCSI controller (@hvemu/storage) with its disks, by name like any device kind. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { HostUsageError } from '@hvemu/common';
import { BackendConfigError, HV_SCSI_GUID, MemoryBackend, StorvspDevice } from '@hvemu/storage';
import { buildVm, defaultDevices } from '@hvemu/vm';

const dir = mkdtempSync(join(tmpdir(), 'hvemu-vm-storage-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('buildVm with storage', () => {
  it('offers the controller after the integration components, with file and memory disks at LUNs 0..n', async () => {
    const image = join(dir, 'a.img');
    writeFileSync(image, new Uint8Array(2 << 20));
    const offers: [string, number][] = [];
    const vm = buildVm({
      storage: {
        disks: [
          { path: image, readOnly: true },
          { backend: new MemoryBackend(1 << 20), sectorSize: 4096 },
        ],
      },
      onOffer: (name, relid) => offers.push([name, relid]),
    });
    expect(offers).toEqual([
      ['heartbeat', 1],
      ['shutdown', 2],
      ['timesync', 3],
      ['kvp', 4],
      ['scsi', 5],
    ]);
    const scsi = vm.devices.get('scsi')!;
    expect(scsi.device).toBeInstanceOf(StorvspDevice);
    expect(scsi.device.offer.interfaceType).toBe(HV_SCSI_GUID);
    const disks = (scsi.device as StorvspDevice).controller.entries();
    expect(disks.map((d) => [d.address.lun, d.disk.sectorSize, d.disk.sectorCount, d.disk.readOnly])).toEqual([
      [0, 512, 4096, true],
      [1, 4096, 256, false],
    ]);
    await expect(vm.stop()).resolves.toBeUndefined();
    await (scsi.device as StorvspDevice).closeDisks();
    vm.dispose();
  });

  it('offers only what devices names; refuses a missing image, a registry together with storage, a size off the sector', () => {
    const vm = buildVm({ devices: ['scsi'], storage: { disks: [{ backend: new MemoryBackend(1 << 20) }] } });
    expect([...vm.devices.keys()]).toEqual(['scsi']);
    vm.dispose();
    expect(() => buildVm({ storage: { disks: [{ path: join(dir, 'nope.img') }] } })).toThrow(BackendConfigError);
    expect(() => buildVm({ registry: defaultDevices(), storage: { disks: [] } })).toThrow(HostUsageError);
    expect(() => buildVm({ storage: { disks: [{ backend: new MemoryBackend(1000) }] } })).toThrow(/not a multiple/);
    expect(defaultDevices({ storage: {} }).names).toEqual(['heartbeat', 'shutdown', 'timesync', 'kvp', 'scsi']);
  });
});
