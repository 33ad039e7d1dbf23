/**
 * The dynamic memory (hv_balloon) protocol, named as Linux drivers/hv/hv_balloon.c names it.
 * Every message is dm_header + body, sent as VM_PKT_DATA_INBAND with no completion. The
 * structures are __packed in the driver; the sizes below are its sizeof()s (a test checks them).
 */
import { defineStruct, HvemuError } from '@hvemu/common';

/** The device class (HV_DM_GUID) and the instance hvemu offers it under. */
export const HV_DM_GUID = '525074dc-8985-46e2-8057-a307dc18a502';
export const DEFAULT_DM_INSTANCE = '4b3c5a7e-2f0d-4c61-9d4e-ba11000d0001';

/** Versions: major << 16 | minor (union dm_version). */
export const DYNMEM_PROTOCOL_VERSION_1 = 0x0000_0003; // 0.3
export const DYNMEM_PROTOCOL_VERSION_2 = 0x0001_0000; // 1.0
export const DYNMEM_PROTOCOL_VERSION_3 = 0x0002_0000; // 2.0
export const DYNMEM_PROTOCOL_VERSION_WIN7 = DYNMEM_PROTOCOL_VERSION_1;
export const DYNMEM_PROTOCOL_VERSION_WIN8 = DYNMEM_PROTOCOL_VERSION_2;
export const DYNMEM_PROTOCOL_VERSION_WIN10 = DYNMEM_PROTOCOL_VERSION_3;
/** The order Linux tries them (balloon_connect_vsp: WIN10, then WIN8, then WIN7 as the last attempt). */
export const LINUX_DM_VERSIONS: readonly number[] = [
  DYNMEM_PROTOCOL_VERSION_WIN10,
  DYNMEM_PROTOCOL_VERSION_WIN8,
  DYNMEM_PROTOCOL_VERSION_WIN7,
];

/** enum dm_message_type */
export const DM_ERROR = 0;
export const DM_VERSION_REQUEST = 1;
export const DM_VERSION_RESPONSE = 2;
export const DM_CAPABILITIES_REPORT = 3;
export const DM_CAPABILITIES_RESPONSE = 4;
export const DM_STATUS_REPORT = 5;
export const DM_BALLOON_REQUEST = 6;
export const DM_BALLOON_RESPONSE = 7;
export const DM_UNBALLOON_REQUEST = 8;
export const DM_UNBALLOON_RESPONSE = 9;
export const DM_MEM_HOT_ADD_REQUEST = 10;
export const DM_MEM_HOT_ADD_RESPONSE = 11;
export const DM_INFO_MESSAGE = 12; // version 1.0 on

export const DM_MESSAGE_NAMES: Readonly<Record<number, string>> = {
  0: 'ERROR',
  1: 'VERSION_REQUEST',
  2: 'VERSION_RESPONSE',
  3: 'CAPABILITIES_REPORT',
  4: 'CAPABILITIES_RESPONSE',
  5: 'STATUS_REPORT',
  6: 'BALLOON_REQUEST',
  7: 'BALLOON_RESPONSE',
  8: 'UNBALLOON_REQUEST',
  9: 'UNBALLOON_RESPONSE',
  10: 'MEM_HOT_ADD_REQUEST',
  11: 'MEM_HOT_ADD_RESPONSE',
  12: 'INFO_MESSAGE',
};

/** enum dm_info_type */
export const INFO_TYPE_MAX_PAGE_CNT = 0;

/** union dm_caps bits */
export const DM_CAPS_BALLOON = 1n;
export const DM_CAPS_HOT_ADD = 2n;
/** hot_add_alignment: bits 2-5, log2 of the hot-add chunk in MiB (Linux: memory block size, 7 = 128 MiB on x86_64). */
export const DM_CAPS_HOT_ADD_ALIGNMENT_SHIFT = 2n;

/** The guest's packets and the host's are at most one 4 KiB page (Linux's recv_buffer, and the range-list limit). */
export const DM_MAX_MESSAGE_SIZE = 4096;
/** Ranges in one balloon response or unballoon request: (4096 - 16) / 8. */
export const DM_MAX_RANGES_PER_MESSAGE = 510;
/** page_cnt is 24 bits, start_page 40 bits. */
export const DM_RANGE_MAX_PAGES = 0xff_ffff;
export const DM_RANGE_MAX_PFN = 2 ** 40 - 1;
export const DM_PAGE_SIZE = 4096;

/** struct dm_header */
export const dm_header = defineStruct('dm_header', 8, [
  [0, 'type', 'u16'],
  [2, 'size', 'u16'], // the whole message
  [4, 'trans_id', 'u32'],
]);

