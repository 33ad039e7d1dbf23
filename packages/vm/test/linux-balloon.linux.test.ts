/**
 * Linux's hv_balloon as the client of hvemu's dynamic memory VSP (@hvemu/balloon), with real
 * memory effects: the guest negotiates its version and capabilities and sends status reports;
 * the host inflates the balloon by 128 MiB, the guest hands over 128 MiB of page ranges, and
 * the host memory behind guest RAM (the memfd's allocated blocks, and the process's resident
 * shared memory) drops by at least 95% of that; deflating gives them back; a hot-added 128 MiB
 * region is onlined by the guest. The guest's own count of its RAM (sysinfo's totalram, which
 * hv_balloon lowers for ballooned pages and raises for onlined ones) is printed on its console by
 * a static /init (userspace/meminfo-init.c) whenever it changes: that is the guest log the test
 * reads. init_on_free=1 makes the guest zero every page it frees, its free memory at boot
 * included, so all of guest RAM is resident on the host before the balloon inflates, as in a
 * guest that has used its memory (pages it never touched would cost the host nothing to begin
 * with). Opt-in (`npm run test:linux`).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { buildInitramfs } from '@hvemu/platform';
import { LinuxVm } from '@hvemu/vm';
import { describeKvm } from './helpers/hv-guest.js';
import { buildStaticInit, TEST_CMDLINE_BASE, testKernel, until } from './helpers/linux.js';

const MiB = 1 << 20;
const RAM = 512 * MiB;
const N = 128 * MiB;
const HOT_ADD = 128 * MiB;

/** This process's resident shared memory (guest RAM is a MAP_SHARED memfd), bytes. */
function rssShmem(): number {
  const kb = /^RssShmem:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1];
  return Number(kb) * 1024;
}

/** The guest's RAM as its /init last printed it, kB. */
function guestMemTotal(log: string): number | null {
  const all = [...log.matchAll(/hvemu-meminfo: MemTotal (\d+) kB/g)];
  return all.length ? Number(all[all.length - 1][1]) : null;
}

