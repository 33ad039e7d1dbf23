/**
 * nativeFrameIo: many frames per native call on an fd. The mechanics on /dev/null and a closed
 * fd (a TAP's real traffic is in @hvemu/net's tap test), and every misuse a typed AccelUsageError.
 */
import { closeSync, openSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { AccelUsageError, nativeFrameIo } from '../src/index.js';

const io = nativeFrameIo();
const EBADF = 9;

(io ? describe : describe.skip)('nativeFrameIo', () => {
  const frameIo = io!;

  it('writes each packed frame with its own write(2) and counts the consumed ones', () => {
    const fd = openSync('/dev/null', 'w');
    try {
      const buffer = new Uint8Array(300).fill(1);
      const lengths = Uint32Array.of(60, 100, 140, 0);
      const status = new Int32Array(2).fill(-1);
      expect(frameIo.writeFrames(fd, buffer, lengths, 3, status)).toBe(3);
      expect([...status]).toEqual([0, 0]);
      expect(frameIo.writeFrames(fd, buffer, lengths, 0, status)).toBe(0);
    } finally {
      closeSync(fd);
    }
  });

  it('a write error consumes the frame and is counted with its errno; a read error before any frame is -errno', () => {
    const fd = openSync('/dev/null', 'r');
    closeSync(fd); // now EBADF
    const status = new Int32Array(2);
    expect(frameIo.writeFrames(fd, new Uint8Array(100), Uint32Array.of(40, 60), 2, status)).toBe(2);
    expect([...status]).toEqual([2, EBADF]);
    expect(frameIo.readFrames(fd, new Uint8Array(4096), new Uint32Array(4), 1514)).toBe(-EBADF);
  });

  it('reads nothing at end of file, and never more frames than lengths holds or than fit maxFrame', () => {
    const fd = openSync('/dev/zero', 'r');
    const nul = openSync('/dev/null', 'r');
    try {
      expect(frameIo.readFrames(nul, new Uint8Array(4096), new Uint32Array(4), 1514)).toBe(0);
      // /dev/zero always has bytes: bounded by the lengths array, then by the room for maxFrame.
      const lengths = new Uint32Array(3);
      expect(frameIo.readFrames(fd, new Uint8Array(1 << 16), lengths, 1000)).toBe(3);
      expect([...lengths]).toEqual([1000, 1000, 1000]);
      expect(frameIo.readFrames(fd, new Uint8Array(2500), new Uint32Array(10), 1000)).toBe(2);
      expect(frameIo.readFrames(fd, new Uint8Array(999), new Uint32Array(10), 1000)).toBe(0);
    } finally {
      closeSync(fd);
      closeSync(nul);
    }
  });

  it('refuses wrong types, counts and sizes with AccelUsageError before any I/O', () => {
    const b = new Uint8Array(64);
    const l = new Uint32Array(2);
    const st = new Int32Array(2);
    const bad: [string, () => unknown][] = [
      ['fd string', () => frameIo.writeFrames('3' as unknown as number, b, l, 1, st)],
      ['fd negative', () => frameIo.readFrames(-1, b, l, 10)],
      ['fd fraction', () => frameIo.readFrames(1.5, b, l, 10)],
      ['buffer not Uint8Array', () => frameIo.readFrames(0, new Uint16Array(8) as unknown as Uint8Array, l, 10)],
      ['lengths not Uint32Array', () => frameIo.writeFrames(0, b, [1] as unknown as Uint32Array, 1, st)],
      ['maxFrame 0', () => frameIo.readFrames(0, b, l, 0)],
      ['maxFrame absurd', () => frameIo.readFrames(0, b, l, 2 ** 40)],
      ['count past lengths', () => frameIo.writeFrames(0, b, l, 3, st)],
      ['count NaN', () => frameIo.writeFrames(0, b, l, NaN, st)],
      ['lengths past buffer', () => frameIo.writeFrames(0, b, Uint32Array.of(60, 60), 2, st)],
      ['status too short', () => frameIo.writeFrames(0, b, l, 1, new Int32Array(1))],
      ['status wrong type', () => frameIo.writeFrames(0, b, l, 1, new Uint32Array(2) as unknown as Int32Array)],
    ];
    for (const [what, call] of bad) expect(call, what).toThrow(AccelUsageError);
  });
});
