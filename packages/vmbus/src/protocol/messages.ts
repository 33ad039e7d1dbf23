/**
 * Every VMBus channel message, declared once as data (struct layouts with the field names of
 * Linux include/linux/hyperv.h), plus the parser and encoders built from those tables.
 *
 * Sizes are the guest driver's `sizeof`: the host must send every message in at least that
 * size (Linux drops shorter ones, e.g. a VERSION_RESPONSE under 16 bytes), and the parser
 * requires at least that size from the guest.
 */
import { HV_MESSAGE_PAYLOAD_BYTE_COUNT } from '@hvemu/hvdef';
import { defineStruct, type StructLayout, type StructValue, type FieldRow } from '@hvemu/common';
import {
  CHANNELMSG_ALLOFFERS_DELIVERED,
  CHANNELMSG_CLOSECHANNEL,
  CHANNELMSG_COUNT,
  CHANNELMSG_GPADL_BODY,
  CHANNELMSG_GPADL_CREATED,
  CHANNELMSG_GPADL_HEADER,
  CHANNELMSG_GPADL_TEARDOWN,
  CHANNELMSG_GPADL_TORNDOWN,
  CHANNELMSG_INITIATE_CONTACT,
  CHANNELMSG_MODIFYCHANNEL,
  CHANNELMSG_MODIFYCHANNEL_RESPONSE,
  CHANNELMSG_NAMES,
  CHANNELMSG_OFFERCHANNEL,
  CHANNELMSG_OPENCHANNEL,
  CHANNELMSG_OPENCHANNEL_RESULT,
  CHANNELMSG_RELID_RELEASED,
  CHANNELMSG_REQUESTOFFERS,
  CHANNELMSG_RESCIND_CHANNELOFFER,
  CHANNELMSG_TL_CONNECT_REQUEST,
  CHANNELMSG_TL_CONNECT_RESULT,
  CHANNELMSG_UNLOAD,
  CHANNELMSG_UNLOAD_RESPONSE,
  CHANNELMSG_VERSION_RESPONSE,
} from './constants.js';
import { ChannelProtocolError } from './errors.js';

/** struct vmbus_channel_message_header: every message starts with it. */
const HEADER = [
  [0, 'msgtype', 'u32'],
  [4, 'padding', 'u32'],
] as const satisfies readonly FieldRow[];

export const vmbus_channel_message_header = defineStruct('vmbus_channel_message_header', 8, HEADER);

/** struct vmbus_channel_offer: the 176-byte offer body (standard user_def form). */
export const vmbus_channel_offer = defineStruct('vmbus_channel_offer', 176, [
  [0, 'if_type', 'guid'],
  [16, 'if_instance', 'guid'],
  [32, 'reserved1', 'u64'],
  [40, 'reserved2', 'u64'],
  [48, 'chn_flags', 'u16'],
  [50, 'mmio_megabytes', 'u16'],
  // union { user_def[120]; struct { u32 pipe_mode; user_def[116] } pipe }
  [52, 'user_def', { bytes: 120 }],
  [172, 'sub_channel_index', 'u16'],
  [174, 'reserved3', 'u16'],
]);

/** The pipe form of the offer's user_def union. */
export const vmbus_channel_offer_pipe = defineStruct('vmbus_channel_offer.u.pipe', 120, [
  [0, 'pipe_mode', 'u32'],
  [4, 'user_def', { bytes: 116 }],
]);

const OFFER_BODY = vmbus_channel_offer.rows.map(([at, name, type]) => [at + 8, name, type] as const) as unknown as readonly [
  readonly [8, 'if_type', 'guid'],
  readonly [24, 'if_instance', 'guid'],
  readonly [40, 'reserved1', 'u64'],
  readonly [48, 'reserved2', 'u64'],
  readonly [56, 'chn_flags', 'u16'],
  readonly [58, 'mmio_megabytes', 'u16'],
  readonly [60, 'user_def', { bytes: 120 }],
  readonly [180, 'sub_channel_index', 'u16'],
  readonly [182, 'reserved3', 'u16'],
];

