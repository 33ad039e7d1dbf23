/**
 * SCSI commands a disk serves (SPC-4 / SBC-3 names and numbers) and their CDB layouts, plus the
 * parameter data and sense formats, as data.
 */
import { defineBeStruct } from './layout.js';

// ---- operation codes

export const TEST_UNIT_READY = 0x00;
export const REQUEST_SENSE = 0x03;
export const READ_6 = 0x08;
export const WRITE_6 = 0x0a;
export const INQUIRY = 0x12;
export const MODE_SELECT_6 = 0x15;
export const MODE_SENSE_6 = 0x1a;
export const START_STOP_UNIT = 0x1b;
export const READ_CAPACITY_10 = 0x25;
export const READ_10 = 0x28;
export const WRITE_10 = 0x2a;
export const SYNCHRONIZE_CACHE_10 = 0x35;
export const WRITE_SAME_10 = 0x41;
export const UNMAP = 0x42;
export const MODE_SENSE_10 = 0x5a;
export const READ_16 = 0x88;
export const WRITE_16 = 0x8a;
export const SYNCHRONIZE_CACHE_16 = 0x91;
export const WRITE_SAME_16 = 0x93;
/** SERVICE ACTION IN (16); READ CAPACITY (16) is its service action 0x10. */
export const SERVICE_ACTION_IN_16 = 0x9e;
export const SAI_READ_CAPACITY_16 = 0x10;
export const REPORT_LUNS = 0xa0;
export const READ_12 = 0xa8;
export const WRITE_12 = 0xaa;

/** The CDB length an operation code's group implies (SPC-4 4.2.5.1); 0 for the vendor groups. */
export function cdbLengthOf(opcode: number): number {
  return [6, 10, 10, 0, 16, 12, 0, 0][opcode >> 5];
}

// ---- status, sense keys, additional sense codes

export const SAM_STAT_GOOD = 0x00;
export const SAM_STAT_CHECK_CONDITION = 0x02;

export const NO_SENSE = 0x0;
export const NOT_READY = 0x2;
export const MEDIUM_ERROR = 0x3;
export const HARDWARE_ERROR = 0x4;
export const ILLEGAL_REQUEST = 0x5;
export const UNIT_ATTENTION = 0x6;
export const DATA_PROTECT = 0x7;

/** An additional sense code and qualifier. */
export interface Asc {
  readonly asc: number;
  readonly ascq: number;
}
export const ASC_NONE: Asc = { asc: 0x00, ascq: 0x00 };
export const ASC_WRITE_ERROR: Asc = { asc: 0x0c, ascq: 0x00 };
export const ASC_UNRECOVERED_READ_ERROR: Asc = { asc: 0x11, ascq: 0x00 };
export const ASC_PARAMETER_LIST_LENGTH_ERROR: Asc = { asc: 0x1a, ascq: 0x00 };
export const ASC_INVALID_COMMAND_OPERATION_CODE: Asc = { asc: 0x20, ascq: 0x00 };
export const ASC_LBA_OUT_OF_RANGE: Asc = { asc: 0x21, ascq: 0x00 };
export const ASC_INVALID_FIELD_IN_CDB: Asc = { asc: 0x24, ascq: 0x00 };
export const ASC_LOGICAL_UNIT_NOT_SUPPORTED: Asc = { asc: 0x25, ascq: 0x00 };
export const ASC_INVALID_FIELD_IN_PARAMETER_LIST: Asc = { asc: 0x26, ascq: 0x00 };
export const ASC_WRITE_PROTECTED: Asc = { asc: 0x27, ascq: 0x00 };
export const ASC_SAVING_PARAMETERS_NOT_SUPPORTED: Asc = { asc: 0x39, ascq: 0x00 };

/** Fixed-format sense data (SPC-4 4.5.3), 18 bytes: fits the pre-Win8 0x12-byte sense area too. */
export const fixed_sense = defineBeStruct('fixed_sense', 18, [
  [0, 'response_code', 'u8'],
  [1, 'obsolete', 'u8'],
  [2, 'sense_key', 'u8'],
  [3, 'information', 'be32'],
  [7, 'additional_sense_length', 'u8'],
  [8, 'command_specific', 'be32'],
  [12, 'asc', 'u8'],
  [13, 'ascq', 'u8'],
  [14, 'fru_code', 'u8'],
  [15, 'sense_key_specific', 'be24'],
] as const);

/** Current-error fixed-format sense with `key` and `code`. */
export function senseData(key: number, code: Asc): Uint8Array {
  return fixed_sense.encodeNew({ response_code: 0x70, sense_key: key, additional_sense_length: 10, asc: code.asc, ascq: code.ascq });
}

// ---- CDB layouts

export const read_write_6 = defineBeStruct('read_write_6', 6, [
  [0, 'opcode', 'u8'],
  [1, 'lba', 'be24'], // the low 21 bits; the top 3 are reserved
  [4, 'transfer_length', 'u8'], // 0 means 256
  [5, 'control', 'u8'],
] as const);

