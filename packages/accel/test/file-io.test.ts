/**
 * nativeFileIo().readNowait: preadv2(RWF_NOWAIT) into many targets in one call. On a cached
 * temporary file: the right bytes in the right targets, short at end of file, -errno for a
 * bad fd; every misuse a typed AccelUsageError before any I/O.
 */
import { closeSync, mkdtempSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AccelUsageError, nativeFileIo } from '../src/index.js';

const io = nativeFileIo();
const EBADF = 9;

(io ? describe : describe.skip)('nativeFileIo', () => {
  const fileIo = io!;
  const path = join(mkdtempSync(join(tmpdir(), 'hvemu-fileio-')), 'img');
  const content = Uint8Array.from({ length: 64 << 10 }, (_, i) => (i * 7 + (i >> 8)) & 0xff);
  writeFileSync(path, content);
  readFileSync(path); // in the page cache

  it('reads from an offset into several targets in order, short at end of file', () => {
    const fd = openSync(path, 'r');
    try {
      const a = new Uint8Array(100);
      const b = new Uint8Array(5000);
      const ram = new Uint8Array(new SharedArrayBuffer(8192));
      const c = ram.subarray(4096, 4096 + 300);
      const n = fileIo.readNowait(fd, 1234, [a, b, c]);
      expect(n).toBe(5400);
      expect(Buffer.from(a).equals(Buffer.from(content.subarray(1234, 1334)))).toBe(true);
      expect(Buffer.from(b).equals(Buffer.from(content.subarray(1334, 6334)))).toBe(true);
      expect(Buffer.from(c).equals(Buffer.from(content.subarray(6334, 6634)))).toBe(true);
      expect(ram.subarray(0, 4096).every((x) => x === 0)).toBe(true); // nothing outside the target
      expect(fileIo.readNowait(fd, content.length - 10, [new Uint8Array(100)])).toBe(10);
      expect(fileIo.readNowait(fd, content.length + 4096, [new Uint8Array(100)])).toBe(0);
      expect(fileIo.readNowait(fd, 0, [])).toBe(0);
    } finally {
      closeSync(fd);
    }
  });

  it('a closed fd is -EBADF, not an exception', () => {
    const fd = openSync(path, 'r');
    closeSync(fd);
    expect(fileIo.readNowait(fd, 0, [new Uint8Array(16)])).toBe(-EBADF);
  });

  it('refuses wrong types, offsets and counts with AccelUsageError', () => {
    const t = [new Uint8Array(16)];
    const bad: [string, () => unknown][] = [
      ['fd string', () => fileIo.readNowait('3' as unknown as number, 0, t)],
      ['fd negative', () => fileIo.readNowait(-1, 0, t)],
      ['offset negative', () => fileIo.readNowait(0, -1, t)],
      ['offset fraction', () => fileIo.readNowait(0, 0.5, t)],
      ['offset huge', () => fileIo.readNowait(0, 2 ** 60, t)],
      ['targets not an array', () => fileIo.readNowait(0, 0, new Uint8Array(4) as unknown as Uint8Array[])],
      ['a target of another type', () => fileIo.readNowait(0, 0, [new Uint16Array(4) as unknown as Uint8Array])],
      ['a hole', () => fileIo.readNowait(0, 0, [undefined as unknown as Uint8Array])],
      [
        'too many targets',
        () =>
          fileIo.readNowait(
            0,
            0,
            Array.from({ length: 1025 }, () => new Uint8Array(1)),
          ),
      ],
      ['missing arguments', () => (fileIo.readNowait as unknown as (fd: number) => number)(0)],
    ];
    for (const [what, call] of bad) expect(call, what).toThrow(AccelUsageError);
  });
});
