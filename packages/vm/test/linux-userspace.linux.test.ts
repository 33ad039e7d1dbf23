/**
 * Linux user space on hvemu: the test kernel unpacks an initramfs built here (cpio newc by
 * @hvemu/platform's buildInitramfs) and runs its /init, a static 64-bit program without libc
 * compiled now with the system gcc. It prints a line and powers the VM off, so every step of
 * the way in and out of user space is covered: execve, SYSCALL/SYSRETQ (hvemu completes the
 * SYSCALLs this kind of KVM leaves at CPL 3), the console, reboot(POWER_OFF) through ACPI.
 */
import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { buildInitramfs } from '@hvemu/platform';
import { LinuxVm } from '@hvemu/vm';
import { describeKvm } from './helpers/hv-guest.js';
import { buildStaticInit, TEST_CMDLINE_BASE as TEST_CMDLINE, testKernel } from './helpers/linux.js';

describeKvm('Linux user space on hvemu', () => {
  it.each([1, 2])('runs a static 64-bit /init from an initramfs on %i vCPU(s): it prints a line and powers the VM off', async (cpus) => {
    const initrd = buildInitramfs([
      { kind: 'chardev', path: 'dev/console', major: 5, minor: 1 },
      { kind: 'file', path: 'init', data: buildStaticInit('init.c') },
    ]);
    let log = '';
    const vm = new LinuxVm({
      kernel: readFileSync(testKernel()),
      initrd,
      commandLine: TEST_CMDLINE,
      cpus,
      console: (b) => (log += String.fromCharCode(b)),
    });
    try {
      const end = await vm.run(25 * 60_000);
      expect(log, log.slice(-3000)).toContain('Run /init as init process');
      // The tty's ONLCR turns the program's "\n" into "\r\n".
      expect(log, log.slice(-3000)).toContain('hvemu-userspace: hello from /init, pid 1\r\n');
      expect(log).not.toContain('reboot returned');
      expect(end, log.slice(-3000)).toEqual({ kind: 'poweroff' });
    } finally {
      vm.close();
    }
  });
});
