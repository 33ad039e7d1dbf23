/**
 * A SCSI direct-access block device (SBC-3) over a DiskBackend: the commands Linux sd and
 * Windows disk.sys use, each a small handler in one table. Every CDB field comes from the
 * guest: a command this disk does not serve is CHECK CONDITION / ILLEGAL REQUEST / INVALID
 * COMMAND OPERATION CODE, a bad field INVALID FIELD IN CDB, an LBA range past the end LBA OUT OF
 * RANGE, a write to a read-only disk DATA PROTECT / WRITE PROTECTED; a data buffer that cannot
 * hold the transfer (or flows the wrong way) is an invalid request (the SRB layer's error, not
 * a SCSI one). `execute` never rejects for anything the guest sent.
 */
import { silentLogger, type Logger } from '@hvemu/common';
import { BackendIoError, type DiskBackend } from '../backend/backend.js';
import * as C from './cdb.js';

/** The guest's data buffer for one command (GuestData fits). */
export interface DataBuffer {
  readonly length: number;
  read(offset: number, target: Uint8Array, targetOffset?: number, length?: number): void;
  write(offset: number, source: Uint8Array, sourceOffset?: number, length?: number): void;
  /**
   * Optional: zero-copy views of `[offset, offset + length)` in order (GuestData.views), for a
   * backend's synchronous fast path; used within one synchronous call only, never kept.
   */
  views?(offset: number, length: number): Uint8Array[];
}

/** Which way the guest said the data flows (SRB data_in). */
export type DataDirection = 'in' | 'out' | 'none';

export interface ScsiCommand {
  /** The CDB, exactly cdb_length bytes. */
  readonly cdb: Uint8Array;
  /** The guest's buffer: `length` is the SRB's data_transfer_length. */
  readonly data: DataBuffer;
  readonly direction: DataDirection;
}

export interface ScsiResult {
  /** SAM status (GOOD or CHECK CONDITION). */
  readonly status: number;
  /** Fixed-format sense data with CHECK CONDITION. */
  readonly sense: Uint8Array | null;
  /** Bytes moved to or from the data buffer. */
  readonly transferred: number;
  /** Set when the request itself is malformed at the SRB level (buffer vs CDB): why. */
  readonly invalidRequest?: string;
}

export interface ScsiDiskOptions {
  /** Logical block size: 512 (default) or 4096. */
  sectorSize?: 512 | 4096;
  /** Refuse writes with DATA PROTECT (also when the backend is read-only). */
  readOnly?: boolean;
  /** Unit serial number (VPD 0x80) and the base of the device identifier (VPD 0x83). */
  serial?: string;
  /** Largest single transfer, bytes (Block Limits' maximum transfer length). Default 2 MiB. */
  maxTransferBytes?: number;
  logger?: Logger;
}

export const GOOD: ScsiResult = Object.freeze({ status: C.SAM_STAT_GOOD, sense: null, transferred: 0 });

export function checkCondition(key: number, code: C.Asc): ScsiResult {
  return { status: C.SAM_STAT_CHECK_CONDITION, sense: C.senseData(key, code), transferred: 0 };
}

export function illegalRequest(code: C.Asc): ScsiResult {
  return checkCondition(C.ILLEGAL_REQUEST, code);
}

function invalidRequest(why: string): ScsiResult {
  return { status: C.SAM_STAT_GOOD, sense: null, transferred: 0, invalidRequest: why };
}

/** Sends `bytes` (a response) to the guest, cut to the allocation length and the buffer. */
export function dataIn(cmd: ScsiCommand, bytes: Uint8Array, allocationLength: number): ScsiResult {
  const n = Math.min(bytes.length, allocationLength, cmd.data.length);
  if (n === 0) return GOOD;
  if (cmd.direction !== 'in') return invalidRequest(`data flows ${cmd.direction} for a data-in command`);
  cmd.data.write(0, bytes, 0, n);
  return { ...GOOD, transferred: n };
}

const WRITE_PROTECTED = (): ScsiResult => checkCondition(C.DATA_PROTECT, C.ASC_WRITE_PROTECTED);
/** WRITE SAME writes at most this many bytes per call, and this many blocks in all (Block Limits). */
const WRITE_SAME_CHUNK = 1 << 20;
const MAX_WRITE_SAME_BYTES = 1 << 30;
const MAX_UNMAP_DESCRIPTORS = 256;
const VENDOR = 'Msft';
const PRODUCT = 'Virtual Disk';
const REVISION = '1.0';
/** Microsoft's IEEE OUI (00-03-FF), as Hyper-V's NAA identifiers carry it. */
const MSFT_OUI = 0x0003ff;

