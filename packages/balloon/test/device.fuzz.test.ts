/**
 * The device against random sequences of guest messages (well-formed and hostile, ranges mostly
 * inside RAM so some are taken) interleaved with host calls (targets, hot add), over a fake
 * channel and a memory port that checks every release. Whatever the guest sends: no throw out
 * of the device; every page released is RAM, not released already, and within what the open
 * request asked; every page the host gives back (UNBALLOON_REQUEST) was released; the device
 * sends a bounded amount per message; its count of ballooned pages is the port's.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import * as P from '@hvemu/balloon';
import { hostileGuestMessage } from '@hvemu/balloon/testing';
import type { DeviceChannel, OutgoingPacket, PacketView } from '@hvemu/vmbus';
import { VM_PKT_DATA_INBAND } from '@hvemu/vmbus';
import { fuzzRuns } from '../../../test/helpers.js';

const PAGE = 4096;
const RAM_PAGES = 0x2000; // 32 MiB

type Step = { kind: 'guest'; bytes: Uint8Array } | { kind: 'target'; fraction: number } | { kind: 'hot-add'; mib: number };

class Harness {
  readonly regions: { gpa: number; size: number }[] = [{ gpa: 0, size: RAM_PAGES * PAGE }];
  readonly released = new Set<number>();
  requested = 0;
  /** What the port saw wrong (the device catches a port's throw, so violations are recorded). */
  readonly violations: string[] = [];
  releasedInRequest = 0;
  sentBytes = 0;
  private inbox: Uint8Array[] = [];
  readonly device: P.BalloonDevice;
  readonly channel: DeviceChannel;

  constructor() {
    this.device = new P.BalloonDevice({
      memory: {
        regions: () => this.regions,
        release: (pairs) => this.release(pairs),
        addRam: (r) => void this.regions.push({ gpa: r.gpa, size: r.size }),
        removeRam: (gpa) =>
          void this.regions.splice(
            this.regions.findIndex((r) => r.gpa === gpa),
            1,
          ),
      },
      responseTimeoutMs: 3_600_000,
      readBudget: 1_000_000,
    });
    const view = { type: VM_PKT_DATA_INBAND, length: 0, bytes: new Uint8Array(0), payload: () => view.bytes };
    this.channel = {
      queue: {
        closed: false,
        onGuestSignal: () => {},
        read: (fn: (p: PacketView) => void) => {
          let n = 0;
          for (const b of this.inbox.splice(0)) {
            view.bytes = b;
            view.length = b.length;
            fn(view as unknown as PacketView);
            n++;
          }
          return n;
        },
        trySend: (p: OutgoingPacket) => (this.onHostPacket(p.payload as Uint8Array), true),
        send: (p: OutgoingPacket) => (this.onHostPacket(p.payload as Uint8Array), Promise.resolve()),
      },
    } as unknown as DeviceChannel;
    this.device.open(this.channel);
  }

  guest(bytes: Uint8Array): void {
    // The ring pads every payload to 8 bytes.
    const padded = new Uint8Array(Math.ceil(bytes.length / 8) * 8);
    padded.set(bytes);
    this.inbox.push(padded);
    this.device.onSignal(this.channel);
  }

  private release(pairs: Float64Array): number {
    let total = 0;
    for (let i = 0; i < pairs.length; i += 2) {
      const [gpa, size] = [pairs[i], pairs[i + 1]];
      if (gpa % PAGE || size % PAGE || size <= 0) this.fail(`release of an unaligned pair ${gpa}+${size}`);
      if (!this.regions.some((r) => gpa >= r.gpa && gpa + size <= r.gpa + r.size)) this.fail(`release outside one region: ${gpa}+${size}`);
      for (let pfn = gpa / PAGE; pfn < (gpa + size) / PAGE; pfn++) {
        if (this.released.has(pfn)) this.fail(`page ${pfn} released twice`);
        this.released.add(pfn);
      }
      this.releasedInRequest += size / PAGE;
      total += size;
    }
    if (this.releasedInRequest > this.requested) this.fail(`${this.releasedInRequest} pages released, ${this.requested} asked`);
    return total;
  }

  private fail(message: string): void {
    this.violations.push(message);
  }

  private onHostPacket(b: Uint8Array): void {
    this.sentBytes += b.length;
    if (b.length > P.DM_MAX_MESSAGE_SIZE) return this.fail(`a ${b.length}-byte host message`);
    const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    const type = dv.getUint16(0, true);
    if (type === P.DM_BALLOON_REQUEST) {
      this.requested = dv.getUint32(8, true);
      this.releasedInRequest = 0;
    }
    if (type === P.DM_UNBALLOON_REQUEST) {
      const n = dv.getUint32(12, true);
      if (n > P.DM_MAX_RANGES_PER_MESSAGE) return this.fail(`${n} ranges in an unballoon request`);
      for (let i = 0; i < n; i++) {
        const { startPage, pageCount } = P.decodePageRange(dv.getBigUint64(16 + i * 8, true));
        for (let pfn = startPage; pfn < startPage + pageCount; pfn++) {
          if (!this.released.delete(pfn)) return this.fail(`page ${pfn} given back but never released`);
        }
      }
    }
  }
}

