/**
 * Ballooning, host side. The release rate: pages a guest hands over (BALLOON_RESPONSE messages
 * of 510 ranges) through hvemu's whole host path (parse -> check every range against RAM, the
 * request and the balloon bitmap -> one batched native discard per message: fallocate
 * PUNCH_HOLE on the KVM partition's memfd), against a C loop making the same fallocate calls
 * on the same memfd (opened through /proc/PID/fd; built now with gcc -O2), every page touched
 * before each trial. Two
 * shapes: single 4 KiB pages (every other page, Linux's fallback when 2 MiB allocations fail:
 * one range per page) and 2 MiB ranges (Linux's allocation unit). The ratio is hvemu's rate over
 * C's (goal >= 0.5). Then an inflate end to end in-process: the TypeScript hv_balloon client
 * on the simulated partition (ring, device, zero-fill release), MiB/s released.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KvmPartition } from '@hvemu/accel';
import * as P from '@hvemu/balloon';
import { createBalloonSim } from '@hvemu/balloon/testing';
import { VM_PKT_DATA_INBAND, type DeviceChannel, type OutgoingPacket, type PacketView } from '@hvemu/vmbus';

const MiB = 1 << 20;
const RAM_MIB = 256;
const PAGE = 4096;
const TRIALS = 3;

interface Shape {
  key: string;
  run: number;
  stride: number;
}
const SHAPES: Shape[] = [
  { key: '4k', run: 1, stride: 2 },
  { key: '2m', run: 512, stride: 512 },
];

/** A device on a fake channel: guest messages go straight to onSignal; host messages are dropped. */
function deviceOn(memory: P.BalloonMemory): { device: P.BalloonDevice; feed: (bytes: Uint8Array) => void } {
  const device = new P.BalloonDevice({ memory, maxPagesPerRequest: 0xffff_ffff, readBudget: 1 << 30 });
  let inbox: Uint8Array | null = null;
  const view = { type: VM_PKT_DATA_INBAND, length: 0, payload: () => inbox! };
  const channel = {
    queue: {
      closed: false,
      onGuestSignal: () => {},
      read: (fn: (p: PacketView) => void) => {
        if (!inbox) return 0;
        view.length = inbox.length;
        fn(view as unknown as PacketView);
        inbox = null;
        return 1;
      },
      trySend: (_p: OutgoingPacket) => true,
      send: () => Promise.resolve(),
    },
  } as unknown as DeviceChannel;
  device.open(channel);
  const feed = (bytes: Uint8Array): void => {
    inbox = bytes;
    device.onSignal(channel);
  };
  feed(P.dm_version_request.encodeNew({ type: P.DM_VERSION_REQUEST, size: 16, version: P.DYNMEM_PROTOCOL_VERSION_WIN10 }));
  feed(P.dm_capabilities.encodeNew({ type: P.DM_CAPABILITIES_REPORT, size: 32, caps: 3n | (7n << 2n) }));
  return { device, feed };
}

/** The guest's answer: BALLOON_RESPONSE messages of 510 ranges covering the shape. */
function messages(shape: Shape, pages: number): Uint8Array[] {
  const pairs: number[] = [];
  for (let pfn = 0; pfn + shape.run <= pages; pfn += shape.stride) pairs.push(pfn, shape.run);
  const out: Uint8Array[] = [];
  for (let at = 0; at < pairs.length; at += 2 * P.DM_MAX_RANGES_PER_MESSAGE) {
    const chunk = pairs.slice(at, at + 2 * P.DM_MAX_RANGES_PER_MESSAGE);
    out.push(P.encodeBalloonResponse(0, at + chunk.length < pairs.length, chunk));
  }
  return out;
}

function touch(p: KvmPartition): void {
  const one = Uint8Array.of(1);
  for (let gpa = 0; gpa < RAM_MIB * MiB; gpa += PAGE) p.memory.write(gpa, one);
}

