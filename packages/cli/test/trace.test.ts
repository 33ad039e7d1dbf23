/**
 * The captured fixture (fixtures/traces/sim-ic-demo.hvtrace, from `hvemu demo --trace`):
 * a fresh capture of the same scenario matches it event for event; mutations of a recorded
 * host answer, a dropped packet and a reordered message are reported at the exact event;
 * `trace show` decodes it.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { firstDivergence, parseTrace, readTraceFile, type TraceEvent } from '@hvemu/trace';
import { showTrace } from '../src/trace-show.js';
import { runVmDemo } from '../src/vm-demo.js';

const FIXTURE = fileURLToPath(new URL('../../../fixtures/traces/sim-ic-demo.hvtrace', import.meta.url));

async function freshCapture(): Promise<TraceEvent[]> {
  const path = join(mkdtempSync(join(tmpdir(), 'hvemu-trace-')), 'demo.hvtrace');
  await runVmDemo(() => {}, path);
  return readTraceFile(path).events;
}

describe('trace fixture of the simulated IC scenario', () => {
  it('contains every kind of event the scenario produces', () => {
    const kinds = new Set(readTraceFile(FIXTURE).events.map((e) => e.kind));
    for (const k of [
      'msrWrite',
      'postMessage',
      'signalEvent',
      'hypercallResult',
      'synicMessage',
      'synicEventFlag',
      'interrupt',
      'eom',
      'gpadlCreated',
      'ringPacket',
      'channelState',
      'hostCall',
    ]) {
      expect(kinds.has(k as TraceEvent['kind'])).toBe(true);
    }
  });

  it('matches a fresh capture of the same scenario, event for event', async () => {
    const recorded = readTraceFile(FIXTURE).events;
    const fresh = await freshCapture();
    expect(firstDivergence(recorded, fresh, { times: true })).toBeNull();
  });

  it('reports a changed byte in a host answer, a dropped packet and a reordered message at the exact event', async () => {
    const recorded = readTraceFile(FIXTURE).events;
    const answer = recorded.findIndex(
      (e) => e.kind === 'ringPacket' && e.ringPacket.direction === 'HOST_TO_GUEST' && e.ringPacket.packet.length > 60,
    );
    const changed = structuredClone(recorded);
    const packet = (changed[answer] as Extract<TraceEvent, { kind: 'ringPacket' }>).ringPacket.packet;
    packet[packet.length - 1] ^= 0xff;
    const d1 = firstDivergence(recorded, changed)!;
    expect(d1.index).toBe(answer);
    expect(d1.fields).toEqual(['ringPacket.packet']);
    expect(d1.context.length).toBe(5);

    const dropped = recorded.filter((_, i) => i !== answer);
    expect(firstDivergence(recorded, dropped)!.index).toBe(answer);

    const post = recorded.findIndex((e) => e.kind === 'synicMessage');
    const reordered = [...recorded];
    [reordered[post], reordered[post + 1]] = [reordered[post + 1], reordered[post]];
    expect(firstDivergence(recorded, reordered)!.index).toBe(post);
  });

  it('shows as a readable timeline with decoded channel and IC messages, filtered by channel', () => {
    const lines: string[] = [];
    showTrace(readTraceFile(FIXTURE), { relid: 1 }, false, (l) => lines.push(l));
    const text = lines.join('\n');
    expect(text).toContain('VMBus 5.3');
    expect(text).toMatch(/relid 1 <- pkt type 6 len \d+ tid \d+ \| IC heartbeat request/);
    expect(text).toMatch(/relid 1 -> pkt type 6 len \d+ tid \d+ \| IC heartbeat response/);
    const eventLines = lines.filter((l) => /^ *\d+\.\d+ vp\d/.test(l));
    expect(eventLines.length).toBeGreaterThan(5);
    expect(eventLines.every((l) => l.includes('relid 1'))).toBe(true);
    const json: string[] = [];
    showTrace(readTraceFile(FIXTURE), { direction: 'host-to-guest' }, true, (l) => json.push(l));
    // JSON Lines: the header, each event shown, the footer, a summary.
    const parsed = json.map((l) => JSON.parse(l) as Record<string, { ringPacket?: { direction: string } }>);
    expect(Object.keys(parsed[0])).toEqual(['header']);
    const shown = parsed.filter((o) => o.event).map((o) => o.event);
    expect(shown.length).toBeGreaterThan(5);
    expect(shown.every((e) => e.ringPacket?.direction === 'HOST_TO_GUEST')).toBe(true);
    expect(Object.keys(parsed.at(-2)!)).toEqual(['footer']);
    expect(parsed.at(-1)).toMatchObject({ summary: { shown: shown.length, truncated: false, vmbusVersion: 0x50003 } });
  });

  it('a corrupt fixture gives an error naming the offset', () => {
    const bytes = readFileSync(FIXTURE);
    const bad = join(mkdtempSync(join(tmpdir(), 'hvemu-trace-')), 'bad.hvtrace');
    writeFileSync(bad, bytes.subarray(0, bytes.length - 7));
    expect(() => parseTrace(readFileSync(bad))).toThrow(/trace corrupt at byte \d+/);
  });
});
