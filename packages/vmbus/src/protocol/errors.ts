import { HvemuError } from '@hvemu/common';

/** Why a channel message from the guest was refused before it reached the state machine. */
export type ChannelProtocolFault =
  /** Shorter than the 8-byte header. */
  | 'truncated-header'
  /** A type the protocol does not define (0, 18-20, >= 25). */
  | 'unknown-type'
  /** Longer than an hv_message payload (240 bytes). */
  | 'oversized'
  /** Shorter than its type's structure. */
  | 'truncated'
  /** A variable part (GPADL PFN list) that is not a whole number of entries, or empty. */
  | 'malformed';

/**
 * A channel message the guest sent is malformed. It is dropped and logged; no answer is sent
 * (there is nothing the guest could match an answer to) and no state changes.
 */
export class ChannelProtocolError extends HvemuError {
  readonly outcome = 'message-dropped' as const;
  constructor(
    readonly fault: ChannelProtocolFault,
    detail: string,
    /** The message type as it was on the wire (NaN when even the header was missing). */
    readonly msgtype: number,
  ) {
    super(`channel message dropped (${fault}): ${detail}`);
  }
}
