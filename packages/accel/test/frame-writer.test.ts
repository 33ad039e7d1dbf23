/**
 * createFrameWriter: batches of frames written on a thread of its own, in submission order,
 * each slot's result published with state DONE and onDone called on the JS thread. On a FIFO
 * (a stream: the frames arrive back to back, so order and content are checkable) and on
 * /dev/null; every misuse a typed AccelUsageError, never a crash.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, readdirSync, readFileSync, readSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { describeChild, runChild } from './helpers/child.js';
import {
  AccelUsageError,
  createFdWatcher,
  createFrameWriter,
  FRAME_SLOT_DONE,
  FRAME_SLOT_IDLE,
  FRAME_SLOT_QUEUED,
  nativeFrameIo,
  type FrameWriter,
} from '../src/index.js';

const available = nativeFrameIo() !== null;
const EBADF = 9;

function fifo(): number {
  const path = join(mkdtempSync(join(tmpdir(), 'hvemu-fw-')), 'fifo');
  execFileSync('mkfifo', [path]);
  return openSync(path, constants.O_RDWR | constants.O_NONBLOCK);
}

function slots(n: number, bytes = 4096, frames = 16): { buffer: Uint8Array; lengths: Uint32Array }[] {
  return Array.from({ length: n }, () => ({ buffer: new Uint8Array(bytes), lengths: new Uint32Array(frames) }));
}

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 2000 && !cond(); i++) await new Promise((r) => setTimeout(r, 1));
  expect(cond()).toBe(true);
}

(available ? describe : describe.skip)('createFrameWriter', () => {
  it('writes slots in submission order, each frame whole, and reports DONE with the counts', async () => {
    const fd = fifo();
    let done = 0;
    const s = slots(3);
    const writer = createFrameWriter(fd, s, () => done++)!;
    try {
      // Slot 2, then 0, then 1: three frames each, tagged with their global order.
      const order = [2, 0, 1];
      for (const [n, k] of order.entries()) {
        for (let f = 0; f < 3; f++) {
          s[k].buffer.fill(n * 3 + f + 1, f * 100, f * 100 + 100);
          s[k].lengths[f] = 100;
        }
        expect(writer.state(k)).toBe(FRAME_SLOT_IDLE);
        writer.submit(k, 3);
      }
      await until(() => order.every((k) => writer.state(k) === FRAME_SLOT_DONE));
      await until(() => done > 0); // onDone reached the JS thread
      for (const k of order) expect(writer.take(k)).toEqual({ consumed: 3, failed: 0, errno: 0 });
      expect(writer.state(0)).toBe(FRAME_SLOT_IDLE);
      const out = Buffer.alloc(2000);
      expect(readSync(fd, out)).toBe(900);
      for (let i = 0; i < 9; i++) expect(out.subarray(i * 100, i * 100 + 100).every((b) => b === i + 1)).toBe(true);
    } finally {
      writer.close();
      closeSync(fd);
    }
  });

  it('close() writes what is queued, then joins; a write error is counted, not thrown', async () => {
    const fd = openSync('/dev/null', 'w');
    const s = slots(2);
    const writer = createFrameWriter(fd, s, () => {})!;
    s[0].lengths.set([10, 20, 30]);
    writer.submit(0, 3);
    writer.submit(1, 0);
    writer.close();
    expect(writer.state(0)).toBe(FRAME_SLOT_DONE);
    expect(writer.take(0)).toEqual({ consumed: 3, failed: 0, errno: 0 });
    expect(writer.take(1)).toEqual({ consumed: 0, failed: 0, errno: 0 });
    closeSync(fd);

    const bad = openSync('/dev/null', 'w');
    closeSync(bad); // EBADF from now on
    const w2 = createFrameWriter(bad, s, () => {})!;
    s[0].lengths.set([10, 20]);
    w2.submit(0, 2);
    await until(() => w2.state(0) === FRAME_SLOT_DONE);
    expect(w2.take(0)).toEqual({ consumed: 2, failed: 2, errno: EBADF });
    w2.close();
  });

  it('lengths past the buffer (changed by the caller) end the batch as refused, without reading past it', async () => {
    const fd = openSync('/dev/null', 'w');
    const s = slots(1, 1000, 4);
    const writer = createFrameWriter(fd, s, () => {})!;
    s[0].lengths.set([600, 600, 1]);
    writer.submit(0, 3);
    await until(() => writer.state(0) === FRAME_SLOT_DONE);
    expect(writer.take(0)).toEqual({ consumed: 3, failed: 2, errno: 22 });
    writer.close();
    closeSync(fd);
  });

  it('EAGAIN is waited out on the writer thread (the slot stays QUEUED; resubmitting it is refused); close() gives up the wait', async () => {
    const fd = fifo();
    const chunk = Buffer.alloc(4096);
    for (;;) {
      try {
        writeSync(fd, chunk);
      } catch {
        break; // full: EAGAIN
      }
    }
    const s = slots(2);
    const writer = createFrameWriter(fd, s, () => {})!;
    s[0].lengths[0] = 4000;
    writer.submit(0, 1);
    await new Promise((r) => setTimeout(r, 30));
    expect(writer.state(0)).toBe(FRAME_SLOT_QUEUED);
    expect(() => writer.submit(0, 1)).toThrow(AccelUsageError);
    readSync(fd, Buffer.alloc(8192)); // room again: the writer's poll sees POLLOUT
    await until(() => writer.state(0) === FRAME_SLOT_DONE);
    expect(writer.take(0)).toEqual({ consumed: 1, failed: 0, errno: 0 });

    for (;;) {
      try {
        writeSync(fd, chunk);
      } catch {
        break;
      }
    }
    s[1].lengths[0] = 4000;
    writer.submit(1, 1);
    await new Promise((r) => setTimeout(r, 30));
    expect(writer.state(1)).toBe(FRAME_SLOT_QUEUED);
    writer.close(); // stops waiting: the frame is not consumed
    expect(writer.take(1)).toEqual({ consumed: 0, failed: 0, errno: 0 });
    closeSync(fd);
  });

  it('misuse is a typed error: bad slots, fds, counts, a queued slot, a slot not done, use after close', () => {
    const fd = openSync('/dev/null', 'w');
    const s = slots(2, 1024, 4);
    const bad: [string, () => unknown][] = [
      ['no slots', () => createFrameWriter(fd, [], () => {})],
      ['slots not an array', () => createFrameWriter(fd, 'x' as unknown as [], () => {})],
      ['fd string', () => createFrameWriter('3' as unknown as number, s, () => {})],
      ['fd negative', () => createFrameWriter(-1, s, () => {})],
      [
        'buffer not bytes',
        () => createFrameWriter(fd, [{ buffer: new Uint16Array(4) as unknown as Uint8Array, lengths: new Uint32Array(1) }], () => {}),
      ],
      [
        'lengths not u32',
        () => createFrameWriter(fd, [{ buffer: new Uint8Array(4), lengths: new Int32Array(1) as unknown as Uint32Array }], () => {}),
      ],
      ['a hole', () => createFrameWriter(fd, [undefined as unknown as (typeof s)[0]], () => {})],
      ['onDone not a function', () => createFrameWriter(fd, s, 5 as unknown as () => void)],
      ['too many slots', () => createFrameWriter(fd, slots(65, 16, 1), () => {})],
    ];
    for (const [what, call] of bad) expect(call, what).toThrow(AccelUsageError);
    const writer: FrameWriter = createFrameWriter(fd, s, () => {})!;
    expect(() => writer.submit(2, 1)).toThrow(AccelUsageError);
    expect(() => writer.submit(-1, 1)).toThrow(AccelUsageError);
    expect(() => writer.submit(0, 5)).toThrow(AccelUsageError); // more than lengths holds
    expect(() => writer.submit(0, 1.5)).toThrow(AccelUsageError);
    expect(() => writer.submit('0' as unknown as number, 1)).toThrow(AccelUsageError);
    expect(() => writer.take(0)).toThrow(AccelUsageError); // idle, not done
    expect(() => writer.state(7)).toThrow(AccelUsageError);
    writer.close();
    expect(() => writer.submit(0, 1)).toThrow(AccelUsageError);
    writer.close(); // idempotent
    closeSync(fd);
  });

  it('a writer busy on EAGAIN when its program ends or its worker is terminated is stopped and joined (environment cleanup)', () => {
    for (const scenario of ['main-end', 'terminate']) {
      const r = runChild('frame-writer-teardown.mjs', [scenario]);
      expect(r.signal, describeChild(r)).toBeNull();
      expect(r.status, describeChild(r)).toBe(0);
      // The worker may end by itself before terminate() (nothing keeps its loop alive): either way its environment goes.
      const json = r.json as { workerExit?: number; queued: boolean };
      expect(json.queued, describeChild(r)).toBe(true);
      if (scenario === 'terminate') expect([0, 1], describeChild(r)).toContain(json.workerExit);
    }
  });

  it('names its thread (hvemu-frames), as the fd watcher names its own (hvemu-epoll), for top -H and /proc', async () => {
    const threadNames = (): string[] =>
      readdirSync('/proc/self/task').map((t) => {
        try {
          return readFileSync(`/proc/self/task/${t}/comm`, 'utf8').trim();
        } catch {
          return ''; // the thread ended meanwhile
        }
      });
    const fd = openSync('/dev/null', 'w');
    const writer = createFrameWriter(fd, slots(1), () => {})!;
    const watcher = createFdWatcher(() => {});
    try {
      await until(() => threadNames().includes('hvemu-frames') && threadNames().includes('hvemu-epoll'));
    } finally {
      writer.close();
      watcher.close();
      closeSync(fd);
    }
  });
});
