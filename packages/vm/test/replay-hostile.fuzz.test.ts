/**
 * Replay drives recorded guest events into a real host, so a mutated or hostile trace is a
 * hostile guest: whatever the mutation, replay ends with a match, a divergence or a
 * ReplayError, never another exception.
 */
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { firstDivergence, readTraceFile, type TraceEvent } from '@hvemu/trace';
import { replayTrace, ReplayError } from '../src/replay.js';
import { fuzzRuns } from '../../../test/helpers.js';

const SIM = fileURLToPath(new URL('../../../fixtures/traces/sim-ic-demo.hvtrace', import.meta.url));
const trace = readTraceFile(SIM);

type Mutation = { at: number; op: 'flip' | 'drop' | 'dup' | 'msr' | 'vp' | 'call'; byte: number; value: bigint };

/** Host calls a hostile trace might record: every device's methods, none, and arguments of every shape. */
const METHODS = ['beat', 'shutdown', 'sample', 'set', 'get', 'delete', 'enumerate', 'list', 'toString', 'constructor', '__proto__', ''];
const ARGS = [
  '[]',
  '[null]',
  '[1,2,3]',
  '["x"]',
  '[{"kind":"reboot"}]',
  '[0,{"key":5,"value":[]}]',
  '[{"$bigint":"99999999999999999999"}]',
  '[{"$bytes":"zz"}]',
  '[[[[[]]]]]',
];

function mutate(events: readonly TraceEvent[], m: Mutation): TraceEvent[] {
  const out = structuredClone(events) as TraceEvent[];
  const i = m.at % out.length;
  const e = out[i];
  switch (m.op) {
    case 'drop':
      out.splice(i, 1);
      break;
    case 'dup':
      out.splice(i, 0, structuredClone(e));
      break;
    case 'vp':
      e.vp = m.byte; // a vCPU the host does not have
      break;
    case 'call':
      if (e.kind === 'hostCall') {
        e.hostCall.method = METHODS[m.byte % METHODS.length];
        e.hostCall.argsJson = ARGS[Number(m.value % BigInt(ARGS.length))];
      }
      break;
    case 'msr':
      if (e.kind === 'msrWrite') e.msrWrite.value = m.value;
      break;
    case 'flip': {
      const bytes =
        e.kind === 'postMessage'
          ? e.postMessage.payload
          : e.kind === 'ringPacket'
            ? e.ringPacket.packet
            : e.kind === 'hostCall'
              ? null
              : null;
      if (bytes && bytes.length > 0) bytes[m.byte % bytes.length] ^= 0xff;
      if (e.kind === 'hostCall') e.hostCall.argsJson = e.hostCall.argsJson.slice(0, m.byte % (e.hostCall.argsJson.length + 1));
      break;
    }
  }
  return out;
}

const mutation = fc.record({
  at: fc.nat(),
  op: fc.constantFrom('flip' as const, 'drop' as const, 'dup' as const, 'msr' as const, 'vp' as const, 'call' as const),
  byte: fc.nat(255),
  value: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
});

describe('replay of hostile traces', () => {
  it('ends in a match, a divergence or a ReplayError, whatever the mutation', () => {
    fc.assert(
      fc.property(fc.array(mutation, { minLength: 1, maxLength: 4 }), (mutations) => {
        const events = mutations.reduce<TraceEvent[]>((acc, m) => mutate(acc, m), trace.events);
        try {
          const actual: TraceEvent[] = [];
          const r = replayTrace({ ...trace, events }, { onEvent: (e) => actual.push(e) });
          expect(typeof r.matched).toBe('boolean');
          // The streamed comparison finds what comparing the whole lists finds.
          expect(r.divergence?.index).toBe(firstDivergence(events, actual)?.index);
        } catch (error) {
          expect(error).toBeInstanceOf(ReplayError);
        }
      }),
      { numRuns: fuzzRuns(60) },
    );
  });

  it('every hostile host call ends in a match, a divergence or a ReplayError', () => {
    // The first call on each device (the others are more of the same).
    const calls = [
      ...new Map(trace.events.flatMap((e, i) => (e.kind === 'hostCall' ? [[e.hostCall.relid, i] as const] : [])).reverse()).values(),
    ];
    expect(calls.length).toBe(4);
    for (const at of calls) {
      for (let method = 0; method < METHODS.length; method++) {
        for (let args = 0; args < ARGS.length; args++) {
          const events = mutate(trace.events, { at, op: 'call', byte: method, value: BigInt(args) });
          try {
            expect(typeof replayTrace({ ...trace, events }).matched).toBe('boolean');
          } catch (error) {
            expect(error, `${METHODS[method]}(${ARGS[args]})`).toBeInstanceOf(ReplayError);
          }
        }
      }
    }
  });

  it('refuses absurd vCPU numbers and replays oversized posts as the refused calls they were', () => {
    const vp = structuredClone(trace.events);
    vp[3].vp = 4_000_000_000;
    expect(() => replayTrace({ ...trace, events: vp })).toThrow(/names vCPU 4000000000/);
    const big = structuredClone(trace.events);
    const post = big.findIndex((e) => e.kind === 'postMessage');
    (big[post] as Extract<TraceEvent, { kind: 'postMessage' }>).postMessage.payload = new Uint8Array(10_000);
    const statuses: number[] = [];
    const r = replayTrace(
      { ...trace, events: big },
      { onEvent: (e) => e.kind === 'hypercallResult' && statuses.push(e.hypercallResult.status) },
    );
    expect(r.matched).toBe(false);
    // The host answered it with a status, as it would have answered the guest.
    expect(statuses.some((s) => s !== 0)).toBe(true);
  });
});