/** struct vmbus_channel_offer_channel (CHANNELMSG_OFFERCHANNEL), the offer flattened in. */
export const vmbus_channel_offer_channel = defineStruct('vmbus_channel_offer_channel', 196, [
  ...HEADER,
  ...OFFER_BODY,
  [184, 'child_relid', 'u32'],
  [188, 'monitorid', 'u8'],
  [189, 'monitor_allocated', 'u8'], // bit 0; bits 1-7 reserved
  [190, 'is_dedicated_interrupt', 'u16'], // bit 0; bits 1-15 reserved
  [192, 'connection_id', 'u32'],
]);

export const vmbus_channel_rescind_offer = defineStruct('vmbus_channel_rescind_offer', 12, [...HEADER, [8, 'child_relid', 'u32']]);

/** REQUESTOFFERS, ALLOFFERS_DELIVERED, UNLOAD, UNLOAD_RESPONSE: the header alone. */
export const vmbus_channel_request_offers = defineStruct('vmbus_channel_request_offers', 8, HEADER);
export const vmbus_channel_alloffers_delivered = defineStruct('vmbus_channel_alloffers_delivered', 8, HEADER);
export const vmbus_channel_unload = defineStruct('vmbus_channel_unload', 8, HEADER);
export const vmbus_channel_unload_response = defineStruct('vmbus_channel_unload_response', 8, HEADER);

export const vmbus_channel_open_channel = defineStruct('vmbus_channel_open_channel', 148, [
  ...HEADER,
  [8, 'child_relid', 'u32'],
  [12, 'openid', 'u32'],
  [16, 'ringbuffer_gpadlhandle', 'u32'],
  [20, 'target_vp', 'u32'],
  [24, 'downstream_ringbuffer_pageoffset', 'u32'],
  [28, 'userdata', { bytes: 120 }],
]);

export const vmbus_channel_open_result = defineStruct('vmbus_channel_open_result', 20, [
  ...HEADER,
  [8, 'child_relid', 'u32'],
  [12, 'openid', 'u32'],
  [16, 'status', 'u32'],
]);

export const vmbus_channel_close_channel = defineStruct('vmbus_channel_close_channel', 12, [...HEADER, [8, 'child_relid', 'u32']]);

/** Fixed part of GPADL_HEADER; `range_buflen` bytes of gpa_range records follow (spread over BODYs). */
export const vmbus_channel_gpadl_header = defineStruct('vmbus_channel_gpadl_header', 20, [
  ...HEADER,
  [8, 'child_relid', 'u32'],
  [12, 'gpadl', 'u32'],
  [16, 'range_buflen', 'u16'],
  [18, 'rangecount', 'u16'],
]);

/** Fixed part of GPADL_BODY; u64 PFNs follow. */
export const vmbus_channel_gpadl_body = defineStruct('vmbus_channel_gpadl_body', 16, [
  ...HEADER,
  [8, 'msgnumber', 'u32'],
  [12, 'gpadl', 'u32'],
]);

export const vmbus_channel_gpadl_created = defineStruct('vmbus_channel_gpadl_created', 20, [
  ...HEADER,
  [8, 'child_relid', 'u32'],
  [12, 'gpadl', 'u32'],
  [16, 'creation_status', 'u32'],
]);

export const vmbus_channel_gpadl_teardown = defineStruct('vmbus_channel_gpadl_teardown', 16, [
  ...HEADER,
  [8, 'child_relid', 'u32'],
  [12, 'gpadl', 'u32'],
]);

export const vmbus_channel_gpadl_torndown = defineStruct('vmbus_channel_gpadl_torndown', 12, [...HEADER, [8, 'gpadl', 'u32']]);

export const vmbus_channel_relid_released = defineStruct('vmbus_channel_relid_released', 12, [...HEADER, [8, 'child_relid', 'u32']]);

