/**
 * Trace capture overhead and replay speed (issue #6). Capture: the simulated IC scenario's
 * hot loop (heartbeat round trips through SynIC slots, hypercalls and rings) with capture off
 * and on (streaming to a file), rounds interleaved in one run. Replay: the trace of that loop
 * replayed against a fresh host, in recorded events per second.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManualClock } from '@hvemu/common';
import { readTraceFile, TraceRecorder } from '@hvemu/trace';
import { icTraceHeader, replayTrace, SimulatedVm } from '@hvemu/vm';

const BEATS = 1000;
const ROUNDS = 5;

/** µs per heartbeat round trip; with `tracePath`, the run is captured there. */
async function heartbeats(tracePath?: string): Promise<number> {
  const clock = new ManualClock();
  const recorder = tracePath ? TraceRecorder.toFile(tracePath, icTraceHeader('hvemu bench'), { clock }) : undefined;
  const vm = new SimulatedVm({ clock, trace: recorder });
  await vm.guest.boot();
  await vm.settle();
  const hb = vm.ics.heartbeat.service;
  const t0 = performance.now();
  for (let i = 0; i < BEATS; i++) {
    hb.beat();
    while (hb.status.lastSequence !== BigInt(2 * i + 1)) await Promise.resolve();
  }
  const us = ((performance.now() - t0) * 1000) / BEATS;
  await recorder?.close();
  return us;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

export async function benchTrace(log: (line: string) => void = console.log): Promise<Record<string, number>> {
  const dir = mkdtempSync(join(tmpdir(), 'hvemu-bench-trace-'));
  const path = join(dir, 'beats.hvtrace');
  try {
    await heartbeats();
    await heartbeats(path); // warm-up
    const off: number[] = [];
    const on: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      off.push(await heartbeats());
      on.push(await heartbeats(path));
    }
    const offUs = median(off);
    const onUs = median(on);
    const trace = readTraceFile(path);
    replayTrace(trace); // warm-up
    const times: number[] = [];
    let matched = true;
    for (let r = 0; r < 3; r++) {
      const t0 = performance.now();
      matched &&= replayTrace(trace).matched;
      times.push(performance.now() - t0);
    }
    const replayMs = median(times);
    const eventsPerS = (trace.events.length * 1000) / replayMs;
    log(`Traces (issue #6): simulated IC scenario, ${BEATS} heartbeat round trips, ${ROUNDS} rounds interleaved`);
    log(`  capture off: ${offUs.toFixed(1)} us/round trip; capture on (to a file): ${onUs.toFixed(1)} us (x${(onUs / offUs).toFixed(2)})`);
    log(
      `  replay: ${trace.events.length} events in ${replayMs.toFixed(1)} ms = ${Math.round(eventsPerS)} events/s (${matched ? 'matched' : 'DIVERGED'})`,
    );
    return {
      trace_capture_off_us: Math.round(offUs * 10) / 10,
      trace_capture_on_us: Math.round(onUs * 10) / 10,
      trace_capture_overhead_ratio: Math.round((onUs / offUs) * 100) / 100,
      trace_replay_events: trace.events.length,
      trace_replay_events_per_s: Math.round(eventsPerS),
      trace_replay_matched: matched ? 1 : 0,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
