/** `hvemu run --control`: the control socket's commands and its refusals, against a fake VM. */
import { mkdtempSync, writeFileSync, existsSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ControlSocketError, startControlServer, type ControlServer, type ControlTarget } from '../src/control.js';
import { parseSize } from '../src/run.js';

const dir = mkdtempSync(join(tmpdir(), 'hvemu-control-'));
let n = 0;
let server: ControlServer | null = null;
afterEach(async () => {
  await server?.close();
  server = null;
});

function fakeVm(withBalloon = true) {
  const calls: string[] = [];
  const target: ControlTarget = {
    balloon: withBalloon
      ? {
          setTarget: (b) => void calls.push(`target ${b}`),
          hotAdd: async (b) => {
            calls.push(`hot-add ${b}`);
            return { bytes: b, pagesOnlined: b / 4096, big: 1n << 40n };
          },
          stats: () => ({ balloonedPages: 7 }),
        }
      : null,
    shutdown: () => (calls.push('shutdown'), true),
  };
  return { target, calls };
}

/** A client: sends lines, collects the JSON answers. */
function client(path: string): Promise<{ socket: Socket; ask: (line: string) => Promise<Record<string, unknown>>; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    let buffered = '';
    const waiting: ((v: Record<string, unknown>) => void)[] = [];
    socket.on('data', (d) => {
      buffered += d.toString();
      let i;
      while ((i = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, i);
        buffered = buffered.slice(i + 1);
        waiting.shift()?.(JSON.parse(line) as Record<string, unknown>);
      }
    });
    const closed = new Promise<void>((r) => socket.on('close', () => r()));
    socket.on('error', reject);
    socket.on('connect', () =>
      resolve({
        socket,
        closed,
        ask: (line) =>
          new Promise((r) => {
            waiting.push(r);
            socket.write(`${line}\n`);
          }),
      }),
    );
  });
}

describe('the control socket', () => {
  it('drives the balloon and the power button, one JSON answer per line, in order', async () => {
    const { target, calls } = fakeVm();
    const path = join(dir, `c${n++}.sock`);
    server = await startControlServer(path, target, parseSize, () => {});
    const c = await client(path);
    expect(await c.ask('help')).toMatchObject({ ok: true, commands: expect.arrayContaining(['stats', 'hot-add SIZE']) });
    expect(await c.ask('balloon 384M')).toEqual({ ok: true, target: 384 << 20 });
    expect(await c.ask('balloon none')).toEqual({ ok: true, target: null });
    expect(await c.ask('  hot-add   128M ')).toEqual({
      ok: true,
      hotAdd: { bytes: 128 << 20, pagesOnlined: 32768, big: String(1n << 40n) },
    });
    expect(await c.ask('stats')).toEqual({ ok: true, balloon: { balloonedPages: 7 } });
    expect(await c.ask('shutdown')).toEqual({ ok: true });
    expect(calls).toEqual([`target ${384 << 20}`, 'target null', `hot-add ${128 << 20}`, 'shutdown']);
    c.socket.destroy();
  });

  it('answers every malformed command with an error and keeps the connection; a VM without a balloon says so', async () => {
    const { target, calls } = fakeVm(false);
    const path = join(dir, `c${n++}.sock`);
    server = await startControlServer(path, target, parseSize, () => {});
    const c = await client(path);
    for (const [line, error] of [
      ['', 'an empty line'],
      ['reboot', "unknown command 'reboot'"],
      ['balloon', 'balloon takes one size'],
      ['balloon lots', "not 'lots'"],
      ['balloon 1 2', 'balloon takes one size'],
      ['balloon 4097', 'in whole pages'],
      ['balloon -1M', 'balloon takes one size'],
      ['hot-add 0', 'hot-add takes one size'],
      ['balloon 1G', 'this VM has no balloon'],
      ['hot-add 128M', 'this VM has no balloon'],
    ] as const) {
      const r = await c.ask(line);
      expect(r.ok, line).toBe(false);
      expect(String(r.error), line).toContain(error);
    }
    expect(await c.ask('stats')).toEqual({ ok: true, balloon: null });
    expect(calls).toEqual([]);
    c.socket.destroy();
  });

  it('a line over 1 KiB closes that connection with an error; others keep working', async () => {
    const { target } = fakeVm();
    const path = join(dir, `c${n++}.sock`);
    server = await startControlServer(path, target, parseSize, () => {});
    const bad = await client(path);
    const good = await client(path);
    const r = await bad.ask('x'.repeat(5000));
    expect(r).toEqual({ ok: false, error: 'a command line is at most 1024 bytes' });
    await bad.closed;
    expect(await good.ask('stats')).toMatchObject({ ok: true });
    good.socket.destroy();
  });

  it('refuses a path that exists or cannot be bound; close() removes the socket', async () => {
    const taken = join(dir, 'taken');
    writeFileSync(taken, 'x');
    await expect(startControlServer(taken, fakeVm().target, parseSize, () => {})).rejects.toThrow(ControlSocketError);
    await expect(startControlServer(join(dir, 'no-dir', 's.sock'), fakeVm().target, parseSize, () => {})).rejects.toThrow(
      ControlSocketError,
    );
    const path = join(dir, `c${n++}.sock`);
    const s = await startControlServer(path, fakeVm().target, parseSize, () => {});
    expect(existsSync(path)).toBe(true);
    await s.close();
    expect(existsSync(path)).toBe(false);
  });
});
