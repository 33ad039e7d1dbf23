/**
 * A hostile guest: balloon responses naming pages outside RAM, pages given already (in an
 * earlier message or twice in one), empty ranges, more pages than asked, answers to nothing,
 * messages in the wrong phase, floods. Each is a logged BalloonProtocolError with its fault, an
 * 'error' event, the message dropped whole, and no host memory released for it.
 */
import { describe, expect, it } from 'vitest';
import * as P from '@hvemu/balloon';
import { createBalloonSim, turnsUntil, type BalloonSim } from '@hvemu/balloon/testing';

const MiB = 1 << 20;

async function hostileSim(): Promise<{ s: BalloonSim; released: number[][]; faults: string[] }> {
  const released: number[][] = [];
  const faults: string[] = [];
  const s = createBalloonSim({
    client: { answerBalloon: false },
    wrapMemory: (m) => ({ ...m, release: (pairs) => (released.push([...pairs]), m.release(pairs)) }),
  });
  await s.connect();
  s.device.on('error', (e) => faults.push(e instanceof P.BalloonProtocolError ? e.fault : e.name));
  return { s, released, faults };
}

/** Opens a balloon request for `pages` the test answers by hand. */
async function openRequest(s: BalloonSim, pages: number): Promise<void> {
  s.device.setTarget(s.device.stats().ramBytes - pages * 4096);
  expect(await turnsUntil(() => s.client.counts.balloonRequests > 0)).toBe(true);
}

async function send(s: BalloonSim, bytes: Uint8Array): Promise<void> {
  s.client.sendRaw(bytes);
  await turnsUntil(() => false, 3);
}

