/**
 * An unmodified Linux kernel (scripts/build-test-kernel.sh: Debian's linux-source-6.1, every
 * Hyper-V driver built in) on hvemu through LinuxVm, with the in-box drivers as the VMBus
 * client: hv_vmbus negotiates, hv_utils binds the ICs, and a host shutdown request powers the
 * guest off through ACPI. Opt-in (`npm run test:linux`): a boot takes minutes on this KVM.
 */
import { expect, it } from 'vitest';
import { integrationComponentsOf, LinuxVm } from '@hvemu/vm';
import { describeKvm } from './helpers/hv-guest.js';
import { TEST_CMDLINE as BASE_CMDLINE, testKernel } from './helpers/test-kernel.js';

// root=/dev/sda rootwait: no disk yet, so the kernel waits for one instead of panicking, with its drivers up.
const TEST_CMDLINE = `${BASE_CMDLINE} root=/dev/sda rootwait`;

describeKvm('Linux on hvemu (the in-box drivers as the client)', () => {
  it('hv_vmbus negotiates, hv_utils binds the ICs, a host shutdown powers the guest off', async () => {
    let log = '';
    const vm = new LinuxVm({
      kernel: testKernel(),
      commandLine: TEST_CMDLINE,
      ramBytes: 256 << 20,
      cpus: 1,
      console: (b) => (log += String.fromCharCode(b)),
    });
    try {
      const ics = integrationComponentsOf(vm.vm);
      const running = vm.run(25 * 60_000);
      const deadline = Date.now() + 20 * 60_000;
      while (ics.shutdown.service.state !== 'ready' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(ics.shutdown.service.state, log.slice(-4000)).toBe('ready');
      void ics.shutdown.host.shutdown({ kind: 'poweroff', message: 'test:linux' });
      expect(await running, log.slice(-4000)).toEqual({ kind: 'poweroff' });
      expect(log).toMatch(/Vmbus version:/i);
    } finally {
      vm.close();
    }
  });

  it('a kernel panic is reported from the Hyper-V crash MSRs', async () => {
    let log = '';
    // No root= at all: the kernel cannot mount a root and panics; hv_vmbus's panic notifier writes the crash MSRs.
    const vm = new LinuxVm({
      kernel: testKernel(),
      commandLine: BASE_CMDLINE,
      ramBytes: 256 << 20,
      console: (b) => (log += String.fromCharCode(b)),
    });
    try {
      const end = await vm.run(25 * 60_000);
      expect(end.kind, log.slice(-4000)).toBe('crash');
      expect(log).toMatch(/Kernel panic/);
    } finally {
      vm.close();
    }
  });
});