export const read_write_10 = defineBeStruct('read_write_10', 10, [
  [0, 'opcode', 'u8'],
  [1, 'flags', 'u8'],
  [2, 'lba', 'be32'],
  [6, 'group', 'u8'],
  [7, 'transfer_length', 'be16'],
  [9, 'control', 'u8'],
] as const);

export const read_write_12 = defineBeStruct('read_write_12', 12, [
  [0, 'opcode', 'u8'],
  [1, 'flags', 'u8'],
  [2, 'lba', 'be32'],
  [6, 'transfer_length', 'be32'],
  [10, 'group', 'u8'],
  [11, 'control', 'u8'],
] as const);

export const read_write_16 = defineBeStruct('read_write_16', 16, [
  [0, 'opcode', 'u8'],
  [1, 'flags', 'u8'],
  [2, 'lba', 'be64'],
  [10, 'transfer_length', 'be32'],
  [14, 'group', 'u8'],
  [15, 'control', 'u8'],
] as const);

/** READ/WRITE (10/12/16) flags byte: force unit access. */
export const CDB_FUA = 0x08;
/** WRITE SAME flags byte: deallocate instead of writing. */
export const WRITE_SAME_UNMAP = 0x08;
/** WRITE SAME (16) flags byte: no data-out buffer (the block is zeros). */
export const WRITE_SAME_NDOB = 0x01;

/** SYNCHRONIZE CACHE (10) and WRITE SAME (10) share READ (10)'s field places. */
export const sync_cache_10 = read_write_10;
export const sync_cache_16 = read_write_16;
export const write_same_10 = read_write_10;
export const write_same_16 = read_write_16;

export const inquiry_cdb = defineBeStruct('inquiry_cdb', 6, [
  [0, 'opcode', 'u8'],
  [1, 'flags', 'u8'], // bit 0: EVPD
  [2, 'page_code', 'u8'],
  [3, 'allocation_length', 'be16'],
  [5, 'control', 'u8'],
] as const);
export const INQUIRY_EVPD = 0x01;

export const mode_sense_6_cdb = defineBeStruct('mode_sense_6_cdb', 6, [
  [0, 'opcode', 'u8'],
  [1, 'flags', 'u8'], // bit 3: DBD
  [2, 'page', 'u8'], // PC (2 bits) | page code (6 bits)
  [3, 'subpage', 'u8'],
  [4, 'allocation_length', 'u8'],
  [5, 'control', 'u8'],
] as const);

export const mode_sense_10_cdb = defineBeStruct('mode_sense_10_cdb', 10, [
  [0, 'opcode', 'u8'],
  [1, 'flags', 'u8'], // bit 4: LLBAA, bit 3: DBD
  [2, 'page', 'u8'],
  [3, 'subpage', 'u8'],
  [4, 'reserved', { bytes: 3 }],
  [7, 'allocation_length', 'be16'],
  [9, 'control', 'u8'],
] as const);
export const MODE_SENSE_DBD = 0x08;
export const MODE_SENSE_LLBAA = 0x10;
export const MODE_PAGE_CACHING = 0x08;
export const MODE_PAGE_CONTROL = 0x0a;
export const MODE_PAGE_ALL = 0x3f;
/** Mode parameter header device-specific byte: write protected; DPO and FUA supported. */
export const MODE_DSP_WP = 0x80;
export const MODE_DSP_DPOFUA = 0x10;

export const read_capacity_16_cdb = defineBeStruct('read_capacity_16_cdb', 16, [
  [0, 'opcode', 'u8'],
  [1, 'service_action', 'u8'],
  [2, 'lba', 'be64'],
  [10, 'allocation_length', 'be32'],
  [14, 'flags', 'u8'],
  [15, 'control', 'u8'],
] as const);

export const read_capacity_10_data = defineBeStruct('read_capacity_10_data', 8, [
  [0, 'last_lba', 'be32'],
  [4, 'block_length', 'be32'],
] as const);

export const read_capacity_16_data = defineBeStruct('read_capacity_16_data', 32, [
  [0, 'last_lba', 'be64'],
  [8, 'block_length', 'be32'],
  [12, 'protection', 'u8'],
  [13, 'exponents', 'u8'], // logical blocks per physical block exponent
  [14, 'lbp_lowest_aligned', 'be16'], // bit 15 LBPME, bit 14 LBPRZ, 13-0 lowest aligned LBA
  [16, 'reserved', { bytes: 16 }],
] as const);
export const RC16_LBPME = 0x8000;
export const RC16_LBPRZ = 0x4000;

export const report_luns_cdb = defineBeStruct('report_luns_cdb', 12, [
  [0, 'opcode', 'u8'],
  [1, 'reserved', 'u8'],
  [2, 'select_report', 'u8'],
  [3, 'reserved2', { bytes: 3 }],
  [6, 'allocation_length', 'be32'],
  [10, 'reserved3', 'u8'],
  [11, 'control', 'u8'],
] as const);

