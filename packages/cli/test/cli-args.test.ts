/**
 * The built CLI (`node packages/cli/dist/main.js`), run adversarially in child processes:
 * every invocation that misses a verb's valid form exits 2 with one line on stderr naming
 * it, and no stack trace; options and positionals go in any order; the demo's trace file is
 * opened before anything runs.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { HostUsageError } from '@hvemu/common';
import { readTraceFile } from '@hvemu/trace';
import { runReplay, runRingDemo, runVmDemo, showTrace } from '../src/index.js';

const MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url));
const fixture = (name: string): string => fileURLToPath(new URL(`../../../fixtures/traces/${name}`, import.meta.url));
const SIM = fixture('sim-ic-demo.hvtrace');
const KVM = fixture('kvm-ic-demo.hvtrace');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(args: string[], cwd?: string): Promise<Run> {
  return new Promise((resolve) => {
    execFile('node', [MAIN, ...args], { cwd, encoding: 'utf8', maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      resolve({ code: error ? ((error as { code?: number }).code ?? -1) : 0, stdout, stderr });
    });
  });
}

/** Runs them all, four at a time (each is a node start-up). */
async function runAll(list: string[][], cwd?: string): Promise<Run[]> {
  const out: Run[] = [];
  for (let i = 0; i < list.length; i += 4) out.push(...(await Promise.all(list.slice(i, i + 4).map((a) => run(a, cwd)))));
  return out;
}

