/**
 * The guest end of the ICs as Linux hv_utils implements it, for the simulated partition,
 * tests and replay: negotiation (its own preference order), heartbeat (sequence + 1),
 * shutdown (answers S_OK, E_FAIL for hibernate when unsupported, records the request),
 * timesync (records samples), KVP (pools in memory). Every answer reuses the request's buffer
 * and length with icflags TRANSACTION | RESPONSE, as Linux does.
 */
import { guestNegotiate, parseIcMessage, type IcVersion } from '../framework.js';
import {
  HV_E_FAIL,
  HV_KVP_EXCHANGE_MAX_KEY_SIZE,
  HV_S_CONT,
  HV_S_OK,
  hv_kvp_exchg_msg_value,
  hv_kvp_hdr,
  hv_kvp_msg_delete,
  ICMSG_HDR,
  icmsg_hdr,
  ICMSGHDRFLAG_RESPONSE,
  ICMSGHDRFLAG_TRANSACTION,
  ICMSGTYPE_HEARTBEAT,
  ICMSGTYPE_KVPEXCHANGE,
  ICMSGTYPE_NEGOTIATE,
  ICMSGTYPE_SHUTDOWN,
  ICMSGTYPE_TIMESYNC,
  ictimesync_data,
  ictimesync_ref_data,
  KVP_OP_DELETE,
  KVP_OP_ENUMERATE,
  KVP_OP_GET,
  KVP_OP_SET,
  shutdown_msg_data,
  SHUTDOWN_FLAG_HIBERNATE,
  SHUTDOWN_FLAG_REBOOT,
  vmbuspipe_hdr,
} from '../protocol.js';
import { decodeKvpRecord, decodeUtf16z, encodeKvpRecord, type KvpRecord } from '../services/kvp.js';

export type GuestIcKind = 'heartbeat' | 'shutdown' | 'timesync' | 'kvp';

const v = (major: number, minor: number): IcVersion => ({ major, minor });
/** Linux hv_utils preference lists (newest first). */
export const LINUX_IC_VERSIONS: Record<GuestIcKind, { frameworks: IcVersion[]; services: IcVersion[] }> = {
  shutdown: { frameworks: [v(3, 0), v(1, 0)], services: [v(3, 2), v(3, 1), v(3, 0), v(1, 0)] },
  timesync: { frameworks: [v(3, 0), v(1, 0)], services: [v(4, 0), v(3, 0), v(1, 0)] },
  heartbeat: { frameworks: [v(3, 0), v(1, 0)], services: [v(3, 0), v(1, 0)] },
  kvp: { frameworks: [v(3, 0), v(1, 0)], services: [v(4, 0), v(3, 0), v(1, 0)] },
};

export interface ShutdownSeen {
  kind: 'poweroff' | 'reboot' | 'hibernate';
  force: boolean;
  reasonCode: number;
}

export interface TimeSampleSeen {
  parenttime: bigint;
  vmreferencetime: bigint | null;
  flags: number;
}

export class GuestIcEndpoint {
  negotiated: { framework: IcVersion; service: IcVersion } | null = null;
  readonly shutdowns: ShutdownSeen[] = [];
  readonly timeSamples: TimeSampleSeen[] = [];
  readonly heartbeats: bigint[] = [];
  /** KVP pools: pool number -> key -> record. */
  readonly pools = new Map<number, Map<string, KvpRecord>>();
  /** Hibernation support (Linux answers E_FAIL when it is not available). */
  canHibernate = false;

  constructor(readonly kind: GuestIcKind) {}

