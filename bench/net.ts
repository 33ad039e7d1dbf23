/**
 * Network throughput through a real TAP: frames/s and Gbit/s for 64- and 1500-byte frames,
 * guest to network (tx) and network to guest (rx), over the whole host path (the TypeScript
 * netvsc guest in-process on a simulated partition, VMBus rings and signals, netvsp, the TAP
 * backend) against a C baseline moving the same frames through the same TAP in the same run.
 *
 * The TAP is created persistent, attached by hvemu, moved into a network namespace of its own
 * (where the C programs attach to it later), and removed with the namespace at the end.
 * tx: frames to a MAC nobody has (the namespace's kernel drops them at once), timed until the
 * backend wrote them all. rx: a C injector in the namespace sends frames out of the interface
 * (AF_PACKET, as fast as it can) for a fixed time; what the reader takes in that time counts
 * (hvemu: frames the guest received through the receive buffer; C: read(2)s).
 *
 * Ratios are hvemu's rate over the baseline's (higher is better): net_<size>B_<dir>_ratio.
 * Where TAP is not available the suite reports net_skipped with the reason.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HV_X64_MSR_EOM, HV_X64_MSR_SCONTROL, HV_X64_MSR_SIEFP, HV_X64_MSR_SIMP, HV_X64_MSR_SINT0 } from '@hvemu/hvdef';
import { ManualClock, MemoryLogger } from '@hvemu/common';
import { GuestMemory } from '@hvemu/memory';
import { HyperV } from '@hvemu/synic';
import { HypercallDispatcher } from '@hvemu/hypercalls';
import { attachDevice, BumpPageAllocator, simpTransport, VmbusClient, VmbusHost } from '@hvemu/vmbus';
import { formatMac, NetvspDevice, TapBackend, tapUnavailableReason } from '@hvemu/net';
import { ethernetFrame, NetvscClient } from '@hvemu/net/testing';

const GUEST_MAC = Uint8Array.from([0x00, 0x15, 0x5d, 0x00, 0x00, 0x10]);
const NOBODY_MAC = Uint8Array.from([0x02, 0x00, 0x00, 0x00, 0x00, 0x01]);
const RAM = 96 << 20;
const RX_SECONDS = 1.5;
/** HVEMU_BENCH_NET_SIZES=1500 (comma-separated) runs only those frame sizes. */
const SIZES = process.env['HVEMU_BENCH_NET_SIZES']?.split(',').map(Number);
const CASES = [
  { size: 64, txFrames: 2_000_000 },
  { size: 1500, txFrames: 1_500_000 },
].filter((c) => !SIZES || SIZES.includes(c.size));
/**
 * Frames sent before hvemu's tx is timed. The JIT takes that long to settle on this path: with
 * 100k frames of warm-up, the next 200k-frame chunks of 1500 B ran at 1.25 M, 1.3-1.45 M, then
 * 1.66-1.97 M frames/s, and --trace-opt showed the hot path's last functions optimized in the
 * third chunk (BENCHMARKS.md, session 7). The C baseline needs none.
 */
const TX_WARMUP_FRAMES = 1_000_000;

type Figures = Record<string, number | string>;

