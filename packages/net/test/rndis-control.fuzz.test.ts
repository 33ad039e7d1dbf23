/**
 * RndisControl.handle against a hostile guest: random bytes, and valid INITIALIZE / QUERY /
 * SET / RESET / KEEPALIVE / HALT messages with their fields mutated (OIDs known and random,
 * information buffer offsets and lengths at the boundaries, RSS parameters and config
 * parameters with offsets and sizes at theirs, bytes flipped, messages cut). Properties: it
 * throws only RndisProtocolError, and exactly for what the device drops (short, msg_len not
 * the length, unknown type, body too short); every answer is a well-formed completion of the
 * request's type echoing its request id, bounded in size; every error status is counted once;
 * the state stays coherent, and a new INITIALIZE and QUERY still work afterwards.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  ndis_offload_encapsulation,
  ndis_offload_params,
  ndis_recv_scale_param,
  NVSP_PROTOCOL_VERSIONS,
  OID_802_3_CURRENT_ADDRESS,
  OID_802_3_MAXIMUM_LIST_SIZE,
  OID_802_3_MULTICAST_LIST,
  OID_802_3_PERMANENT_ADDRESS,
  OID_GEN_CURRENT_LOOKAHEAD,
  OID_GEN_CURRENT_PACKET_FILTER,
  OID_GEN_DRIVER_VERSION,
  OID_GEN_FRIENDLY_NAME,
  OID_GEN_LINK_STATE,
  OID_GEN_MAX_LINK_SPEED,
  OID_GEN_MAXIMUM_FRAME_SIZE,
  OID_GEN_MEDIA_CONNECT_STATUS,
  OID_GEN_NETWORK_LAYER_ADDRESSES,
  OID_GEN_RCV_OK,
  OID_GEN_RECEIVE_SCALE_CAPABILITIES,
  OID_GEN_RECEIVE_SCALE_PARAMETERS,
  OID_GEN_RNDIS_CONFIG_PARAMETER,
  OID_GEN_SUPPORTED_LIST,
  OID_GEN_XMIT_OK,
  OID_OFFLOAD_ENCAPSULATION,
  OID_TCP_OFFLOAD_CURRENT_CONFIG,
  OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES,
  OID_TCP_OFFLOAD_PARAMETERS,
  RndisControl,
  RndisProtocolError,
  RNDIS_HEADER_SIZE,
  RNDIS_MSG_HALT,
  RNDIS_MSG_INIT,
  RNDIS_MSG_KEEPALIVE,
  RNDIS_MSG_QUERY,
  RNDIS_MSG_RESET,
  RNDIS_MSG_SET,
  RNDIS_STATUS_ADAPTER_NOT_READY,
  RNDIS_STATUS_FAILURE,
  RNDIS_STATUS_INVALID_DATA,
  RNDIS_STATUS_INVALID_LENGTH,
  RNDIS_STATUS_MULTICAST_FULL,
  RNDIS_STATUS_NOT_SUPPORTED,
  RNDIS_STATUS_SUCCESS,
} from '@hvemu/net';
import { fuzzRuns, sameBytes } from '../../../test/helpers.js';
import { GUEST_MAC } from './helpers/sim.js';
import { answerStatus, configParameter, initMessage, queryAnswer, queryMessage, u32, utf16 } from './helpers/rndis-messages.js';

/** Body sizes of the requests a host takes (rndis_*_request): a shorter body is dropped. */
const BODY: ReadonlyMap<number, number> = new Map([
  [RNDIS_MSG_INIT, 16],
  [RNDIS_MSG_HALT, 4],
  [RNDIS_MSG_QUERY, 20],
  [RNDIS_MSG_SET, 20],
  [RNDIS_MSG_RESET, 4],
  [RNDIS_MSG_KEEPALIVE, 4],
]);
const TYPES = [...BODY.keys()];
const STATUSES = new Set([
  RNDIS_STATUS_SUCCESS,
  RNDIS_STATUS_FAILURE,
  RNDIS_STATUS_NOT_SUPPORTED,
  RNDIS_STATUS_INVALID_DATA,
  RNDIS_STATUS_INVALID_LENGTH,
  RNDIS_STATUS_MULTICAST_FULL,
  RNDIS_STATUS_ADAPTER_NOT_READY,
]);
const OIDS = [
  OID_GEN_SUPPORTED_LIST,
  OID_GEN_MAXIMUM_FRAME_SIZE,
  OID_GEN_CURRENT_LOOKAHEAD,
  OID_GEN_CURRENT_PACKET_FILTER,
  OID_GEN_MEDIA_CONNECT_STATUS,
  OID_GEN_DRIVER_VERSION,
  OID_GEN_FRIENDLY_NAME,
  OID_GEN_LINK_STATE,
  OID_GEN_MAX_LINK_SPEED,
  OID_GEN_XMIT_OK,
  OID_GEN_RCV_OK,
  OID_GEN_NETWORK_LAYER_ADDRESSES,
  OID_GEN_RNDIS_CONFIG_PARAMETER,
  OID_GEN_RECEIVE_SCALE_CAPABILITIES,
  OID_GEN_RECEIVE_SCALE_PARAMETERS,
  OID_802_3_PERMANENT_ADDRESS,
  OID_802_3_CURRENT_ADDRESS,
  OID_802_3_MULTICAST_LIST,
  OID_802_3_MAXIMUM_LIST_SIZE,
  OID_OFFLOAD_ENCAPSULATION,
  OID_TCP_OFFLOAD_PARAMETERS,
  OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES,
  OID_TCP_OFFLOAD_CURRENT_CONFIG,
];
/** The largest answer: a QUERY_C of the RSS parameters with a full table and key (24 + 40 + 512 + 40). */
const MAX_ANSWER = 616;

