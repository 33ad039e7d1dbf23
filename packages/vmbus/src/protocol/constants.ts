/**
 * VMBus channel-protocol constants, named as in Linux include/linux/hyperv.h and
 * drivers/hv/hyperv_vmbus.h so both trees can be grepped for the same word.
 */

// ---- enum vmbus_channel_message_type ----
export const CHANNELMSG_INVALID = 0;
export const CHANNELMSG_OFFERCHANNEL = 1;
export const CHANNELMSG_RESCIND_CHANNELOFFER = 2;
export const CHANNELMSG_REQUESTOFFERS = 3;
export const CHANNELMSG_ALLOFFERS_DELIVERED = 4;
export const CHANNELMSG_OPENCHANNEL = 5;
export const CHANNELMSG_OPENCHANNEL_RESULT = 6;
export const CHANNELMSG_CLOSECHANNEL = 7;
export const CHANNELMSG_GPADL_HEADER = 8;
export const CHANNELMSG_GPADL_BODY = 9;
export const CHANNELMSG_GPADL_CREATED = 10;
export const CHANNELMSG_GPADL_TEARDOWN = 11;
export const CHANNELMSG_GPADL_TORNDOWN = 12;
export const CHANNELMSG_RELID_RELEASED = 13;
export const CHANNELMSG_INITIATE_CONTACT = 14;
export const CHANNELMSG_VERSION_RESPONSE = 15;
export const CHANNELMSG_UNLOAD = 16;
export const CHANNELMSG_UNLOAD_RESPONSE = 17;
export const CHANNELMSG_18 = 18;
export const CHANNELMSG_19 = 19;
export const CHANNELMSG_20 = 20;
export const CHANNELMSG_TL_CONNECT_REQUEST = 21;
export const CHANNELMSG_MODIFYCHANNEL = 22;
export const CHANNELMSG_TL_CONNECT_RESULT = 23;
export const CHANNELMSG_MODIFYCHANNEL_RESPONSE = 24;
/** One past the last type Linux knows; the guest drops anything >= this. */
export const CHANNELMSG_COUNT = 25;

/** Printable names, for logs and traces. */
export const CHANNELMSG_NAMES: Readonly<Record<number, string>> = Object.freeze({
  [CHANNELMSG_OFFERCHANNEL]: 'OFFERCHANNEL',
  [CHANNELMSG_RESCIND_CHANNELOFFER]: 'RESCIND_CHANNELOFFER',
  [CHANNELMSG_REQUESTOFFERS]: 'REQUESTOFFERS',
  [CHANNELMSG_ALLOFFERS_DELIVERED]: 'ALLOFFERS_DELIVERED',
  [CHANNELMSG_OPENCHANNEL]: 'OPENCHANNEL',
  [CHANNELMSG_OPENCHANNEL_RESULT]: 'OPENCHANNEL_RESULT',
  [CHANNELMSG_CLOSECHANNEL]: 'CLOSECHANNEL',
  [CHANNELMSG_GPADL_HEADER]: 'GPADL_HEADER',
  [CHANNELMSG_GPADL_BODY]: 'GPADL_BODY',
  [CHANNELMSG_GPADL_CREATED]: 'GPADL_CREATED',
  [CHANNELMSG_GPADL_TEARDOWN]: 'GPADL_TEARDOWN',
  [CHANNELMSG_GPADL_TORNDOWN]: 'GPADL_TORNDOWN',
  [CHANNELMSG_RELID_RELEASED]: 'RELID_RELEASED',
  [CHANNELMSG_INITIATE_CONTACT]: 'INITIATE_CONTACT',
  [CHANNELMSG_VERSION_RESPONSE]: 'VERSION_RESPONSE',
  [CHANNELMSG_UNLOAD]: 'UNLOAD',
  [CHANNELMSG_UNLOAD_RESPONSE]: 'UNLOAD_RESPONSE',
  [CHANNELMSG_TL_CONNECT_REQUEST]: 'TL_CONNECT_REQUEST',
  [CHANNELMSG_MODIFYCHANNEL]: 'MODIFYCHANNEL',
  [CHANNELMSG_TL_CONNECT_RESULT]: 'TL_CONNECT_RESULT',
  [CHANNELMSG_MODIFYCHANNEL_RESPONSE]: 'MODIFYCHANNEL_RESPONSE',
});

// ---- protocol versions: (major << 16) | minor ----
export const VERSION_WS2008 = (0 << 16) | 13;
export const VERSION_WIN7 = (1 << 16) | 1;
export const VERSION_WIN8 = (2 << 16) | 4;
export const VERSION_WIN8_1 = (3 << 16) | 0;
export const VERSION_WIN10 = (4 << 16) | 0;
export const VERSION_WIN10_V4_1 = (4 << 16) | 1;
export const VERSION_WIN10_V5 = (5 << 16) | 0;
export const VERSION_WIN10_V5_1 = (5 << 16) | 1;
export const VERSION_WIN10_V5_2 = (5 << 16) | 2;
export const VERSION_WIN10_V5_3 = (5 << 16) | 3;
/** 6.0 ("Copper" in OpenVMM): feature flags in INITIATE_CONTACT and a 20-byte VERSION_RESPONSE. */
export const VERSION_WIN10_V6_0 = (6 << 16) | 0;