/**
 * struct vmbus_channel_initiate_contact. Bytes 16..23 are a union: interrupt_page (u64, < 5.0)
 * or { msg_sint u8, msg_vtl u8, reserved[2], feature_flags u32 (6.0) } (>= 5.0).
 */
export const vmbus_channel_initiate_contact = defineStruct('vmbus_channel_initiate_contact', 40, [
  ...HEADER,
  [8, 'vmbus_version_requested', 'u32'],
  [12, 'target_vcpu', 'u32'],
  [16, 'interrupt_page', 'u64'],
  [24, 'monitor_page1', 'u64'],
  [32, 'monitor_page2', 'u64'],
]);

/** The >= 5.0 view of the interrupt_page union (offsets within the message). */
export const vmbus_channel_initiate_contact_target_info = defineStruct('vmbus_channel_initiate_contact.target_info', 8, [
  [0, 'msg_sint', 'u8'],
  [1, 'msg_vtl', 'u8'],
  [2, 'reserved', 'u16'],
  [4, 'feature_flags', 'u32'],
]);

export const vmbus_channel_version_response = defineStruct('vmbus_channel_version_response', 16, [
  ...HEADER,
  [8, 'version_supported', 'u8'],
  [9, 'connection_state', 'u8'],
  [10, 'padding2', 'u16'],
  [12, 'msg_conn_id', 'u32'],
]);

/** The 6.0 VERSION_RESPONSE (OpenVMM VersionResponse2): supported_features appended. */
export const vmbus_channel_version_response2 = defineStruct('vmbus_channel_version_response2', 20, [
  ...HEADER,
  [8, 'version_supported', 'u8'],
  [9, 'connection_state', 'u8'],
  [10, 'padding2', 'u16'],
  [12, 'msg_conn_id', 'u32'],
  [16, 'supported_features', 'u32'],
]);

export const vmbus_channel_tl_connect_request = defineStruct('vmbus_channel_tl_connect_request', 40, [
  ...HEADER,
  [8, 'guest_endpoint_id', 'guid'],
  [24, 'host_service_id', 'guid'],
]);

export const vmbus_channel_modifychannel = defineStruct('vmbus_channel_modifychannel', 16, [
  ...HEADER,
  [8, 'child_relid', 'u32'],
  [12, 'target_vp', 'u32'],
]);

/** TL_CONNECT_RESULT: Linux has no struct or handler; layout as Hyper-V/OpenVMM send it. */
export const vmbus_channel_tl_connect_result = defineStruct('vmbus_channel_tl_connect_result', 44, [
  ...HEADER,
  [8, 'service_id', 'guid'],
  [24, 'endpoint_id', 'guid'],
  [40, 'status', 'u32'],
]);

export const vmbus_channel_modifychannel_response = defineStruct('vmbus_channel_modifychannel_response', 16, [
  ...HEADER,
  [8, 'child_relid', 'u32'],
  [12, 'status', 'u32'],
]);

/** One gpa_range record header inside a GPADL's range buffer; PFNs (u64) follow it. */
export const gpadl_gpa_range = defineStruct('gpa_range', 8, [
  [0, 'byte_count', 'u32'],
  [4, 'byte_offset', 'u32'],
]);

/** Who sends each message type: 'guest' (G->H), 'host' (H->G). */
export type ChannelMessageDirection = 'guest' | 'host';