  /** Handles one host packet payload; returns the answer (same length) or null to drop it. */
  onPacket(request: Uint8Array): Uint8Array | null {
    let parsed;
    try {
      parsed = parseIcMessage(request);
    } catch {
      return null;
    }
    const answer = request.slice();
    const body = answer.subarray(ICMSG_HDR);
    let status = HV_S_OK;
    switch (parsed.header.messageType) {
      case ICMSGTYPE_NEGOTIATE: {
        const r = guestNegotiate(parsed.body, LINUX_IC_VERSIONS[this.kind]);
        body.fill(0);
        body.set(r.body.subarray(0, Math.min(r.body.length, body.length)));
        this.negotiated = r.chosen;
        icmsg_hdr.encode({ ...icmsg_hdr.decode(answer, vmbuspipe_hdr.size), icmsgsize: 0x10 }, answer, vmbuspipe_hdr.size);
        break;
      }
      case ICMSGTYPE_HEARTBEAT:
        status = this.heartbeat(body);
        break;
      case ICMSGTYPE_SHUTDOWN:
        status = this.shutdown(body);
        break;
      case ICMSGTYPE_TIMESYNC:
        this.timesync(body);
        break;
      case ICMSGTYPE_KVPEXCHANGE:
        status = this.kvp(body);
        break;
      default:
        status = HV_E_FAIL;
    }
    const hdr = icmsg_hdr.decode(answer, vmbuspipe_hdr.size);
    icmsg_hdr.encode({ ...hdr, status, icflags: ICMSGHDRFLAG_TRANSACTION | ICMSGHDRFLAG_RESPONSE }, answer, vmbuspipe_hdr.size);
    return answer;
  }

  private heartbeat(body: Uint8Array): number {
    if (body.length < 8) return HV_E_FAIL;
    const dv = new DataView(body.buffer, body.byteOffset, body.byteLength);
    const seq = dv.getBigUint64(0, true);
    this.heartbeats.push(seq);
    dv.setBigUint64(0, BigInt.asUintN(64, seq + 1n), true);
    return HV_S_OK;
  }

  private shutdown(body: Uint8Array): number {
    if (body.length < 12) return HV_E_FAIL;
    const m = shutdown_msg_data.decode(pad(body, shutdown_msg_data.size));
    const kind = m.flags & SHUTDOWN_FLAG_HIBERNATE ? 'hibernate' : m.flags & SHUTDOWN_FLAG_REBOOT ? 'reboot' : 'poweroff';
    if (kind === 'hibernate' && !this.canHibernate) return HV_E_FAIL;
    this.shutdowns.push({ kind, force: (m.flags & 1) !== 0, reasonCode: m.reason_code });
    return HV_S_OK;
  }

  private timesync(body: Uint8Array): void {
    if (this.negotiated && this.negotiated.service.major >= 4) {
      const t = ictimesync_ref_data.decode(pad(body, ictimesync_ref_data.size));
      this.timeSamples.push({ parenttime: t.parenttime, vmreferencetime: t.vmreferencetime, flags: t.flags });
    } else {
      const t = ictimesync_data.decode(pad(body, ictimesync_data.size));
      this.timeSamples.push({ parenttime: t.parenttime, vmreferencetime: null, flags: t.flags });
    }
  }

  private pool(n: number): Map<string, KvpRecord> {
    let p = this.pools.get(n);
    if (!p) this.pools.set(n, (p = new Map()));
    return p;
  }

  private kvp(body: Uint8Array): number {
    if (body.length < hv_kvp_hdr.size + hv_kvp_exchg_msg_value.size) return HV_E_FAIL;
    const { operation, pool } = hv_kvp_hdr.decode(body);
    const rest = body.subarray(hv_kvp_hdr.size);
    const table = this.pool(pool);
    switch (operation) {
      case KVP_OP_SET: {
        const record = decodeKvpRecord(rest);
        table.set(record.key, record);
        return HV_S_OK;
      }
      case KVP_OP_GET: {
        const { key } = decodeKvpRecord(rest);
        const record = table.get(key);
        if (!record) return HV_E_FAIL;
        rest.set(encodeKvpRecord(record));
        return HV_S_OK;
      }
      case KVP_OP_DELETE: {
        const d = hv_kvp_msg_delete.decode(rest);
        return table.delete(decodeUtf16z(d.key, Math.min(d.key_size, HV_KVP_EXCHANGE_MAX_KEY_SIZE))) ? HV_S_OK : HV_E_FAIL;
      }
      case KVP_OP_ENUMERATE: {
        const index = new DataView(rest.buffer, rest.byteOffset).getUint32(0, true);
        const record = [...table.values()][index];
        if (!record) return HV_S_CONT;
        rest.set(encodeKvpRecord(record), 4);
        return HV_S_OK;
      }
      default:
        return HV_E_FAIL;
    }
  }
}

function pad(body: Uint8Array, size: number): Uint8Array {
  if (body.length >= size) return body;
  const out = new Uint8Array(size);
  out.set(body);
  return out;
}