const handshake: Uint8Array[] = [
  P.dm_version_request.encodeNew({ type: P.DM_VERSION_REQUEST, size: 16, version: P.DYNMEM_PROTOCOL_VERSION_WIN10 }),
  P.dm_capabilities.encodeNew({ type: P.DM_CAPABILITIES_REPORT, size: 32, caps: 3n | (0n << 2n) }),
];

const step: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 6,
    arbitrary: hostileGuestMessage({ maxPfn: RAM_PAGES + 64, maxCount: 600 }).map((bytes) => ({ kind: 'guest' as const, bytes })),
  },
  {
    weight: 3,
    arbitrary: fc
      .record({
        more: fc.boolean(),
        ranges: fc.array(fc.tuple(fc.nat({ max: RAM_PAGES - 1 }), fc.integer({ min: 1, max: 300 })), { maxLength: 6 }),
      })
      .map(({ more, ranges }) => ({ kind: 'guest' as const, bytes: P.encodeBalloonResponse(0, more, ranges.flat()) })),
  },
  {
    weight: 2,
    // Mostly small requests (a few hundred pages), so random answers often exceed them.
    arbitrary: fc
      .oneof(fc.double({ min: 0.97, max: 1, noNaN: true }), fc.double({ min: 0, max: 1.2, noNaN: true }))
      .map((fraction) => ({ kind: 'target' as const, fraction })),
  },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 4 }).map((mib) => ({ kind: 'hot-add' as const, mib })) },
  { weight: 1, arbitrary: fc.constant({ kind: 'guest' as const, bytes: P.dm_unballoon_response.encodeNew({ type: 9, size: 8 }) }) },
);

describe('hv_balloon device fuzz', () => {
  it('hostile message sequences never release what the guest did not give', () => {
    fc.assert(
      fc.property(fc.boolean(), fc.array(step, { maxLength: 30 }), (shake, steps) => {
        const h = new Harness();
        if (shake) for (const b of handshake) h.guest(b);
        for (const s of steps) {
          const before = h.sentBytes;
          if (s.kind === 'guest') h.guest(s.bytes);
          else if (s.kind === 'target') h.device.setTarget(Math.floor((RAM_PAGES * PAGE * s.fraction) / PAGE) * PAGE);
          else h.device.hotAdd(s.mib << 20).catch(() => {});
          // Bounded output per step: one transaction's messages at most (the balloon is at most RAM).
          expect(h.sentBytes - before).toBeLessThan(64 * 4096);
          expect(h.violations).toEqual([]);
          expect(h.device.stats().balloonedPages).toBe(h.released.size);
        }
        h.device.close();
      }),
      { numRuns: fuzzRuns(300) },
    );
  });
});