const sh = (cmd: string, ...args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8' });
const inNs = (ns: string, ...args: string[]): string => sh('ip', 'netns', 'exec', ns, ...args);

function unavailable(): string | null {
  const tap = tapUnavailableReason();
  if (tap) return tap;
  for (const tool of [
    ['ip', '-V'],
    ['gcc', '--version'],
  ]) {
    try {
      execFileSync(tool[0], [tool[1]], { stdio: 'ignore' });
    } catch {
      return `${tool[0]} is missing`;
    }
  }
  return null;
}

function buildBaseline(): string {
  const source = fileURLToPath(new URL('../c/tap_baseline.c', import.meta.url));
  const out = join(mkdtempSync(join(tmpdir(), 'hvemu-bench-')), 'tap_baseline');
  execFileSync('gcc', ['-O2', '-o', out, source]);
  return out;
}

/** The guest side on a simulated partition with plain (ArrayBuffer) RAM, as the KVM backend's memfd mappings are. */
interface Guest {
  guest: NetvscClient;
  nic: NetvspDevice;
  /** Frames the guest received so far. */
  rx: { frames: number };
}

async function connectedGuest(tap: TapBackend): Promise<Guest> {
  const rx = { frames: 0 };
  const memory = new GuestMemory([{ gpa: 0, size: RAM, buffer: new ArrayBuffer(RAM) }]);
  const logger = new MemoryLogger();
  const hv = new HyperV({ memory, vpCount: 1, clock: new ManualClock(), sink: { raise: () => {} } });
  const dispatcher = new HypercallDispatcher({ memory, logger });
  const host = new VmbusHost({ memory, synic: hv, connections: dispatcher.connections, vpCount: 1, logger });
  hv.writeMsr(0, 0x40000000, 0x8100n);
  hv.writeMsr(0, HV_X64_MSR_SIMP, 0x1001n);
  hv.writeMsr(0, HV_X64_MSR_SIEFP, 0x2001n);
  hv.writeMsr(0, HV_X64_MSR_SINT0 + 2, 0xf3n);
  hv.writeMsr(0, HV_X64_MSR_SCONTROL, 1n);
  const transport = simpTransport({
    memory,
    vp: 0,
    simpGpa: 0x1000,
    inputPageGpa: 0x5000,
    hypercall: (vp, rcx, rdx, r8) => dispatcher.dispatch(vp, { rcx, rdx, r8 }),
    writeEom: (vp) => hv.writeMsr(vp, HV_X64_MSR_EOM, 0n),
    wait: () => new Promise((r) => setImmediate(r)),
  });
  const pages = new BumpPageAllocator(0x100, RAM / 4096 - 0x100);
  const vmbus = new VmbusClient({ transport, memory, pages, vp: 0 });
  const nic = new NetvspDevice({ backend: tap, mac: GUEST_MAC, logger });
  const attached = attachDevice(host, nic, { logger });
  await vmbus.connect();
  await vmbus.requestOffers();
  // Linux's default buffer sizes and a 516 KiB ring each way, as hv_netvsc opens it.
  const guest = new NetvscClient({
    vmbus,
    memory,
    pages,
    relid: attached.channel.relid,
    recvBufferBytes: 16 << 20,
    sendBufferBytes: 1 << 20,
    ringPages: 129,
    // Frames are consumed in place (counted), as the C reader reads each into one reused buffer.
    onFrame: () => void rx.frames++,
  });
  await guest.connect();
  return { guest, nic, rx };
}

/**
 * Guest to network: `frames` sends until the TAP wrote them all. The guest batches as Linux
 * does under load (xmit_more): up to max_pkt_per_msg RNDIS messages in one send-buffer section
 * when they fit (small frames), and 32 sends per ring batch (one signal).
 */
async function hvemuTx(guest: NetvscClient, tap: TapBackend, size: number, frames: number): Promise<number> {
  const frame = ethernetFrame(NOBODY_MAC, GUEST_MAC, size);
  const perSection = Math.max(1, Math.min(guest.info.maxPktPerMsg, Math.floor(guest.info.sendSectionSize / (size + 64))));
  const group = Array.from({ length: perSection }, () => frame);
  const start = tap.stats.framesOut;
  const t0 = process.hrtime.bigint();
  let sent = 0;
  while (sent < frames) {
    const before = sent;
    guest.batch(() => {
      for (let k = 0; k < 32 && sent + perSection <= frames && guest.sendBatch(group); k++) sent += perSection;
      for (; sent < frames && frames - sent < perSection && guest.send(frame);) sent++;
    });
    if (sent === before) {
      // No room (sections, ring, or a backend that is full): let the host side's events run.
      guest.poll();
      await new Promise((r) => setImmediate(r));
    }
  }
  await guest.until(() => tap.stats.framesOut - start >= frames);
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

/** Network to guest: frames the guest receives in `seconds` while the injector runs. */
async function hvemuRx({ guest, rx }: Guest, seconds: number): Promise<number> {
  const end = performance.now() + seconds * 1000;
  const start = rx.frames;
  while (performance.now() < end) {
    guest.poll();
    await new Promise((r) => setImmediate(r));
  }
  return rx.frames - start;
}

/** Runs the C injector in the namespace for `seconds`; resolves when it exits. */
function inject(binary: string, ns: string, tapName: string, size: number, seconds: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', ns, binary, 'inject', tapName, String(size), String(seconds), formatMac(GUEST_MAC)], {
      stdio: 'ignore',
    });
    child.on('exit', () => resolve());
    child.on('error', reject);
  });
}

