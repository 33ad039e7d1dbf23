/**
 * The storvsp control path as a pure, synchronous state machine: one `step(state, request)` per
 * guest packet that is not an SRB, returning the next state, the reply and what the device must
 * do. No I/O, no clock: the sequence fuzz drives it directly.
 *
 * The sequence a primary channel goes through (storvsc_channel_init): BEGIN_INITIALIZATION,
 * QUERY_PROTOCOL_VERSION until the host accepts one (a version it does not speak gets
 * STATUS_REVISION_MISMATCH and the guest tries its next), QUERY_PROPERTIES, END_INITIALIZATION,
 * then SRBs and CREATE_SUB_CHANNELS. A request out of that order is answered with
 * STATUS_INVALID_DEVICE_STATE and changes nothing; an operation a guest never sends with
 * STATUS_INVALID_DEVICE_REQUEST. BEGIN_INITIALIZATION starts over from any state (a driver
 * reloaded on an open channel). Subchannels start ready with the primary's version and take SRBs
 * only.
 */
import * as P from './protocol.js';

export type Phase = 'awaiting-begin' | 'negotiating' | 'versioned' | 'ready';

export interface SessionState {
  readonly phase: Phase;
  /** The agreed version; 0 until QUERY_PROTOCOL_VERSION succeeded. */
  readonly version: number;
  /** Subchannels offered so far for this primary. */
  readonly subchannels: number;
  /** True for a subchannel (SRBs only). */
  readonly sub: boolean;
}

export interface SessionConfig {
  /** Versions accepted, any order. */
  readonly versions: readonly number[];
  /** Subchannels the guest may ask for (0: no multi-channel). */
  readonly maxSubchannels: number;
  /** QUERY_PROPERTIES' max_transfer_bytes. */
  readonly maxTransferBytes: number;
}

export interface StepResult {
  readonly state: SessionState;
  /** vstor_packet.status of the reply. */
  readonly status: number;
  /** The reply's union (version echo, channel properties), if any. */
  readonly union?: Uint8Array;
  /** Subchannels to offer after the reply went out. */
  readonly offerSubchannels?: number;
  /** Why a request was refused (logs, tests). */
  readonly fault?: string;
}

export const INITIAL_STATE: SessionState = Object.freeze({ phase: 'awaiting-begin', version: 0, subchannels: 0, sub: false });

/** The state a subchannel opens in: ready, speaking the primary's version. */
export function subchannelState(primary: SessionState): SessionState {
  return { phase: 'ready', version: primary.version, subchannels: 0, sub: true };
}

/** The reply size for a request of `length` bytes in `state`: the agreed size, else the size the guest used. */
export function replySize(state: SessionState, requestLength: number): number {
  if (state.version !== 0) return P.packetSizeFor(state.version);
  return requestLength >= P.VSTOR_PACKET_SIZE ? P.VSTOR_PACKET_SIZE : P.VSTOR_PACKET_SIZE_PRE_WIN8;
}

function refuse(state: SessionState, status: number, fault: string): StepResult {
  return { state, status, fault };
}

/** One control request (anything but EXECUTE_SRB). */
export function step(state: SessionState, request: P.VstorRequest, config: SessionConfig): StepResult {
  const op = request.operation;
  if (state.sub && op !== P.VSTOR_OPERATION_EXECUTE_SRB) return refuse(state, P.STATUS_INVALID_DEVICE_STATE, 'control-on-subchannel');
  switch (op) {
    case P.VSTOR_OPERATION_BEGIN_INITIALIZATION:
      return { state: { ...state, phase: 'negotiating', version: 0 }, status: P.STATUS_SUCCESS };
    case P.VSTOR_OPERATION_QUERY_PROTOCOL_VERSION:
      return queryVersion(state, request, config);
    case P.VSTOR_OPERATION_QUERY_PROPERTIES:
      return queryProperties(state, config);
    case P.VSTOR_OPERATION_END_INITIALIZATION:
      if (state.phase !== 'versioned') return refuse(state, P.STATUS_INVALID_DEVICE_STATE, 'end-out-of-sequence');
      return { state: { ...state, phase: 'ready' }, status: P.STATUS_SUCCESS };
    case P.VSTOR_OPERATION_CREATE_SUB_CHANNELS:
      return createSubchannels(state, request, config);
    case P.VSTOR_OPERATION_RESET_LUN:
    case P.VSTOR_OPERATION_RESET_ADAPTER:
    case P.VSTOR_OPERATION_RESET_BUS:
      // Nothing is queued inside the host beyond the backend's I/O, which completes on its own.
      if (state.phase !== 'ready') return refuse(state, P.STATUS_INVALID_DEVICE_STATE, 'reset-before-ready');
      return { state, status: P.STATUS_SUCCESS };
    case P.VSTOR_OPERATION_EXECUTE_SRB:
      // SRBs are the device's; this is reached only by a caller that did not route them.
      return refuse(state, P.STATUS_INVALID_DEVICE_REQUEST, 'srb-on-control-path');
    default:
      // COMPLETE_IO, REMOVE_DEVICE, ENUMERATE_BUS go host to guest; FCHBA_DATA is for synthetic FC.
      return refuse(state, P.STATUS_INVALID_DEVICE_REQUEST, 'unsupported-operation');
  }
}

function queryVersion(state: SessionState, request: P.VstorRequest, config: SessionConfig): StepResult {
  if (state.phase !== 'negotiating') return refuse(state, P.STATUS_INVALID_DEVICE_STATE, 'version-out-of-sequence');
  const { major_minor } = P.vmstorage_protocol_version.decode(request.body);
  const union = request.body.slice(0, P.vmstorage_protocol_version.size);
  if (!config.versions.includes(major_minor)) return { state, status: P.STATUS_REVISION_MISMATCH, union, fault: 'version-unsupported' };
  return { state: { ...state, phase: 'versioned', version: major_minor }, status: P.STATUS_SUCCESS, union };
}

function queryProperties(state: SessionState, config: SessionConfig): StepResult {
  if (state.phase !== 'versioned') return refuse(state, P.STATUS_INVALID_DEVICE_STATE, 'properties-out-of-sequence');
  const multi = P.isWin8OrLater(state.version) && config.maxSubchannels > 0;
  const union = P.vmstorage_channel_properties.encodeNew({
    max_channel_cnt: multi ? config.maxSubchannels : 0,
    flags: multi ? P.STORAGE_CHANNEL_SUPPORTS_MULTI_CHANNEL : 0,
    max_transfer_bytes: config.maxTransferBytes,
  });
  return { state, status: P.STATUS_SUCCESS, union };
}

function createSubchannels(state: SessionState, request: P.VstorRequest, config: SessionConfig): StepResult {
  if (state.phase !== 'ready') return refuse(state, P.STATUS_INVALID_DEVICE_STATE, 'subchannels-before-ready');
  if (!P.isWin8OrLater(state.version) || config.maxSubchannels === 0)
    return refuse(state, P.STATUS_INVALID_DEVICE_REQUEST, 'no-multichannel');
  const count = request.body[0] | (request.body[1] << 8);
  if (count === 0 || state.subchannels + count > config.maxSubchannels)
    return refuse(state, P.STATUS_INVALID_PARAMETER, 'subchannel-count');
  return { state: { ...state, subchannels: state.subchannels + count }, status: P.STATUS_SUCCESS, offerSubchannels: count };
}