type Handler = (disk: ScsiDisk, cmd: ScsiCommand) => Promise<ScsiResult> | ScsiResult;

export class ScsiDisk {
  readonly sectorSize: 512 | 4096;
  readonly sectorCount: number;
  readonly readOnly: boolean;
  readonly serial: string;
  readonly maxTransferBytes: number;
  private readonly logger: Logger;

  constructor(
    readonly backend: DiskBackend,
    options: ScsiDiskOptions = {},
  ) {
    this.sectorSize = options.sectorSize ?? 512;
    if (this.sectorSize !== 512 && this.sectorSize !== 4096) throw new RangeError(`sector size ${String(this.sectorSize)}: 512 or 4096`);
    this.sectorCount = Math.floor(backend.byteLength / this.sectorSize);
    this.readOnly = (options.readOnly ?? false) || backend.readOnly;
    this.serial = (options.serial ?? 'hvemu-disk').slice(0, 32);
    this.maxTransferBytes = options.maxTransferBytes ?? 2 << 20;
    this.logger = options.logger ?? silentLogger;
  }

  /** Runs one command. Never rejects for guest input; backend failures are MEDIUM ERROR. */
  async execute(cmd: ScsiCommand): Promise<ScsiResult> {
    const handler = HANDLERS.get(cmd.cdb[0]);
    if (!handler) return illegalRequest(C.ASC_INVALID_COMMAND_OPERATION_CODE);
    if (cmd.cdb.length < C.cdbLengthOf(cmd.cdb[0]))
      return invalidRequest(`a ${cmd.cdb.length}-byte CDB for opcode 0x${cmd.cdb[0].toString(16)}`);
    try {
      return await handler(this, cmd);
    } catch (error) {
      if (!(error instanceof BackendIoError)) throw error;
      this.logger.error('scsi disk: backend I/O failed', { opcode: cmd.cdb[0], error: error.message });
      const write = isWrite(cmd.cdb[0]);
      return checkCondition(C.MEDIUM_ERROR, write ? C.ASC_WRITE_ERROR : C.ASC_UNRECOVERED_READ_ERROR);
    }
  }

  // ---- block I/O

  /** Checks an LBA range from a CDB; the byte offset and length, or the result that refuses it. */
  blockRange(lba: bigint | number, blocks: number): { offset: number; bytes: number } | ScsiResult {
    // Numbers, not bigints, on the hot path: an LBA past 2^53 is past any disk anyway.
    const first = typeof lba === 'bigint' ? (lba > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(lba)) : lba;
    if (!(first + blocks <= this.sectorCount)) return illegalRequest(C.ASC_LBA_OUT_OF_RANGE);
    return { offset: first * this.sectorSize, bytes: blocks * this.sectorSize };
  }

  async readBlocks(cmd: ScsiCommand, lba: bigint | number, blocks: number): Promise<ScsiResult> {
    const range = this.blockRange(lba, blocks);
    if (!('offset' in range)) return range;
    const refused = this.checkTransfer(cmd, range.bytes, 'in');
    if (refused) return refused;
    if (range.bytes === 0) return GOOD;
    // Data already in the host's page cache goes straight into the request's pages, on this
    // thread, without blocking (a synchronous call: no lease can be revoked meanwhile).
    const cached = this.readCachedInto(cmd.data, range.offset, range.bytes);
    if (cached === range.bytes) return { ...GOOD, transferred: range.bytes };
    // The rest through a bounce buffer, not a view of guest RAM: the backend's thread never
    // writes guest pages, and the copy into them is checked against the request's pages (and
    // revoked at a close).
    const bounce = new Uint8Array(range.bytes - cached);
    await this.backend.read(range.offset + cached, bounce);
    cmd.data.write(cached, bounce);
    return { ...GOOD, transferred: range.bytes };
  }

  /** Bytes of `[offset, +bytes)` the backend filled from its cache into `data`'s pages (0 when it has no fast path). */
  private readCachedInto(data: DataBuffer, offset: number, bytes: number): number {
    if (!this.backend.readCached || !data.views) return 0;
    return this.backend.readCached(offset, data.views(0, bytes));
  }