const u32Arb = fc.integer({ min: 0, max: 0xffffffff });
/** A u32 near the edges of `[0, size]` (offsets and lengths a guest can get wrong), or any. */
const edge = (size: number): fc.Arbitrary<number> =>
  fc.oneof(
    fc.constantFrom(0, 1, 3, 4, 19, 20, 21),
    fc.integer({ min: -2, max: 2 }).map((d) => Math.max(0, size + d)),
    fc.constantFrom(0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff),
    u32Arb,
  );

/** Usually null (the field as a guest sets it), sometimes `arb` (the field damaged). */
const sometimes = <T>(arb: fc.Arbitrary<T>): fc.Arbitrary<T | null> =>
  fc.oneof({ arbitrary: fc.constant(null), weight: 3 }, { arbitrary: arb, weight: 1 });

function setU32(b: Uint8Array, at: number, v: number): void {
  new DataView(b.buffer, b.byteOffset).setUint32(at, v >>> 0, true);
}

/** NDIS_RECEIVE_SCALE_PARAMETERS with a table of `entries` and a key of `keySize`, its offsets and sizes then maybe moved. */
const rssInfo = fc
  .record({
    entries: fc.integer({ min: 0, max: 130 }),
    keySize: fc.oneof({ arbitrary: fc.constant(40), weight: 3 }, fc.constantFrom(39, 41, 0)),
    queue: fc.integer({ min: 0, max: 9 }),
    flag: fc.oneof({ arbitrary: fc.constant(0), weight: 2 }, fc.integer({ min: 0, max: 0x1f })),
    hashinfo: fc.oneof({ arbitrary: fc.constant(0x1701), weight: 3 }, u32Arb),
    moveTable: sometimes(fc.tuple(edge(600), edge(600))),
    moveKey: sometimes(fc.tuple(edge(600), edge(600))),
  })
  .map(({ entries, keySize, queue, flag, hashinfo, moveTable, moveKey }) => {
    const head = ndis_recv_scale_param.size;
    const info = new Uint8Array(head + entries * 4 + keySize);
    ndis_recv_scale_param.encode(
      {
        hdr_type: 0x89,
        hdr_rev: 2,
        hdr_size: head,
        flag,
        hashinfo,
        indirect_tabsize: (moveTable?.[1] ?? entries * 4) & 0xffff,
        indirect_taboffset: moveTable?.[0] ?? head,
        hashkey_size: (moveKey?.[1] ?? keySize) & 0xffff,
        hashkey_offset: moveKey?.[0] ?? head + entries * 4,
      },
      info,
    );
    for (let i = 0; i < entries; i++) setU32(info, head + i * 4, (i + queue) % (queue + 1));
    return info;
  });

