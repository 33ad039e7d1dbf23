/**
 * netvsp on a real Linux TAP: the test makes its own network namespace, creates the TAP (our
 * backend opens /dev/net/tun), moves it into the namespace, gives it 10.77.0.1/24, and lets
 * that namespace's kernel be the peer: the TypeScript netvsc guest (10.77.0.2) resolves it with
 * ARP and pings it with ICMP echo of several sizes, and gets the kernel's answers back through
 * the TAP, netvsp and the receive buffer. The namespace (and the TAP with it) is removed after.
 * Skipped, with the reason, where /dev/net/tun or CAP_NET_ADMIN (or `ip`) is missing.
 */
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TapBackend } from '@hvemu/net';
import { ethernetFrame, tapTestUnavailableReason } from '@hvemu/net/testing';
import { GUEST_MAC, nicSim, type NicSim } from './helpers/sim.js';

const reason = tapTestUnavailableReason();
const ns = `hvemu-net-${process.pid}`;
const tapName = `hvt${process.pid % 1_000_000}`;
const HOST_IP = [10, 77, 0, 1];
const GUEST_IP = [10, 77, 0, 2];

const ip = (...args: string[]): string => execFileSync('ip', args, { encoding: 'utf8' });
const inNs = (...args: string[]): string => ip('netns', 'exec', ns, 'ip', ...args);

function arpRequest(): Uint8Array {
  const f = new Uint8Array(42);
  f.fill(0xff, 0, 6);
  f.set(GUEST_MAC, 6);
  f.set([0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1], 12);
  f.set(GUEST_MAC, 22);
  f.set(GUEST_IP, 28);
  f.set(HOST_IP, 38);
  return f;
}

function checksum(b: Uint8Array, from: number, to: number): number {
  let sum = 0;
  for (let i = from; i < to; i += 2) sum += (b[i] << 8) | (i + 1 < to ? b[i + 1] : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** An ICMP echo request from the guest to the namespace's address, `payload` bytes of data. */
function echoRequest(dstMac: Uint8Array, id: number, payload: number): Uint8Array {
  const f = new Uint8Array(14 + 20 + 8 + payload);
  const dv = new DataView(f.buffer);
  f.set(dstMac, 0);
  f.set(GUEST_MAC, 6);
  dv.setUint16(12, 0x0800);
  dv.setUint8(14, 0x45);
  dv.setUint16(16, 20 + 8 + payload);
  dv.setUint8(22, 64);
  dv.setUint8(23, 1); // ICMP
  f.set(GUEST_IP, 26);
  f.set(HOST_IP, 30);
  dv.setUint16(24, checksum(f, 14, 34));
  dv.setUint8(34, 8); // echo request
  dv.setUint16(38, id);
  dv.setUint16(40, 1);
  for (let i = 0; i < payload; i++) f[42 + i] = (i * 13 + id) & 0xff;
  dv.setUint16(36, checksum(f, 34, f.length));
  return f;
}

// Every way frames move: the addon's batched reads and its writer thread (the default), the
// addon's batched calls with writes on the JS thread, and koffi one frame per call.
const MODES = {
  'writer thread': {},
  'native batches on the JS thread': { writerThread: false },
  'koffi per frame': { frameIo: null },
} as const;
for (const mode of Object.keys(MODES) as (keyof typeof MODES)[])
  describe.skipIf(reason !== null)(`netvsp on a TAP in its own network namespace, ${mode}${reason ? ` (skipped: ${reason})` : ''}`, () => {
    let sim: NicSim;
    let tap: TapBackend;
    let tapMac: Uint8Array;

    beforeAll(async () => {
      ip('netns', 'add', ns);
      tap = TapBackend.open({ name: tapName, ...MODES[mode] });
      ip('link', 'set', tapName, 'netns', ns);
      inNs('link', 'set', 'lo', 'up');
      inNs('addr', 'add', '10.77.0.1/24', 'dev', tapName);
      inNs('link', 'set', tapName, 'up');
      const link = JSON.parse(inNs('-j', 'link', 'show', tapName)) as { address: string }[];
      tapMac = Uint8Array.from(link[0].address.split(':').map((h) => parseInt(h, 16)));
      sim = await nicSim({ backend: tap, guest: { yieldTurn: () => new Promise((r) => setTimeout(r, 1)), maxTurns: 5000 } });
      await sim.guest.connect();
    });

    afterAll(() => {
      tap?.close();
      try {
        ip('netns', 'del', ns);
      } catch {
        // already gone
      }
    });

    it("the namespace's kernel answers the guest's ARP request through the TAP", async () => {
      await sim.guest.until(() => sim.guest.send(arpRequest()));
      const reply = await sim.guest.until(() =>
        sim.guest.received(0).find((r) => r.frame[12] === 0x08 && r.frame[13] === 0x06 && r.frame[21] === 2),
      );
      expect([...reply.frame.subarray(0, 6)]).toEqual([...GUEST_MAC]);
      expect([...reply.frame.subarray(22, 28)]).toEqual([...tapMac]); // sender hardware address
      expect([...reply.frame.subarray(28, 32)]).toEqual(HOST_IP);
      expect(tap.stats.framesOut).toBeGreaterThanOrEqual(1);
    });

    it('ICMP echo of 0 to 1472 bytes comes back from the kernel with the same data', async () => {
      for (const [i, size] of [0, 56, 1000, 1472].entries()) {
        const request = echoRequest(tapMac, 0x100 + i, size);
        await sim.guest.until(() => sim.guest.send(request));
        const reply = await sim.guest.until(() =>
          sim.guest.received(0).find((r) => r.frame[23] === 1 && r.frame[34] === 0 && ((r.frame[38] << 8) | r.frame[39]) === 0x100 + i),
        );
        expect(reply.frame.length).toBe(request.length);
        expect(Buffer.from(reply.frame.subarray(42)).equals(Buffer.from(request.subarray(42)))).toBe(true);
      }
      expect(sim.nic.stats.rxBadSize + sim.nic.stats.txBadSize).toBe(0);
    });

    it('a burst of 3000 guest frames (more than the batches hold) reaches the kernel whole: none lost, none doubled', async () => {
      const rxPackets = (): number =>
        (JSON.parse(inNs('-s', '-j', 'link', 'show', tapName)) as { stats64: { rx: { packets: number } } }[])[0].stats64.rx.packets;
      const before = rxPackets();
      const out = tap.stats.framesOut;
      const frame = ethernetFrame(Uint8Array.of(2, 0, 0, 0, 0, 9), GUEST_MAC, 1500);
      for (let i = 0; i < 3000; i++) await sim.guest.until(() => sim.guest.send(frame));
      await sim.guest.until(() => tap.stats.framesOut - out === 3000);
      expect(tap.stats.writeDrops + tap.stats.writeErrors).toBe(0);
      await sim.guest.until(() => rxPackets() - before >= 3000);
      expect(rxPackets() - before).toBe(3000);
    });

    it('a frame over the TAP limit is dropped and counted, and the next frames still go out', async () => {
      const errors = tap.stats.writeErrors;
      const out = tap.stats.framesOut;
      expect(tap.send([new Uint8Array(70_000), new Uint8Array(10)])).toBe(true);
      expect(tap.stats.writeErrors).toBe(errors + 1);
      expect(tap.send([arpRequest()])).toBe(true);
      await sim.guest.until(() => tap.stats.framesOut > out);
      expect(tap.stats.framesOut).toBe(out + 1);
    });
  });
