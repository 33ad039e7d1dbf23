/**
 * The storvsc/storvsp wire protocol (VMBus storage), declared once as data. Names, values and
 * sizes are Linux drivers/scsi/storvsc_drv.c's (cross-checked with OpenVMM's storvsp_protocol):
 * `struct vstor_packet` is 64 bytes, its union 0x34 (52) bytes at offset 12; `struct
 * vmscsi_request` is 52 bytes since Windows 8 and 36 before (the 16-byte win8 extension is the
 * `vmscsi_size_delta` older drivers subtract until a version is agreed), and its sense area is
 * 0x14 bytes since Windows 8, 0x12 before.
 */
import { defineStruct, HvemuError } from '@hvemu/common';

// ---- versions: u16 (major << 8) | minor

export const VMSTOR_PROTO_VERSION_WIN6 = 0x0200;
export const VMSTOR_PROTO_VERSION_WIN7 = 0x0402;
export const VMSTOR_PROTO_VERSION_WIN8 = 0x0501;
export const VMSTOR_PROTO_VERSION_WIN8_1 = 0x0600;
export const VMSTOR_PROTO_VERSION_WIN10 = 0x0602;

/** Every version this host accepts, newest first (Linux tries 6.2, 6.0, 5.1; older drivers 4.2 and 2.0). */
export const VMSTOR_PROTO_VERSIONS: readonly number[] = [
  VMSTOR_PROTO_VERSION_WIN10,
  VMSTOR_PROTO_VERSION_WIN8_1,
  VMSTOR_PROTO_VERSION_WIN8,
  VMSTOR_PROTO_VERSION_WIN7,
  VMSTOR_PROTO_VERSION_WIN6,
];

// ---- operations (enum vstor_packet_operation)

export const VSTOR_OPERATION_COMPLETE_IO = 1;
export const VSTOR_OPERATION_REMOVE_DEVICE = 2;
export const VSTOR_OPERATION_EXECUTE_SRB = 3;
export const VSTOR_OPERATION_RESET_LUN = 4;
export const VSTOR_OPERATION_RESET_ADAPTER = 5;
export const VSTOR_OPERATION_RESET_BUS = 6;
export const VSTOR_OPERATION_BEGIN_INITIALIZATION = 7;
export const VSTOR_OPERATION_END_INITIALIZATION = 8;
export const VSTOR_OPERATION_QUERY_PROTOCOL_VERSION = 9;
export const VSTOR_OPERATION_QUERY_PROPERTIES = 10;
export const VSTOR_OPERATION_ENUMERATE_BUS = 11;
export const VSTOR_OPERATION_FCHBA_DATA = 12;
export const VSTOR_OPERATION_CREATE_SUB_CHANNELS = 13;

const OPERATION_NAMES: Readonly<Record<number, string>> = {
  1: 'COMPLETE_IO',
  2: 'REMOVE_DEVICE',
  3: 'EXECUTE_SRB',
  4: 'RESET_LUN',
  5: 'RESET_ADAPTER',
  6: 'RESET_BUS',
  7: 'BEGIN_INITIALIZATION',
  8: 'END_INITIALIZATION',
  9: 'QUERY_PROTOCOL_VERSION',
  10: 'QUERY_PROPERTIES',
  11: 'ENUMERATE_BUS',
  12: 'FCHBA_DATA',
  13: 'CREATE_SUB_CHANNELS',
};

export function operationName(op: number): string {
  return OPERATION_NAMES[op] ?? `operation ${op}`;
}

/** vstor_packet.flags: the guest wants a completion (Linux sets it on every request). */
export const REQUEST_COMPLETION_FLAG = 0x1;

/** vmstorage_channel_properties.flags. */
export const STORAGE_CHANNEL_SUPPORTS_MULTI_CHANNEL = 0x1;

// ---- vstor_packet.status: NTSTATUS values (the host's result; 0 = success)

export const STATUS_SUCCESS = 0x0000_0000;
export const STATUS_UNSUCCESSFUL = 0xc000_0001;
export const STATUS_INVALID_PARAMETER = 0xc000_000d;
export const STATUS_INVALID_DEVICE_REQUEST = 0xc000_0010;
/** A QUERY_PROTOCOL_VERSION the host does not speak: the guest tries its next version. */
export const STATUS_REVISION_MISMATCH = 0xc000_0059;
export const STATUS_INVALID_DEVICE_STATE = 0xc000_0184;

// ---- SRB status (vmscsi_request.srb_status): a 6-bit code and two flag bits