/** The layout of each message type: the structure, its direction. Types absent here are unknown. */
export const CHANNEL_MESSAGES = {
  [CHANNELMSG_OFFERCHANNEL]: { layout: vmbus_channel_offer_channel, from: 'host' },
  [CHANNELMSG_RESCIND_CHANNELOFFER]: { layout: vmbus_channel_rescind_offer, from: 'host' },
  [CHANNELMSG_REQUESTOFFERS]: { layout: vmbus_channel_request_offers, from: 'guest' },
  [CHANNELMSG_ALLOFFERS_DELIVERED]: { layout: vmbus_channel_alloffers_delivered, from: 'host' },
  [CHANNELMSG_OPENCHANNEL]: { layout: vmbus_channel_open_channel, from: 'guest' },
  [CHANNELMSG_OPENCHANNEL_RESULT]: { layout: vmbus_channel_open_result, from: 'host' },
  [CHANNELMSG_CLOSECHANNEL]: { layout: vmbus_channel_close_channel, from: 'guest' },
  [CHANNELMSG_GPADL_HEADER]: { layout: vmbus_channel_gpadl_header, from: 'guest' },
  [CHANNELMSG_GPADL_BODY]: { layout: vmbus_channel_gpadl_body, from: 'guest' },
  [CHANNELMSG_GPADL_CREATED]: { layout: vmbus_channel_gpadl_created, from: 'host' },
  [CHANNELMSG_GPADL_TEARDOWN]: { layout: vmbus_channel_gpadl_teardown, from: 'guest' },
  [CHANNELMSG_GPADL_TORNDOWN]: { layout: vmbus_channel_gpadl_torndown, from: 'host' },
  [CHANNELMSG_RELID_RELEASED]: { layout: vmbus_channel_relid_released, from: 'guest' },
  [CHANNELMSG_INITIATE_CONTACT]: { layout: vmbus_channel_initiate_contact, from: 'guest' },
  [CHANNELMSG_VERSION_RESPONSE]: { layout: vmbus_channel_version_response, from: 'host' },
  [CHANNELMSG_UNLOAD]: { layout: vmbus_channel_unload, from: 'guest' },
  [CHANNELMSG_UNLOAD_RESPONSE]: { layout: vmbus_channel_unload_response, from: 'host' },
  [CHANNELMSG_TL_CONNECT_REQUEST]: { layout: vmbus_channel_tl_connect_request, from: 'guest' },
  [CHANNELMSG_MODIFYCHANNEL]: { layout: vmbus_channel_modifychannel, from: 'guest' },
  [CHANNELMSG_TL_CONNECT_RESULT]: { layout: vmbus_channel_tl_connect_result, from: 'host' },
  [CHANNELMSG_MODIFYCHANNEL_RESPONSE]: { layout: vmbus_channel_modifychannel_response, from: 'host' },
} as const satisfies Record<number, { layout: StructLayout<readonly FieldRow[]>; from: ChannelMessageDirection }>;

type Table = typeof CHANNEL_MESSAGES;
export type ChannelMessageType = keyof Table;
type Fields<T extends ChannelMessageType> = Omit<StructValue<Table[T]['layout']['rows']>, 'msgtype'>;

/** Extra decoded parts of the variable-length messages. */
interface VariableParts {
  [CHANNELMSG_GPADL_HEADER]: {
    /** The range buffer bytes carried in this message (up to range_buflen), a copy. */
    rangeData: Uint8Array;
  };
  [CHANNELMSG_GPADL_BODY]: {
    /** The PFN words carried in this message, as raw bytes (8 per PFN), a copy. */
    rangeData: Uint8Array;
  };
  [CHANNELMSG_INITIATE_CONTACT]: {
    /** The >= 5.0 view of the interrupt_page union. */
    msg_sint: number;
    msg_vtl: number;
    /** 6.0 feature flags (0 below 6.0 by construction of the union). */
    feature_flags: number;
  };
  [CHANNELMSG_VERSION_RESPONSE]: {
    /** supported_features of a 20-byte (6.0) response, else 0. */
    supported_features: number;
  };
}

/** One decoded message of type T: its fields (names from hyperv.h) with `msgtype` narrowed. */
export type ChannelMessageOf<T extends ChannelMessageType> = Fields<T> & { msgtype: T } & (T extends keyof VariableParts
    ? VariableParts[T]
    : unknown);

/** A decoded channel message, discriminated on `msgtype`. */
export type ChannelMessage = { [T in ChannelMessageType]: ChannelMessageOf<T> }[ChannelMessageType];