const settle = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function benchNet(): Promise<Figures> {
  const reason = unavailable();
  if (reason) return { net_skipped: reason };
  const binary = buildBaseline();
  const ns = `hvemu-bench-${process.pid}`;
  const tapName = `hvb${process.pid % 1_000_000}`;
  const figures: Figures = {};
  sh('ip', 'netns', 'add', ns);
  try {
    sh('ip', 'tuntap', 'add', 'dev', tapName, 'mode', 'tap'); // persistent: the C programs attach to it later
    const tap = TapBackend.open({ name: tapName });
    sh('ip', 'link', 'set', tapName, 'netns', ns);
    inNs(ns, 'ip', 'link', 'set', tapName, 'up');
    const connected = await connectedGuest(tap);
    const { guest } = connected;
    // HVEMU_BENCH_TX_ONLY=1: hvemu's tx alone, for profiling (no baseline, no ratios).
    if (process.env['HVEMU_BENCH_TX_ONLY']) {
      for (const c of CASES) {
        await hvemuTx(guest, tap, c.size, TX_WARMUP_FRAMES);
        figures[`net_${c.size}B_tx_fps`] = Math.round(c.txFrames / (await hvemuTx(guest, tap, c.size, c.txFrames)));
      }
      tap.close();
      return figures;
    }
    // HVEMU_BENCH_RX_ONLY=1: hvemu's rx alone, for profiling (the injector runs; no baseline, no ratios).
    if (process.env['HVEMU_BENCH_RX_ONLY']) {
      for (const c of CASES) {
        const injecting = inject(binary, ns, tapName, c.size, 3 * RX_SECONDS + 0.6);
        await settle(300);
        const cpu = process.cpuUsage();
        figures[`net_${c.size}B_rx_fps`] = Math.round((await hvemuRx(connected, 3 * RX_SECONDS)) / (3 * RX_SECONDS));
        const used = process.cpuUsage(cpu);
        figures[`net_${c.size}B_rx_cpu_share`] = Number(((used.user + used.system) / 1e6 / (3 * RX_SECONDS)).toFixed(2));
        await injecting;
        await hvemuRx(connected, 0.1);
      }
      tap.close();
      return figures;
    }
    const hv: Record<string, number> = {};
    for (const c of CASES) {
      await hvemuTx(guest, tap, c.size, TX_WARMUP_FRAMES);
      hv[`${c.size}_tx`] = c.txFrames / (await hvemuTx(guest, tap, c.size, c.txFrames));
      const injecting = inject(binary, ns, tapName, c.size, RX_SECONDS + 0.6);
      await settle(300);
      hv[`${c.size}_rx`] = (await hvemuRx(connected, RX_SECONDS)) / RX_SECONDS;
      await injecting;
      await hvemuRx(connected, 0.1); // drain what is left
    }
    tap.close(); // the TAP persists: the baseline attaches to it now
    for (const c of CASES) {
      const t = JSON.parse(inNs(ns, binary, 'tx', tapName, String(c.size), String(c.txFrames))) as { frames: number; seconds: number };
      const cTx = t.frames / t.seconds;
      const injecting = inject(binary, ns, tapName, c.size, RX_SECONDS + 0.6);
      await settle(300);
      const r = JSON.parse(inNs(ns, binary, 'rx', tapName, String(RX_SECONDS))) as { frames: number; seconds: number };
      await injecting;
      const cRx = r.frames / r.seconds;
      for (const [dir, base] of [
        ['tx', cTx],
        ['rx', cRx],
      ] as const) {
        const rate = hv[`${c.size}_${dir}`];
        const key = `net_${c.size}B_${dir}`;
        figures[`${key}_fps`] = Math.round(rate);
        figures[`${key}_gbps`] = Number(((rate * c.size * 8) / 1e9).toFixed(3));
        figures[`${key}_c_fps`] = Math.round(base);
        figures[`${key}_c_gbps`] = Number(((base * c.size * 8) / 1e9).toFixed(3));
        figures[`${key}_ratio`] = Number((rate / base).toFixed(3));
      }
    }
  } finally {
    try {
      sh('ip', 'netns', 'del', ns); // the TAP goes with it
    } catch {
      // already gone
    }
  }
  for (const [k, v] of Object.entries(figures)) console.log(`${k.padEnd(24)} ${v}`);
  return figures;
}