export const SRB_STATUS_PENDING = 0x00;
export const SRB_STATUS_SUCCESS = 0x01;
export const SRB_STATUS_ABORTED = 0x02;
export const SRB_STATUS_ERROR = 0x04;
export const SRB_STATUS_INVALID_REQUEST = 0x06;
export const SRB_STATUS_DATA_OVERRUN = 0x12;
export const SRB_STATUS_INVALID_LUN = 0x20;
export const SRB_STATUS_INTERNAL_ERROR = 0x30;
export const SRB_STATUS_QUEUE_FROZEN = 0x40;
/** The sense data in the completion is valid (Linux copies it only with CHECK CONDITION and this bit). */
export const SRB_STATUS_AUTOSENSE_VALID = 0x80;

/** The status code without the flag bits (Linux SRB_STATUS()). */
export function srbStatusCode(status: number): number {
  return status & ~(SRB_STATUS_AUTOSENSE_VALID | SRB_STATUS_QUEUE_FROZEN);
}

// ---- SRB flags (vmscsi_request.srb_flags, win8 extension)

export const SRB_FLAGS_QUEUE_ACTION_ENABLE = 0x0000_0002;
export const SRB_FLAGS_DISABLE_SYNCH_TRANSFER = 0x0000_0008;
export const SRB_FLAGS_DATA_IN = 0x0000_0040;
export const SRB_FLAGS_DATA_OUT = 0x0000_0080;
export const SRB_FLAGS_NO_QUEUE_FREEZE = 0x0000_0100;

// ---- vmscsi_request.data_in (enum storvsc_request_type, "matches Windows-end")

export const WRITE_TYPE = 0;
export const READ_TYPE = 1;
export const UNKNOWN_TYPE = 2;

// ---- sizes

export const STORVSC_MAX_CMD_LEN = 0x10;
export const STORVSC_SENSE_BUFFER_SIZE = 0x14;
export const PRE_WIN8_STORVSC_SENSE_BUFFER_SIZE = 0x12;
/** The cdb / sense_data union's size. */
export const STORVSC_MAX_BUF_LEN_WITH_PADDING = 0x14;
/** sizeof(struct vmscsi_win8_extension): what pre-Win8 packets lack. */
export const VMSCSI_SIZE_DELTA = 16;
/** sizeof(struct vstor_packet). */
export const VSTOR_PACKET_SIZE = 64;
/** The packet size before Windows 8 (and of every packet before a version is agreed). */
export const VSTOR_PACKET_SIZE_PRE_WIN8 = VSTOR_PACKET_SIZE - VMSCSI_SIZE_DELTA;
/** Offset of the union in vstor_packet. */
export const VSTOR_PACKET_UNION = 12;

/** The first 12 bytes of every vstor_packet; the union follows. */
export const vstor_packet_header = defineStruct('vstor_packet_header', 12, [
  [0, 'operation', 'u32'],
  [4, 'flags', 'u32'],
  [8, 'status', 'u32'],
] as const);

/** struct vstor_packet, the union as raw bytes (its views are the structures below, at offset 12). */
export const vstor_packet = defineStruct('vstor_packet', VSTOR_PACKET_SIZE, [
  [0, 'operation', 'u32'],
  [4, 'flags', 'u32'],
  [8, 'status', 'u32'],
  [12, 'buffer', { bytes: 0x34 }],
] as const);

/** struct vmscsi_request as Windows 8 and later (and Linux) define it: 52 bytes. */
export const vmscsi_request = defineStruct('vmscsi_request', 0x34, [
  [0, 'length', 'u16'],
  [2, 'srb_status', 'u8'],
  [3, 'scsi_status', 'u8'],
  [4, 'port_number', 'u8'],
  [5, 'path_id', 'u8'],
  [6, 'target_id', 'u8'],
  [7, 'lun', 'u8'],
  [8, 'cdb_length', 'u8'],
  [9, 'sense_info_length', 'u8'],
  [10, 'data_in', 'u8'],
  [11, 'reserved', 'u8'],
  [12, 'data_transfer_length', 'u32'],
  // union { cdb[0x10]; sense_data[0x14]; reserved_array[0x14] }
  [16, 'cdb', { bytes: STORVSC_MAX_BUF_LEN_WITH_PADDING }],
  // struct vmscsi_win8_extension
  [36, 'reserve', 'u16'],
  [38, 'queue_tag', 'u8'],
  [39, 'queue_action', 'u8'],
  [40, 'srb_flags', 'u32'],
  [44, 'time_out_value', 'u32'],
  [48, 'queue_sort_key', 'u32'],
] as const);

/** vmscsi_request before Windows 8: the same fields without the extension, 36 bytes. */
export const vmscsi_request_pre_win8 = defineStruct('vmscsi_request_pre_win8', 0x24, vmscsi_request.rows.slice(0, 13));

