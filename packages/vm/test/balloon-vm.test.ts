/**
 * buildVm's dynamic memory: `balloon: true` offers the device after the others with a memory
 * port over the VM's RAM. On KVM the port is the partition's memoryControl: pages the guest
 * gives go back to the host for real (the memfd's allocated bytes drop) and read as zero; hot
 * add maps a new memslot above 4 GiB. (No guest runs here: the device is fed balloon messages
 * directly; the TypeScript guest over real rings is @hvemu/balloon's own test.)
 */
import { describe, expect, it } from 'vitest';
import { KvmPartition } from '@hvemu/accel';
import {
  BalloonDevice,
  DM_BALLOON_REQUEST,
  DM_MEM_HOT_ADD_REQUEST,
  encodeBalloonResponse,
  HV_DM_GUID,
  dm_hot_add_response,
} from '@hvemu/balloon';
import { fakeBalloonChannel } from '@hvemu/balloon/testing';
import { balloonOf, buildVm, defaultDevices } from '@hvemu/vm';

const MiB = 1 << 20;
const KVM = KvmPartition.probe();

describe('buildVm with a balloon', () => {
  it('offers it after the integration components; balloonOf finds it; not with a registry', () => {
    const offers: string[] = [];
    const vm = buildVm({ balloon: { maxPageCount: 4096 }, onOffer: (name) => offers.push(name) });
    expect(offers).toEqual(['heartbeat', 'shutdown', 'timesync', 'kvp', 'balloon']);
    const b = balloonOf(vm);
    expect(b).toBeInstanceOf(BalloonDevice);
    expect(b!.offer.interfaceType).toBe(HV_DM_GUID);
    expect(b!.stats().ramBytes).toBe(16 * MiB);
    expect(balloonOf(buildVm({}))).toBe(null);
    expect(() => buildVm({ balloon: true, registry: defaultDevices() })).toThrow(/balloon in the registry/);
    void vm.dispose();
  });

  it('simulated: released pages are zero-filled', () => {
    const vm = buildVm({ balloon: true });
    const b = balloonOf(vm)!;
    const f = fakeBalloonChannel(b);
    f.handshake();
    vm.memory.write(0x80_0000, new Uint8Array(8192).fill(0xee));
    b.setTarget(16 * MiB - 8192);
    expect(f.sent.some((m) => m[0] === DM_BALLOON_REQUEST)).toBe(true);
    f.feed(encodeBalloonResponse(1, false, [0x800, 2]));
    const back = new Uint8Array(8192);
    vm.memory.read(0x80_0000, back);
    expect(back.every((x) => x === 0)).toBe(true);
    expect(b.stats()).toMatchObject({ balloonedPages: 2, releasedBytes: 8192, protocolErrors: 0 });
    void vm.dispose();
  });

  it.skipIf(!KVM.ok)('KVM: the partition releases the pages (memfd blocks drop) and hot add maps a memslot above 4 GiB', async () => {
    const p = KvmPartition.create({ memory: [{ gpa: 0, size: 64 * MiB }] });
    try {
      const vm = buildVm({ partition: p, balloon: true });
      const b = balloonOf(vm)!;
      const f = fakeBalloonChannel(b);
      f.handshake(0);
      p.memory.write(16 * MiB, new Uint8Array(8 * MiB).fill(0x5a));
      const before = b.stats().hostAllocatedBytes!;
      b.setTarget(56 * MiB);
      f.feed(encodeBalloonResponse(1, false, [(16 * MiB) / 4096, 2048]));
      const st = b.stats();
      expect(st).toMatchObject({ balloonedPages: 2048, releasedBytes: 8 * MiB, protocolErrors: 0 });
      expect(before - st.hostAllocatedBytes!).toBeGreaterThanOrEqual(8 * MiB);
      const sample = new Uint8Array(4096);
      p.memory.read(20 * MiB, sample);
      expect(sample.every((x) => x === 0)).toBe(true);
      const added = b.hotAdd(2 * MiB);
      const req = f.sent.find((m) => m[0] === DM_MEM_HOT_ADD_REQUEST)!;
      expect(new DataView(req.buffer).getBigUint64(8, true)).toBe((512n << 40n) | BigInt(2 ** 32 / 4096));
      f.feed(dm_hot_add_response.encodeNew({ type: 11, size: 16, page_count: 512, result: 1 }));
      expect(await added).toEqual({ gpa: 2 ** 32, bytes: 2 * MiB, pagesOnlined: 512, accepted: true });
      expect(p.memory.contains(2 ** 32, 2 * MiB)).toBe(true);
      p.memory.write(2 ** 32, Uint8Array.of(1));
      void vm.dispose();
    } finally {
      p.close();
    }
  });
});