/** rndis_config_parameter_info: NetworkAddress (good or not) or another name, its offsets and lengths maybe moved. */
const configInfo = fc
  .record({
    name: fc.oneof(
      { arbitrary: fc.constantFrom('NetworkAddress', 'networkADDRESS'), weight: 3 },
      fc.constantFrom('*LsoV2IPv4', ''),
      fc.string({ maxLength: 20 }),
    ),
    value: fc.oneof(
      { arbitrary: fc.constantFrom('00155dabcdef', '02155DABCDEF', '00155dabcdef\0'), weight: 3 },
      { arbitrary: fc.constantFrom('01155dabcdef', '000000000000', '00155dabcdeg', '00155dabcde', '1'), weight: 2 },
      fc.stringMatching(/^[0-9a-fA-F]{10,14}$/),
    ),
    type: fc.oneof({ arbitrary: fc.constant(2), weight: 4 }, fc.constant(0), u32Arb),
    raw: sometimes(fc.uint8Array({ maxLength: 8 })),
    fields: sometimes(fc.array(fc.tuple(fc.integer({ min: 0, max: 4 }), edge(80)), { minLength: 1, maxLength: 2 })),
  })
  .map(({ name, value, type, raw, fields }) => {
    const info = configParameter(name, raw ?? utf16(value), type);
    for (const [field, moved] of fields ?? []) setU32(info, field * 4, moved);
    return info;
  });

const encapsulationInfo = fc
  .record({
    type: fc.constantFrom(0xa8, 0xa7),
    rev: fc.constantFrom(0, 1, 2),
    size: edge(28),
    words: fc.array(fc.constantFrom(0, 1, 2, 14, 18), { minLength: 6, maxLength: 6 }),
  })
  .map(({ type, rev, size, words }) => {
    const info = ndis_offload_encapsulation.encodeNew({ hdr_type: type, hdr_rev: rev, hdr_size: size & 0xffff });
    words.forEach((w, i) => setU32(info, 4 + i * 4, w));
    return info;
  });

const offloadInfo = fc
  .constantFrom(22, 28, 21)
  .map((n) => ndis_offload_params.encodeNew({ hdr_type: 0x80, hdr_rev: 3, hdr_size: n }).subarray(0, n));
const multicastInfo = fc
  .array(fc.constantFrom(0x01, 0x00, 0x33), { minLength: 6, maxLength: 6 })
  .chain((mac) => fc.integer({ min: 0, max: 34 }).map((k) => Uint8Array.from({ length: k * 6 }, (_, i) => mac[i % 6])));
const anyInfo: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.uint8Array({ maxLength: 64 }),
  rssInfo,
  configInfo,
  encapsulationInfo,
  offloadInfo,
  multicastInfo,
);
/** The structure `oid` takes, most of the time; anything else sometimes. */
const MATCHING: ReadonlyMap<number, fc.Arbitrary<Uint8Array>> = new Map([
  [OID_GEN_RECEIVE_SCALE_PARAMETERS, rssInfo],
  [OID_GEN_RNDIS_CONFIG_PARAMETER, configInfo],
  [OID_OFFLOAD_ENCAPSULATION, encapsulationInfo],
  [OID_TCP_OFFLOAD_PARAMETERS, offloadInfo],
  [OID_802_3_MULTICAST_LIST, multicastInfo],
  [OID_GEN_CURRENT_PACKET_FILTER, fc.uint8Array({ minLength: 0, maxLength: 8 })],
]);
const infoFor = (oid: number): fc.Arbitrary<Uint8Array> => {
  const matching = MATCHING.get(oid);
  return matching ? fc.oneof({ arbitrary: matching, weight: 3 }, anyInfo) : anyInfo;
};

/** A control request of `type` with its information buffer, placed as the guest says (or elsewhere). */
const requestArb = fc
  .record({
    type: fc.oneof(
      { arbitrary: fc.constant(RNDIS_MSG_SET), weight: 4 },
      { arbitrary: fc.constant(RNDIS_MSG_QUERY), weight: 2 },
      { arbitrary: fc.constantFrom(...TYPES), weight: 2 },
    ),
    reqId: u32Arb,
    oidInfo: fc
      .oneof({ arbitrary: fc.constantFrom(...MATCHING.keys()), weight: 4 }, { arbitrary: fc.constantFrom(...OIDS), weight: 2 }, u32Arb)
      .chain((oid) => fc.tuple(fc.constant(oid), infoFor(oid))),
    major: fc.oneof({ arbitrary: fc.constant(1), weight: 3 }, u32Arb),
    place: sometimes(fc.tuple(edge(64), edge(64))),
  })
  .map(({ type, reqId, oidInfo: [oid, info], major, place }) => {
    const body = BODY.get(type)!;
    const withInfo = type === RNDIS_MSG_QUERY || type === RNDIS_MSG_SET;
    const msg = new Uint8Array(RNDIS_HEADER_SIZE + body + (withInfo ? info.length : 0));
    setU32(msg, 0, type);
    setU32(msg, 4, msg.length);
    setU32(msg, 8, reqId);
    if (type === RNDIS_MSG_INIT) setU32(msg, 12, major);
    if (withInfo) {
      setU32(msg, 12, oid);
      setU32(msg, 16, place?.[1] ?? info.length);
      setU32(msg, 20, place?.[0] ?? body);
      msg.set(info, RNDIS_HEADER_SIZE + body);
    }
    return msg;
  });

