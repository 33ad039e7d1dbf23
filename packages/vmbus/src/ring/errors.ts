import { HvemuError } from '@hvemu/common';

/** Why a ring was found corrupt. Each is a protocol violation by the other end. */
export type RingFault =
  | 'write-index-out-of-range'
  | 'read-index-out-of-range'
  | 'index-went-backwards'
  | 'truncated-packet'
  | 'descriptor-length'
  | 'descriptor-offset'
  | 'unknown-packet-type'
  | 'range-list-overrun'
  | 'bad-gpa-range';

/**
 * This end of the ring was closed (its channel closed, was rescinded, or the ring GPADL went
 * away): the guest may already reuse those pages, so a device that still holds the reader or
 * writer must not touch them. A host-side bug, refused before any guest memory is accessed.
 */
export class RingClosedError extends HvemuError {
  readonly outcome = 'host-error' as const;
}

/**
 * The other end broke the ring protocol. The ring is marked broken (every later operation
 * throws the same error) and the channel that owns it must be closed or reset; other channels
 * are unaffected. Nothing outside the ring's memory was read or written.
 */
export class RingCorruptError extends HvemuError {
  readonly outcome = 'ring-broken' as const;
  constructor(
    readonly fault: RingFault,
    detail: string,
    /** Byte offset in the data area where the fault was found. */
    readonly ringOffset: number,
  ) {
    super(`ring corrupt (${fault}) at data offset ${ringOffset}: ${detail}`);
  }
}
