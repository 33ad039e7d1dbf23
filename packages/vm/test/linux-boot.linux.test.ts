/**
 * An unmodified Linux kernel (scripts/build-test-kernel.sh: Debian's linux-source-6.1, every
 * Hyper-V driver built in) on hvemu through LinuxVm, with the in-box drivers as the VMBus
 * client: hv_vmbus negotiates, hv_utils binds the ICs, and a host shutdown request powers the
 * guest off through ACPI. Opt-in (`npm run test:linux`): a boot takes minutes on this KVM.
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { integrationComponentsOf, LinuxVm } from '@hvemu/vm';
import { describeKvm } from './helpers/hv-guest.js';

const SCRIPT = fileURLToPath(new URL('../../../scripts/build-test-kernel.sh', import.meta.url));
/** What this KVM needs (KVM-NOTES.md): no XSAVE state, no legacy PTY scan, the serial console. */
// root=/dev/sda rootwait: no disk yet, so the kernel waits for one instead of panicking, with its drivers up.
const TEST_CMDLINE = 'console=ttyS0 earlyprintk=serial,ttyS0 noxsave pty.legacy_count=0 panic=-1 no_timer_check root=/dev/sda rootwait';

describeKvm('Linux on hvemu (the in-box drivers as the client)', () => {
  it('hv_vmbus negotiates, hv_utils binds the ICs, a host shutdown powers the guest off', async () => {
    const vmlinux = execFileSync('bash', [SCRIPT], { encoding: 'utf8' }).trim().split('\n').pop()!;
    let log = '';
    const vm = new LinuxVm({
      kernel: readFileSync(vmlinux),
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
    const vmlinux = execFileSync('bash', [SCRIPT], { encoding: 'utf8' }).trim().split('\n').pop()!;
    let log = '';
    // No root= at all: the kernel cannot mount a root and panics; hv_vmbus's panic notifier writes the crash MSRs.
    const cmdline = TEST_CMDLINE.replace(' root=/dev/sda rootwait', '');
    const vm = new LinuxVm({
      kernel: readFileSync(vmlinux),
      commandLine: cmdline,
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