/** Offset of vmscsi_request's cdb / sense_data union. */
export const VMSCSI_CDB = 16;

/** struct vmstorage_channel_properties (QUERY_PROPERTIES' answer): 24 bytes. */
export const vmstorage_channel_properties = defineStruct('vmstorage_channel_properties', 24, [
  [0, 'reserved', 'u32'],
  [4, 'max_channel_cnt', 'u16'],
  [6, 'reserved1', 'u16'],
  [8, 'flags', 'u32'],
  [12, 'max_transfer_bytes', 'u32'],
  [16, 'reserved2', 'u64'],
] as const);

/** struct vmstorage_protocol_version: 4 bytes. */
export const vmstorage_protocol_version = defineStruct('vmstorage_protocol_version', 4, [
  [0, 'major_minor', 'u16'],
  [2, 'revision', 'u16'],
] as const);

/** struct hv_fc_wwn_packet (synthetic FC only; this host answers FCHBA_DATA with zeros). */
export const hv_fc_wwn_packet = defineStruct('hv_fc_wwn_packet', 36, [
  [0, 'primary_active', 'u8'],
  [1, 'reserved1', { bytes: 3 }],
  [4, 'primary_port_wwn', { bytes: 8 }],
  [12, 'primary_node_wwn', { bytes: 8 }],
  [20, 'secondary_port_wwn', { bytes: 8 }],
  [28, 'secondary_node_wwn', { bytes: 8 }],
] as const);

/** The VMBus interface GUIDs hv_storvsc binds to. */
export const HV_SCSI_GUID = 'ba6163d9-04a1-4d29-b605-72e2ffb1dc7f';
export const HV_IDE_GUID = '32412632-86cb-44a2-9b5c-50d1417354f5';

/** True for versions whose packets carry the win8 extension and 0x14 bytes of sense. */
export function isWin8OrLater(version: number): boolean {
  return version >= VMSTOR_PROTO_VERSION_WIN8;
}

/** The vstor_packet size a guest that agreed on `version` sends and expects. */
export function packetSizeFor(version: number): number {
  return isWin8OrLater(version) ? VSTOR_PACKET_SIZE : VSTOR_PACKET_SIZE_PRE_WIN8;
}

/** The sense buffer size of `version`. */
export function senseSizeFor(version: number): number {
  return isWin8OrLater(version) ? STORVSC_SENSE_BUFFER_SIZE : PRE_WIN8_STORVSC_SENSE_BUFFER_SIZE;
}

export function versionText(version: number): string {
  return `${version >> 8}.${version & 0xff}`;
}

/** A vstor packet the guest sent that this host cannot take (its outcome says what the guest sees). */
export class StorvspProtocolError extends HvemuError {
  constructor(
    message: string,
    readonly outcome: 'request-rejected' | 'message-dropped' | 'channel-closed',
    /** A short code for logs and tests. */
    readonly fault: string,
  ) {
    super(message);
  }
}

/** What the host reads from a guest vstor_packet: the header and the union's bytes as sent. */
export interface VstorRequest {
  readonly operation: number;
  readonly flags: number;
  /** The union as the guest sent it (up to 52 bytes; shorter for pre-Win8 packets). */
  readonly body: Uint8Array;
  /** Bytes the guest sent (48 or 64 for well-formed packets). */
  readonly length: number;
}

/**
 * Parses a guest vstor_packet. Shorter than the pre-Win8 size (48) is a StorvspProtocolError:
 * no driver sends less, so there is no request to answer. Longer than 64: the rest is ignored.
 */
export function parseVstorPacket(payload: Uint8Array): VstorRequest | StorvspProtocolError {
  if (payload.length < VSTOR_PACKET_SIZE_PRE_WIN8) {
    return new StorvspProtocolError(
      `vstor_packet of ${payload.length} bytes (at least ${VSTOR_PACKET_SIZE_PRE_WIN8})`,
      'message-dropped',
      'short-packet',
    );
  }
  const dv = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const length = Math.min(payload.length, VSTOR_PACKET_SIZE);
  return {
    operation: dv.getUint32(0, true),
    flags: dv.getUint32(4, true),
    body: payload.subarray(VSTOR_PACKET_UNION, length),
    length,
  };
}

/** A reply packet: header fields and an optional union view, in `size` bytes (48 or 64). */
export function encodeVstorReply(size: number, status: number, union?: Uint8Array): Uint8Array {
  const out = new Uint8Array(size);
  vstor_packet_header.encode({ operation: VSTOR_OPERATION_COMPLETE_IO, flags: 0, status }, out);
  if (union) out.set(union.subarray(0, size - VSTOR_PACKET_UNION), VSTOR_PACKET_UNION);
  return out;
}
