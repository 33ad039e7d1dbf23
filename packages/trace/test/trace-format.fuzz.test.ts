import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '@hvemu/common';
import {
  decodeHostCallArgs,
  encodeHostCallArgs,
  MAX_RECORD_BYTES,
  MemoryOutput,
  parseTrace,
  readTraceFile,
  TraceFormatError,
  TraceRecorder,
  type TraceEventBody,
} from '@hvemu/trace';
import { fuzzRuns } from '../../../test/helpers.js';

const u32 = fc.nat(0xffffffff);
const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
const bytes = fc.uint8Array({ maxLength: 300 });
const guid = fc.uuid();

/** Every event kind with arbitrary contents. */
const eventBody: fc.Arbitrary<TraceEventBody> = fc.oneof(
  fc.record({ connectionId: u32, messageType: u32, payload: bytes }).map((postMessage) => ({ kind: 'postMessage' as const, postMessage })),
  fc
    .record({ connectionId: u32, flagNumber: fc.nat(0xffff), fast: fc.boolean() })
    .map((signalEvent) => ({ kind: 'signalEvent' as const, signalEvent })),
  fc
    .record({ callCode: fc.nat(0xffff), status: fc.nat(0xffff) })
    .map((hypercallResult) => ({ kind: 'hypercallResult' as const, hypercallResult })),
  fc.record({ msr: u32, value: u64 }).map((msrWrite) => ({ kind: 'msrWrite' as const, msrWrite })),
  fc
    .record({ sint: fc.nat(15), messageType: u32, payload: bytes })
    .map((synicMessage) => ({ kind: 'synicMessage' as const, synicMessage })),
  fc.record({ sint: fc.nat(15), flag: fc.nat(2047) }).map((synicEventFlag) => ({ kind: 'synicEventFlag' as const, synicEventFlag })),
  fc.record({ vector: fc.nat(255), autoEoi: fc.boolean() }).map((interrupt) => ({ kind: 'interrupt' as const, interrupt })),
  fc.constant({ kind: 'eom' as const, eom: {} }),
  fc
    .record({ relid: u32, gpadl: u32, byteOffset: u32, byteCount: u32, pfns: fc.array(u64, { maxLength: 8 }), status: u32 })
    .map((gpadlCreated) => ({ kind: 'gpadlCreated' as const, gpadlCreated })),
  fc.record({ relid: u32, gpadl: u32 }).map((gpadlTorndown) => ({ kind: 'gpadlTorndown' as const, gpadlTorndown })),
  fc
    .record({
      relid: u32,
      direction: fc.constantFrom('GUEST_TO_HOST' as const, 'HOST_TO_GUEST' as const),
      packet: bytes,
      ranges: fc.array(fc.record({ byteOffset: fc.nat(4095), pfns: fc.array(u64, { maxLength: 3 }), data: bytes }), { maxLength: 2 }),
    })
    .map((ringPacket) => ({ kind: 'ringPacket' as const, ringPacket })),
  fc
    .record({
      relid: u32,
      state: fc.constantFrom('OFFERED' as const, 'OPENED' as const, 'CLOSED' as const, 'RESCINDED' as const),
      classId: guid,
      instanceId: guid,
      subchannelIndex: fc.nat(0xffff),
    })
    .map((channelState) => ({ kind: 'channelState' as const, channelState })),
  fc
    .record({ relid: u32, device: fc.string(), method: fc.string(), argsJson: fc.json() })
    .map((hostCall) => ({ kind: 'hostCall' as const, hostCall })),
  fc
    .oneof(
      fc.record({
        relid: u32,
        device: fc.string(),
        source: fc.constant('referenceTime' as const),
        referenceTime: u64,
        wallClockMs: fc.constant(0),
      }),
      fc.record({
        relid: u32,
        device: fc.string(),
        source: fc.constant('wallClockMs' as const),
        referenceTime: fc.constant(0n),
        wallClockMs: fc.double({ noNaN: true, noDefaultInfinity: true }),
      }),
    )
    .map((hostInput) => ({ kind: 'hostInput' as const, hostInput })),
);

/** Decoded bytes fields are Buffers (Uint8Array subclasses, zero-copy); compare as plain Uint8Arrays. */
function plain(v: unknown): unknown {
  if (v instanceof Uint8Array) return new Uint8Array(v);
  if (Array.isArray(v)) return v.map(plain);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  return v;
}

const header = {
  vmbusVersion: 0x50003,
  devices: [{ name: 'heartbeat', classId: '57164f39-9115-4e78-ab55-382f3bd5422d', instanceId: 'a', relid: 3 }],
  producer: 'test',
};

function capture(events: [number, TraceEventBody][], stall?: (i: number) => number) {
  const clock = new ManualClock();
  const out = new MemoryOutput();
  const rec = new TraceRecorder(out, header, { clock, maxBufferedBytes: 1000 });
  events.forEach(([vp, body], i) => {
    clock.advance(10n);
    out.stalledBytes = stall ? stall(i) : 0;
    rec.record(vp, body);
  });
  out.stalledBytes = 0;
  void rec.close();
  return { bytes: out.bytes(), rec };
}

