/**
 * `hvemu replay`: both fixtures (the simulated IC scenario and the KVM demo guest) replay
 * clean against a fresh host; a recorded trace with a changed host answer, a dropped packet
 * or a reordered message is reported at exactly that event; a host that behaves differently
 * (another wall clock for timesync) is caught; --device replays one channel alone.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { readTraceFile, type Trace, type TraceEvent } from '@hvemu/trace';
import { replayTrace, ReplayError } from '@hvemu/vm';
import { runReplay } from '../src/replay.js';

const fixture = (name: string): string => fileURLToPath(new URL(`../../../fixtures/traces/${name}`, import.meta.url));
const SIM = fixture('sim-ic-demo.hvtrace');
const KVM = fixture('kvm-ic-demo.hvtrace');
/** A real client: Linux 6.1's hv_vmbus and hv_utils on hvemu's KVM path (scripts/capture-linux-fixture.sh). */
const LINUX = fixture('linux-6.1-ic.hvtrace');
const MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url));

type Packet = Extract<TraceEvent, { kind: 'ringPacket' }>;

function withEvents(trace: Trace, events: TraceEvent[]): Trace {
  return { ...trace, events };
}

function hostAnswerIndex(events: readonly TraceEvent[], ic: number): number {
  // An IC request the host wrote: icmsgtype at payload offset 8 + 4 of the packet's payload.
  return events.findIndex((e) => {
    if (e.kind !== 'ringPacket' || e.ringPacket.direction !== 'HOST_TO_GUEST') return false;
    const p = e.ringPacket.packet;
    const payload = p.subarray(new DataView(p.buffer, p.byteOffset).getUint16(2, true) * 8);
    return payload.length > 12 && payload[12] === ic;
  });
}

