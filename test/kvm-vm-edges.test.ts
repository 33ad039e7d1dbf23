/**
 * KvmVm (packages/vm) at its API edge: construction without options and use after close()
 * end in typed errors. (Lives here because packages/vm's own tests are another owner's.)
 */
import { describe, expect, it } from 'vitest';
import { AccelUsageError } from '@hvemu/accel';
import { HostUsageError, HvemuError } from '@hvemu/common';
import { buildVmbusDemoGuest, KvmVm } from '@hvemu/vm';

const probe = KvmVm.probe();
const describeKvm = probe.ok ? describe : describe.skip;
if (!probe.ok) {
  if (process.env['HVEMU_REQUIRE_KVM'] === '1') throw new Error(`HVEMU_REQUIRE_KVM=1 but KVM is unusable: ${probe.reason}`);
  console.warn(`skipping KvmVm edge tests: ${probe.reason}`);
}

describeKvm('KvmVm API edges', () => {
  it('run() after close() rejects with AccelUsageError, not a raw EBADF from the closed doorbell eventfds', async () => {
    const vm = new KvmVm({ image: buildVmbusDemoGuest() });
    vm.close();
    const e = await vm.run().then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(e).toBeInstanceOf(AccelUsageError);
    expect((e as Error).message).toMatch(/KvmVm.run: the VM is closed/);
    expect((e as { code?: string }).code).toBeUndefined();
    vm.stop(); // no-ops after close
    vm.close();
  });

  it('new KvmVm() without options, or with a bad image or RAM size, is a HostUsageError naming the option', () => {
    const rows: [unknown, RegExp][] = [
      [undefined, /new KvmVm\(options\): options must be an object with a guest image, not undefined/],
      [null, /options must be an object .* not null/],
      [{}, /options.image must be a Uint8Array/],
      [{ image: 'vmlinux' }, /options.image must be a Uint8Array/],
      [{ image: new Uint8Array(16), ramBytes: NaN }, /options.ramBytes must be a positive multiple of 4096, not NaN/],
      [{ image: new Uint8Array(16), ramBytes: 1000 }, /options.ramBytes/],
    ];
    for (const [options, message] of rows) {
      let thrown: unknown;
      try {
        new KvmVm(options as never);
      } catch (e) {
        thrown = e;
      }
      expect(thrown, String(thrown)).toBeInstanceOf(HostUsageError);
      expect(thrown).toBeInstanceOf(HvemuError);
      expect((thrown as Error).message).toMatch(message);
    }
  });

  it('waits with a NaN timeout or an unknown IC are refused instead of never expiring', async () => {
    const vm = new KvmVm({ image: buildVmbusDemoGuest() });
    try {
      await expect(vm.whenReady(['heartbeat'], NaN)).rejects.toThrow(
        /KvmVm.whenReady: timeoutMs must be a finite number of ms >= 0, not NaN/,
      );
      await expect(vm.whenReady(['nosuch' as never])).rejects.toThrow(HostUsageError);
      await expect(vm.exerciseIcs({ timeoutMs: NaN })).rejects.toThrow(/options.timeoutMs/);
      await expect(vm.exerciseIcs({ heartbeats: -1 })).rejects.toThrow(/options.heartbeats/);
    } finally {
      vm.close();
    }
  });
});
