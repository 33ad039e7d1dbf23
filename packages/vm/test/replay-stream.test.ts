/**
 * Replay streams: a trace read from a file is replayed through a window of events (from one
 * driven guest event to the next), not held whole; the bounds are checked, truncated and empty
 * traces carry a warning, and wrong-typed input is refused at the edge naming the argument.
 */
import { mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { HostUsageError, HvemuError } from '@hvemu/common';
import { readTraceFile, TraceReader, type TraceEvent } from '@hvemu/trace';
import { MAX_WINDOW_EVENTS, replayTrace, ReplayError } from '../src/replay.js';
import { writeKvpTrace } from './helpers/kvp-trace.js';

const SIM = fileURLToPath(new URL('../../../fixtures/traces/sim-ic-demo.hvtrace', import.meta.url));
const trace = readTraceFile(SIM);

describe('streaming replay', () => {
  it('replays a 30 MB trace from its file through a window of a few events', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'hvemu-replay-stream-')), 'kvp.hvtrace');
    const { events } = await writeKvpTrace(path, 2000);
    expect(statSync(path).size).toBeGreaterThan(25e6);

    const reader = TraceReader.open(path);
    const result = replayTrace(reader);
    reader.close();
    expect(result.divergence).toBeNull();
    expect(result.compared).toBe(Number(events));
    expect(result.warnings).toEqual([]);
    // What replay held: the window between two driven events, and the reader's one buffer.
    expect(result.peakWindowEvents).toBeLessThan(50);
    expect(reader.stats.peakBufferBytes).toBeLessThanOrEqual(Math.max(64 << 10, reader.stats.largestRecordBytes + 8));
  });

  it('gives the same first divergence as comparing the whole lists', () => {
    const events = structuredClone(trace.events);
    const at = events.findIndex((e) => e.kind === 'synicMessage');
    [events[at], events[at + 1]] = [events[at + 1], events[at]];
    const actual: TraceEvent[] = [];
    const r = replayTrace({ ...trace, events }, { onEvent: (e) => actual.push(e) });
    expect(r.divergence?.index).toBe(at);
    expect(r.compared).toBe(at + 1);
  });

  it('refuses a trace that needs a larger window than MAX_WINDOW_EVENTS, naming it', () => {
    const events = structuredClone(trace.events);
    const flag = events.find((e) => e.kind === 'synicEventFlag')!;
    const flood = Array.from({ length: MAX_WINDOW_EVENTS + 1 }, () => flag);
    const at = events.findIndex((e) => e.kind === 'postMessage');
    events.splice(at + 1, 0, ...flood);
    expect(() => replayTrace({ ...trace, events })).toThrow(
      new RegExp(`more than ${MAX_WINDOW_EVENTS} events between one guest event and the next`),
    );
  });

  it('warns when the trace is truncated or empty instead of a bare match', () => {
    const cut = replayTrace({ ...trace, footer: null });
    expect(cut.matched).toBe(true);
    expect(cut.truncated).toBe(true);
    expect(cut.warnings.join('\n')).toMatch(/no footer/);
    const empty = replayTrace({ ...trace, events: [], footer: null });
    expect(empty.compared).toBe(0);
    expect(empty.warnings.join('\n')).toMatch(/holds no events/);
  });

  it('refuses wrong-typed input at the edge with an HvemuError naming the argument', () => {
    const bad: [unknown, unknown, RegExp][] = [
      [{}, undefined, /trace\.header must be an object/],
      [undefined, undefined, /trace must be a Trace or a TraceReader/],
      ['file.hvtrace', undefined, /trace must be a Trace or a TraceReader, got 'file\.hvtrace'/],
      [{ ...trace, events: 'x' }, undefined, /trace\.events must be an array/],
      [{ ...trace, dropped: null }, undefined, /trace\.dropped must be an array/],
      [{ ...trace, header: { ...trace.header, devices: [{ name: 3 }] } }, undefined, /trace\.header\.devices\[0\]/],
      [trace, { device: 7 }, /options\.device must be a device name/],
      [trace, { context: -1 }, /options\.context must be an integer 0\.\.1000/],
      [trace, { context: 1e9 }, /options\.context/],
      [trace, { wallClockMs: 5 }, /options\.wallClockMs must be a function/],
      [trace, null, /options must be an object/],
      [{ ...trace, events: [{ ...trace.events[0], seq: 1 }] }, undefined, /event 0: seq must be a non-negative bigint/],
      [{ ...trace, events: [{ ...trace.events[0], kind: 'bogus' }] }, undefined, /event 0 \(#0\): unknown kind 'bogus'/],
      [
        {
          ...trace,
          events: [{ seq: 0n, time: 0n, vp: 0, kind: 'postMessage', postMessage: { connectionId: 1, messageType: 1, payload: 'hi' } }],
        },
        undefined,
        /postMessage\.payload must be bytes/,
      ],
      [
        {
          ...trace,
          events: [
            {
              seq: 0n,
              time: 0n,
              vp: 0,
              kind: 'ringPacket',
              ringPacket: { relid: 1, direction: 'sideways', packet: new Uint8Array(16), ranges: [] },
            },
          ],
        },
        undefined,
        /ringPacket\.direction/,
      ],
      [{ ...trace, events: [null] }, undefined, /event 0 is null, not an event/],
    ];
    for (const [t, o, message] of bad) {
      let thrown: unknown;
      try {
        replayTrace(t as never, o as never);
      } catch (error) {
        thrown = error;
      }
      expect(thrown, String(message)).toBeInstanceOf(HvemuError);
      expect((thrown as Error).message).toMatch(message);
    }
    expect(() => replayTrace({} as never)).toThrow(HostUsageError);
    expect(() => replayTrace({ ...trace, events: [null] } as never)).toThrow(ReplayError);
  });
});