describe('hostile balloon guest', () => {
  it('ranges outside RAM, empty, repeated, overlapping or beyond the request: dropped whole, nothing released', async () => {
    const { s, released, faults } = await hostileSim();
    await openRequest(s, 1024);
    const cases: [number[], string][] = [
      [[0x1000, 16, 0x10_0000, 1], 'range-outside-ram'], // 4 GiB: not RAM
      [[0x1ff0, 32], 'range-outside-ram'], // runs past the end of RAM
      [[0x1000, 0], 'range-empty'],
      [[0x1000, 16, 0x1008, 16], 'range-repeated'], // overlaps itself
      [[0x1000, 16, 0x1000, 16], 'range-repeated'], // the same range twice
      [[0x1000, 1025], 'too-many-pages'],
      [[0x1000, 512, 0x1400, 513], 'too-many-pages'],
    ];
    for (const [ranges] of cases) await send(s, P.encodeBalloonResponse(1, true, ranges));
    expect(faults).toEqual(cases.map((c) => c[1]));
    expect(released).toEqual([]);
    expect(s.device.stats().balloonedPages).toBe(0);
    expect(s.device.stats().protocolErrors).toBe(cases.length);
    // A good message is still taken; the same pages again are refused.
    await send(s, P.encodeBalloonResponse(1, true, [0x1000, 512]));
    expect(released).toEqual([[0x1000 * 4096, 512 * 4096]]);
    await send(s, P.encodeBalloonResponse(1, true, [0x1100, 1]));
    expect(faults.at(-1)).toBe('range-repeated');
    // The rest: more than the 512 left is refused, exactly 512 ends the request.
    await send(s, P.encodeBalloonResponse(1, false, [0x1400, 513]));
    expect(faults.at(-1)).toBe('too-many-pages');
    expect(s.device.stats().inFlight).toBe(null); // more_pages = 0 ends it even so
    expect(s.device.stats().balloonedPages).toBe(512);
    const warned = s.logger.records.filter((r) => r.level === 'warn' && r.message.startsWith('balloon:'));
    expect(warned.length).toBe(faults.length);
    expect(warned[0].fields).toMatchObject({ fault: 'range-outside-ram', outcome: 'message-dropped' });
  });

  it('answers to nothing and messages in the wrong phase are dropped', async () => {
    const { s, released, faults } = await hostileSim();
    await send(s, P.encodeBalloonResponse(1, false, [0x1000, 1]));
    await send(s, P.dm_unballoon_response.encodeNew({ type: P.DM_UNBALLOON_RESPONSE, size: 8 }));
    await send(s, P.dm_hot_add_response.encodeNew({ type: P.DM_MEM_HOT_ADD_RESPONSE, size: 16, page_count: 100, result: 1 }));
    await send(s, P.dm_version_request.encodeNew({ type: P.DM_VERSION_REQUEST, size: 16, version: P.DYNMEM_PROTOCOL_VERSION_WIN10 }));
    await send(s, P.dm_capabilities.encodeNew({ type: P.DM_CAPABILITIES_REPORT, size: 32, caps: 3n }));
    await send(s, P.encodeBalloonRequest(1, 10)); // a host message from the guest
    await send(s, Uint8Array.of(200, 0, 8, 0, 0, 0, 0, 0));
    await send(s, Uint8Array.of(5, 0, 48, 0)); // padded to 8 by the ring: hdr.size 48 > 8
    expect(faults).toEqual([
      'not-requested',
      'not-requested',
      'not-requested',
      'unexpected',
      'unexpected',
      'unexpected',
      'unknown-type',
      'size-mismatch',
    ]);
    expect(released).toEqual([]);
    expect(s.device.stats().phase).toBe('ready');
  });

  it('a status report before the capabilities is dropped; the session goes on', async () => {
    const released: number[][] = [];
    const s = createBalloonSim({ wrapMemory: (m) => ({ ...m, release: (p) => (released.push([...p]), m.release(p)) }) });
    await s.sim.client.connect();
    await s.sim.client.requestOffers();
    s.client.channel = await s.sim.client.openChannel(s.attached.channel.relid, { sendPages: 5, recvPages: 5 });
    s.client.sendStatus();
    await turnsUntil(() => s.device.stats().protocolErrors === 1);
    expect(s.device.stats()).toMatchObject({ phase: 'version', statusReports: 0, protocolErrors: 1 });
  });

  it('a hot-add response claiming more pages than offered is capped and logged', async () => {
    const s = createBalloonSim({ client: { hotAddAlignmentLog2: 0, answerHotAdd: false } });
    await s.connect();
    const faults: string[] = [];
    s.device.on('error', (e) => faults.push((e as P.BalloonProtocolError).fault));
    const pending = s.device.hotAdd(MiB);
    expect(await turnsUntil(() => s.client.received.some((m) => m.type === P.DM_MEM_HOT_ADD_REQUEST))).toBe(true);
    s.client.sendRaw(P.dm_hot_add_response.encodeNew({ type: P.DM_MEM_HOT_ADD_RESPONSE, size: 16, page_count: 99999, result: 1 }));
    const r = await pending;
    expect(r).toMatchObject({ accepted: true, pagesOnlined: 256 });
    expect(faults).toEqual(['hot-add-count']);
  });

  it('a flood of reports and of bad messages: every one handled, logging bounded', async () => {
    const { s, faults } = await hostileSim();
    let sent = 0;
    const N = 3000;
    while (sent < N) {
      try {
        s.client.sendStatus();
        sent++;
      } catch {
        await turnsUntil(() => false, 1);
      }
    }
    await turnsUntil(() => s.device.stats().statusReports === N);
    expect(s.device.stats().statusReports).toBe(N);
    let bad = 0;
    while (bad < N) {
      try {
        s.client.sendRaw(Uint8Array.of(99, 0, 8, 0, 0, 0, 0, 0));
        bad++;
      } catch {
        await turnsUntil(() => false, 1);
      }
    }
    await turnsUntil(() => s.device.stats().protocolErrors === N);
    expect(s.device.stats().protocolErrors).toBe(N);
    expect(faults.length).toBe(N);
    // Logged: the first 100, then one in 10,000.
    expect(s.logger.records.filter((r) => r.level === 'warn').length).toBe(100);
  });
});
