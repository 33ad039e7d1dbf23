/**
 * What the server core asks its wiring to do. The core is pure: it never posts, signals or
 * logs itself; `handle()` and the host-side calls return these, in order.
 */

/** Why a device's channel was closed. */
export type CloseReason =
  /** The guest sent CLOSECHANNEL. */
  | 'guest'
  /** The host rescinded the offer. */
  | 'rescind'
  /** The guest unloaded VMBus (UNLOAD) or started over (a new INITIATE_CONTACT). */
  | 'disconnect';

export interface OpenRequest {
  readonly relid: number;
  readonly openid: number;
  /** The ring GPADL and its pages. */
  readonly gpadl: number;
  readonly pfns: readonly number[];
  /** First page of the host-to-guest ring in the GPADL. */
  readonly downstreamPageOffset: number;
  /** The VP the guest wants channel interrupts on. */
  readonly targetVp: number;
  /** OPENCHANNEL.userdata (120 bytes). */
  readonly userData: Uint8Array;
}

export type ServerAction =
  /** Post a channel message to the guest: hv_message type 1 on `sint` of `vp`. */
  | { readonly kind: 'send'; readonly vp: number; readonly sint: number; readonly msgtype: number; readonly bytes: Uint8Array }
  /** A version was agreed. */
  | { readonly kind: 'connected'; readonly version: number; readonly targetVp: number; readonly featureFlags: number }
  /** The connection ended; every channel has been closed (each with its own 'close' first). */
  | { readonly kind: 'disconnected'; readonly reason: 'unload' | 'reconnect' }
  /**
   * The guest opens a channel. The wiring builds the rings and asks the device, then calls
   * `completeOpen(relid, accepted)`; OPENCHANNEL_RESULT goes out then.
   */
  | { readonly kind: 'open'; readonly request: OpenRequest }
  /** The channel is closed: the device must stop using its rings and GPADL views. */
  | { readonly kind: 'close'; readonly relid: number; readonly reason: CloseReason }
  /** MODIFYCHANNEL: channel interrupts now go to `targetVp`. */
  | { readonly kind: 'retarget'; readonly relid: number; readonly targetVp: number }
  /** A GPADL of this channel is ready (GPADL_CREATED status 0 was sent). */
  | { readonly kind: 'gpadl-created'; readonly relid: number; readonly gpadl: number }
  /** A GPADL of this channel is gone: drop every view of it. */
  | { readonly kind: 'gpadl-torndown'; readonly relid: number; readonly gpadl: number }
  /** The relid is free (released after a rescind, or forgotten at disconnect): unregister its event connection. */
  | { readonly kind: 'channel-freed'; readonly relid: number; readonly connectionId: number }
  /** hv_sock: the guest asks to connect to a host service (the host may answer with an offer). */
  | { readonly kind: 'tl-connect-request'; readonly guestEndpointId: string; readonly hostServiceId: string }
  /** A log record; `warn` for guest protocol violations (each with a reason code). */
  | {
      readonly kind: 'log';
      readonly level: 'debug' | 'info' | 'warn' | 'error';
      readonly message: string;
      readonly fields?: Readonly<Record<string, unknown>>;
    };

export type LogAction = Extract<ServerAction, { kind: 'log' }>;
