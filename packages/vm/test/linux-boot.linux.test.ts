/**
 * An unmodified Linux kernel (scripts/build-test-kernel.sh: Debian's linux-source-6.1, every
 * Hyper-V driver built in) on hvemu through LinuxVm, with the in-box drivers as the VMBus
 * client: hv_vmbus negotiates, hv_utils binds the ICs, and a host shutdown request powers the
 * guest off through ACPI. Opt-in (`npm run test:linux`): a boot takes minutes on this KVM.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MonotonicClock } from '@hvemu/common';
import { TraceReader, TraceRecorder } from '@hvemu/trace';
import { deviceTraceHeader, integrationComponentsOf, LinuxVm, replayTrace } from '@hvemu/vm';
import { describeKvm } from './helpers/hv-guest.js';
import { TEST_CMDLINE_BASE, testKernel, until } from './helpers/linux.js';

// root=/dev/sda rootwait: no disk here, so the kernel waits for one instead of panicking, with its drivers up.
const TEST_CMDLINE = `${TEST_CMDLINE_BASE} root=/dev/sda rootwait`;

describeKvm('Linux on hvemu (the in-box drivers as the client)', () => {
  it('hv_vmbus negotiates, hv_utils binds the ICs, answers heartbeats and takes time samples; a host shutdown powers it off; the trace replays', async () => {
    const vmlinux = testKernel();
    // HVEMU_LINUX_TRACE_OUT (scripts/capture-linux-fixture.sh) keeps the trace as a fixture.
    const tracePath = process.env.HVEMU_LINUX_TRACE_OUT ?? join(mkdtempSync(join(tmpdir(), 'hvemu-linux-')), 'linux.hvtrace');
    const clock = new MonotonicClock();
    const recorder = TraceRecorder.toFile(tracePath, deviceTraceHeader('test:linux (Linux 6.1, hv_vmbus + hv_utils)'), { clock });
    let log = '';
    const vm = new LinuxVm({
      kernel: readFileSync(vmlinux),
      commandLine: TEST_CMDLINE,
      ramBytes: 256 << 20,
      cpus: 1,
      clock,
      trace: recorder,
      console: (b) => (log += String.fromCharCode(b)),
    });
    try {
      const ics = integrationComponentsOf(vm.vm);
      const running = vm.run(25 * 60_000);
      const ready = () => [ics.heartbeat, ics.shutdown, ics.timesync].every((ic) => ic.service.state === 'ready');
      await until(ready, 20 * 60_000);
      expect(ready(), log.slice(-4000)).toBe(true);
      // Heartbeats the way a host sends them (one at a time), each answered by hv_utils with seq + 1.
      for (let i = 0; i < 3; i++) {
        expect(ics.heartbeat.host.beat()).toBe(true);
        await until(() => ics.heartbeat.service.status.lastSequence === BigInt(2 * i + 1), 60_000);
      }
      expect(ics.heartbeat.service.status).toMatchObject({ lastSequence: 5n, badAnswers: 0 });
      // The sync sample sent when timesync became ready, then one more: hv_utils takes each (answers it).
      await until(() => ics.timesync.service.samplesAnswered === 1, 60_000);
      expect(ics.timesync.host.sample()).toBe(true);
      await until(() => ics.timesync.service.samplesAnswered === 2, 60_000);
      expect(ics.timesync.service.samplesAnswered).toBe(2);
      void ics.shutdown.host.shutdown({ kind: 'poweroff', message: 'test:linux' });
      expect(await running, log.slice(-4000)).toEqual({ kind: 'poweroff' });
      expect(log).toMatch(/Vmbus version:/i);
      expect(log).toMatch(/Heartbeat IC version/);
      expect(log).toMatch(/TimeSync IC version/);
    } finally {
      vm.close();
      await recorder.close();
    }
    // The real client's session, replayed against a fresh host: every host answer the same.
    const replay = replayTrace(TraceReader.open(tracePath));
    expect(
      replay.divergence,
      JSON.stringify(replay.divergence, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)),
    ).toBeNull();
    expect(replay.matched).toBe(true);
    expect(replay.compared).toBeGreaterThan(50);
  });

  it('two vCPUs: both come up (MADT), hv_vmbus and hv_utils bind, a host shutdown powers the guest off', async () => {
    const end = await bootToShutdown(testKernel(), 2);
    expect(end.result, end.log.slice(-4000)).toEqual({ kind: 'poweroff' });
    expect(end.log).toMatch(/smp: Brought up 1 node, 2 CPUs/);
    expect(end.log).toMatch(/hv_vmbus: Vmbus version:5\.3/);
  });

  it('a distribution-style bzImage through the 64-bit boot protocol: the in-guest decompressor runs, then the same boot', async () => {
    const end = await bootToShutdown(testKernel('bzImage'), 1);
    expect(end.boot).toBe('bzimage');
    expect(end.result, end.log.slice(-4000)).toEqual({ kind: 'poweroff' });
    expect(end.log).toMatch(/hv_utils: Shutdown IC version/);
  });

  it('a kernel panic is reported from the Hyper-V crash MSRs', async () => {
    const vmlinux = testKernel();
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
      // hv_vmbus's kmsg dumper hands the panic log over through CrashNotifyMsg.
      expect(end.kind === 'crash' && end.message).toMatch(/Kernel panic - not syncing/);
    } finally {
      vm.close();
    }
  });
});

/** Boots `kernel`, waits for the shutdown IC, asks for a poweroff, and returns how it ended with the console log. */
async function bootToShutdown(kernel: string, cpus: number): Promise<{ result: unknown; log: string; boot: string }> {
  let log = '';
  const vm = new LinuxVm({
    kernel: readFileSync(kernel),
    commandLine: TEST_CMDLINE,
    ramBytes: 256 << 20,
    cpus,
    console: (b) => (log += String.fromCharCode(b)),
  });
  try {
    const ics = integrationComponentsOf(vm.vm);
    const running = vm.run(25 * 60_000);
    await until(() => ics.shutdown.service.state === 'ready', 20 * 60_000);
    void ics.shutdown.host.shutdown({ kind: 'poweroff', message: 'test:linux' });
    return { result: await running, log, boot: vm.boot.kind };
  } finally {
    vm.close();
  }
}

describeKvm('hvemu run with the real kernel', () => {
  it('SIGTERM is the power button: the shutdown IC asks Linux to power off, and hvemu run exits 0 saying so', async () => {
    const main = fileURLToPath(new URL('../../cli/dist/main.js', import.meta.url));
    const child = spawn('node', [main, 'run', '--kernel', testKernel(), '--cmdline', TEST_CMDLINE, '--timeout', '600']);
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const icUp = new Promise<void>((resolve) =>
      child.stdout.on('data', (d: Buffer) => {
        stdout += d.toString('latin1');
        if (/Shutdown IC version/.test(stdout)) resolve();
      }),
    );
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    await Promise.race([icUp, exited]);
    // hv_utils prints the version line as it binds; the host's side is ready a moment later.
    await new Promise((r) => setTimeout(r, 1000));
    child.kill('SIGTERM');
    expect(await exited, stdout.slice(-3000) + stderr).toBe(0);
    expect(stderr).toContain('SIGTERM: asking the guest to shut down');
    expect(stderr).toContain('the guest powered off (ACPI S5)');
  });
});