describe('hvemu command line, adversarially', () => {
  it('the bin target is a committed file, so npm links it before dist/ is built', async () => {
    const pkg = JSON.parse(readFileSync(fileURLToPath(new URL('../package.json', import.meta.url)), 'utf8')) as {
      bin: Record<string, string>;
      files: string[];
    };
    const bin = fileURLToPath(new URL(`../${pkg.bin.hvemu}`, import.meta.url));
    expect(pkg.bin.hvemu).toBe('./bin/hvemu.js');
    expect(pkg.files).toContain('bin');
    // npm ci links bins from the lockfile's copy of the field, not package.json's.
    const lock = JSON.parse(readFileSync(fileURLToPath(new URL('../../../package-lock.json', import.meta.url)), 'utf8')) as {
      packages: Record<string, { bin?: Record<string, string> }>;
    };
    expect(`./${lock.packages['packages/cli'].bin?.hvemu}`).toBe(pkg.bin.hvemu);
    expect(statSync(bin).mode & 0o111).not.toBe(0);
    const r = await new Promise<Run>((resolve) =>
      execFile(bin, ['help'], { encoding: 'utf8' }, (error, stdout, stderr) => resolve({ code: error ? 1 : 0, stdout, stderr })),
    );
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^usage: hvemu <command>/);
  });

  it('the CLI API refuses wrong-typed arguments with an HvemuError naming them', async () => {
    expect(() => runRingDemo({ print: () => {}, requests: -3 })).toThrow(/options\.requests must be an integer 1\.\.1000, got -3/);
    expect(() => runRingDemo(undefined as never)).toThrow(HostUsageError);
    await expect(runVmDemo('print' as never)).rejects.toThrow(/runVmDemo: print must be a function/);
    await expect(runVmDemo(() => {}, 5 as never)).rejects.toThrow(/tracePath must be a non-empty string/);
    expect(() => runReplay({} as never)).toThrow(/trace\.header must be an object/);
    expect(() => showTrace(null as never, {}, false, () => {})).toThrow(HostUsageError);
  });

  it('refuses every malformed invocation: exit 2, one line naming the valid form, no stack trace', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hvemu-cli-'));
    const bad: [string[], RegExp][] = [
      [['frobnicate'], /^hvemu: unknown command 'frobnicate' \(commands: .*see hvemu help\)$/],
      [['replay'], /^hvemu replay: missing TRACE \(usage: hvemu replay TRACE \[--device NAME\] \[--json\]\)$/],
      [['replay', SIM, 'extra'], /unexpected argument 'extra' \(usage: hvemu replay TRACE/],
      [['replay', SIM, '--jsn'], /^hvemu replay: unknown option '--jsn' \(usage: hvemu replay TRACE/],
      [['replay', SIM, '--device'], /option '--device <value>' argument missing \(usage: hvemu replay/],
      [['replay', SIM, '--device', 'a', '--device', 'b'], /option --device given twice/],
      [['replay', SIM, '--json=yes'], /option '--json' does not take an argument/],
      [['replay', SIM, '--device='], /--device needs a non-empty value/],
      [['replay', ''], /TRACE is empty/],
      [
        ['replay', SIM, '--device', 'storage'],
        /^hvemu replay: the trace has no device storage \(it has: heartbeat, shutdown, timesync, kvp\)$/,
      ],
      [['replay', join(dir, 'missing.hvtrace')], /^hvemu replay: cannot read trace .*missing\.hvtrace: ENOENT/],
      [['replay', dir], /^hvemu replay: cannot read trace .*: EISDIR/],
      [['replay', '/dev/zero'], /^hvemu replay: trace corrupt at byte 0: not an hvemu trace \(bad magic\)$/],
      [['trace'], /^hvemu trace: missing subcommand \(usage: hvemu trace show FILE/],
      [['trace', 'shw', SIM], /^hvemu trace: unknown subcommand 'shw'/],
      [['trace', 'show'], /^hvemu trace show: missing FILE \(usage: hvemu trace show FILE/],
      [['trace', 'show', SIM, SIM], /unexpected argument/],
      [
        ['trace', 'show', SIM, '--relid', 'abc'],
        /^hvemu trace show: --relid abc is not a channel relid \(an integer 0\.\.4294967295\) \(usage: hvemu trace show FILE/,
      ],
      [['trace', 'show', SIM, '--relid', '-1'], /--relid.*(ambiguous|not a channel relid|needs a value)/],
      [['trace', 'show', SIM, '--relid', '1.5'], /--relid 1\.5 is not a channel relid/],
      [['trace', 'show', SIM, '--relid', '4294967296'], /--relid 4294967296 is not a channel relid/],
      [['trace', 'show', SIM, '--from', 'abc'], /^hvemu trace show: --from abc is not a time in seconds/],
      [['trace', 'show', SIM, '--to', '1e3'], /--to 1e3 is not a time in seconds/],
      [['trace', 'show', SIM, '--from', '5', '--to', '1'], /--from 5 is after --to 1/],
      [['trace', 'show', SIM, '--direction', 'sideways'], /^hvemu trace show: --direction sideways is not guest-to-host or host-to-guest/],
      [['trace', 'show', SIM, '--dir', 'host-to-guest'], /unknown option '--dir'/],
      [['trace', 'show', '/dev/zero'], /^hvemu trace show: trace corrupt at byte 0: not an hvemu trace \(bad magic\)$/],
      [['demo', '--trace'], /^hvemu demo: option '--trace <value>' argument missing \(usage: hvemu demo \[--sim\] \[--trace FILE\]\)$/],
      [['demo', '--trace', '--sim'], /^hvemu demo: option --trace needs a value, and the next argument is a flag/],
      [['demo', '--sim', 'now'], /unexpected argument 'now'/],
      [['demo', '--sims'], /unknown option '--sims'/],
      [
        ['demo', '--sim', '--trace', join(dir, 'no-such-dir', 't.hvtrace')],
        /^hvemu demo: cannot write trace .*no-such-dir\/t\.hvtrace: ENOENT/,
      ],
      [['demo', '--sim', '--trace', '/dev/full'], /^hvemu demo: cannot write trace \/dev\/full: ENOSPC/],
      [['ring-demo', '--fast'], /unknown option '--fast'/],
      [['help', 'me'], /unexpected argument 'me'/],
    ];
    const results = await runAll(
      bad.map(([args]) => args),
      dir,
    );
    results.forEach((r, i) => {
      const what = bad[i][0].join(' ');
      expect(r.code, what).toBe(2);
      const lines = r.stderr.split('\n').filter((l) => l !== '');
      expect(lines, what).toHaveLength(1);
      expect(lines[0], what).toMatch(bad[i][1]);
      expect(r.stderr, what).not.toMatch(/\n\s+at /);
    });
    // `demo --trace --sim` wrote no file named --sim, and the unwritable demo printed nothing: it never started.
    expect(readdirSync(dir)).toEqual([]);
    expect(results[bad.findIndex(([a]) => a.includes('--sim') && a.some((x) => x.includes('no-such-dir')))].stdout).toBe('');
    // The disk-full demo ran (its file opened) and failed at the end in one line, not with an unhandled error event.
    expect(results[bad.findIndex(([a]) => a.includes('/dev/full'))].stdout).toMatch(/shutdown: guest answered 0x0/);
  });

  it('takes options before or after the positionals, and --help per verb', async () => {
    const [a, b, c, help] = await runAll([
      ['replay', '--json', SIM],
      ['replay', SIM, '--json'],
      ['replay', '--device', 'shutdown', '--json', KVM],
      ['replay', '--help'],
    ]);
    for (const r of [a, b]) {
      expect(r.code).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ matched: true, compared: readTraceFile(SIM).events.length, warnings: [] });
    }
    expect(c.code).toBe(0);
    expect(JSON.parse(c.stdout)).toMatchObject({ matched: true });
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^usage: hvemu replay TRACE \[--device NAME\] \[--json\]/);
  });

  it('reports a trace without footer or events as such: replay warns, trace show says truncated', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hvemu-cli-'));
    const bytes = readFileSync(SIM);
    // The header alone: magic, then the header record (a two-byte length prefix here).
    expect(bytes[8] & 0x80).toBe(0x80);
    const headerLength = (bytes[8] & 0x7f) + bytes[9] * 128;
    const headerOnly = join(dir, 'header-only.hvtrace');
    writeFileSync(headerOnly, bytes.subarray(0, 10 + headerLength));
    const [replayed, shown, json] = await runAll([
      ['replay', headerOnly],
      ['trace', 'show', headerOnly],
      ['trace', 'show', headerOnly, '--json'],
    ]);
    expect(replayed.code).toBe(0);
    expect(replayed.stdout).toMatch(/^match \(with warnings\): 0 recorded events compared/);
    expect(replayed.stdout).toMatch(/warning: the trace has no footer/);
    expect(replayed.stdout).toMatch(/warning: the trace holds no events: nothing was replayed or compared/);
    expect(replayed.stderr).toMatch(/^hvemu replay: warning: the trace has no footer/);
    expect(shown.stdout.trim().split('\n').at(-1)).toMatch(
      /^truncated: no footer \(the file was cut, or its recorder did not close\); 0 events read/,
    );
    expect(shown.stderr).toMatch(/header-only\.hvtrace is truncated \(no footer\)/);
    expect(JSON.parse(json.stdout.trim().split('\n').at(-1)!)).toEqual({
      summary: { events: 0, shown: 0, droppedEvents: '0', truncated: true, vmbusVersion: 327683 },
    });
    // Cut inside a record: the events before it are shown, then the error names the offset; exit 1.
    const cut = join(dir, 'cut.hvtrace');
    writeFileSync(cut, bytes.subarray(0, 3000));
    const [cutShow] = await runAll([['trace', 'show', cut]]);
    expect(cutShow.code).toBe(1);
    expect(cutShow.stdout).toMatch(/#\d+ /);
    expect(cutShow.stderr).toMatch(
      /^hvemu trace show: trace corrupt at byte \d+: record of \d+ bytes cut after \d+ \(the trace is truncated\)\n$/,
    );
  });

  it('trace show of the KVM fixture says the VMBus version the guest negotiated', async () => {
    const [text, json] = await runAll([
      ['trace', 'show', KVM],
      ['trace', 'show', KVM, '--json'],
    ]);
    expect(text.stdout).not.toMatch(/VMBus 0\.0/);
    expect(text.stdout.trim().split('\n').at(-1)).toBe('90 events, 0 dropped; VMBus 5.3 negotiated');
    expect(JSON.parse(json.stdout.trim().split('\n').at(-1)!).summary.vmbusVersion).toBe(0x50003);
  });

  it('demo --sim --trace FILE records the negotiated version in the footer', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hvemu-cli-'));
    const path = join(dir, 'demo.hvtrace');
    const [r] = await runAll([['demo', '--trace', path, '--sim']]);
    expect(r.code).toBe(0);
    expect(existsSync(path)).toBe(true);
    expect(readTraceFile(path).footer?.vmbusVersion).toBe(0x50003);
  });
});