describe('trace format', () => {
  it('host-call arguments survive JSON with bigints and bytes', () => {
    const args = [1, 'two', { key: 'VirtualMachineName', value: 'x' }, 5n, Uint8Array.of(1, 2, 255), [3n]];
    expect(decodeHostCallArgs(encodeHostCallArgs(args))).toEqual(args);
    expect(() => decodeHostCallArgs('{"not": "an array"}')).toThrow(SyntaxError);
  });

  it('round-trips every event kind with its time, vp and sequence', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(63), eventBody), { maxLength: 20 }), (events) => {
        const trace = parseTrace(capture(events).bytes);
        expect(trace.header).toMatchObject({ ...header, schemaVersion: 3 });
        expect(trace.events.length).toBe(events.length);
        trace.events.forEach((e, i) => {
          expect(e.seq).toBe(BigInt(i));
          expect(e.time).toBe(BigInt(10 * (i + 1)));
          expect(e.vp).toBe(events[i][0]);
          expect(plain({ kind: e.kind, [e.kind]: (e as never)[e.kind] })).toEqual(events[i][1]);
        });
        expect(trace.footer).toEqual({ events: BigInt(events.length), dropped: 0n, vmbusVersion: header.vmbusVersion });
      }),
      { numRuns: fuzzRuns(100) },
    );
  });

  it('drops events when the output falls behind, and says how many and from where', () => {
    const events = Array.from({ length: 10 }, (_, i): [number, TraceEventBody] => [
      0,
      { kind: 'synicEventFlag', synicEventFlag: { sint: 2, flag: i } },
    ]);
    // The "disk" is stalled for events 3..6.
    const { bytes, rec } = capture(events, (i) => (i >= 3 && i <= 6 ? 10_000 : 0));
    expect(rec.eventsDropped).toBe(4n);
    const trace = parseTrace(bytes);
    expect(trace.events.map((e) => Number(e.seq))).toEqual([0, 1, 2, 7, 8, 9]);
    expect(trace.dropped).toEqual([{ count: 4n, firstSeq: 3n }]);
    expect(trace.footer).toEqual({ events: 6n, dropped: 4n, vmbusVersion: header.vmbusVersion });
  });

  it('writes a record larger than maxBufferedBytes when nothing is pending (else it could never be recorded)', () => {
    // The 100k-run fuzz found it: one 2 KB hostCall under a 1000-byte buffer left 0 events.
    const big: TraceEventBody = {
      kind: 'hostCall',
      hostCall: { relid: 1, device: 'kvp', method: 'set', argsJson: JSON.stringify(['x'.repeat(2000)]) },
    };
    const small: TraceEventBody = { kind: 'eom', eom: {} };
    const { bytes, rec } = capture([
      [0, small],
      [0, big],
      [0, small],
    ]);
    expect(rec.eventsDropped).toBe(0n);
    expect(parseTrace(bytes).events.map((e) => e.kind)).toEqual(['eom', 'hostCall', 'eom']);
    // With something pending it still waits its turn: dropped, counted.
    const stalled = capture([[0, big]], () => 1);
    expect(stalled.rec.eventsDropped).toBe(1n);
    expect(parseTrace(stalled.bytes).dropped).toEqual([{ count: 1n, firstSeq: 0n }]);
  });

  it('never writes a record the reader would refuse: larger than MAX_RECORD_BYTES is dropped and counted', () => {
    const out = new MemoryOutput();
    const rec = new TraceRecorder(out, header, { clock: new ManualClock(), maxBufferedBytes: 1 << 30 });
    const huge = new Uint8Array(MAX_RECORD_BYTES + 1);
    rec.record(0, {
      kind: 'ringPacket',
      ringPacket: { relid: 1, direction: 'GUEST_TO_HOST', packet: new Uint8Array(16), ranges: [{ byteOffset: 0, pfns: [1n], data: huge }] },
    });
    rec.record(0, { kind: 'eom', eom: {} });
    void rec.close();
    expect(rec.eventsDropped).toBe(1n);
    const trace = parseTrace(out.bytes());
    expect(trace.events.map((e) => Number(e.seq))).toEqual([1]);
    expect(trace.dropped).toEqual([{ count: 1n, firstSeq: 0n }]);
  });

  it('streams to a file', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'hvemu-trace-')), 't.hvtrace');
    const rec = TraceRecorder.toFile(path, header, { clock: new ManualClock() });
    for (let i = 0; i < 1000; i++) rec.record(1, { kind: 'interrupt', interrupt: { vector: 0xf3, autoEoi: false } });
    await rec.close();
    const trace = readTraceFile(path);
    expect(trace.events.length).toBe(1000);
    expect(trace.footer?.events).toBe(1000n);
  });

  it('reports a corrupt or truncated file as TraceFormatError with the offset, never anything else', () => {
    const events = Array.from({ length: 5 }, (_, i): [number, TraceEventBody] => [
      0,
      { kind: 'postMessage', postMessage: { connectionId: 4, messageType: 1, payload: new Uint8Array(i * 10) } },
    ]);
    const good = capture(events).bytes;
    // Every truncation point.
    for (let cut = 0; cut < good.length; cut++) {
      try {
        parseTrace(good.subarray(0, cut));
      } catch (e) {
        expect(e).toBeInstanceOf(TraceFormatError);
        expect((e as TraceFormatError).offset).toBeLessThanOrEqual(cut);
      }
    }
    // Random byte flips.
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(good.length - 1), fc.nat(255)), { minLength: 1, maxLength: 4 }), (flips) => {
        const bad = good.slice();
        for (const [at, v] of flips) bad[at] = v;
        try {
          parseTrace(bad);
        } catch (e) {
          expect(e).toBeInstanceOf(TraceFormatError);
        }
      }),
      { numRuns: fuzzRuns(500) },
    );
    expect(() => parseTrace(new TextEncoder().encode('not a trace'))).toThrow(/bad magic/);
  });
});