/** The request, maybe with bytes overwritten and cut short (msg_len following the cut or not). */
const mutatedArb = fc
  .record({
    msg: requestArb,
    bytes: sometimes(fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 3 })),
    cut: sometimes(fc.nat({ max: 700 })),
    fixLength: fc.boolean(),
  })
  .map(({ msg, bytes, cut, fixLength }) => {
    const m = cut === null ? msg.slice() : msg.slice(0, Math.min(msg.length, cut));
    for (const [at, v] of bytes ?? []) if (m.length > 0) m[at % m.length] = v;
    if (fixLength && m.length >= 8) setU32(m, 4, m.length);
    return m;
  });

/** Random bytes, typed and sized as a message half the time. */
const rawArb = fc
  .record({ bytes: fc.uint8Array({ maxLength: 160 }), type: fc.option(fc.constantFrom(...TYPES, 1, 7, 0x80000002)) })
  .map(({ bytes, type }) => {
    if (type !== null && bytes.length >= 8) {
      setU32(bytes, 0, type);
      setU32(bytes, 4, bytes.length);
    }
    return bytes;
  });

const controlArb: fc.Arbitrary<ControlConfig> = fc.record({
  version: fc.constantFrom(0, ...NVSP_PROTOCOL_VERSIONS),
  maxQueues: fc.integer({ min: 1, max: 8 }),
  allowMacChange: fc.boolean(),
  friendlyName: fc.option(fc.constant('fuzz')),
  initFirst: fc.oneof({ arbitrary: fc.constant(true), weight: 3 }, fc.constant(false)),
  everyOid: fc.nat({ max: 7 }).map((n) => n === 0),
});

interface ControlConfig {
  version: number;
  maxQueues: number;
  allowMacChange: boolean;
  friendlyName: string | null;
  initFirst: boolean;
  everyOid: boolean;
}

function newControl(c: ControlConfig): RndisControl {
  const rndis = new RndisControl(
    { mac: GUEST_MAC, mtu: 1500, maxQueues: c.maxQueues, linkSpeedBps: 10e9, friendlyName: c.friendlyName ?? undefined },
    { allowMacChange: c.allowMacChange },
  );
  rndis.nvspVersion = c.version;
  if (c.initFirst) rndis.handle(initMessage(1));
  return rndis;
}

/**
 * The property's assertion: a plain throw (fast-check reports the counterexample), since an
 * expect() chain per field of every message is most of the time a 100k-run fuzz takes.
 */
function must(ok: boolean, what: string): void {
  if (!ok) throw new Error(what);
}

/**
 * A SET of OID_GEN_RNDIS_CONFIG_PARAMETER read the slow way, the oracle for its outcome:
 * null (not such a SET), 'malformed' (a buffer outside the message or the structure, a name of
 * odd or no length, a string of odd length, an integer not of 4 bytes), or the parameter, with
 * the address it names if it is NetworkAddress with 12 hex digits (one terminator tolerated).
 */
