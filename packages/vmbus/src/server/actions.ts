/**
 * What the server core asks its wiring to do. The core is pure: it never posts, signals or
 * logs itself; `handle()` and the host-side calls return these, in order.
 */
import { channelMessageName } from '../protocol/messages.js';
import { versionString } from '../protocol/constants.js';

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

/** One line for an event log: what the host did or decided, with the protocol's names. */
export function describeServerAction(action: ServerAction): string {
  switch (action.kind) {
    case 'send':
      return `-> vp ${action.vp} sint ${action.sint}: ${channelMessageName(action.msgtype)}`;
    case 'connected':
      return `connected: VMBus ${versionString(action.version)}, messages to vp ${action.targetVp}, feature flags 0x${action.featureFlags.toString(16)}`;
    case 'disconnected':
      return `disconnected (${action.reason})`;
    case 'open':
      return `relid ${action.request.relid}: guest opens (ring GPADL ${action.request.gpadl}, ${action.request.pfns.length} pages, interrupts to vp ${action.request.targetVp})`;
    case 'close':
      return `relid ${action.relid}: closed (${action.reason})`;
    case 'retarget':
      return `relid ${action.relid}: interrupts to vp ${action.targetVp}`;
    case 'gpadl-created':
      return `relid ${action.relid}: GPADL ${action.gpadl} created`;
    case 'gpadl-torndown':
      return `relid ${action.relid}: GPADL ${action.gpadl} torn down`;
    case 'channel-freed':
      return `relid ${action.relid}: freed (connection ${action.connectionId})`;
    case 'tl-connect-request':
      return `hv_sock connect request: guest endpoint ${action.guestEndpointId} to host service ${action.hostServiceId}`;
    case 'log':
      return `${action.level}: ${action.message}`;
  }
}