const HDR = [
  [0, 'type', 'u16'],
  [2, 'size', 'u16'],
  [4, 'trans_id', 'u32'],
] as const;

/** struct dm_version_request: version (minor u16, major u16); bit 0 of the next u32 is_last_attempt. */
export const dm_version_request = defineStruct('dm_version_request', 16, [...HDR, [8, 'version', 'u32'], [12, 'is_last_attempt', 'u32']]);
/** struct dm_version_response: bit 0 of a u64 is_accepted. */
export const dm_version_response = defineStruct('dm_version_response', 16, [...HDR, [8, 'is_accepted', 'u64']]);
/** struct dm_capabilities */
export const dm_capabilities = defineStruct('dm_capabilities', 32, [
  ...HDR,
  [8, 'caps', 'u64'],
  [16, 'min_page_cnt', 'u64'],
  [24, 'max_page_number', 'u64'],
]);
/** struct dm_capabilities_resp_msg */
export const dm_capabilities_resp_msg = defineStruct('dm_capabilities_resp_msg', 16, [...HDR, [8, 'is_accepted', 'u64']]);
/** struct dm_status: the guest's pressure report (the host's algorithm uses num_committed). */
export const dm_status = defineStruct('dm_status', 48, [
  ...HDR,
  [8, 'num_avail', 'u64'],
  [16, 'num_committed', 'u64'],
  [24, 'page_file_size', 'u64'],
  [32, 'zero_free', 'u64'],
  [40, 'page_file_writes', 'u32'],
  [44, 'io_diff', 'u32'],
]);
/** struct dm_balloon: balloon up by num_pages. */
export const dm_balloon = defineStruct('dm_balloon', 16, [...HDR, [8, 'num_pages', 'u32'], [12, 'reservedz', 'u32']]);
/** struct dm_balloon_response (without its range_array): bit 0 of the u32 at 12 more_pages, bits 1-31 range_count. */
export const dm_balloon_response = defineStruct('dm_balloon_response', 16, [
  ...HDR,
  [8, 'reservedz', 'u32'],
  [12, 'more_pages_range_count', 'u32'],
]);
/** struct dm_unballoon_request (without its range_array): bit 0 of the u32 at 8 more_pages. */
export const dm_unballoon_request = defineStruct('dm_unballoon_request', 16, [
  ...HDR,
  [8, 'more_pages', 'u32'],
  [12, 'range_count', 'u32'],
]);
/** struct dm_unballoon_response: the header only. */
export const dm_unballoon_response = defineStruct('dm_unballoon_response', 8, [...HDR]);
/** struct dm_hot_add: one page range. */
export const dm_hot_add = defineStruct('dm_hot_add', 16, [...HDR, [8, 'range', 'u64']]);
/** dm_hot_add followed by the region range (the driver reads range[1] when hdr.size is not sizeof(dm_hot_add)). */
export const dm_hot_add_with_region = defineStruct('dm_hot_add_with_region', 24, [...HDR, [8, 'range', 'u64'], [16, 'region', 'u64']]);
/** struct dm_hot_add_response: result 1 success, 0 failure. */
export const dm_hot_add_response = defineStruct('dm_hot_add_response', 16, [...HDR, [8, 'page_count', 'u32'], [12, 'result', 'u32']]);
/** struct dm_info_msg (without info[]). */
export const dm_info_msg = defineStruct('dm_info_msg', 16, [...HDR, [8, 'reserved', 'u32'], [12, 'info_size', 'u32']]);
/** struct dm_info_header */
export const dm_info_header = defineStruct('dm_info_header', 8, [
  [0, 'type', 'u32'],
  [4, 'data_size', 'u32'],
]);

/** union dm_mem_page_range: start_page bits 0-39, page_cnt bits 40-63. */
export function encodePageRange(startPage: number, pageCount: number): bigint {
  return (BigInt(pageCount) << 40n) | BigInt(startPage);
}

export function decodePageRange(range: bigint): { startPage: number; pageCount: number } {
  return { startPage: Number(range & 0xff_ffff_ffffn), pageCount: Number(range >> 40n) };
}

/** Writes a range into `dv` at `offset` without a bigint (the hot path). */
export function writePageRange(dv: DataView, offset: number, startPage: number, pageCount: number): void {
  dv.setUint32(offset, startPage >>> 0, true);
  dv.setUint32(offset + 4, ((startPage / 0x1_0000_0000) & 0xff) | (pageCount << 8), true);
}

/** A malformed or unexpected dm message: logged and dropped (no answer). */
export class BalloonProtocolError extends HvemuError {
  readonly outcome = 'message-dropped' as const;
  constructor(
    message: string,
    /** A short stable code for tests and counters. */
    readonly fault: BalloonFault,
  ) {
    super(message);
  }
}