export function isKnownMessageType(msgtype: number): msgtype is ChannelMessageType {
  return Object.prototype.hasOwnProperty.call(CHANNEL_MESSAGES, msgtype);
}

export function channelMessageName(msgtype: number): string {
  return CHANNELMSG_NAMES[msgtype] ?? `CHANNELMSG_${msgtype}`;
}

/** The minimum size of a message of this type (its struct's sizeof). */
export function channelMessageSize(msgtype: ChannelMessageType): number {
  return CHANNEL_MESSAGES[msgtype].layout.size;
}

/**
 * Parses a channel message (an hv_message payload, at most 240 bytes). Validates the header,
 * the type and the minimum size for the type; the variable parts of GPADL_HEADER/BODY must be
 * whole 8-byte entries. Returns the decoded message or a ChannelProtocolError (never throws).
 * Bytes past the structure are ignored, as the guest driver ignores them.
 */
export function parseChannelMessage(bytes: Uint8Array): ChannelMessage | ChannelProtocolError {
  if (bytes.length > HV_MESSAGE_PAYLOAD_BYTE_COUNT) {
    return new ChannelProtocolError('oversized', `${bytes.length} bytes (max ${HV_MESSAGE_PAYLOAD_BYTE_COUNT})`, readType(bytes));
  }
  if (bytes.length < vmbus_channel_message_header.size) {
    return new ChannelProtocolError('truncated-header', `${bytes.length} bytes`, NaN);
  }
  const msgtype = readType(bytes);
  if (!isKnownMessageType(msgtype)) {
    return new ChannelProtocolError(
      'unknown-type',
      `type ${msgtype}${msgtype >= CHANNELMSG_COUNT ? ' (>= CHANNELMSG_COUNT)' : ''}`,
      msgtype,
    );
  }
  const { layout } = CHANNEL_MESSAGES[msgtype];
  if (bytes.length < layout.size) {
    return new ChannelProtocolError('truncated', `${channelMessageName(msgtype)} of ${bytes.length} bytes (needs ${layout.size})`, msgtype);
  }
  const message = layout.decode(bytes) as Record<string, unknown>;
  switch (msgtype) {
    case CHANNELMSG_GPADL_HEADER:
    case CHANNELMSG_GPADL_BODY: {
      const extra = bytes.length - layout.size;
      // GPADL data is a sequence of u64 words (range headers and PFNs); a partial word or no word at all is malformed.
      if (extra === 0 || extra % 8 !== 0) {
        return new ChannelProtocolError(
          'malformed',
          `${channelMessageName(msgtype)} carries ${extra} data bytes (need whole u64s, >= 1)`,
          msgtype,
        );
      }
      message.rangeData = bytes.slice(layout.size);
      break;
    }
    case CHANNELMSG_INITIATE_CONTACT: {
      const info = vmbus_channel_initiate_contact_target_info.decode(bytes, vmbus_channel_initiate_contact.offsetOf.interrupt_page);
      message.msg_sint = info.msg_sint;
      message.msg_vtl = info.msg_vtl;
      message.feature_flags = info.feature_flags;
      break;
    }
    case CHANNELMSG_VERSION_RESPONSE:
      message.supported_features =
        bytes.length >= vmbus_channel_version_response2.size ? vmbus_channel_version_response2.decode(bytes).supported_features : 0;
      break;
    default:
      break;
  }
  return message as ChannelMessage;
}

function readType(bytes: Uint8Array): number {
  if (bytes.length < 4) return NaN;
  return (bytes[0] | (bytes[1] << 8) | (bytes[2] << 16) | (bytes[3] << 24)) >>> 0;
}

/** Encodes a fixed-size message of type T in exactly its struct size (the header's msgtype is set). */
export function encodeChannelMessage<T extends ChannelMessageType>(msgtype: T, fields: Partial<Fields<T>>): Uint8Array {
  const layout = CHANNEL_MESSAGES[msgtype].layout as unknown as StructLayout<readonly FieldRow[]>;
  return layout.encodeNew({ ...(fields as Record<string, unknown>), msgtype, padding: 0 } as never);
}

