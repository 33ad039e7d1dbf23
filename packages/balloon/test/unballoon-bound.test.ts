/**
 * A deflate of a large, fragmented balloon is cut into transactions of at most 64
 * UNBALLOON_REQUEST messages (what may wait for ring space stays bounded); the next starts
 * after the guest's UNBALLOON_RESPONSE, and together they give back exactly the balloon.
 */
import { expect, it } from 'vitest';
import * as P from '@hvemu/balloon';
import { fakeBalloonChannel } from '@hvemu/balloon/testing';

it('deflates 33,000 scattered pages in two transactions of <= 64 messages', () => {
  const pages = 1 << 18; // 1 GiB
  const device = new P.BalloonDevice({ memory: { regions: () => [{ gpa: 0, size: pages * 4096 }], release: (p) => p.length } });
  const f = fakeBalloonChannel(device);
  f.handshake();
  const N = 33_000;
  device.setTarget((pages - N) * 4096);
  const pairs: number[] = [];
  for (let i = 0; i < N; i++) pairs.push(2 * i, 1);
  for (let at = 0; at < pairs.length; at += 1020) {
    f.feed(P.encodeBalloonResponse(0, at + 1020 < pairs.length, pairs.slice(at, at + 1020)));
  }
  expect(device.stats()).toMatchObject({ balloonedPages: N, protocolErrors: 0 });
  f.sent.length = 0;
  device.setTarget(pages * 4096);
  const txn = (): { count: number; more: number }[] =>
    f.sent.splice(0).map((m) => ({ count: new DataView(m.buffer).getUint32(12, true), more: m[8] & 1 }));
  const first = txn();
  expect(first.length).toBe(64);
  expect(first.slice(0, 63).every((m) => m.more === 1 && m.count === 510)).toBe(true);
  expect(first[63]).toEqual({ count: 510, more: 0 });
  expect(device.stats().balloonedPages).toBe(N - 64 * 510);
  f.feed(P.dm_unballoon_response.encodeNew({ type: P.DM_UNBALLOON_RESPONSE, size: 8 }));
  const second = txn();
  expect(second.map((m) => m.count)).toEqual([360]);
  expect(second.map((m) => m.more)).toEqual([0]);
  f.feed(P.dm_unballoon_response.encodeNew({ type: P.DM_UNBALLOON_RESPONSE, size: 8 }));
  expect(device.stats()).toMatchObject({ balloonedPages: 0, returnedBytes: N * 4096, inFlight: null, protocolErrors: 0 });
});
