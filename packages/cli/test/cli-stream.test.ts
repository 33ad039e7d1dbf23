/**
 * The CLI streams traces: on a 30 MB trace (generated here with the recorder), `replay`,
 * `trace show` and `trace show --json` succeed in a child process whose V8 heap is capped
 * well below the trace's size (they used to read the whole file, build every event, and
 * for --json one string of twice the trace: 2.4 GB and "Invalid string length" at 128 MB).
 */
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { writeKvpTrace } from '../../vm/test/helpers/kvp-trace.js';

const MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url));
/** V8 heap cap of the child, MiB: the trace is 30 MB, its --json output 60 MB. */
const HEAP_MB = 24;
const dir = mkdtempSync(join(tmpdir(), 'hvemu-cli-stream-'));
const TRACE = join(dir, 'kvp.hvtrace');
let events = 0;

/** Runs the CLI with a capped heap, stdout into a file; returns the exit code, stderr and the output file. */
function capped(args: string[]): { code: number | null; stderr: string; out: string } {
  const out = join(dir, `out-${args.join('-').replace(/[^a-z-]/g, '')}`);
  const fd = openSync(out, 'w');
  try {
    const r = spawnSync('node', [`--max-old-space-size=${HEAP_MB}`, MAIN, ...args], { stdio: ['ignore', fd, 'pipe'], encoding: 'utf8' });
    return { code: r.status, stderr: r.stderr, out };
  } finally {
    closeSync(fd);
  }
}

/** Lines of a file and its last line, read in chunks. */
function lines(path: string): { count: number; last: string } {
  const fd = openSync(path, 'r');
  const buf = Buffer.alloc(1 << 20);
  let count = 0;
  let tail = '';
  for (let n = readSync(fd, buf); n > 0; n = readSync(fd, buf)) {
    for (let i = 0; i < n; i++) if (buf[i] === 10) count++;
    tail = (tail + buf.subarray(Math.max(0, n - 4096), n).toString('utf8')).slice(-4096);
  }
  closeSync(fd);
  return { count, last: tail.trimEnd().split('\n').at(-1) ?? '' };
}

describe('the CLI on a large trace, with a V8 heap smaller than the trace', () => {
  beforeAll(async () => {
    events = Number((await writeKvpTrace(TRACE, 2000)).events);
    expect(statSync(TRACE).size).toBeGreaterThan(HEAP_MB * 1.2 * (1 << 20));
  });

  it('replay streams it', () => {
    const r = capped(['replay', TRACE]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(lines(r.out).last).toMatch(new RegExp(`^match: ${events} recorded events compared`));
  });

  it('trace show --json streams JSON Lines: header, each event, footer, summary', () => {
    const r = capped(['trace', 'show', TRACE, '--json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(statSync(r.out).size).toBeGreaterThan(2 * HEAP_MB * (1 << 20));
    const { count, last } = lines(r.out);
    expect(count).toBe(events + 3);
    expect(JSON.parse(last)).toEqual({ summary: { events, shown: events, droppedEvents: '0', truncated: false, vmbusVersion: 0x50003 } });
  });

  it('trace show --json waits for a slow reader instead of piling its output up in memory', async () => {
    const child = spawn('node', [`--max-old-space-size=${HEAP_MB}`, MAIN, 'trace', 'show', TRACE, '--json'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // Nobody reads for a while: the pipe fills, and the CLI must wait, not buffer 60 MB.
    child.stdout.pause();
    await new Promise((resolve) => setTimeout(resolve, 1500));
    let count = 0;
    child.stdout.on('data', (d: Buffer) => {
      for (const b of d) if (b === 10) count++;
    });
    child.stdout.resume();
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(count).toBe(events + 3);
  });

  it('trace show streams the timeline', () => {
    const r = capped(['trace', 'show', TRACE]);
    expect(r.code).toBe(0);
    expect(lines(r.out).last).toBe(`${events} events, 0 dropped; VMBus 5.3 negotiated`);
  });
});