export type BalloonFault =
  | 'short'
  | 'size-mismatch'
  | 'oversize'
  | 'unknown-type'
  | 'unexpected'
  | 'range-count'
  | 'range-empty'
  | 'range-outside-ram'
  | 'range-repeated'
  | 'not-requested'
  | 'too-many-pages'
  | 'hot-add-count';

/** Guest-to-host messages, decoded. */
export type GuestMessage =
  | { type: typeof DM_VERSION_REQUEST; transId: number; version: number; isLastAttempt: boolean }
  | { type: typeof DM_CAPABILITIES_REPORT; transId: number; caps: bigint; minPageCount: bigint; maxPageNumber: bigint }
  | { type: typeof DM_STATUS_REPORT; transId: number; status: DmStatus }
  | { type: typeof DM_BALLOON_RESPONSE; transId: number; morePages: boolean; ranges: Float64Array }
  | { type: typeof DM_UNBALLOON_RESPONSE; transId: number }
  | { type: typeof DM_MEM_HOT_ADD_RESPONSE; transId: number; pageCount: number; result: number };

/** A guest's pressure report (dm_status), in pages. */
export interface DmStatus {
  readonly numAvail: number;
  readonly numCommitted: number;
  readonly pageFileSize: number;
  readonly zeroFree: number;
  readonly pageFileWrites: number;
  readonly ioDiff: number;
}

const FIXED_SIZES: Readonly<Record<number, number>> = {
  [DM_VERSION_REQUEST]: dm_version_request.size,
  [DM_CAPABILITIES_REPORT]: dm_capabilities.size,
  [DM_STATUS_REPORT]: dm_status.size,
  [DM_UNBALLOON_RESPONSE]: dm_unballoon_response.size,
  [DM_MEM_HOT_ADD_RESPONSE]: dm_hot_add_response.size,
};

const u64n = (dv: DataView, at: number): number => dv.getUint32(at, true) + dv.getUint32(at + 4, true) * 0x1_0000_0000;

/**
 * Decodes a guest-to-host message from a packet payload (the ring pads it to 8 bytes, so the
 * payload may be longer than hdr.size, never shorter). A BalloonProtocolError, never a throw,
 * for anything malformed: too short, hdr.size not the structure's size, a range list that does
 * not fit, a type the guest does not send. Ranges come as (startPage, pageCount) pairs.
 */
export function parseGuestMessage(bytes: Uint8Array): GuestMessage | BalloonProtocolError {
  if (bytes.length < dm_header.size) return new BalloonProtocolError(`a ${bytes.length}-byte dm message`, 'short');
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const type = dv.getUint16(0, true);
  const size = dv.getUint16(2, true);
  const transId = dv.getUint32(4, true);
  if (size > bytes.length)
    return new BalloonProtocolError(`${name(type)}: hdr.size ${size} > the ${bytes.length}-byte packet`, 'size-mismatch');
  if (size > DM_MAX_MESSAGE_SIZE) return new BalloonProtocolError(`${name(type)}: hdr.size ${size} > ${DM_MAX_MESSAGE_SIZE}`, 'oversize');
  const fixed = FIXED_SIZES[type];
  if (fixed !== undefined && size !== fixed) {
    return new BalloonProtocolError(`${name(type)}: hdr.size ${size}, the structure is ${fixed}`, 'size-mismatch');
  }
  switch (type) {
    case DM_VERSION_REQUEST:
      return { type, transId, version: dv.getUint32(8, true), isLastAttempt: (dv.getUint32(12, true) & 1) !== 0 };
    case DM_CAPABILITIES_REPORT:
      return {
        type,
        transId,
        caps: dv.getBigUint64(8, true),
        minPageCount: dv.getBigUint64(16, true),
        maxPageNumber: dv.getBigUint64(24, true),
      };
    case DM_STATUS_REPORT:
      return {
        type,
        transId,
        status: {
          numAvail: u64n(dv, 8),
          numCommitted: u64n(dv, 16),
          pageFileSize: u64n(dv, 24),
          zeroFree: u64n(dv, 32),
          pageFileWrites: dv.getUint32(40, true),
          ioDiff: dv.getUint32(44, true),
        },
      };
    case DM_BALLOON_RESPONSE: {
      if (size < dm_balloon_response.size) return new BalloonProtocolError(`BALLOON_RESPONSE: hdr.size ${size} < 16`, 'size-mismatch');
      const word = dv.getUint32(12, true);
      const count = word >>> 1;
      if (count > DM_MAX_RANGES_PER_MESSAGE || size !== dm_balloon_response.size + count * 8) {
        return new BalloonProtocolError(`BALLOON_RESPONSE: ${count} ranges in a ${size}-byte message`, 'range-count');
      }
      const ranges = new Float64Array(count * 2);
      for (let i = 0, at = 16; i < count; i++, at += 8) {
        const hi = dv.getUint32(at + 4, true);
        ranges[2 * i] = dv.getUint32(at, true) + (hi & 0xff) * 0x1_0000_0000;
        ranges[2 * i + 1] = hi >>> 8;
      }
      return { type, transId, morePages: (word & 1) !== 0, ranges };
    }
    case DM_UNBALLOON_RESPONSE:
      return { type, transId };
    case DM_MEM_HOT_ADD_RESPONSE:
      return { type, transId, pageCount: dv.getUint32(8, true), result: dv.getUint32(12, true) };
    default:
      return new BalloonProtocolError(
        `${name(type)} is not a message a guest sends`,
        type in DM_MESSAGE_NAMES ? 'unexpected' : 'unknown-type',
      );
  }
}

