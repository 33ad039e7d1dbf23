import { HvemuError } from '@hvemu/common';

/** A trace file that is not a trace, or is corrupt or truncated; names the byte offset. */
export class TraceFormatError extends HvemuError {
  readonly outcome = 'host-error' as const;
  constructor(
    readonly offset: number,
    reason: string,
  ) {
    super(`trace corrupt at byte ${offset}: ${reason}`);
  }
}