  async writeBlocks(cmd: ScsiCommand, lba: bigint | number, blocks: number, fua: boolean): Promise<ScsiResult> {
    if (this.readOnly) return WRITE_PROTECTED();
    const range = this.blockRange(lba, blocks);
    if (!('offset' in range)) return range;
    const refused = this.checkTransfer(cmd, range.bytes, 'out');
    if (refused) return refused;
    if (range.bytes === 0) return GOOD;
    // A copy taken now: what is written is what the guest's pages held when the request arrived.
    const copy = new Uint8Array(range.bytes);
    cmd.data.read(0, copy);
    await this.backend.write(range.offset, copy, { fua });
    return { ...GOOD, transferred: range.bytes };
  }

  /** Refuses a transfer over the limit (INVALID FIELD IN CDB) or that the buffer cannot carry (invalid request). */
  checkTransfer(cmd: ScsiCommand, bytes: number, direction: DataDirection): ScsiResult | null {
    if (bytes > this.maxTransferBytes) return illegalRequest(C.ASC_INVALID_FIELD_IN_CDB);
    if (bytes === 0) return null;
    if (cmd.direction !== direction) return invalidRequest(`data flows ${cmd.direction}, the CDB moves data ${direction}`);
    if (cmd.data.length < bytes) return invalidRequest(`a ${cmd.data.length}-byte buffer for a ${bytes}-byte transfer`);
    return null;
  }

  // ---- identity

  standardInquiry(): Uint8Array {
    return C.standard_inquiry.encodeNew({
      peripheral: C.TYPE_DISK,
      version: C.INQUIRY_VERSION_SPC3,
      response_format: 0x12, // HISUP | format 2
      additional_length: C.standard_inquiry.size - 5,
      flags7: C.INQUIRY_CMDQUE,
      vendor: ascii(VENDOR, 8),
      product: ascii(PRODUCT, 16),
      revision: ascii(REVISION, 4),
    });
  }

  vpdPage(page: number): Uint8Array | null {
    switch (page) {
      case 0x00:
        return vpd(0x00, Uint8Array.from(VPD_PAGES));
      case 0x80:
        return vpd(0x80, ascii(this.serial, this.serial.length));
      case 0x83:
        return vpd(0x83, this.deviceIdentifiers());
      case 0xb0:
        return C.block_limits_vpd.encodeNew({
          page_code: 0xb0,
          page_length: C.block_limits_vpd.size - 4,
          wsnz: 1, // WRITE SAME with 0 blocks is refused (it would mean "to the end of the disk")
          max_transfer_length: Math.floor(this.maxTransferBytes / this.sectorSize),
          optimal_transfer_granularity: Math.max(1, 4096 / this.sectorSize),
          max_unmap_lba_count: 0xffffffff,
          max_unmap_descriptor_count: MAX_UNMAP_DESCRIPTORS,
          optimal_unmap_granularity: Math.max(1, 4096 / this.sectorSize),
          max_write_same_length: BigInt(MAX_WRITE_SAME_BYTES / this.sectorSize),
        });
      case 0xb1:
        return C.block_device_characteristics_vpd.encodeNew({
          page_code: 0xb1,
          page_length: C.block_device_characteristics_vpd.size - 4,
          medium_rotation_rate: 1,
        });
      case 0xb2:
        return C.logical_block_provisioning_vpd.encodeNew({
          page_code: 0xb2,
          page_length: 4,
          flags: C.LBP_LBPU | C.LBP_LBPWS | C.LBP_LBPWS10 | C.LBP_LBPRZ,
          provisioning_type: C.PROVISIONING_THIN,
        });
      default:
        return null;
    }
  }

  /** VPD 0x83: an NAA IEEE Registered designator (from the serial) and a T10 vendor designator. */
  private deviceIdentifiers(): Uint8Array {
    const naa = new Uint8Array(12);
    naa.set([0x01, 0x03, 0x00, 0x08]); // binary, LU association, NAA, 8 bytes
    const id = (BigInt(0x5) << 60n) | (BigInt(MSFT_OUI) << 36n) | (fnv1a(this.serial) & 0xf_ffff_ffffn);
    new DataView(naa.buffer).setBigUint64(4, id, false);
    const t10Id = ascii(`${VENDOR.padEnd(8)}${this.serial}`, 8 + this.serial.length);
    const t10 = new Uint8Array(4 + t10Id.length);
    t10.set([0x02, 0x01, 0x00, t10Id.length]); // ASCII, LU association, T10 vendor ID
    t10.set(t10Id, 4);
    return concat(naa, t10);
  }
}