/** VERSION_RESPONSE: 16 bytes, or 20 with supported_features when answering an accepted 6.0 request. */
export function encodeVersionResponse(
  fields: {
    version_supported: number;
    connection_state?: number;
    msg_conn_id?: number;
    supported_features?: number;
  },
  withFeatures: boolean,
): Uint8Array {
  const layout = withFeatures ? vmbus_channel_version_response2 : vmbus_channel_version_response;
  return layout.encodeNew({ ...fields, msgtype: CHANNELMSG_VERSION_RESPONSE } as never);
}

/** INITIATE_CONTACT with the union written in the form `version` uses. */
export function encodeInitiateContact(fields: {
  vmbus_version_requested: number;
  target_vcpu: number;
  interrupt_page?: bigint;
  msg_sint?: number;
  msg_vtl?: number;
  feature_flags?: number;
  monitor_page1?: bigint;
  monitor_page2?: bigint;
}): Uint8Array {
  const bytes = vmbus_channel_initiate_contact.encodeNew({
    msgtype: CHANNELMSG_INITIATE_CONTACT,
    vmbus_version_requested: fields.vmbus_version_requested,
    target_vcpu: fields.target_vcpu,
    interrupt_page: fields.interrupt_page ?? 0n,
    monitor_page1: fields.monitor_page1 ?? 0n,
    monitor_page2: fields.monitor_page2 ?? 0n,
  });
  if (fields.msg_sint !== undefined || fields.msg_vtl !== undefined || fields.feature_flags !== undefined) {
    vmbus_channel_initiate_contact_target_info.encode(
      { msg_sint: fields.msg_sint ?? 0, msg_vtl: fields.msg_vtl ?? 0, feature_flags: fields.feature_flags ?? 0 },
      bytes,
      vmbus_channel_initiate_contact.offsetOf.interrupt_page,
    );
  }
  return bytes;
}

/** A GPADL_HEADER carrying `rangeData` (gpa_range records and PFNs, the first part of range_buflen bytes). */
export function encodeGpadlHeader(
  fields: { child_relid: number; gpadl: number; range_buflen: number; rangecount: number },
  rangeData: Uint8Array,
): Uint8Array {
  const bytes = new Uint8Array(vmbus_channel_gpadl_header.size + rangeData.length);
  vmbus_channel_gpadl_header.encode({ ...fields, msgtype: CHANNELMSG_GPADL_HEADER }, bytes);
  bytes.set(rangeData, vmbus_channel_gpadl_header.size);
  return bytes;
}

/** A GPADL_BODY carrying more of the range buffer. */
export function encodeGpadlBody(fields: { msgnumber?: number; gpadl: number }, rangeData: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(vmbus_channel_gpadl_body.size + rangeData.length);
  vmbus_channel_gpadl_body.encode({ msgnumber: 0, ...fields, msgtype: CHANNELMSG_GPADL_BODY }, bytes);
  bytes.set(rangeData, vmbus_channel_gpadl_body.size);
  return bytes;
}

/** The range buffer of a one-range GPADL: gpa_range {byte_count, byte_offset} then the PFNs. */
export function encodeGpaRange(byteCount: number, byteOffset: number, pfns: ArrayLike<number>): Uint8Array {
  const bytes = new Uint8Array(gpadl_gpa_range.size + 8 * pfns.length);
  gpadl_gpa_range.encode({ byte_count: byteCount, byte_offset: byteOffset }, bytes);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < pfns.length; i++) view.setBigUint64(gpadl_gpa_range.size + 8 * i, BigInt(pfns[i]), true);
  return bytes;
}

/** The user_def area of an offer in pipe form: pipe_mode then 116 bytes. */
export function encodePipeUserDefined(pipeMode: number, userDefined: Uint8Array = new Uint8Array(0)): Uint8Array {
  return vmbus_channel_offer_pipe.encodeNew({ pipe_mode: pipeMode, user_def: userDefined });
}
