/**
 * Many frames per native call on a packet fd (a TAP): one read(2) or write(2) per frame inside
 * the addon (native/src/frame_io.cc), so a burst crosses from JavaScript once. Frames are packed
 * back to back in one buffer, their lengths in a Uint32Array. Null where the addon is missing or
 * a stub: callers keep a per-frame path.
 */
import { AccelUsageError } from '../errors.js';
import { loadAddon } from './addon.js';

export interface FrameIo {
  /**
   * Reads frames into `buffer` back to back while `maxFrame` bytes are left and `lengths` has
   * room: how many (0 when none is waiting), or -errno for an error before the first.
   */
  readFrames(fd: number, buffer: Uint8Array, lengths: Uint32Array, maxFrame: number): number;
  /**
   * Writes the first `count` frames of `buffer` (lengths in `lengths`): the frames consumed,
   * written or refused by an error (`status[0]` counts those, `status[1]` is the last errno). It
   * stops at EAGAIN; that frame and the rest are not consumed.
   */
  writeFrames(fd: number, buffer: Uint8Array, lengths: Uint32Array, count: number, status: Int32Array): number;
}

/** The addon's batched frame I/O, or null where it has none. Misuse is an AccelUsageError. */
export function nativeFrameIo(): FrameIo | null {
  let addon;
  try {
    addon = loadAddon();
  } catch {
    return null;
  }
  const { readFrames, writeFrames } = addon;
  if (!readFrames || !writeFrames) return null;
  return {
    readFrames: (fd, buffer, lengths, maxFrame) => usage(() => readFrames(fd, buffer, lengths, maxFrame)),
    writeFrames: (fd, buffer, lengths, count, status) => usage(() => writeFrames(fd, buffer, lengths, count, status)),
  };
}

function usage<T>(fn: () => T): T {
  try {
    return fn();
  } catch (error) {
    if ((error as { code?: string }).code === 'HVEMU_USAGE') throw new AccelUsageError((error as Error).message);
    throw error;
  }
}
