/**
 * fast-check arbitraries for hv_balloon: guest messages (well-formed, and hostile: truncated,
 * hdr.size wrong, range lists that lie, unknown types), page ranges, and the model-based
 * commands (inflate/deflate toward targets, guest allocations, status reports, hot add) run
 * against a BalloonSim, checking after each step that no page is lost, given twice, or released
 * while the guest owns it.
 */
import fc from 'fast-check';
import * as P from '../protocol.js';
import type { BalloonSim } from './sim.js';

const PAGE = 4096;

/** A page range (startPage, pageCount) with start below `maxPfn` and 1..maxCount pages (0 when allowEmpty). */
export function pageRange(options: { maxPfn?: number; maxCount?: number; allowEmpty?: boolean } = {}): fc.Arbitrary<[number, number]> {
  return fc.tuple(
    fc.integer({ min: 0, max: options.maxPfn ?? P.DM_RANGE_MAX_PFN }),
    fc.integer({ min: options.allowEmpty ? 0 : 1, max: options.maxCount ?? 1024 }),
  );
}

/** A BALLOON_RESPONSE's bytes: `ranges` pairs and more_pages. */
export function balloonResponse(options: { maxPfn?: number; maxCount?: number; maxRanges?: number } = {}): fc.Arbitrary<Uint8Array> {
  return fc
    .record({
      transId: fc.nat(),
      more: fc.boolean(),
      ranges: fc.array(pageRange({ ...options, allowEmpty: true }), { maxLength: options.maxRanges ?? 8 }),
    })
    .map(({ transId, more, ranges }) => P.encodeBalloonResponse(transId, more, ranges.flat()));
}

/** A well-formed guest message of any type the guest sends (random field values). */
export function guestMessage(options: { maxPfn?: number; maxCount?: number } = {}): fc.Arbitrary<Uint8Array> {
  const fixed = (
    layout: { size: number; encodeNew: (v: never) => Uint8Array },
    type: number,
    body: fc.Arbitrary<Record<string, unknown>>,
  ) => fc.tuple(fc.nat(), body).map(([trans_id, b]) => layout.encodeNew({ type, size: layout.size, trans_id, ...b } as never));
  const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
  return fc.oneof(
    fixed(
      P.dm_version_request,
      P.DM_VERSION_REQUEST,
      fc.record({ version: fc.oneof(fc.constantFrom(...P.LINUX_DM_VERSIONS), fc.nat()), is_last_attempt: fc.nat({ max: 3 }) }),
    ),
    fixed(P.dm_capabilities, P.DM_CAPABILITIES_REPORT, fc.record({ caps: u64, min_page_cnt: u64, max_page_number: u64 })),
    fixed(
      P.dm_status,
      P.DM_STATUS_REPORT,
      fc.record({ num_avail: u64, num_committed: fc.oneof(u64, fc.bigInt({ min: 0n, max: 1n << 20n })), page_file_writes: fc.nat() }),
    ),
    balloonResponse(options),
    fixed(P.dm_unballoon_response, P.DM_UNBALLOON_RESPONSE, fc.constant({})),
    fixed(P.dm_hot_add_response, P.DM_MEM_HOT_ADD_RESPONSE, fc.record({ page_count: fc.nat(), result: fc.nat({ max: 2 }) })),
  );
}

/** Guest messages and hostile variants: truncated, hdr.size or type rewritten, bytes flipped, random bytes. */
export function hostileGuestMessage(options: { maxPfn?: number; maxCount?: number } = {}): fc.Arbitrary<Uint8Array> {
  const valid = guestMessage(options);
  return fc.oneof(
    { weight: 3, arbitrary: valid },
    { weight: 1, arbitrary: fc.tuple(valid, fc.nat()).map(([b, n]) => b.subarray(0, n % (b.length + 1))) },
    {
      weight: 1,
      arbitrary: fc.tuple(valid, fc.integer({ min: 0, max: 0xffff })).map(([b, size]) => {
        const c = b.slice();
        new DataView(c.buffer).setUint16(2, size, true);
        return c;
      }),
    },
    {
      weight: 1,
      arbitrary: fc.tuple(valid, fc.integer({ min: 0, max: 0xffff })).map(([b, type]) => {
        const c = b.slice();
        new DataView(c.buffer).setUint16(0, type, true);
        return c;
      }),
    },
    {
      weight: 1,
      arbitrary: fc.tuple(valid, fc.nat(), fc.integer({ min: 1, max: 255 })).map(([b, at, x]) => {
        const c = b.slice();
        if (c.length > 0) c[at % c.length] ^= x;
        return c;
      }),
    },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }) },
  );
}

// ---- model-based commands over a BalloonSim

/** What the model run tracks besides the sim: the pool size the guest must still account for. */
export interface BalloonModelState {
  poolPages: number;
}

type Cmd = fc.AsyncCommand<BalloonModelState, BalloonSim>;

