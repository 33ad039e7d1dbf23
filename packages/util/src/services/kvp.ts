/**
 * Key-value pair exchange: the host reads and writes the guest's pools (get, set, delete,
 * enumerate), one transaction at a time. Keys and values travel as UTF-16LE with a NUL, sizes
 * in bytes including it (hv_kvp_exchg_msg_value).
 */
import { HostUsageError, type Logger } from '@hvemu/common';
import {
  HV_KVP_EXCHANGE_MAX_KEY_SIZE,
  HV_KVP_EXCHANGE_MAX_VALUE_SIZE,
  HV_KVP_MSG_SIZE,
  HV_S_OK,
  hv_kvp_exchg_msg_value,
  hv_kvp_hdr,
  hv_kvp_msg_delete,
  ICMSGTYPE_KVPEXCHANGE,
  KVP_OP_DELETE,
  KVP_OP_ENUMERATE,
  KVP_OP_GET,
  KVP_OP_SET,
  REG_SZ,
  REG_U32,
  REG_U64,
  KVP_POOL_COUNT,
} from '../protocol.js';
import { IcHostService, type IcTransport } from '../service.js';
import { padTo } from './heartbeat.js';

export const KVP_VERSIONS = {
  frameworks: [
    { major: 1, minor: 0 },
    { major: 3, minor: 0 },
  ],
  services: [
    { major: 3, minor: 0 },
    { major: 4, minor: 0 },
    { major: 5, minor: 0 },
  ],
};

export type KvpValue = string | { u32: number } | { u64: bigint };

export interface KvpRecord {
  key: string;
  value: KvpValue;
}

export interface KvpResult {
  status: number;
  record: KvpRecord | null;
}

export function encodeUtf16z(text: string, max: number): { bytes: Uint8Array; size: number } {
  if (typeof text !== 'string') throw new HostUsageError(`KVP keys and values are strings, got ${typeof text}`);
  const size = (text.length + 1) * 2;
  if (size > max) throw new HostUsageError(`"${text.slice(0, 20)}..." is ${size} bytes as UTF-16, max ${max}`);
  const bytes = new Uint8Array(max);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    bytes[2 * i] = c & 0xff;
    bytes[2 * i + 1] = c >> 8;
  }
  return { bytes, size };
}

export function decodeUtf16z(bytes: Uint8Array, size: number): string {
  const n = Math.min(size, bytes.length) >>> 1;
  let out = '';
  for (let i = 0; i < n; i++) {
    const c = bytes[2 * i] | (bytes[2 * i + 1] << 8);
    if (c === 0) break;
    out += String.fromCharCode(c);
  }
  return out;
}

/** Encodes a record as hv_kvp_exchg_msg_value. */
export function encodeKvpRecord(record: KvpRecord): Uint8Array {
  const key = encodeUtf16z(record.key, HV_KVP_EXCHANGE_MAX_KEY_SIZE);
  let valueType: number;
  let value: Uint8Array;
  let valueSize: number;
  if (typeof record.value === 'string') {
    const v = encodeUtf16z(record.value, HV_KVP_EXCHANGE_MAX_VALUE_SIZE);
    [valueType, value, valueSize] = [REG_SZ, v.bytes, v.size];
  } else {
    value = new Uint8Array(HV_KVP_EXCHANGE_MAX_VALUE_SIZE);
    const dv = new DataView(value.buffer);
    const v: unknown = record.value;
    if (
      typeof v === 'object' &&
      v !== null &&
      'u32' in v &&
      Number.isInteger(v.u32) &&
      (v.u32 as number) >= 0 &&
      (v.u32 as number) <= 0xffff_ffff
    ) {
      dv.setUint32(0, v.u32 as number, true);
      [valueType, valueSize] = [REG_U32, 4];
    } else if (typeof v === 'object' && v !== null && 'u64' in v && typeof v.u64 === 'bigint' && v.u64 >= 0n && v.u64 < 1n << 64n) {
      dv.setBigUint64(0, v.u64, true);
      [valueType, valueSize] = [REG_U64, 8];
    } else {
      throw new HostUsageError('a KVP value is a string, { u32: number in [0, 2^32) } or { u64: bigint in [0, 2^64) }');
    }
  }
  return hv_kvp_exchg_msg_value.encodeNew({ value_type: valueType, key_size: key.size, value_size: valueSize, key: key.bytes, value });
}