/** Every version the server can speak, oldest first. */
export const VMBUS_VERSIONS: readonly number[] = Object.freeze([
  VERSION_WS2008,
  VERSION_WIN7,
  VERSION_WIN8,
  VERSION_WIN8_1,
  VERSION_WIN10,
  VERSION_WIN10_V4_1,
  VERSION_WIN10_V5,
  VERSION_WIN10_V5_1,
  VERSION_WIN10_V5_2,
  VERSION_WIN10_V5_3,
  VERSION_WIN10_V6_0,
]);

/** The order Linux tries (connection.c vmbus_versions[]): newest first, 2.4 the lowest. */
export const LINUX_VMBUS_VERSIONS: readonly number[] = Object.freeze([
  VERSION_WIN10_V5_3,
  VERSION_WIN10_V5_2,
  VERSION_WIN10_V5_1,
  VERSION_WIN10_V5,
  VERSION_WIN10_V4_1,
  VERSION_WIN10,
  VERSION_WIN8_1,
  VERSION_WIN8,
]);

export function versionString(version: number): string {
  return `${version >>> 16}.${version & 0xffff}`;
}

// ---- connection ids, SINT (hyperv_vmbus.h) ----
/** HvPostMessage target for protocol < 5.0 (and our default msg_conn_id for >= 5.0). */
export const VMBUS_MESSAGE_CONNECTION_ID = 1;
/** HvPostMessage target for INITIATE_CONTACT when requesting >= 5.0. */
export const VMBUS_MESSAGE_CONNECTION_ID_4 = 4;
/** The shared event connection of pre-Win7 guests (and non-dedicated interrupts before 5.0). */
export const VMBUS_EVENT_CONNECTION_ID = 2;
export const VMBUS_MONITOR_CONNECTION_ID = 3;
/** SINT of every VMBus message and channel event. */
export const VMBUS_MESSAGE_SINT = 2;
/** hv_message.message_type of channel messages (Linux posts and expects 1). */
export const VMBUS_MESSAGE_TYPE = 1;
/** relids are 1..2047: bit 0 of the event-flags block is reserved. */
export const MAX_CHANNEL_RELIDS = 2048;
/** Monitor ids: 4 trigger groups of 32. */
export const VMBUS_MONITOR_ID_COUNT = 128;

// ---- offer chn_flags (VMBUS_CHANNEL_*) ----
export const VMBUS_CHANNEL_ENUMERATE_DEVICE_INTERFACE = 0x1;
export const VMBUS_CHANNEL_SERVER_SUPPORTS_TRANSFER_PAGES = 0x2;
export const VMBUS_CHANNEL_SERVER_SUPPORTS_GPADLS = 0x4;
export const VMBUS_CHANNEL_NAMED_PIPE_MODE = 0x10;
export const VMBUS_CHANNEL_LOOPBACK_OFFER = 0x100;
export const VMBUS_CHANNEL_PARENT_OFFER = 0x200;
export const VMBUS_CHANNEL_REQUEST_MONITORED_NOTIFICATION = 0x400;
export const VMBUS_CHANNEL_TLNPI_PROVIDER_OFFER = 0x2000;

/** Pipe modes in the offer's pipe form of user_def. */
export const VMBUS_PIPE_TYPE_BYTE = 0x0;
export const VMBUS_PIPE_TYPE_MESSAGE = 0x4;

export const MAX_USER_DEFINED_BYTES = 120;
export const MAX_PIPE_USER_DEFINED_BYTES = 116;

// ---- version 6.0 feature flags (INITIATE_CONTACT.feature_flags / VERSION_RESPONSE.supported_features) ----
export const VMBUS_FEATURE_FLAG_GUEST_SPECIFIED_SIGNAL_PARAMETERS = 0x1;
export const VMBUS_FEATURE_FLAG_CHANNEL_INTERRUPT_REDIRECTION = 0x2;
export const VMBUS_FEATURE_FLAG_MODIFY_CONNECTION = 0x4;
export const VMBUS_FEATURE_FLAG_CLIENT_ID = 0x8;
export const VMBUS_FEATURE_FLAG_CONFIDENTIAL_CHANNELS = 0x10;
export const VMBUS_FEATURE_FLAG_PAUSE_RESUME = 0x20;
export const VMBUS_FEATURE_FLAG_SERVER_SPECIFIED_MONITOR_PAGES = 0x40;

/** VERSION_RESPONSE.connection_state (Linux ignores it). */
export const VMBUS_CONNECTION_SUCCESSFUL = 0;
export const VMBUS_CONNECTION_FAILED_LOW_RESOURCES = 1;
export const VMBUS_CONNECTION_FAILED_UNKNOWN_FAILURE = 2;

/**
 * The non-zero status the host puts in OPENCHANNEL_RESULT, GPADL_CREATED and
 * MODIFYCHANNEL_RESPONSE on failure. Hyper-V answers NTSTATUS codes; Linux only tests != 0.
 */
export const STATUS_UNSUCCESSFUL = 0xc0000001;

// ---- GPADL message geometry (Linux channel.c create_gpadl_header) ----
/** GPADLs handles Linux hands out start here and count up, connection-wide. */
export const VMBUS_GPADL_HANDLE_BASE = 0x000e1e10;
/** PFNs that fit in a GPADL_HEADER after its one gpa_range header: (240 - 20 - 8) / 8. */
export const GPADL_HEADER_MAX_PFNS = 26;
/** PFNs that fit in one GPADL_BODY: (240 - 16) / 8. */
export const GPADL_BODY_MAX_PFNS = 28;
