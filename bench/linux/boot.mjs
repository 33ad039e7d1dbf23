#!/usr/bin/env node
/**
 * `npm run bench:linux`: the test kernel (scripts/build-test-kernel.sh) booted by hvemu
 * (`hvemu run`, PVH, hvemu's Hyper-V and VMBus) and by QEMU (`qemu-system-x86_64 -accel kvm`,
 * the same vmlinux through QEMU's PVH loader, no Hyper-V: QEMU refuses the hv flags on this
 * KVM) side by side, alternating, in one run. Milestones are console lines, timed on the host
 * from the process start: the first kernel line, the end of the initcalls ("Waiting for root
 * device": the kernel's command line has root=/dev/sda rootwait and no disk exists), and on
 * hvemu the first hv_vmbus line and all three IC version lines. Prints a table and, last, one
 * JSON line; `linux_boot_<milestone>_ratio` is hvemu's rate over QEMU's (QEMU's time / hvemu's)
 * for each milestone both reach. On this project's KVM QEMU stops at the kernel's int3
 * self-test (an emulation failure this KVM has; hvemu finishes int3 itself), so the shared
 * milestones are the first line and the FPU setup line.
 * Opt-in: it needs /dev/kvm, qemu-system-x86 (installed with apt-get when missing) and the
 * kernel build (~4 min the first time).
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const ROUNDS = Number(process.env.HVEMU_BENCH_ROUNDS ?? 2);
const CMDLINE = 'console=ttyS0 earlyprintk=serial,ttyS0 noxsave pty.legacy_count=0 panic=-1 no_timer_check root=/dev/sda rootwait';
const MILESTONES = {
  first_line: /Linux version/,
  // The last line QEMU reaches on this KVM: next, the kernel's int3 self-test is an emulation
  // failure ("KVM internal error. Suberror: 1", code <cc>), which hvemu's int3 fixup finishes.
  fpu_setup: /x86\/fpu: x87 FPU will use/,
  hv_vmbus: /hv_vmbus:/,
  ics_bound: null, // all three IC version lines
  rootwait: /Waiting for root device/,
};
const IC_LINES = [/Heartbeat IC version/, /Shutdown IC version/, /TimeSync IC version/];

function ensureQemu() {
  try {
    execFileSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' });
  } catch {
    execFileSync('apt-get', ['install', '-y', '-qq', 'qemu-system-x86'], {
      stdio: 'inherit',
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    });
  }
}

/** Runs `cmd`, timing console milestones from spawn; stops it at rootwait (or after `limitMs`). */
function boot(cmd, args, limitMs = 600_000) {
  return new Promise((resolve) => {
    const start = process.hrtime.bigint();
    const at = {};
    const seenIc = new Set();
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const timer = setTimeout(() => child.kill('SIGKILL'), limitMs);
    const elapsed = () => Number(process.hrtime.bigint() - start) / 1e9;
    const onLine = (line) => {
      for (const [name, re] of Object.entries(MILESTONES)) if (re && at[name] === undefined && re.test(line)) at[name] = elapsed();
      IC_LINES.forEach((re, i) => re.test(line) && seenIc.add(i));
      if (at.ics_bound === undefined && seenIc.size === IC_LINES.length) at.ics_bound = elapsed();
      if (/KVM internal error|emulation failure/.test(line)) at.emulation_failure = elapsed();
      if (at.rootwait !== undefined || at.emulation_failure !== undefined) child.kill('SIGKILL');
    };
    // The console is on stdout; QEMU reports a KVM emulation failure on stderr.
    const lines = (stream) => {
      let buffer = '';
      stream.on('data', (chunk) => {
        buffer += chunk.toString('latin1');
        let nl;
        while ((nl = buffer.indexOf('\n')) >= 0) {
          onLine(buffer.slice(0, nl));
          buffer = buffer.slice(nl + 1);
        }
      });
    };
    lines(child.stdout);
    lines(child.stderr);
    child.on('exit', () => {
      clearTimeout(timer);
      resolve(at);
    });
  });
}

const kvm = existsSync('/dev/kvm');
if (!kvm) {
  console.error('bench:linux needs /dev/kvm');
  process.exit(2);
}
ensureQemu();
const kernel = execFileSync('bash', [`${ROOT}/scripts/build-test-kernel.sh`], { encoding: 'utf8' })
  .trim()
  .split('\n')
  .pop();
const runs = { hvemu: [], qemu: [] };
for (let round = 0; round < ROUNDS; round++) {
  runs.hvemu.push(
    await boot('node', [`${ROOT}/packages/cli/dist/main.js`, 'run', '--kernel', kernel, '--cmdline', CMDLINE, '--timeout', '600']),
  );
  runs.qemu.push(
    await boot('qemu-system-x86_64', [
      '-accel',
      'kvm',
      '-m',
      '256',
      '-smp',
      '1',
      '-nodefaults',
      '-no-user-config',
      '-display',
      'none',
      '-serial',
      'stdio',
      '-no-reboot',
      '-kernel',
      kernel,
      '-append',
      CMDLINE,
    ]),
  );
}
const best = (list, name) => Math.min(...list.map((r) => r[name] ?? Infinity));
const figures = {};
console.log('milestone (s, best of ' + ROUNDS + ')'.padEnd(20) + 'hvemu     qemu');
for (const name of Object.keys(MILESTONES)) {
  const h = best(runs.hvemu, name);
  const q = best(runs.qemu, name);
  console.log(
    `${name.padEnd(34)}${Number.isFinite(h) ? h.toFixed(2).padStart(6) : '     -'}   ${Number.isFinite(q) ? q.toFixed(2).padStart(6) : '     -'}`,
  );
  if (Number.isFinite(h)) figures[`linux_boot_${name}_hvemu_s`] = Number(h.toFixed(3));
  if (Number.isFinite(q)) figures[`linux_boot_${name}_qemu_s`] = Number(q.toFixed(3));
}
for (const name of Object.keys(MILESTONES)) {
  const h = best(runs.hvemu, name);
  const q = best(runs.qemu, name);
  if (Number.isFinite(h) && Number.isFinite(q)) figures[`linux_boot_${name}_ratio`] = Number((q / h).toFixed(3));
}
const qemuFailed = runs.qemu.filter((r) => r.emulation_failure !== undefined).length;
if (qemuFailed) console.log(`qemu: ${qemuFailed} of ${ROUNDS} runs ended in a KVM emulation failure (the int3 self-test)`);
console.log(JSON.stringify(figures));