export function decodeKvpRecord(bytes: Uint8Array): KvpRecord {
  const r = hv_kvp_exchg_msg_value.decode(padTo(bytes, hv_kvp_exchg_msg_value.size));
  const key = decodeUtf16z(r.key, r.key_size);
  const dv = new DataView(r.value.buffer, r.value.byteOffset, r.value.byteLength);
  const value: KvpValue =
    r.value_type === REG_U32
      ? { u32: dv.getUint32(0, true) }
      : r.value_type === REG_U64
        ? { u64: dv.getBigUint64(0, true) }
        : decodeUtf16z(r.value, r.value_size);
  return { key, value };
}

/** A full hv_kvp_msg body: header, then `body` at offset 4. */
function kvpMessage(operation: number, pool: number, body: Uint8Array): Uint8Array {
  if (!Number.isInteger(pool) || pool < 0 || pool >= KVP_POOL_COUNT) {
    throw new HostUsageError(
      `KVP pool ${String(pool)} is not one of the ${KVP_POOL_COUNT} pools (KVP_POOL_EXTERNAL .. KVP_POOL_AUTO_INTERNAL)`,
    );
  }
  const msg = new Uint8Array(HV_KVP_MSG_SIZE);
  hv_kvp_hdr.encode({ operation, pool }, msg, 0);
  msg.set(body, hv_kvp_hdr.size);
  return msg;
}

export class KvpService extends IcHostService {
  private readonly waiting: ((r: KvpResult | null) => void)[] = [];

  constructor(transport: IcTransport, logger?: Logger) {
    super('kvp', ICMSGTYPE_KVPEXCHANGE, KVP_VERSIONS, transport, logger);
  }

  set(pool: number, record: KvpRecord): Promise<KvpResult | null> {
    return this.transact(kvpMessage(KVP_OP_SET, pool, encodeKvpRecord(record)), false);
  }

  get(pool: number, key: string): Promise<KvpResult | null> {
    return this.transact(kvpMessage(KVP_OP_GET, pool, encodeKvpRecord({ key, value: '' })), true);
  }

  delete(pool: number, key: string): Promise<KvpResult | null> {
    const k = encodeUtf16z(key, HV_KVP_EXCHANGE_MAX_KEY_SIZE);
    return this.transact(kvpMessage(KVP_OP_DELETE, pool, hv_kvp_msg_delete.encodeNew({ key_size: k.size, key: k.bytes })), false);
  }

  /** The record at `index` of `pool`; a non-zero status (HV_S_CONT / E_FAIL) past the end. */
  enumerate(pool: number, index: number): Promise<KvpResult | null> {
    if (!Number.isInteger(index) || index < 0 || index > 0xffff_ffff)
      throw new HostUsageError(`KVP enumerate index ${String(index)} is not a u32`);
    const body = new Uint8Array(4 + hv_kvp_exchg_msg_value.size);
    new DataView(body.buffer).setUint32(0, index, true);
    return this.transact(kvpMessage(KVP_OP_ENUMERATE, pool, body), true, 4);
  }

  /** Every record of `pool`, enumerating until the guest says there are no more. */
  async list(pool: number, limit = 1024): Promise<KvpRecord[]> {
    if (!Number.isInteger(limit) || limit < 0) throw new HostUsageError(`KVP list limit ${String(limit)} is not a non-negative integer`);
    const out: KvpRecord[] = [];
    for (let i = 0; i < limit; i++) {
      const r = await this.enumerate(pool, i);
      if (!r || r.status !== HV_S_OK || !r.record) break;
      out.push(r.record);
    }
    return out;
  }

  private transact(body: Uint8Array, wantsRecord: boolean, recordOffset = 0): Promise<KvpResult | null> {
    return new Promise((resolve) => {
      const sent = this.request(body, (header, answer) => {
        this.waiting.shift();
        const ok = header.status === HV_S_OK;
        const recordBytes = answer.subarray(hv_kvp_hdr.size + recordOffset);
        resolve({ status: header.status, record: ok && wantsRecord ? decodeKvpRecord(recordBytes) : null });
      });
      if (!sent) resolve(null);
      else this.waiting.push(resolve);
    });
  }

  protected override abandon(): void {
    this.waiting.shift()?.(null);
  }
}
