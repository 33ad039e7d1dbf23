/**
 * The balloon end to end on the simulated partition: the TS hv_balloon client negotiates,
 * reports, gives pages (they read as zero on the host side afterwards), gets them back on
 * unballoon, takes hot-added RAM; the policy hook; timeouts; events.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  DM_BALLOON_REQUEST,
  DM_INFO_MESSAGE,
  DM_MEM_HOT_ADD_REQUEST,
  DM_UNBALLOON_REQUEST,
  DM_VERSION_RESPONSE,
  DYNMEM_PROTOCOL_VERSION_WIN10,
  DYNMEM_PROTOCOL_VERSION_WIN7,
  DYNMEM_PROTOCOL_VERSION_WIN8,
  followCommitted,
  type BalloonChange,
} from '@hvemu/balloon';
import { createBalloonSim, turnsUntil } from '@hvemu/balloon/testing';

const PAGE = 4096;
const MiB = 1 << 20;

afterEach(() => {
  vi.useRealTimers();
});

describe('balloon on the simulated partition', () => {
  it('negotiates WIN10 first and reports ready with the guest capabilities', async () => {
    const s = createBalloonSim({ device: { maxPageCount: 123456 } });
    await s.connect();
    expect(s.client.version).toBe(DYNMEM_PROTOCOL_VERSION_WIN10);
    const st = s.device.stats();
    expect(st.phase).toBe('ready');
    expect(st.capabilities).toEqual({ balloon: true, hotAdd: true, hotAddAlignment: 128 * MiB });
    expect(await turnsUntil(() => s.client.maxPageCount !== null)).toBe(true);
    expect(s.client.maxPageCount).toBe(123456);
    expect(s.client.received.some((m) => m.type === DM_INFO_MESSAGE)).toBe(true);
    await s.client.close();
  });

  it('falls back WIN10 -> WIN8 -> WIN7 as the host refuses', async () => {
    const s = createBalloonSim({ device: { versions: [DYNMEM_PROTOCOL_VERSION_WIN7], maxPageCount: 1 } });
    await s.connect();
    expect(s.client.version).toBe(DYNMEM_PROTOCOL_VERSION_WIN7);
    const answers = s.client.received.filter((m) => m.type === DM_VERSION_RESPONSE).map((m) => m.bytes[8] & 1);
    expect(answers).toEqual([0, 0, 1]);
    // No INFO_MESSAGE before 1.0.
    expect(s.client.received.some((m) => m.type === DM_INFO_MESSAGE)).toBe(false);
    expect(s.device.stats().version).toBe(DYNMEM_PROTOCOL_VERSION_WIN7);
    const s8 = createBalloonSim({ device: { versions: [DYNMEM_PROTOCOL_VERSION_WIN8] } });
    await s8.connect();
    expect(s8.client.version).toBe(DYNMEM_PROTOCOL_VERSION_WIN8);
  });

  it('inflates to a target: the pages go to the host (zeroed), the guest and host agree on them; deflates them back', async () => {
    const s = createBalloonSim();
    await s.connect();
    const changes: BalloonChange['kind'][] = [];
    s.device.on('change', (c) => changes.push(c.kind));
    const ram = s.device.stats().ramBytes;
    expect(ram).toBe(32 * MiB);
    s.device.setTarget(ram - 8 * MiB);
    await s.device.idle();
    let st = s.device.stats();
    expect(st.balloonedPages).toBe(2048);
    expect(st.guestBytes).toBe(ram - 8 * MiB);
    expect(st.releasedBytes).toBe(8 * MiB);
    expect(s.model.ballooned).toBe(2048);
    expect(s.device.balloonedRanges()).toEqual(s.model.balloonRuns());
    // The host zeroed what it got (the guest's stamps are gone there) and nothing else.
    const [start] = s.model.balloonRuns();
    const word = new Uint8Array(4);
    s.sim.memory.read(start * PAGE, word);
    expect([...word]).toEqual([0, 0, 0, 0]);
    expect(s.model.lostPages()).toEqual([]);
    expect(changes).toContain('inflated');
    expect(changes).toContain('balloon-done');

    s.device.setTarget(ram - 2 * MiB);
    await s.device.idle();
    st = s.device.stats();
    expect(st.balloonedPages).toBe(512);
    expect(st.returnedBytes).toBe(6 * MiB);
    expect(s.model.ballooned).toBe(512);
    expect(s.device.balloonedRanges()).toEqual(s.model.balloonRuns());
    expect(s.model.violations).toEqual([]);
    expect(changes).toContain('deflated');
    s.device.setTarget(ram);
    await s.device.idle();
    expect(s.device.stats().balloonedPages).toBe(0);
    expect(s.model.ballooned).toBe(0);
    expect(s.model.lostPages()).toEqual([]);
    await s.client.close();
  });

  it('single-page ballooning spreads over messages of at most 510 ranges with more_pages', async () => {
    const s = createBalloonSim({ client: { allocUnit: 1 } });
    await s.connect();
    // Leave every other page in use so no two free pages are adjacent.
    s.model.use(s.model.free);
    expect(s.model.unuse(1200)).toBe(1200);
    s.device.setTarget(s.device.stats().ramBytes - 1200 * PAGE);
    await s.device.idle();
    expect(s.device.stats().balloonedPages).toBe(1200);
    expect(s.client.counts.balloonMessages).toBe(3); // 510 + 510 + 180
    expect(s.device.balloonedRanges()).toEqual(s.model.balloonRuns());
  });

  it('a guest that gives less than asked (its floor) stalls the inflate until its next status report', async () => {
    const s = createBalloonSim({ client: { floor: 4096 } });
    await s.connect();
    const pool = s.model.free;
    s.device.setTarget(0);
    await s.device.idle();
    expect(s.device.stats().balloonedPages).toBe(pool - 4096);
    expect(s.client.counts.balloonRequests).toBe(1);
    s.client.sendStatus();
    await turnsUntil(() => s.client.counts.balloonRequests === 2);
    await s.device.idle();
    expect(s.client.counts.balloonRequests).toBe(2); // asked again after the report, got nothing, stalled again
    expect(s.device.stats().balloonedPages).toBe(pool - 4096);
  });

  it('status reports reach the events and the policy; followCommitted sets the target from num_committed', async () => {
    const s = createBalloonSim({ device: { policy: followCommitted({ headroomBytes: 20 * MiB }) } });
    await s.connect();
    const reports: number[] = [];
    s.device.on('status', (st) => reports.push(st.numCommitted));
    s.model.use(1024); // 4 MiB in use
    s.client.sendStatus();
    await turnsUntil(() => reports.length === 1);
    await s.device.idle();
    const st = s.device.stats();
    expect(reports).toEqual([1024]);
    expect(st.targetBytes).toBe(24 * MiB);
    expect(st.guestBytes).toBe(24 * MiB);
    expect(st.lastStatus?.numCommitted).toBe(1024);
    expect(s.device.balloonedRanges()).toEqual(s.model.balloonRuns());
  });

  it('periodic status reports (as Linux: every interval after a delay) drive the policy', async () => {
    const s = createBalloonSim({
      client: { statusIntervalMs: 1000, statusDelayMs: 45_000 },
      device: { policy: followCommitted({ headroomBytes: 20 * MiB }) },
    });
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    await s.connect();
    vi.advanceTimersByTime(44_999);
    expect(s.device.stats().statusReports).toBe(0);
    vi.advanceTimersByTime(3000);
    await turnsUntil(() => s.device.stats().statusReports === 3);
    await s.device.idle();
    expect(s.device.stats()).toMatchObject({ statusReports: 3, targetBytes: 20 * MiB, guestBytes: 20 * MiB });
    expect(s.device.balloonedRanges()).toEqual(s.model.balloonRuns());
    await s.client.close();
  });

  it('with no policy and no target nothing is ballooned', async () => {
    const s = createBalloonSim();
    await s.connect();
    s.client.sendStatus();
    await turnsUntil(() => s.device.stats().statusReports === 1);
    await s.device.idle();
    expect(s.client.received.some((m) => m.type === DM_BALLOON_REQUEST)).toBe(false);
    expect(s.device.stats().balloonedPages).toBe(0);
  });

  it('hot add: RAM above 4 GiB, aligned as the guest asks, onlined by the guest, then ballooned like any RAM', async () => {
    const s = createBalloonSim({ client: { hotAddAlignmentLog2: 1 } });
    await s.connect();
    const r = await s.device.hotAdd(3 * MiB);
    expect(r).toEqual({ gpa: 2 ** 32, bytes: 4 * MiB, pagesOnlined: 1024, accepted: true });
    const st = s.device.stats();
    expect(st.ramBytes).toBe(36 * MiB);
    expect(st.hotAddedBytes).toBe(4 * MiB);
    expect(s.sim.memory.contains(2 ** 32, 4 * MiB)).toBe(true);
    const req = s.client.received.find((m) => m.type === DM_MEM_HOT_ADD_REQUEST)!;
    expect(req.bytes.length).toBe(16);
    // Balloon everything but 1 MiB of the pool: hot-added pages are given too.
    s.device.setTarget(0);
    await s.device.idle();
    expect(s.device.balloonedRanges()).toEqual(s.model.balloonRuns());
    expect(s.model.balloonRuns().some((_, i, a) => i % 2 === 0 && a[i] >= 2 ** 20)).toBe(true);
    expect(s.model.lostPages()).toEqual([]);
  });

  it('a guest range across two adjacent hot-added regions is taken, released region by region (found by the model test)', async () => {
    const released: number[][] = [];
    const s = createBalloonSim({
      client: { hotAddAlignmentLog2: 0 },
      wrapMemory: (m) => ({ ...m, release: (pairs) => (released.push([...pairs]), m.release(pairs)) }),
    });
    await s.connect();
    await s.device.hotAdd(MiB);
    await s.device.hotAdd(MiB);
    s.device.setTarget(0);
    await s.device.idle();
    expect(s.device.stats().protocolErrors).toBe(0);
    expect(s.device.balloonedRanges()).toEqual(s.model.balloonRuns());
    // The 512-page run at 4 GiB spans both 1 MiB regions: two pairs, one per region.
    const high = released.flat().filter((_, i, a) => i % 2 === 0 && a[i] >= 2 ** 32);
    expect(high).toEqual([2 ** 32, 2 ** 32 + MiB]);
  });

  it('hot add the guest refuses: the RAM is removed again', async () => {
    const s = createBalloonSim({ client: { hotAddAlignmentLog2: 0, refuseHotAdd: true } });
    await s.connect();
    const r = await s.device.hotAdd(MiB);
    expect(r.accepted).toBe(false);
    expect(s.device.stats().ramBytes).toBe(32 * MiB);
    expect(s.sim.memory.contains(2 ** 32, 4096)).toBe(false);
    expect(s.client.counts.hotAdds).toBe(1);
  });

  it('hot add refusals for the host caller', async () => {
    const s = createBalloonSim({ client: { hotAdd: false } });
    await expect(s.device.hotAdd(MiB)).rejects.toThrow(/not offered hot add/);
    await s.connect();
    await expect(s.device.hotAdd(MiB)).rejects.toThrow(/not offered hot add/);
    await expect(s.device.hotAdd(-1)).rejects.toThrow(/positive byte count/);
    await expect(s.device.hotAdd(NaN)).rejects.toThrow(/positive byte count/);
    expect(() => s.device.setTarget(-5)).toThrow(/byte count/);
    expect(() => s.device.setTarget(NaN)).toThrow(/byte count/);
    expect(() => s.device.setTarget('1' as never)).toThrow(/byte count/);
  });

  it('a guest that never answers a balloon request times out with a typed error; nothing is released', async () => {
    const s = createBalloonSim({ client: { answerBalloon: false }, device: { responseTimeoutMs: 50 } });
    await s.connect();
    const errors: string[] = [];
    s.device.on('error', (e) => errors.push(e.name));
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    s.device.setTarget(16 * MiB);
    await turnsUntil(() => s.client.counts.balloonRequests === 1);
    expect(s.device.stats().inFlight).toBe('balloon');
    vi.advanceTimersByTime(60);
    await s.device.idle();
    const st = s.device.stats();
    expect(errors).toEqual(['BalloonTimeoutError']);
    expect(st.timeouts).toBe(1);
    expect(st.inFlight).toBe(null);
    expect(st.releasedBytes).toBe(0);
    expect(s.logger.records.some((r) => /did not answer the balloon request/.test(r.message))).toBe(true);
  });

  it('host calls are reported to the observer and can be replayed by name', async () => {
    const s = createBalloonSim();
    await s.connect();
    const calls: unknown[] = [];
    s.device.observeHostCalls((m, a) => calls.push([m, ...a]));
    s.device.invokeHostCall('setTarget', [24 * MiB]);
    await s.device.idle();
    expect(calls).toEqual([['setTarget', 24 * MiB]]);
    expect(s.device.stats().guestBytes).toBe(24 * MiB);
    expect(() => s.device.invokeHostCall('nope', [])).toThrow(/no host call nope/);
  });

  it('a reopened channel starts a new session: the old balloon is forgotten', async () => {
    const s = createBalloonSim();
    await s.connect();
    s.device.setTarget(24 * MiB);
    await s.device.idle();
    expect(s.device.stats().balloonedPages).toBe(2048);
    await s.client.close();
    expect(s.device.stats().phase).toBe('closed');
    expect(s.device.stats().balloonedPages).toBe(0);
  });

  it('UNBALLOON_REQUEST messages carry at most 510 ranges', async () => {
    const s = createBalloonSim({ client: { allocUnit: 1 } });
    await s.connect();
    s.model.use(s.model.free);
    // Free every other page: 1100 non-adjacent pages.
    const m = s.model as unknown as { state: Uint8Array };
    let freed = 0;
    for (let i = 0; i < m.state.length && freed < 1100; i += 2, freed++) m.state[i] = 0;
    (s.model as unknown as { counts: number[] }).counts[0] += 1100;
    (s.model as unknown as { counts: number[] }).counts[1] -= 1100;
    s.device.setTarget(s.device.stats().ramBytes - 1100 * PAGE);
    await s.device.idle();
    expect(s.device.stats().balloonedPages).toBe(1100);
    s.device.setTarget(s.device.stats().ramBytes);
    await s.device.idle();
    const unb = s.client.received.filter((x) => x.type === DM_UNBALLOON_REQUEST);
    const counts = unb.map((x) => new DataView(x.bytes.buffer, x.bytes.byteOffset).getUint32(12, true));
    const more = unb.map((x) => x.bytes[8] & 1);
    expect(counts).toEqual([510, 510, 80]);
    expect(more).toEqual([1, 1, 0]);
    expect(s.model.ballooned).toBe(0);
    expect(s.model.violations).toEqual([]);
  });
});