function configIn(msg: Uint8Array): null | 'malformed' | { networkAddress: boolean; mac: Uint8Array | null } {
  if (msg.length < 28 || u32(msg, 0) !== RNDIS_MSG_SET || u32(msg, 12) !== OID_GEN_RNDIS_CONFIG_PARAMETER) return null;
  const [length, offset] = [u32(msg, 16), u32(msg, 20)];
  if (length < 20 || RNDIS_HEADER_SIZE + offset + length > msg.length) return 'malformed';
  const info = msg.subarray(RNDIS_HEADER_SIZE + offset, RNDIS_HEADER_SIZE + offset + length);
  const [nameAt, nameLength, type, valueAt, valueLength] = [0, 4, 8, 12, 16].map((i) => u32(info, i));
  if (nameAt < 20 || valueAt < 20 || nameAt + nameLength > info.length || valueAt + valueLength > info.length) return 'malformed';
  if (nameLength === 0 || nameLength % 2 !== 0 || (type === 2 && valueLength % 2 !== 0) || (type === 0 && valueLength !== 4))
    return 'malformed';
  const text = (at: number, n: number): string =>
    String.fromCharCode(...Array.from({ length: n >> 1 }, (_, i) => info[at + i * 2] | (info[at + i * 2 + 1] << 8)));
  if (text(nameAt, nameLength).toLowerCase() !== 'networkaddress') return { networkAddress: false, mac: null };
  const hex = type === 2 ? text(valueAt, valueLength).replace(/^([0-9a-fA-F]{12})\0$/, '$1') : '';
  const mac = /^[0-9a-fA-F]{12}$/.test(hex) ? Uint8Array.from({ length: 6 }, (_, i) => parseInt(hex.slice(i * 2, i * 2 + 2), 16)) : null;
  return { networkAddress: true, mac };
}

/** A config SET's outcome against the oracle: what it may change and when it must succeed. */
function checkConfig(rndis: RndisControl, msg: Uint8Array, status: number, macBefore: Uint8Array): void {
  const config = configIn(msg);
  const changed = !sameBytes(rndis.nic.mac, macBefore);
  if (config === null || config === 'malformed' || !config.networkAddress || config.mac === null) {
    must(!changed, 'MAC changed by something other than a valid NetworkAddress');
    if (config === 'malformed' || (config?.networkAddress && config.mac === null))
      must(status !== RNDIS_STATUS_SUCCESS, 'malformed config parameter taken');
    if (config !== null && config !== 'malformed' && !config.networkAddress)
      must(status === RNDIS_STATUS_SUCCESS || status === RNDIS_STATUS_ADAPTER_NOT_READY, 'a well-formed unknown parameter refused');
    return;
  }
  if (status === RNDIS_STATUS_SUCCESS) must(sameBytes(rndis.nic.mac, config.mac), 'NetworkAddress taken but not installed');
  else must(!changed, 'NetworkAddress refused but the MAC changed');
}

/** One message in: the outcome checked against what the request was. */
function exchange(rndis: RndisControl, msg: Uint8Array, config: ControlConfig): void {
  exchangeOne(rndis, msg);
  invariants(rndis, config);
}

function exchangeOne(rndis: RndisControl, msg: Uint8Array): void {
  const type = msg.length >= 4 ? u32(msg, 0) : -1;
  const macBefore = rndis.nic.mac.slice();
  const body = BODY.get(type);
  const dropped =
    msg.length < RNDIS_HEADER_SIZE || u32(msg, 4) !== msg.length || body === undefined || msg.length < RNDIS_HEADER_SIZE + body;
  const errorsBefore = rndis.stats.rndisControlErrors + rndis.stats.rndisUnsupportedOids;
  let answer: Uint8Array | null;
  try {
    answer = rndis.handle(msg);
  } catch (error) {
    must(error instanceof RndisProtocolError, `threw ${String(error)}`);
    must(dropped, `dropped a message the host takes: ${(error as Error).message}`);
    return;
  }
  must(!dropped, 'took a message the host drops');
  if (type === RNDIS_MSG_HALT) {
    must(answer === null && rndis.state === 'halted', 'HALT answered, or not halted');
    return;
  }
  must(answer !== null, `no answer to type ${type}`);
  const a = answer!;
  must(a.length <= MAX_ANSWER, `answer of ${a.length} bytes`);
  must(u32(a, 0) === (type | 0x80000000) >>> 0, `answer type 0x${u32(a, 0).toString(16)} to ${type}`);
  must(u32(a, 4) === a.length, 'answer msg_len');
  let status: number;
  if (type === RNDIS_MSG_RESET) {
    // No request id: status and addressing_reset (1 exactly when the reset happened).
    status = u32(a, 8);
    must(a.length === 16 && u32(a, 12) === (status === RNDIS_STATUS_SUCCESS ? 1 : 0), 'RESET_C');
  } else {
    must(u32(a, 8) === u32(msg, 8), 'request id not echoed');
    status = answerStatus(a);
    const size = { [RNDIS_MSG_INIT]: 52, [RNDIS_MSG_SET]: 16, [RNDIS_MSG_KEEPALIVE]: 16 }[type];
    must(size === undefined || a.length === size, `completion of ${a.length} bytes`);
    if (type === RNDIS_MSG_QUERY) {
      // info_buf_offset right after QUERY_C, info_buflen the rest, nothing with an error.
      must(u32(a, 20) === 16 && u32(a, 16) === a.length - 24, 'QUERY_C buffer');
      must(status === RNDIS_STATUS_SUCCESS || a.length === 24, 'QUERY_C data with an error status');
    }
  }
  must(STATUSES.has(status), `status 0x${status.toString(16)}`);
  // Success only with the information buffer inside the message (or none).
  if ((type === RNDIS_MSG_SET || type === RNDIS_MSG_QUERY) && status === RNDIS_STATUS_SUCCESS) {
    const length = u32(msg, 16);
    must(length === 0 || RNDIS_HEADER_SIZE + u32(msg, 20) + length <= msg.length, 'success with the buffer outside the message');
  }
  // The MAC changes only to what a well-formed NetworkAddress names, and a success installs it.
  checkConfig(rndis, msg, status, macBefore);
  // Every error status is counted once; a success counts nothing.
  const errorsAfter = rndis.stats.rndisControlErrors + rndis.stats.rndisUnsupportedOids;
  must(
    errorsAfter - errorsBefore === (status === RNDIS_STATUS_SUCCESS ? 0 : 1),
    `status 0x${status.toString(16)} counted ${errorsAfter - errorsBefore} times`,
  );
}

