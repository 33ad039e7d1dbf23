/**
 * Typed errors with the guest-visible outcome attached.
 *
 * Every error hvemu raises because of something a guest did (or a host caller misused an API)
 * says what happens to the guest as a result, so the layer that catches it does not have to
 * guess: a ring is marked broken and its channel closed, a request gets an error status, a
 * message is dropped, and so on.
 */

/** What the guest observes when an error of this kind is handled. */
export type GuestOutcome =
  /** The ring is marked broken; its channel is closed (or reset) by the channel layer. */
  | 'ring-broken'
  /** The channel is closed; other channels keep working. */
  | 'channel-closed'
  /** The guest's request is refused with a protocol error status (hypercall status, VSP status). */
  | 'request-rejected'
  /** The guest message is dropped and logged; no answer is sent. */
  | 'message-dropped'
  /** A #GP is injected into the vCPU that made the access. */
  | 'general-protection'
  /** Not guest-caused: a host-side API misuse or configuration error. The guest sees nothing. */
  | 'host-error';

/** Base class of every hvemu error. */
export abstract class HvemuError extends Error {
  /** What the guest observes when this error is handled as designed. */
  abstract readonly outcome: GuestOutcome;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A host-side caller passed an argument that can never be valid (not guest-caused). */
export class HostUsageError extends HvemuError {
  readonly outcome = 'host-error' as const;
}