export const request_sense_cdb = defineBeStruct('request_sense_cdb', 6, [
  [0, 'opcode', 'u8'],
  [1, 'flags', 'u8'], // bit 0: DESC
  [2, 'reserved', 'be16'],
  [4, 'allocation_length', 'u8'],
  [5, 'control', 'u8'],
] as const);

export const unmap_cdb = defineBeStruct('unmap_cdb', 10, [
  [0, 'opcode', 'u8'],
  [1, 'flags', 'u8'],
  [2, 'reserved', 'be32'],
  [6, 'group', 'u8'],
  [7, 'parameter_list_length', 'be16'],
  [9, 'control', 'u8'],
] as const);

export const unmap_parameter_header = defineBeStruct('unmap_parameter_header', 8, [
  [0, 'data_length', 'be16'],
  [2, 'block_descriptor_data_length', 'be16'],
  [4, 'reserved', 'be32'],
] as const);

export const unmap_block_descriptor = defineBeStruct('unmap_block_descriptor', 16, [
  [0, 'lba', 'be64'],
  [8, 'count', 'be32'],
  [12, 'reserved', 'be32'],
] as const);

/** Block Limits VPD page (0xB0), SBC-3 6.6.4: 64 bytes. */
export const block_limits_vpd = defineBeStruct('block_limits_vpd', 64, [
  [0, 'device_type', 'u8'],
  [1, 'page_code', 'u8'],
  [2, 'page_length', 'be16'],
  [4, 'wsnz', 'u8'],
  [5, 'max_compare_and_write', 'u8'],
  [6, 'optimal_transfer_granularity', 'be16'],
  [8, 'max_transfer_length', 'be32'],
  [12, 'optimal_transfer_length', 'be32'],
  [16, 'max_prefetch_length', 'be32'],
  [20, 'max_unmap_lba_count', 'be32'],
  [24, 'max_unmap_descriptor_count', 'be32'],
  [28, 'optimal_unmap_granularity', 'be32'],
  [32, 'unmap_granularity_alignment', 'be32'],
  [36, 'max_write_same_length', 'be64'],
  [44, 'reserved', { bytes: 20 }],
] as const);

/** Logical Block Provisioning VPD page (0xB2), SBC-3: 8 bytes. */
export const logical_block_provisioning_vpd = defineBeStruct('logical_block_provisioning_vpd', 8, [
  [0, 'device_type', 'u8'],
  [1, 'page_code', 'u8'],
  [2, 'page_length', 'be16'],
  [4, 'threshold_exponent', 'u8'],
  [5, 'flags', 'u8'], // LBPU 0x80, LBPWS 0x40, LBPWS10 0x20, LBPRZ 0x04
  [6, 'provisioning_type', 'u8'],
  [7, 'reserved', 'u8'],
] as const);
export const LBP_LBPU = 0x80;
export const LBP_LBPWS = 0x40;
export const LBP_LBPWS10 = 0x20;
export const LBP_LBPRZ = 0x04;
export const PROVISIONING_THIN = 0x02;

/** Block Device Characteristics VPD page (0xB1): 64 bytes. */
export const block_device_characteristics_vpd = defineBeStruct('block_device_characteristics_vpd', 64, [
  [0, 'device_type', 'u8'],
  [1, 'page_code', 'u8'],
  [2, 'page_length', 'be16'],
  [4, 'medium_rotation_rate', 'be16'], // 1: non-rotating
  [6, 'product_type', 'u8'],
  [7, 'form_factor', 'u8'],
  [8, 'reserved', { bytes: 56 }],
] as const);

/** Standard INQUIRY data, the first 36 bytes (SPC-4 6.4.2). */
export const standard_inquiry = defineBeStruct('standard_inquiry', 36, [
  [0, 'peripheral', 'u8'], // qualifier (3 bits) | device type (5 bits)
  [1, 'rmb', 'u8'],
  [2, 'version', 'u8'],
  [3, 'response_format', 'u8'], // HISUP 0x10 | format 2
  [4, 'additional_length', 'u8'],
  [5, 'flags5', 'u8'],
  [6, 'flags6', 'u8'],
  [7, 'flags7', 'u8'], // CMDQUE 0x02
  [8, 'vendor', { bytes: 8 }],
  [16, 'product', { bytes: 16 }],
  [32, 'revision', { bytes: 4 }],
] as const);
export const TYPE_DISK = 0x00;
/** Peripheral qualifier 3, type 0x1f: no logical unit here (INQUIRY to a LUN that does not exist). */
export const PERIPHERAL_NO_LUN = 0x7f;
export const INQUIRY_CMDQUE = 0x02;
/** SPC-3: Linux's storvsc claims SPC-3 for Msft disks on Win8 hosts anyway. */
export const INQUIRY_VERSION_SPC3 = 0x05;
