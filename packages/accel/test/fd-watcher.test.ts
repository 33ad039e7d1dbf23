/**
 * createFdWatcher: readiness of host fds reported on the JS thread. Edge-triggered by default
 * (every new write is reported); one-shot (for packet fds such as a TAP) reports once and then
 * stays silent until rearm(), which reports at once if the fd is still readable. On a FIFO
 * opened read-write and non-blocking, so the test needs no privileges. Misuse is typed.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, constants, readSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AccelError, AccelUsageError, createFdWatcher, nativeFrameIo, type FdWatcher } from '../src/index.js';

const available = nativeFrameIo() !== null;
const settle = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function fifo(): number {
  const path = join(mkdtempSync(join(tmpdir(), 'hvemu-fdw-')), 'fifo');
  execFileSync('mkfifo', [path]);
  return openSync(path, constants.O_RDWR | constants.O_NONBLOCK);
}

function drain(fd: number): void {
  const b = Buffer.alloc(4096);
  for (;;) {
    try {
      if (readSync(fd, b) <= 0) return;
    } catch {
      return; // EAGAIN
    }
  }
}

(available ? describe : describe.skip)('createFdWatcher', () => {
  const open: { watcher: FdWatcher; fd: number }[] = [];
  function watch(): { watcher: FdWatcher; fd: number; reports: number[][] } {
    const reports: number[][] = [];
    const watcher = createFdWatcher((fds) => reports.push(fds));
    const fd = fifo();
    open.push({ watcher, fd });
    return { watcher, fd, reports };
  }
  afterEach(() => {
    for (const { watcher, fd } of open.splice(0)) {
      watcher.close();
      closeSync(fd);
    }
  });

  it('edge-triggered: each write after the last report is reported again', async () => {
    const { watcher, fd, reports } = watch();
    watcher.add(fd);
    writeSync(fd, 'a');
    await settle(30);
    expect(reports).toEqual([[fd]]);
    writeSync(fd, 'b'); // not read: still a new edge
    await settle(30);
    expect(reports).toEqual([[fd], [fd]]);
  });

  it('one-shot: reported once, silent until rearm, and rearm reports an fd still readable', async () => {
    const { watcher, fd, reports } = watch();
    watcher.add(fd, true);
    writeSync(fd, 'a');
    await settle(30);
    expect(reports).toEqual([[fd]]);
    writeSync(fd, 'b');
    writeSync(fd, 'c');
    await settle(30);
    expect(reports).toHaveLength(1); // disarmed: the writes wake nobody
    watcher.rearm(fd); // still readable: reported at once
    await settle(30);
    expect(reports).toHaveLength(2);
    drain(fd);
    watcher.rearm(fd); // empty: nothing to report
    await settle(30);
    expect(reports).toHaveLength(2);
    writeSync(fd, 'd');
    await settle(30);
    expect(reports).toHaveLength(3);
  });

  it('misuse is a typed error: rearm of an fd never added, bad fds, a bad oneShot, use after close', () => {
    const { watcher, fd } = watch();
    expect(() => watcher.rearm(fd)).toThrow(AccelError); // ENOENT from epoll_ctl(MOD)
    expect(() => watcher.add(-1)).toThrow(AccelUsageError);
    expect(() => watcher.add('3' as unknown as number)).toThrow(AccelUsageError);
    expect(() => watcher.add(fd, 1 as unknown as boolean)).toThrow(AccelUsageError);
    watcher.add(fd, true);
    expect(() => watcher.add(fd, true)).toThrow(AccelError); // EEXIST
    watcher.close();
    expect(() => watcher.rearm(fd)).toThrow(AccelUsageError);
    expect(() => watcher.add(fd)).toThrow(AccelUsageError);
    watcher.close(); // idempotent
  });
});