describe('hvemu replay', () => {
  for (const [name, path] of [
    ['simulated IC scenario', SIM],
    ['KVM demo guest', KVM],
  ] as const) {
    it(`replays the ${name} fixture clean, every event compared`, () => {
      const trace = readTraceFile(path);
      const result = replayTrace(trace);
      expect(result.divergence).toBeNull();
      expect(result.compared).toBe(trace.events.length);
      expect(result.actualEvents).toBe(trace.events.length);
      expect(result.warnings).toEqual([]);
      expect(result.driven).toBeGreaterThan(10);
      expect(trace.events.some((e) => e.kind === 'hostCall')).toBe(true);
    });
  }

  it('reports a changed byte in a recorded host answer at that event, decoded field by field', () => {
    const trace = readTraceFile(SIM);
    const at = hostAnswerIndex(trace.events, 1); // a heartbeat request
    const events = structuredClone(trace.events);
    const packet = (events[at] as Packet).ringPacket.packet;
    packet[packet.length - 8] ^= 0x01; // inside the heartbeat sequence number
    const result = replayTrace(withEvents(trace, events));
    expect(result.divergence?.index).toBe(at);
    expect(result.divergence?.recordedSeq).toBe(trace.events[at].seq);
    expect(result.divergence?.fields).toEqual(['ringPacket.packet']);
    expect(result.divergence?.relid).toBe(1);
    expect(result.divergence?.context.length).toBe(5);
    const report = runReplay(withEvents(trace, events), {});
    expect(report.matched).toBe(false);
    const text = report.lines.join('\n');
    expect(text).toContain(`first divergence at recorded event #${trace.events[at].seq}`);
    expect(text).toContain('channel relid 1');
    const marked = report.lines.filter((l) => / \* packet\[ *\d+\.\.\]/.test(l));
    expect(marked).toHaveLength(1); // the row with the changed byte, and only it
    expect(text).toMatch(/ {3}icmsg_hdr\.icmsgtype +1 +1/); // an unchanged decoded field
  });

  it('reports a dropped host packet and a dropped guest packet at the exact event', () => {
    const trace = readTraceFile(SIM);
    const hostPacket = hostAnswerIndex(trace.events, 3); // the shutdown request
    const r1 = replayTrace(
      withEvents(
        trace,
        trace.events.filter((_, i) => i !== hostPacket),
      ),
    );
    expect(r1.divergence?.index).toBe(hostPacket);
    expect(r1.divergence?.actual?.kind).toBe('ringPacket');

    // The guest's negotiate answer on timesync: without it in the ring the host never becomes
    // ready, so the time sample it took next in the recording (its clock reads first, then the
    // packet) is missing, right there.
    const guestPacket = trace.events.findIndex(
      (e) => e.kind === 'ringPacket' && e.ringPacket.direction === 'GUEST_TO_HOST' && e.ringPacket.relid === 3,
    );
    const r2 = replayTrace(
      withEvents(
        trace,
        trace.events.filter((_, i) => i !== guestPacket),
      ),
    );
    expect(r2.divergence?.index).toBe(guestPacket);
    expect(r2.divergence?.expected).toMatchObject({ kind: 'hostInput', hostInput: { device: 'timesync', source: 'wallClockMs' } });
    expect(r2.divergence?.actual?.kind).not.toBe('hostInput');
  });

  it('reports a reordered message at the first of the two', () => {
    const trace = readTraceFile(SIM);
    const at = trace.events.findIndex((e) => e.kind === 'synicMessage');
    const events = [...trace.events];
    [events[at], events[at + 1]] = [events[at + 1], events[at]];
    expect(replayTrace(withEvents(trace, events)).divergence?.index).toBe(at);
  });

  it('catches a host that behaves differently from the recorded one (timesync on another wall clock)', () => {
    const trace = readTraceFile(SIM);
    const result = replayTrace(trace, { wallClockMs: () => 1_800_000_000_000 });
    // The clock read itself is an event (schema 3): the difference shows where the device read it.
    const read = trace.events.findIndex((e) => e.kind === 'hostInput' && e.hostInput.source === 'wallClockMs');
    expect(result.divergence?.index).toBe(read);
    expect(result.divergence?.fields).toEqual(['hostInput.wallClockMs']);
    expect(result.divergence?.relid).toBe(3);
  });

  it("hands a replayed device the recorded clock values, so a real host's time samples replay exactly", () => {
    const trace = readTraceFile(SIM);
    // Shift every recorded clock read: replay must hand back these values, not its own clocks.
    const shifted = trace.events.map((e) =>
      e.kind === 'hostInput'
        ? { ...e, hostInput: { ...e.hostInput, wallClockMs: e.hostInput.wallClockMs && e.hostInput.wallClockMs + 1234.5 } }
        : e,
    );
    const r = replayTrace(withEvents(trace, shifted));
    // The sample the host wrote next carries the old wall clock in the recording: that packet, not the read, diverges.
    expect(r.divergence?.index).toBe(hostAnswerIndex(trace.events, 4));
    expect(r.divergence?.fields).toEqual(['ringPacket.packet']);
  });

  it("replays a real Linux client's session: hv_vmbus negotiation, the IC opens, heartbeats, a time sample, shutdown", () => {
    const trace = readTraceFile(LINUX);
    expect(trace.footer?.vmbusVersion).toBe((5 << 16) | 3); // VMBus 5.3, the newest Linux 6.1 and hvemu share
    const result = replayTrace(trace);
    expect(result.divergence).toBeNull();
    expect(result.compared).toBe(trace.events.length);
    // Every IC channel carried packets both ways, and the time sample's clock reads were replayed.
    for (const relid of [1, 2, 3]) {
      for (const direction of ['GUEST_TO_HOST', 'HOST_TO_GUEST'])
        expect(
          trace.events.some((e) => e.kind === 'ringPacket' && e.ringPacket.relid === relid && e.ringPacket.direction === direction),
        ).toBe(true);
    }
    expect(trace.events.some((e) => e.kind === 'hostInput' && e.hostInput.device === 'timesync')).toBe(true);
    // A host whose heartbeat request differs by one byte is caught at that packet.
    const beat = hostAnswerIndex(trace.events, 3);
    const changed = structuredClone(trace.events);
    const packet = (changed[beat] as Packet).ringPacket.packet;
    packet[packet.length - 1] ^= 0x01;
    expect(replayTrace(withEvents(trace, changed)).divergence?.index).toBe(beat);
  });

  it('replays a schema-2 trace (no clock reads recorded) with its own clocks, as it was captured', () => {
    expect(replayTrace(readTraceFile(KVM)).divergence).toBeNull();
  });

  it('--device replays one channel alone and compares only its events', () => {
    const trace = readTraceFile(SIM);
    const kvp = replayTrace(trace, { device: 'kvp' });
    expect(kvp.divergence).toBeNull();
    expect(kvp.compared).toBe(
      trace.events.filter((e) =>
        'ringPacket' in e
          ? e.ringPacket.relid === 4
          : e.kind === 'channelState'
            ? e.channelState.relid === 4
            : e.kind === 'gpadlCreated'
              ? e.gpadlCreated.relid === 4
              : e.kind === 'hostCall'
                ? e.hostCall.relid === 4
                : false,
      ).length,
    );
    // Another device's mutation does not matter to it; its own does.
    const events = structuredClone(trace.events);
    const heartbeat = hostAnswerIndex(events, 1);
    (events[heartbeat] as Packet).ringPacket.packet[70] ^= 1;
    expect(replayTrace(withEvents(trace, events), { device: 'kvp' }).divergence).toBeNull();
    expect(replayTrace(withEvents(trace, events), { device: 'heartbeat' }).divergence).not.toBeNull();
    expect(() => replayTrace(trace, { device: 'storage' })).toThrow(/no device storage \(it has: heartbeat, shutdown, timesync, kvp\)/);
  });

  it('refuses traces it cannot replay faithfully', () => {
    const trace = readTraceFile(SIM);
    expect(() => replayTrace({ ...trace, dropped: [{ count: 3n, firstSeq: 10n }] })).toThrow(ReplayError);
    const header = { ...trace.header, devices: [...trace.header.devices, { name: 'frobnicator', classId: '', instanceId: '', relid: 9 }] };
    expect(() => replayTrace({ ...trace, header })).toThrow(/frobnicator \(relid 9\) has no replay factory/);
  });

  it('the CLI exits 0 on a match, 1 on a divergence, 2 on a corrupt file', () => {
    const run = (args: string[]): { code: number; out: string } => {
      try {
        return { code: 0, out: execFileSync('node', [MAIN, 'replay', ...args], { encoding: 'utf8' }) };
      } catch (error) {
        const e = error as { status: number; stdout: string; stderr: string };
        return { code: e.status, out: e.stdout + e.stderr };
      }
    };
    expect(run([KVM])).toMatchObject({ code: 0 });
    expect(run([SIM, '--device', 'shutdown']).out).toMatch(/^match: \d+ recorded events compared \(device shutdown\)/);
    const dir = mkdtempSync(join(tmpdir(), 'hvemu-replay-'));
    const bytes = readFileSync(SIM);
    const cut = join(dir, 'cut.hvtrace');
    writeFileSync(cut, bytes.subarray(0, bytes.length - 5));
    const corrupt = run([cut]);
    expect(corrupt.code).toBe(2);
    expect(corrupt.out).toMatch(/trace corrupt at byte \d+/);
    const json = JSON.parse(run([SIM, '--json']).out);
    expect(json).toMatchObject({ matched: true, compared: readTraceFile(SIM).events.length });
  });
});