/** The VPD pages this disk serves (VPD 0x00 lists them). */
const VPD_PAGES = [0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2];

function vpd(page: number, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + body.length);
  out[1] = page;
  out[2] = body.length >> 8;
  out[3] = body.length & 0xff;
  out.set(body, 4);
  return out;
}

function ascii(text: string, length: number): Uint8Array {
  const out = new Uint8Array(length).fill(0x20);
  for (let i = 0; i < Math.min(length, text.length); i++) out[i] = text.charCodeAt(i) & 0x7f;
  return out;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A stable 64-bit hash of the serial, for the NAA identifier's vendor-specific bits. */
function fnv1a(text: string): bigint {
  let h = 0xcbf29ce484222325n;
  for (let i = 0; i < text.length; i++) h = ((h ^ BigInt(text.charCodeAt(i))) * 0x100000001b3n) & 0xffff_ffff_ffff_ffffn;
  return h;
}

function isWrite(opcode: number): boolean {
  return [
    C.WRITE_6,
    C.WRITE_10,
    C.WRITE_12,
    C.WRITE_16,
    C.WRITE_SAME_10,
    C.WRITE_SAME_16,
    C.UNMAP,
    C.SYNCHRONIZE_CACHE_10,
    C.SYNCHRONIZE_CACHE_16,
  ].includes(opcode);
}

// ---- the command handlers

function rw6(write: boolean): Handler {
  return (disk, cmd) => {
    const f = C.read_write_6.decode(cmd.cdb);
    const lba = f.lba & 0x1f_ffff;
    const blocks = f.transfer_length === 0 ? 256 : f.transfer_length;
    return write ? disk.writeBlocks(cmd, lba, blocks, false) : disk.readBlocks(cmd, lba, blocks);
  };
}

function rw(layout: typeof C.read_write_10 | typeof C.read_write_12 | typeof C.read_write_16, write: boolean): Handler {
  // The hot path: fields read by the layout's offsets, no decoded object per command.
  const o = layout.offsetOf;
  const lba64 = layout === C.read_write_16;
  const length32 = layout !== C.read_write_10;
  return (disk, cmd) => {
    const b = cmd.cdb;
    const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    const lba = lba64 ? dv.getBigUint64(o.lba, false) : dv.getUint32(o.lba, false);
    const blocks = length32 ? dv.getUint32(o.transfer_length, false) : dv.getUint16(o.transfer_length, false);
    const fua = (b[o.flags] & C.CDB_FUA) !== 0;
    return write ? disk.writeBlocks(cmd, lba, blocks, fua) : disk.readBlocks(cmd, lba, blocks);
  };
}

function synchronizeCache(layout: typeof C.sync_cache_10 | typeof C.sync_cache_16): Handler {
  return async (disk, cmd) => {
    const f = layout.decode(cmd.cdb);
    // 0 blocks means "to the end of the disk"; the whole cache is flushed either way.
    const range = disk.blockRange(f.lba, f.transfer_length);
    if (!('offset' in range)) return range;
    await disk.backend.flush();
    return GOOD;
  };
}

function writeSame(layout: typeof C.write_same_10 | typeof C.write_same_16, sixteen: boolean): Handler {
  return async (disk, cmd) => {
    const f = layout.decode(cmd.cdb);
    const unmap = (f.flags & C.WRITE_SAME_UNMAP) !== 0;
    const ndob = sixteen && (f.flags & C.WRITE_SAME_NDOB) !== 0;
    const blocks = f.transfer_length;
    if (blocks === 0 || blocks * disk.sectorSize > MAX_WRITE_SAME_BYTES) return illegalRequest(C.ASC_INVALID_FIELD_IN_CDB);
    if (disk.readOnly) return WRITE_PROTECTED();
    const range = disk.blockRange(f.lba, blocks);
    if (!('offset' in range)) return range;
    const block = new Uint8Array(disk.sectorSize);
    if (!ndob) {
      const refused = disk.checkTransfer(cmd, disk.sectorSize, 'out');
      if (refused) return refused;
      cmd.data.read(0, block, 0, disk.sectorSize);
    }
    const transferred = ndob ? 0 : disk.sectorSize;
    // Unmapped blocks read back as zeros (LBPRZ), so UNMAP may replace writing a zero block.
    if (block.every((b) => b === 0) && unmap) {
      await disk.backend.unmap(range.offset, range.bytes);
      return { ...GOOD, transferred };
    }
    const chunk = new Uint8Array(Math.min(range.bytes, Math.max(disk.sectorSize, WRITE_SAME_CHUNK - (WRITE_SAME_CHUNK % disk.sectorSize))));
    for (let at = 0; at < chunk.length; at += disk.sectorSize) chunk.set(block, at);
    for (let done = 0; done < range.bytes; done += chunk.length) {
      await disk.backend.write(range.offset + done, chunk.subarray(0, Math.min(chunk.length, range.bytes - done)));
    }
    return { ...GOOD, transferred };
  };
}

const unmapHandler: Handler = async (disk, cmd) => {
  const listLength = C.unmap_cdb.decode(cmd.cdb).parameter_list_length;
  if (listLength === 0) return GOOD;
  if (disk.readOnly) return WRITE_PROTECTED();
  const refused = disk.checkTransfer(cmd, listLength, 'out');
  if (refused) return refused;
  if (listLength < C.unmap_parameter_header.size) return illegalRequest(C.ASC_PARAMETER_LIST_LENGTH_ERROR);
  const list = new Uint8Array(listLength);
  cmd.data.read(0, list);
  const header = C.unmap_parameter_header.decode(list);
  const descriptorBytes = Math.min(header.block_descriptor_data_length, listLength - C.unmap_parameter_header.size);
  const count = Math.floor(descriptorBytes / C.unmap_block_descriptor.size);
  if (count > MAX_UNMAP_DESCRIPTORS) return illegalRequest(C.ASC_INVALID_FIELD_IN_PARAMETER_LIST);
  // Every descriptor is checked before any is carried out: a bad one unmaps nothing.
  const ranges: { offset: number; bytes: number }[] = [];
  for (let i = 0; i < count; i++) {
    const d = C.unmap_block_descriptor.decode(list, C.unmap_parameter_header.size + i * C.unmap_block_descriptor.size);
    const range = disk.blockRange(d.lba, d.count);
    if (!('offset' in range)) return range;
    ranges.push(range);
  }
  for (const r of ranges) if (r.bytes > 0) await disk.backend.unmap(r.offset, r.bytes);
  return { ...GOOD, transferred: listLength };
};

const inquiry: Handler = (disk, cmd) => {
  const f = C.inquiry_cdb.decode(cmd.cdb);
  if ((f.flags & C.INQUIRY_EVPD) === 0) {
    if (f.page_code !== 0) return illegalRequest(C.ASC_INVALID_FIELD_IN_CDB);
    return dataIn(cmd, disk.standardInquiry(), f.allocation_length);
  }
  const page = disk.vpdPage(f.page_code);
  return page ? dataIn(cmd, page, f.allocation_length) : illegalRequest(C.ASC_INVALID_FIELD_IN_CDB);
};

function modeSense(ten: boolean): Handler {
  return (disk, cmd) => {
    const f = ten ? C.mode_sense_10_cdb.decode(cmd.cdb) : C.mode_sense_6_cdb.decode(cmd.cdb);
    const pageControl = f.page >> 6;
    const pageCode = f.page & 0x3f;
    if (pageControl === 3) return illegalRequest(C.ASC_SAVING_PARAMETERS_NOT_SUPPORTED);
    if (f.subpage !== 0 && f.subpage !== 0xff) return illegalRequest(C.ASC_INVALID_FIELD_IN_CDB);
    const pages = modePages(pageCode, pageControl === 1);
    if (!pages) return illegalRequest(C.ASC_INVALID_FIELD_IN_CDB);
    const dbd = (f.flags & C.MODE_SENSE_DBD) !== 0;
    const long = ten && (f.flags & C.MODE_SENSE_LLBAA) !== 0;
    const descriptor = dbd ? new Uint8Array(0) : blockDescriptor(disk, long);
    const deviceSpecific = (disk.readOnly ? C.MODE_DSP_WP : 0) | C.MODE_DSP_DPOFUA;
    const header = ten ? new Uint8Array(8) : new Uint8Array(4);
    const total = header.length + descriptor.length + pages.length;
    if (ten) {
      header[0] = (total - 2) >> 8;
      header[1] = (total - 2) & 0xff;
      header[3] = deviceSpecific;
      header[4] = long ? 1 : 0;
      header[7] = descriptor.length;
    } else {
      header[0] = total - 1;
      header[2] = deviceSpecific;
      header[3] = descriptor.length;
    }
    return dataIn(cmd, concat(header, descriptor, pages), f.allocation_length);
  };
}

/** The mode pages for `code` (caching, control, or all), or null for a page this disk lacks. */
function modePages(code: number, changeable: boolean): Uint8Array | null {
  const caching = new Uint8Array(20);
  caching[0] = C.MODE_PAGE_CACHING;
  caching[1] = 18;
  // WCE: writes may sit in the host's page cache until SYNCHRONIZE CACHE or FUA (both honoured).
  if (!changeable) caching[2] = 0x04;
  const control = new Uint8Array(12);
  control[0] = C.MODE_PAGE_CONTROL;
  control[1] = 10;
  if (code === C.MODE_PAGE_CACHING) return caching;
  if (code === C.MODE_PAGE_CONTROL) return control;
  if (code === C.MODE_PAGE_ALL) return concat(caching, control);
  return null;
}

function blockDescriptor(disk: ScsiDisk, long: boolean): Uint8Array {
  if (long) {
    const d = new Uint8Array(16);
    const dv = new DataView(d.buffer);
    dv.setBigUint64(0, BigInt(disk.sectorCount), false);
    dv.setUint32(12, disk.sectorSize, false);
    return d;
  }
  const d = new Uint8Array(8);
  const blocks = Math.min(disk.sectorCount, 0xffffff);
  d.set([0, blocks >> 16, (blocks >> 8) & 0xff, blocks & 0xff, 0, 0, disk.sectorSize >> 8, 0]);
  return d;
}

const readCapacity10: Handler = (disk, cmd) => {
  const last = Math.min(disk.sectorCount - 1, 0xffffffff);
  return dataIn(cmd, C.read_capacity_10_data.encodeNew({ last_lba: Math.max(0, last), block_length: disk.sectorSize }), 8);
};

const serviceActionIn: Handler = (disk, cmd) => {
  const f = C.read_capacity_16_cdb.decode(cmd.cdb);
  if ((f.service_action & 0x1f) !== C.SAI_READ_CAPACITY_16) return illegalRequest(C.ASC_INVALID_FIELD_IN_CDB);
  const data = C.read_capacity_16_data.encodeNew({
    last_lba: BigInt(Math.max(0, disk.sectorCount - 1)),
    block_length: disk.sectorSize,
    lbp_lowest_aligned: C.RC16_LBPME | C.RC16_LBPRZ,
  });
  return dataIn(cmd, data, f.allocation_length);
};

const requestSense: Handler = (disk, cmd) => {
  const f = C.request_sense_cdb.decode(cmd.cdb);
  // Descriptor-format sense is not supported; every error was reported with autosense already.
  if (f.flags & 0x01) return illegalRequest(C.ASC_INVALID_FIELD_IN_CDB);
  return dataIn(cmd, C.senseData(C.NO_SENSE, C.ASC_NONE), f.allocation_length);
};

const HANDLERS: ReadonlyMap<number, Handler> = new Map<number, Handler>([
  [C.TEST_UNIT_READY, () => GOOD],
  [C.START_STOP_UNIT, () => GOOD],
  [C.REQUEST_SENSE, requestSense],
  [C.INQUIRY, inquiry],
  [C.MODE_SENSE_6, modeSense(false)],
  [C.MODE_SENSE_10, modeSense(true)],
  [C.READ_CAPACITY_10, readCapacity10],
  [C.SERVICE_ACTION_IN_16, serviceActionIn],
  [C.READ_6, rw6(false)],
  [C.WRITE_6, rw6(true)],
  [C.READ_10, rw(C.read_write_10, false)],
  [C.WRITE_10, rw(C.read_write_10, true)],
  [C.READ_12, rw(C.read_write_12, false)],
  [C.WRITE_12, rw(C.read_write_12, true)],
  [C.READ_16, rw(C.read_write_16, false)],
  [C.WRITE_16, rw(C.read_write_16, true)],
  [C.SYNCHRONIZE_CACHE_10, synchronizeCache(C.sync_cache_10)],
  [C.SYNCHRONIZE_CACHE_16, synchronizeCache(C.sync_cache_16)],
  [C.WRITE_SAME_10, writeSame(C.write_same_10, false)],
  [C.WRITE_SAME_16, writeSame(C.write_same_16, true)],
  [C.UNMAP, unmapHandler],
]);

/** The operation codes a ScsiDisk serves. */
export const SUPPORTED_OPCODES: readonly number[] = [...HANDLERS.keys()];
