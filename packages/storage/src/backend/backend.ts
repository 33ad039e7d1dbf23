/**
 * What a disk stores its blocks in. Every call is asynchronous and resolves only when the
 * backend has accepted the data (a write) or it is on stable storage (flush, a FUA write): the
 * SCSI layer completes the guest's request only then, so an acknowledged write is never lost
 * to a host crash after a completed flush.
 */
import { HvemuError } from '@hvemu/common';

export interface WriteOptions {
  /** Force unit access: on stable storage before the promise resolves. */
  readonly fua?: boolean;
}

export interface DiskBackend {
  /** Capacity in bytes (a multiple of the disk's sector size). */
  readonly byteLength: number;
  /** True when writes must be refused (the disk reports write protection). */
  readonly readOnly: boolean;
  /** Fills `target` with the bytes at `offset`. */
  read(offset: number, target: Uint8Array): Promise<void>;
  /**
   * Optional fast path: fills `targets` (in order, as one run from `offset`) synchronously, as
   * far as it can without blocking (the host's page cache); the bytes filled, 0 when none.
   * Errors are not reported here: the caller reads what is left through read().
   */
  readCached?(offset: number, targets: readonly Uint8Array[]): number;
  /** Stores `source` at `offset`. The caller keeps `source` unchanged until the promise settles. */
  write(offset: number, source: Uint8Array, options?: WriteOptions): Promise<void>;
  /** Everything written before the call is on stable storage when it resolves. */
  flush(): Promise<void>;
  /** Deallocates `[offset, offset + length)`; it reads back as zeros afterwards. */
  unmap(offset: number, length: number): Promise<void>;
  close(): Promise<void>;
}

/** The backend failed an I/O (the guest sees MEDIUM ERROR on that request only). */
export class BackendIoError extends HvemuError {
  readonly outcome = 'request-rejected' as const;
}

/** A backend asked to do something impossible by its host-side caller (bad path, bad geometry). */
export class BackendConfigError extends HvemuError {
  readonly outcome = 'host-error' as const;
}

/** Throws BackendIoError unless `[offset, offset + length)` is inside `byteLength`. */
export function checkRange(byteLength: number, offset: number, length: number): void {
  if (!(Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0 && offset + length <= byteLength)) {
    throw new BackendIoError(`I/O [${offset}, +${length}) outside the ${byteLength}-byte disk`);
  }
}