describeKvm("Linux's hv_balloon on hvemu", () => {
  it('inflates by 128 MiB with the host memory really released, deflates, and onlines 128 MiB hot-added', async () => {
    const initrd = buildInitramfs([
      { kind: 'chardev', path: 'dev/console', major: 5, minor: 1 },
      { kind: 'file', path: 'init', data: buildStaticInit('meminfo-init.c') },
    ]);
    let log = '';
    const started = performance.now();
    const phases: string[] = [];
    const phase = (name: string): number => phases.push(`${name} ${((performance.now() - started) / 1000).toFixed(1)} s`);
    const vm = new LinuxVm({
      kernel: readFileSync(testKernel()),
      initrd,
      ramBytes: RAM,
      // Status reports from the first second (Linux waits 45 by default); hot-added memory
      // onlined by the kernel itself (no udev here).
      commandLine: `${TEST_CMDLINE_BASE} init_on_free=1 memhp_default_state=online hv_balloon.pressure_report_delay=1`,
      balloon: true,
      console: (b) => (log += String.fromCharCode(b)),
    });
    const ended = vm.run(25 * 60_000);
    try {
      const balloon = vm.balloon!;
      const stats = () => balloon.stats();
      // Negotiation and the first report.
      await until(() => stats().statusReports > 0 && guestMemTotal(log) !== null, 20 * 60_000);
      expect(log, log.slice(-4000)).toContain('hv_balloon: Using Dynamic Memory protocol version 2.0');
      expect(stats()).toMatchObject({ phase: 'ready', version: 0x20000 });
      expect(stats().capabilities).toMatchObject({ balloon: true, hotAdd: true, hotAddAlignment: 128 * MiB });
      const first = stats().lastStatus!;
      expect(first.numCommitted).toBeGreaterThan(0);
      expect(first.numAvail).toBeGreaterThan(0);
      const memTotal = guestMemTotal(log)!;
      phase('ready');

      // Inflate by N.
      const before = { allocated: stats().hostAllocatedBytes!, rss: rssShmem() };
      const inflateStart = performance.now();
      balloon.setTarget(RAM - N);
      await until(() => stats().balloonedPages * 4096 >= N && stats().inFlight === null, 10 * 60_000);
      const inflateSeconds = (performance.now() - inflateStart) / 1000;
      await balloon.idle();
      expect(stats().balloonedPages * 4096).toBe(N);
      expect(stats().protocolErrors).toBe(0);
      phase('inflated');
      const inflated = { allocated: stats().hostAllocatedBytes!, rss: rssShmem() };
      const drop = { allocated: before.allocated - inflated.allocated, rss: before.rss - inflated.rss };
      expect(before.allocated).toBeGreaterThan(RAM - 64 * MiB); // init_on_free touched it all
      console.log(
        `hv_balloon inflate by ${N / MiB} MiB in ${inflateSeconds.toFixed(2)} s (${(N / MiB / inflateSeconds).toFixed(0)} MiB/s, polled every 50 ms): memfd blocks -${(drop.allocated / MiB).toFixed(1)} MiB, RssShmem -${(drop.rss / MiB).toFixed(1)} MiB`,
      );
      expect(drop.allocated).toBeGreaterThanOrEqual(0.95 * N);
      expect(drop.rss).toBeGreaterThanOrEqual(0.95 * N);
      await until(() => guestMemTotal(log) === memTotal - N / 1024, 120_000);
      expect(guestMemTotal(log)).toBe(memTotal - N / 1024);

      // Deflate: the pages come back (zero, from fresh host memory when touched).
      balloon.setTarget(RAM);
      await until(() => stats().balloonedPages === 0 && stats().inFlight === null, 10 * 60_000);
      expect(stats().returnedBytes).toBe(N);
      phase('deflated');
      await until(() => guestMemTotal(log) === memTotal, 120_000);
      expect(guestMemTotal(log)).toBe(memTotal);

      // Hot add: a new memslot above RAM; the guest onlines it.
      const added = await balloon.hotAdd(HOT_ADD);
      phase('hot-added');
      expect(added).toMatchObject({ bytes: HOT_ADD, accepted: true, pagesOnlined: HOT_ADD / 4096 });
      expect(added.gpa).toBeGreaterThanOrEqual(4 * 1024 * MiB);
      await until(() => guestMemTotal(log) === memTotal + HOT_ADD / 1024, 120_000);
      expect(guestMemTotal(log), log.slice(-2000)).toBe(memTotal + HOT_ADD / 1024);
      expect(stats().ramBytes).toBe(RAM + HOT_ADD);
      phase('guest saw it');
      console.log(`hv_balloon: ${phases.join(', ')}`);
    } finally {
      vm.stop();
      await ended;
      await vm.close();
    }
  });

  it('hvemu run --balloon --control: a control command shrinks the running guest, and shutdown powers it off', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hvemu-balloon-cli-'));
    const initrd = join(dir, 'initrd.cpio');
    writeFileSync(
      initrd,
      buildInitramfs([
        { kind: 'chardev', path: 'dev/console', major: 5, minor: 1 },
        { kind: 'file', path: 'init', data: buildStaticInit('meminfo-init.c') },
      ]),
    );
    const socket = join(dir, 'control.sock');
    const main = fileURLToPath(new URL('../../cli/dist/main.js', import.meta.url));
    const child = spawn('node', [
      ...[main, 'run', '--kernel', testKernel(), '--initrd', initrd, '--memory', '256M', '--timeout', '900'],
      ...['--cmdline', `${TEST_CMDLINE_BASE} hv_balloon.pressure_report_delay=1`, '--balloon', '--control', socket],
    ]);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    const ask = (line: string): Promise<Record<string, unknown>> =>
      new Promise((resolve, reject) => {
        const c = connect(socket, () => c.write(`${line}\n`));
        let got = '';
        c.on('data', (d) => {
          got += d.toString();
          if (!got.includes('\n')) return;
          resolve(JSON.parse(got) as Record<string, unknown>);
          c.destroy();
        });
        c.on('error', reject);
      });
    try {
      let ready = false;
      await until(() => {
        if (!ready && guestMemTotal(stdout) !== null && existsSync(socket)) {
          void ask('stats').then((r) => (ready = (r.balloon as { phase?: string } | null)?.phase === 'ready'));
        }
        return ready;
      }, 15 * 60_000);
      const memTotal = guestMemTotal(stdout)!;
      expect(await ask('balloon 192M')).toEqual({ ok: true, target: 192 * MiB });
      await until(() => guestMemTotal(stdout) === memTotal - (64 * MiB) / 1024, 5 * 60_000);
      expect(guestMemTotal(stdout), stdout.slice(-2000)).toBe(memTotal - (64 * MiB) / 1024);
      expect(await ask('stats')).toMatchObject({ ok: true, balloon: { balloonedPages: (64 * MiB) / 4096 } });
      expect(await ask('shutdown')).toEqual({ ok: true });
      expect(await exited, stderr).toBe(0);
      expect(stderr).toContain('hvemu run: control: balloon target 192 MiB');
      expect(stderr).toContain('the guest powered off');
      expect(existsSync(socket)).toBe(false);
    } finally {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