/**
 * What must hold whatever the guest sent, and a fresh session still works; `everyOid`: every
 * OID the supported list names still answers (a sweep of ~30 queries, so on some runs only).
 */
function coherent(rndis: RndisControl, config: ControlConfig): void {
  invariants(rndis, config);
  const mac = rndis.nic.mac;
  must(answerStatus(rndis.handle(initMessage(0x600d))!) === RNDIS_STATUS_SUCCESS && rndis.packetFilter === 0, 'INITIALIZE after');
  const mtu = queryAnswer(rndis.handle(queryMessage(0x600e, OID_GEN_MAXIMUM_FRAME_SIZE))!);
  must(mtu.reqId === 0x600e && mtu.status === RNDIS_STATUS_SUCCESS && u32(mtu.data, 0) === 1500, 'QUERY after');
  must(sameBytes(queryAnswer(rndis.handle(queryMessage(0x600f, OID_802_3_CURRENT_ADDRESS))!).data, mac), 'current address');
  if (!config.everyOid) return;
  const failing = rndis.queryableOids().filter((oid) => queryAnswer(rndis.handle(queryMessage(1, oid))!).status !== RNDIS_STATUS_SUCCESS);
  expect(failing).toEqual([]);
}

/** What holds after every message, whatever the guest sent. */
function invariants(rndis: RndisControl, { allowMacChange, maxQueues }: ControlConfig): void {
  must(['uninitialized', 'initialized', 'halted'].includes(rndis.state), `state ${rndis.state}`);
  const { enabled, table, key } = rndis.rss;
  must(!enabled || (table.length > 0 && table.length <= 128 && table.every((q) => q < maxQueues) && key.length === 40), 'RSS state');
  const list = rndis.multicastList;
  must(list.length % 6 === 0 && list.length <= 32 * 6 && list.every((b, i) => i % 6 !== 0 || (b & 1) === 1), 'multicast list');
  must(sameBytes(rndis.permanentMac, GUEST_MAC), 'permanent address changed');
  const mac = rndis.nic.mac;
  must(allowMacChange || sameBytes(mac, GUEST_MAC), 'MAC changed without permission');
  must((mac[0] & 1) === 0 && mac.some((b) => b !== 0), 'current address not unicast');
}

describe('RndisControl.handle on hostile control messages', () => {
  it('random bytes: RndisProtocolError or a well-formed completion, never anything else', () => {
    fc.assert(
      fc.property(controlArb, fc.array(rawArb, { minLength: 1, maxLength: 4 }), (config, messages) => {
        const rndis = newControl(config);
        for (const msg of messages) exchange(rndis, msg, config);
        coherent(rndis, config);
      }),
      { numRuns: fuzzRuns(1000) },
    );
  });

  it('mutated requests of every type: completions echo the request, errors are counted, the state stays coherent', () => {
    fc.assert(
      fc.property(controlArb, fc.array(mutatedArb, { minLength: 1, maxLength: 8 }), (config, messages) => {
        const rndis = newControl(config);
        for (const msg of messages) exchange(rndis, msg, config);
        coherent(rndis, config);
      }),
      { numRuns: fuzzRuns(2000) },
    );
  });
});
