/**
 * KVP through real Linux user space: the kernel tree's tools/hv/hv_kvp_daemon.c (the daemon
 * Debian ships in hyperv-daemons), built here as a static binary, runs from an initramfs under
 * userspace/kvp-init.c. hv_utils' KVP channel then answers: the host reads the guest's keys
 * (the daemon's own in the auto pool, /init's in the guest pool), and a key the host sets in the
 * external pool reaches the guest's pool file, where /init prints it before powering off.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { buildInitramfs } from '@hvemu/platform';
import { integrationComponentsOf, LinuxVm } from '@hvemu/vm';
import { describeKvm } from './helpers/hv-guest.js';
import { KERNEL_SOURCE_TREE, TEST_CMDLINE_BASE as TEST_CMDLINE, testKernel } from './helpers/linux.js';

const INIT_SOURCE = fileURLToPath(new URL('./userspace/kvp-init.c', import.meta.url));
/** The kernel tree build-test-kernel.sh unpacks (the daemon's source is in tools/hv). */
const KERNEL_TREE = KERNEL_SOURCE_TREE;
const KVP_POOL_EXTERNAL = 0;
const KVP_POOL_GUEST = 1;
const KVP_POOL_AUTO = 2;

/** Static builds with the system gcc and glibc (libc.a from libc6-dev). */
function buildStatic(dir: string, name: string, source: string, extra: string[] = []): Uint8Array {
  const out = join(dir, name);
  execFileSync('gcc', ['-O2', '-static', '-Wall', '-o', out, source, ...extra], { stdio: ['ignore', 'ignore', 'pipe'] });
  return readFileSync(out);
}

describeKvm('KVP through Linux user space (hv_kvp_daemon)', () => {
  it('the host reads guest keys and a host key reaches the guest', async () => {
    const kernel = readFileSync(testKernel()); // first: it unpacks the tree the daemon is built from
    const daemonSource = join(KERNEL_TREE, 'tools/hv/hv_kvp_daemon.c');
    expect(existsSync(daemonSource), daemonSource).toBe(true);
    const dir = mkdtempSync(join(tmpdir(), 'hvemu-kvp-'));
    let initrd: Uint8Array;
    try {
      initrd = buildInitramfs([
        { kind: 'chardev', path: 'dev/console', major: 5, minor: 1 },
        { kind: 'dir', path: 'var/lib/hyperv' },
        { kind: 'file', path: 'init', data: buildStatic(dir, 'init', INIT_SOURCE) },
        { kind: 'file', path: 'sbin/hv_kvp_daemon', data: buildStatic(dir, 'hv_kvp_daemon', daemonSource) },
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    let log = '';
    const vm = new LinuxVm({ kernel, initrd, commandLine: TEST_CMDLINE, console: (b) => (log += String.fromCharCode(b)) });
    try {
      const kvp = integrationComponentsOf(vm.vm).kvp.service;
      const running = vm.run(25 * 60_000);
      const deadline = Date.now() + 20 * 60_000;
      while (kvp.state !== 'ready' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(kvp.state, log.slice(-3000)).toBe('ready');
      // The auto pool's records one index at a time: one the daemon cannot fill (an address it
      // has not got) would end list() early.
      const auto = [];
      for (let i = 0; i < 16; i++) {
        const r = await kvp.enumerate(KVP_POOL_AUTO, i);
        if (r?.record) auto.push(r.record);
      }
      expect(
        auto.map((r) => r.key),
        log.slice(-3000),
      ).toContain('OSName');
      expect(auto.find((r) => r.key === 'OSName')?.value).toBe('Linux');
      expect(await kvp.list(KVP_POOL_GUEST)).toContainEqual({ key: 'hvemu-guest-key', value: 'set by /init in Linux user space' });
      await kvp.set(KVP_POOL_EXTERNAL, { key: 'hvemu-host-key', value: 'hello from the host' });
      expect(await running, log.slice(-3000)).toEqual({ kind: 'poweroff' });
      expect(log).toContain('kvp-init: host key hvemu-host-key = hello from the host');
    } finally {
      vm.close();
    }
  });
});
