/**
 * Page-cache reads for disk backends: preadv2(RWF_NOWAIT) straight into the request's buffers,
 * on the calling thread, one crossing into native code (native/src/file_io.cc). RWF_NOWAIT never
 * waits for the disk: what is not cached is -EAGAIN and belongs on a thread pool. Null where the
 * addon is missing or a stub.
 */
import { loadAddon } from './addon.js';
import { native } from '../errors.js';

export interface FileIo {
  /**
   * Reads from byte `offset` of `fd` into `targets` in order (at most 1024): the bytes read
   * (short at end of file, or where the page cache stops), or -errno (-11, EAGAIN: nothing
   * cached at `offset`; -95, EOPNOTSUPP: this file system has no RWF_NOWAIT).
   */
  readNowait(fd: number, offset: number, targets: readonly Uint8Array[]): number;
}

/** The addon's page-cache reads, or null where it has none. Misuse is an AccelUsageError. */
export function nativeFileIo(): FileIo | null {
  let addon;
  try {
    addon = loadAddon();
  } catch {
    return null;
  }
  const readNowait = addon.readNowait;
  if (!readNowait) return null;
  return { readNowait: (fd, offset, targets) => native(() => readNowait(fd, offset, targets)) };
}
