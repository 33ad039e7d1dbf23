/**
 * A guest that never answers: each transaction (balloon, unballoon, hot add) is abandoned after
 * responseTimeoutMs with a BalloonTimeoutError ('error' event, logged); a late answer is
 * 'not-requested' and releases nothing; the device asks again only after a status report or a
 * new target.
 */
import { afterEach, beforeEach, expect, it, vi } from 'vitest';
import { MemoryLogger } from '@hvemu/common';
import * as P from '@hvemu/balloon';
import { fakeBalloonChannel } from '@hvemu/balloon/testing';

const MiB = 1 << 20;

beforeEach(() => void vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] }));
afterEach(() => void vi.useRealTimers());

function setup() {
  const released: number[][] = [];
  const regions = [{ gpa: 0, size: 64 * MiB }];
  const logger = new MemoryLogger();
  const device = new P.BalloonDevice({
    memory: {
      regions: () => regions,
      release: (p) => (released.push([...p]), p.length),
      addRam: (r) => void regions.push({ ...r }),
      removeRam: (gpa) =>
        void regions.splice(
          regions.findIndex((r) => r.gpa === gpa),
          1,
        ),
    },
    responseTimeoutMs: 1000,
    logger,
  });
  const f = fakeBalloonChannel(device);
  f.handshake(0);
  const errors: string[] = [];
  device.on('error', (e) => errors.push(e instanceof P.BalloonProtocolError ? e.fault : e.name));
  const sentTypes = () => f.sent.map((m) => m[0]);
  return { device, f, released, regions, errors, logger, sentTypes };
}

it('balloon: abandoned after the timeout (each message restarts it); a late answer releases nothing; a report asks again', () => {
  const { device, f, released, errors, sentTypes } = setup();
  device.setTarget(60 * MiB);
  expect(sentTypes().filter((t) => t === P.DM_BALLOON_REQUEST).length).toBe(1);
  vi.advanceTimersByTime(900);
  f.feed(P.encodeBalloonResponse(1, true, [0x1000, 256]));
  vi.advanceTimersByTime(900); // 1800 ms since the request, 900 since the last message: still open
  expect(device.stats().inFlight).toBe('balloon');
  vi.advanceTimersByTime(200);
  expect(device.stats().inFlight).toBe(null);
  expect(errors).toEqual(['BalloonTimeoutError']);
  f.feed(P.encodeBalloonResponse(1, false, [0x2000, 256]));
  expect(errors).toEqual(['BalloonTimeoutError', 'not-requested']);
  expect(released).toEqual([[0x1000 * 4096, 256 * 4096]]);
  expect(device.stats()).toMatchObject({ balloonedPages: 256, timeouts: 1 });
  expect(sentTypes().filter((t) => t === P.DM_BALLOON_REQUEST).length).toBe(1);
  f.feed(P.dm_status.encodeNew({ type: P.DM_STATUS_REPORT, size: 48 }));
  expect(sentTypes().filter((t) => t === P.DM_BALLOON_REQUEST).length).toBe(2);
  const last = f.sent.filter((m) => m[0] === P.DM_BALLOON_REQUEST).at(-1)!;
  expect(new DataView(last.buffer).getUint32(8, true)).toBe(1024 - 256);
});

it('unballoon: the pages went back when sent; an unanswered deflate times out', () => {
  const { device, f, errors } = setup();
  device.setTarget(60 * MiB);
  f.feed(P.encodeBalloonResponse(1, false, [0x1000, 1024]));
  device.setTarget(64 * MiB);
  expect(device.stats()).toMatchObject({ inFlight: 'unballoon', balloonedPages: 0, returnedBytes: 4 * MiB });
  vi.advanceTimersByTime(1000);
  expect(device.stats().inFlight).toBe(null);
  expect(errors).toEqual(['BalloonTimeoutError']);
  f.feed(P.dm_unballoon_response.encodeNew({ type: P.DM_UNBALLOON_RESPONSE, size: 8 }));
  expect(errors).toEqual(['BalloonTimeoutError', 'not-requested']);
});

it('hot add: an unanswered request resolves not accepted and the RAM stays (the guest may still online it)', async () => {
  const { device, regions, errors, logger } = setup();
  const r = device.hotAdd(MiB);
  vi.advanceTimersByTime(1000);
  expect(await r).toEqual({ gpa: 2 ** 32, bytes: MiB, pagesOnlined: 0, accepted: false });
  expect(regions.map((x) => x.gpa)).toEqual([0, 2 ** 32]);
  expect(errors).toEqual(['BalloonTimeoutError']);
  expect(logger.records.some((x) => /did not answer the hot-add request/.test(x.message))).toBe(true);
  // A second hot add goes above the first.
  const second = device.hotAdd(MiB);
  vi.advanceTimersByTime(1000);
  expect((await second).gpa).toBe(2 ** 32 + MiB);
});
