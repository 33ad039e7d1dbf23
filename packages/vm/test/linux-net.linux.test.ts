/**
 * Linux's hv_netvsc as the client of hvemu's netvsp (@hvemu/net) on a real TAP: the test makes
 * its own network namespace, hvemu opens the TAP (then it is moved into the namespace and gets
 * 10.78.0.1/24), and Debian's dnsmasq serves DHCP there. The kernel's own IP autoconfiguration
 * (`ip=dhcp`, no user space) registers eth0 with hvemu's MAC and takes its lease; then the
 * namespace pings the guest 100 times: the guest kernel answers every one. `root=/dev/sda
 * rootwait` with no disk keeps the kernel waiting (alive, answering ICMP) after ipconfig.
 * Opt-in (`npm run test:linux`); .ci/run installs dnsmasq and iputils-ping.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tapUnavailableReason } from '@hvemu/net';
import { LinuxVm, nicsOf } from '@hvemu/vm';
import { describeKvm } from './helpers/hv-guest.js';
import { TEST_CMDLINE_BASE, testKernel, until } from './helpers/linux.js';

const MAC = '00:15:5d:4e:00:02';
const HOST_IP = '10.78.0.1';
const GUEST_IP = '10.78.0.2';
const PINGS = 100;

const ns = `hvemu-lnet-${process.pid}`;
const tapName = `hvl${process.pid % 1_000_000}`;
const ip = (...args: string[]): string => execFileSync('ip', args, { encoding: 'utf8' });
const inNs = (...args: string[]): string => ip('netns', 'exec', ns, 'ip', ...args);

function missingTool(): string | null {
  for (const [tool, args] of [
    ['ip', ['-V']],
    ['dnsmasq', ['--version']],
    ['ping', ['-V']],
  ] as const) {
    try {
      execFileSync(tool, args, { stdio: 'ignore' });
    } catch {
      return `${tool} is missing`;
    }
  }
  return null;
}

const reason = tapUnavailableReason() ?? missingTool();
if (reason && process.env['HVEMU_REQUIRE_KVM'] === '1') throw new Error(`the real-NIC test cannot run here: ${reason}`);
const describeNet = reason ? describe.skip : describeKvm;

describeNet(`Linux hv_netvsc on hvemu's netvsp and a TAP${reason ? ` (skipped: ${reason})` : ''}`, () => {
  const dir = mkdtempSync(join(tmpdir(), 'hvemu-linux-net-'));
  let log = '';
  let dnsmasqLog = '';
  let vm: LinuxVm;
  let dnsmasq: ChildProcess | undefined;
  let ended: Promise<unknown>;

  beforeAll(() => {
    ip('netns', 'add', ns);
    vm = new LinuxVm({
      kernel: readFileSync(testKernel()),
      commandLine: `${TEST_CMDLINE_BASE} ip=dhcp root=/dev/sda rootwait`,
      devices: ['heartbeat', 'shutdown', 'timesync'],
      nics: [{ tap: tapName, mac: MAC }],
      console: (b) => (log += String.fromCharCode(b)),
    });
    // The VM opened the TAP in this namespace; its fd keeps working after the move.
    ip('link', 'set', tapName, 'netns', ns);
    inNs('link', 'set', 'lo', 'up');
    inNs('addr', 'add', `${HOST_IP}/24`, 'dev', tapName);
    inNs('link', 'set', tapName, 'up');
    dnsmasq = spawn(
      'ip',
      [
        ...['netns', 'exec', ns, 'dnsmasq', '--no-daemon', '--conf-file=/dev/null', '--port=0', '--log-dhcp'],
        ...[`--interface=${tapName}`, '--bind-interfaces', '--user=root', '--group=root'],
        ...[`--dhcp-range=10.78.0.10,10.78.0.20,255.255.255.0,1h`, `--dhcp-host=${MAC},${GUEST_IP}`],
        ...[`--dhcp-leasefile=${join(dir, 'leases')}`, `--pid-file=${join(dir, 'dnsmasq.pid')}`],
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    dnsmasq.stdout!.on('data', (d: Buffer) => (dnsmasqLog += d.toString()));
    dnsmasq.stderr!.on('data', (d: Buffer) => (dnsmasqLog += d.toString()));
    ended = vm.run(25 * 60_000);
  });

  afterAll(async () => {
    vm?.stop();
    await ended?.catch(() => undefined);
    await vm?.close();
    dnsmasq?.kill('SIGTERM');
    try {
      ip('netns', 'del', ns);
    } catch {
      // already gone
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it("the kernel's ip=dhcp registers eth0 with hvemu's MAC and takes the lease dnsmasq offers", async () => {
    // The whole "device=..." line (the console is still printing it when "Complete:" appears).
    const completeLine = /IP-Config: Complete:[^\n]*\n[^\n]*hwaddr=[^\n]*\n/;
    await until(() => completeLine.test(log) || log.includes('Kernel panic'), 20 * 60_000);
    const complete = completeLine.exec(log)?.[0] ?? '';
    expect(complete, `${log.slice(-4000)}\n--- dnsmasq ---\n${dnsmasqLog}`).toContain(`device=eth0, hwaddr=${MAC}`);
    expect(complete).toContain(`ipaddr=${GUEST_IP}`);
    expect(dnsmasqLog).toMatch(new RegExp(`DHCPACK\\(${tapName}\\) ${GUEST_IP.replace(/\./g, '\\.')} ${MAC}`));
  });

  it(`answers ${PINGS} pings from the host side without loss`, async () => {
    // ipconfig prints "Complete" before it gives eth0 its address (net/ipv4/ipconfig.c): echo
    // requests then are dropped by the guest, rightly. The kernel's next line comes after.
    await until(() => log.includes('Waiting for root device'), 10 * 60_000);
    expect(log).toContain('Waiting for root device /dev/sda');
    const nic = nicsOf(vm.vm)[0];
    const before = { rx: nic.stats.rxFrames, tx: nic.stats.txFrames };
    // Asynchronous: the VM's exits are handled on this event loop while ping runs.
    const { stdout } = await promisify(execFile)(
      'ip',
      ['netns', 'exec', ns, 'ping', '-c', String(PINGS), '-i', '0.02', '-W', '5', GUEST_IP],
      {
        encoding: 'utf8',
      },
    );
    expect(stdout).toContain(`${PINGS} packets transmitted, ${PINGS} received, 0% packet loss`);
    const rtt = /rtt min\/avg\/max\/mdev = ([\d.]+)\/([\d.]+)\/([\d.]+)\/([\d.]+) ms/.exec(stdout);
    expect(rtt).not.toBeNull();
    // Each echo request went in through netvsp's receive buffer, each reply out through a send.
    expect(nic.stats.rxFrames - before.rx).toBeGreaterThanOrEqual(PINGS);
    expect(nic.stats.txFrames - before.tx).toBeGreaterThanOrEqual(PINGS);
    expect(nic.stats.rxBadSize + nic.stats.txBadSize + nic.stats.rndisErrors + nic.stats.nvspErrors).toBe(0);
    console.log(`ping ${GUEST_IP} through hvemu's netvsp: ${PINGS}/${PINGS}, rtt min/avg/max ${rtt![1]}/${rtt![2]}/${rtt![3]} ms`);
  });
});