function hvemuRate(p: KvmPartition, shape: Shape): number {
  const msgs = messages(shape, (RAM_MIB * MiB) / PAGE);
  let pages = 0;
  let seconds = 0;
  for (let t = 0; t < TRIALS + 1; t++) {
    touch(p);
    const { device, feed } = deviceOn(P.balloonMemory(p.memory, p.memoryControl));
    device.setTarget(0);
    const t0 = process.hrtime.bigint();
    for (const m of msgs) feed(m);
    const dt = Number(process.hrtime.bigint() - t0) / 1e9;
    const st = device.stats();
    if (st.protocolErrors !== 0 || st.releasedBytes === 0)
      throw new Error(`bench: ${st.protocolErrors} protocol errors, ${st.releasedBytes} released`);
    device.close();
    if (t === 0) continue; // warm-up
    pages += st.releasedBytes / PAGE;
    seconds += dt;
  }
  return pages / seconds;
}

/** The partition's guest-RAM memfd as a path another process can open (/proc/PID/fd/N). */
function guestRamMemfd(): string {
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`).startsWith('/memfd:hvemu-guest-ram')) return `/proc/${process.pid}/fd/${fd}`;
    } catch {
      // closed meanwhile
    }
  }
  throw new Error('bench: the KVM partition has no guest-RAM memfd in /proc/self/fd');
}

function baselineRate(binary: string, shape: Shape, memfd: string): number {
  const out = JSON.parse(
    execFileSync(binary, [String(RAM_MIB), String(shape.run), String(shape.stride), String(TRIALS), memfd], { encoding: 'utf8' }),
  ) as {
    pages: number;
    seconds: number;
  };
  return out.pages / out.seconds;
}

async function inflateMiBs(allocUnit: number): Promise<number> {
  const s = createBalloonSim({ ramBytes: RAM_MIB * MiB, client: { allocUnit } });
  await s.connect();
  const t0 = process.hrtime.bigint();
  s.device.setTarget(16 * MiB);
  await s.device.idle();
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const released = s.device.stats().releasedBytes;
  await s.client.close();
  return released / MiB / seconds;
}

export async function benchBalloon(log: (line: string) => void = console.log): Promise<Record<string, number | string>> {
  const figures: Record<string, number | string> = {};
  const probe = KvmPartition.probe();
  if (!probe.ok) {
    log(`Balloon: release rate skipped (KVM unavailable: ${probe.reason})`);
  } else {
    const dir = mkdtempSync(join(tmpdir(), 'hvemu-bench-balloon-'));
    const p = KvmPartition.create({ memory: [{ gpa: 0, size: RAM_MIB * MiB }] });
    try {
      const binary = join(dir, 'balloon_baseline');
      execFileSync('gcc', ['-O2', '-o', binary, fileURLToPath(new URL('../c/balloon_baseline.c', import.meta.url))]);
      log(
        `Balloon: release (BALLOON_RESPONSE -> checks -> batched PUNCH_HOLE on the KVM memfd) vs C fallocate loop on the same memfd, ${RAM_MIB} MiB touched`,
      );
      for (const shape of SHAPES) {
        const hv = hvemuRate(p, shape);
        const base = baselineRate(binary, shape, guestRamMemfd());
        const ratio = hv / base;
        log(
          `  ${shape.key} ranges: hvemu ${Math.round(hv / 1000)}k pages/s, C ${Math.round(base / 1000)}k pages/s, ratio ${ratio.toFixed(3)}${shape.key === '4k' ? ' (goal 0.5)' : ''}`,
        );
        figures[`balloon_release_${shape.key}_pages_per_s`] = Math.round(hv);
        figures[`balloon_release_${shape.key}_baseline_pages_per_s`] = Math.round(base);
        figures[`balloon_release_${shape.key}_ratio`] = Math.round(ratio * 1000) / 1000;
      }
      figures['balloon_release_ratio'] = figures['balloon_release_4k_ratio'];
    } finally {
      p.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }
  for (const unit of [512, 1]) {
    await inflateMiBs(unit); // warm-up
    const rate = await inflateMiBs(unit);
    const key = unit === 512 ? '2m' : '4k';
    log(`  inflate by the TS client (simulated partition, zero-fill), ${key} allocations: ${rate.toFixed(0)} MiB/s released`);
    figures[`balloon_inflate_${key}_mib_per_s`] = Math.round(rate);
  }
  return figures;
}