function name(type: number): string {
  return DM_MESSAGE_NAMES[type] ?? `type ${type}`;
}

// ---- host-to-guest encoders

function header(out: Uint8Array, type: number, transId: number): DataView {
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  dv.setUint16(0, type, true);
  dv.setUint16(2, out.length, true);
  dv.setUint32(4, transId >>> 0, true);
  return dv;
}

export function encodeVersionResponse(transId: number, accepted: boolean): Uint8Array {
  const out = new Uint8Array(dm_version_response.size);
  header(out, DM_VERSION_RESPONSE, transId).setUint32(8, accepted ? 1 : 0, true);
  return out;
}

export function encodeCapabilitiesResponse(transId: number, accepted: boolean): Uint8Array {
  const out = new Uint8Array(dm_capabilities_resp_msg.size);
  header(out, DM_CAPABILITIES_RESPONSE, transId).setUint32(8, accepted ? 1 : 0, true);
  return out;
}

export function encodeBalloonRequest(transId: number, numPages: number): Uint8Array {
  const out = new Uint8Array(dm_balloon.size);
  header(out, DM_BALLOON_REQUEST, transId).setUint32(8, numPages >>> 0, true);
  return out;
}

/** UNBALLOON_REQUEST with `pairs` = (startPage, pageCount)... (at most 510 ranges). */
export function encodeUnballoonRequest(transId: number, morePages: boolean, pairs: ArrayLike<number>): Uint8Array {
  const count = pairs.length / 2;
  const out = new Uint8Array(dm_unballoon_request.size + count * 8);
  const dv = header(out, DM_UNBALLOON_REQUEST, transId);
  dv.setUint32(8, morePages ? 1 : 0, true);
  dv.setUint32(12, count, true);
  for (let i = 0; i < count; i++) writePageRange(dv, 16 + i * 8, pairs[2 * i], pairs[2 * i + 1]);
  return out;
}

export function encodeHotAddRequest(
  transId: number,
  range: { startPage: number; pageCount: number },
  region?: { startPage: number; pageCount: number },
): Uint8Array {
  const out = new Uint8Array(region ? dm_hot_add_with_region.size : dm_hot_add.size);
  const dv = header(out, DM_MEM_HOT_ADD_REQUEST, transId);
  writePageRange(dv, 8, range.startPage, range.pageCount);
  if (region) writePageRange(dv, 16, region.startPage, region.pageCount);
  return out;
}

/** A guest's BALLOON_RESPONSE with (startPage, pageCount) pairs (the test client; fuzzers). */
export function encodeBalloonResponse(transId: number, morePages: boolean, pairs: ArrayLike<number>): Uint8Array {
  const count = pairs.length / 2;
  const out = new Uint8Array(dm_balloon_response.size + count * 8);
  const dv = header(out, DM_BALLOON_RESPONSE, transId);
  dv.setUint32(12, ((count << 1) | (morePages ? 1 : 0)) >>> 0, true);
  for (let i = 0; i < count; i++) writePageRange(dv, 16 + i * 8, pairs[2 * i], pairs[2 * i + 1]);
  return out;
}

/** INFO_MESSAGE carrying INFO_TYPE_MAX_PAGE_CNT (the guest logs the dynamic memory maximum). */
export function encodeInfoMaxPageCount(transId: number, maxPageCount: number): Uint8Array {
  const out = new Uint8Array(dm_info_msg.size + dm_info_header.size + 8);
  const dv = header(out, DM_INFO_MESSAGE, transId);
  dv.setUint32(12, dm_info_header.size + 8, true);
  dv.setUint32(16, INFO_TYPE_MAX_PAGE_CNT, true);
  dv.setUint32(20, 8, true);
  dv.setBigUint64(24, BigInt(maxPageCount), true);
  return out;
}