/** Checks after every step: guest and host agree on the balloon, no page lost, given back twice, or released while owned. */
export function checkBalloonInvariants(model: BalloonModelState, sim: BalloonSim): void {
  const m = sim.model;
  const hostRuns = sim.device.balloonedRanges();
  const guestRuns = m.balloonRuns();
  if (JSON.stringify(hostRuns) !== JSON.stringify(guestRuns)) {
    throw new Error(`host balloon ${JSON.stringify(hostRuns.slice(0, 8))} != guest balloon ${JSON.stringify(guestRuns.slice(0, 8))}`);
  }
  if (m.violations.length > 0) throw new Error(`host gave back pages not in the balloon: ${m.violations.slice(0, 4).join('; ')}`);
  const lost = m.lostPages();
  if (lost.length > 0) throw new Error(`host released ${lost.length} pages the guest owns (first ${lost[0]})`);
  if (m.poolPages !== model.poolPages) throw new Error(`guest pool ${m.poolPages} pages, expected ${model.poolPages}`);
  const st = sim.device.stats();
  if (st.balloonedPages !== m.ballooned) throw new Error(`host counts ${st.balloonedPages} ballooned, guest ${m.ballooned}`);
  if (st.protocolErrors !== 0) throw new Error(`${st.protocolErrors} protocol errors from a well-behaved guest`);
}

class SetTarget implements Cmd {
  constructor(readonly fraction: number) {}
  check = (): boolean => true;
  async run(model: BalloonModelState, sim: BalloonSim): Promise<void> {
    const st = sim.device.stats();
    const target = Math.floor((st.ramBytes * this.fraction) / PAGE) * PAGE;
    sim.device.setTarget(target);
    await sim.device.idle();
    checkBalloonInvariants(model, sim);
    const after = sim.device.stats();
    // Reached, or the guest had nothing more to give (its floor), or nothing is left to give back.
    const reached = after.guestBytes === target;
    const guestOut = after.guestBytes > target && sim.model.free <= (sim.client['options'].floor ?? 0);
    const emptied = after.guestBytes < target && after.balloonedPages === 0;
    if (!reached && !guestOut && !emptied) throw new Error(`target ${target}: guest has ${after.guestBytes}, free pages ${sim.model.free}`);
  }
  toString = (): string => `setTarget(${this.fraction.toFixed(2)} of RAM)`;
}

class GuestUse implements Cmd {
  constructor(
    readonly pages: number,
    readonly stride: number,
  ) {}
  check = (): boolean => true;
  async run(model: BalloonModelState, sim: BalloonSim): Promise<void> {
    sim.model.use(this.pages, this.stride);
    checkBalloonInvariants(model, sim);
  }
  toString = (): string => `guestUse(${this.pages}, stride ${this.stride})`;
}

class GuestFree implements Cmd {
  constructor(readonly pages: number) {}
  check = (): boolean => true;
  async run(model: BalloonModelState, sim: BalloonSim): Promise<void> {
    sim.model.unuse(this.pages);
    checkBalloonInvariants(model, sim);
  }
  toString = (): string => `guestFree(${this.pages})`;
}

class StatusReport implements Cmd {
  check = (): boolean => true;
  async run(model: BalloonModelState, sim: BalloonSim): Promise<void> {
    const before = sim.device.stats().statusReports;
    sim.client.sendStatus();
    for (let i = 0; i < 1000 && sim.device.stats().statusReports === before; i++) await new Promise((r) => setImmediate(r));
    await sim.device.idle();
    checkBalloonInvariants(model, sim);
  }
  toString = (): string => 'statusReport';
}

class HotAdd implements Cmd {
  constructor(readonly mib: number) {}
  check = (model: Readonly<BalloonModelState>): boolean => model.poolPages < 64 * 256;
  async run(model: BalloonModelState, sim: BalloonSim): Promise<void> {
    const r = await sim.device.hotAdd(this.mib << 20);
    if (r.accepted) model.poolPages += r.pagesOnlined;
    await sim.device.idle();
    checkBalloonInvariants(model, sim);
  }
  toString = (): string => `hotAdd(${this.mib} MiB)`;
}

/** The commands: targets anywhere from 0 to all of RAM, guest allocations, reports, hot adds of 1-4 MiB. */
export function balloonCommands(options: { maxCommands?: number; hotAdd?: boolean } = {}): fc.Arbitrary<Iterable<Cmd>> {
  const cmds: fc.Arbitrary<Cmd>[] = [
    fc.double({ min: 0, max: 1.1, noNaN: true }).map((f) => new SetTarget(f)),
    fc.double({ min: 0, max: 1.1, noNaN: true }).map((f) => new SetTarget(f)),
    fc.tuple(fc.integer({ min: 1, max: 1500 }), fc.constantFrom(1, 2, 3, 7)).map(([n, stride]) => new GuestUse(n, stride)),
    fc.integer({ min: 1, max: 1500 }).map((n) => new GuestFree(n)),
    fc.constant(new StatusReport()),
  ];
  if (options.hotAdd !== false) cmds.push(fc.integer({ min: 1, max: 4 }).map((n) => new HotAdd(n)));
  return fc.commands(cmds, { maxCommands: options.maxCommands ?? 12 });
}
