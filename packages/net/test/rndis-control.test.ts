/**
 * The RNDIS control side: RESET, KEEPALIVE and HALT, the OIDs QUERY answers (and that
 * OID_GEN_SUPPORTED_LIST lists those, then the set-only ones), the SETs Windows and Linux send (config
 * parameters with NetworkAddress, offload encapsulation, network layer addresses), and the
 * counters of refused requests. Through RndisControl alone, and through the device with the
 * TypeScript netvsc guest where the outcome is observable on the wire.
 */
import { HostUsageError, MemoryLogger } from '@hvemu/common';
import { describe, expect, it } from 'vitest';
import {
  createPortPair,
  NetvspDevice,
  MAXIMUM_LIST_SIZE,
  ndis_link_speed,
  ndis_link_state,
  ndis_offload_encapsulation,
  ndis_recv_scale_param,
  NDIS_ENCAPSULATION_IEEE_802_3,
  NDIS_OBJECT_TYPE_OFFLOAD_ENCAPSULATION,
  NDIS_OFFLOAD_SET_NO_CHANGE,
  NDIS_OFFLOAD_SET_ON,
  NDIS_PACKET_TYPE_BROADCAST,
  NDIS_PACKET_TYPE_DIRECTED,
  NDIS_RSS_PARAM_FLAG_DISABLE_RSS,
  NDIS_RSS_PARAM_FLAG_HASH_INFO_UNCHANGED,
  NDIS_RSS_PARAM_FLAG_HASH_KEY_UNCHANGED,
  NDIS_RSS_PARAM_FLAG_ITABLE_UNCHANGED,
  NVSP_PROTOCOL_VERSION_4,
  NVSP_PROTOCOL_VERSION_61,
  NVSP_RNDIS_CHANNEL_CONTROL,
  NVSP_STAT_INVALID_RNDIS_PKT,
  NVSP_STAT_SUCCESS,
  OID_802_3_CURRENT_ADDRESS,
  OID_802_3_MAXIMUM_LIST_SIZE,
  OID_802_3_MULTICAST_LIST,
  OID_802_3_PERMANENT_ADDRESS,
  OID_GEN_CURRENT_PACKET_FILTER,
  OID_GEN_DRIVER_VERSION,
  OID_GEN_FRIENDLY_NAME,
  OID_GEN_LINK_STATE,
  OID_GEN_MAX_LINK_SPEED,
  OID_GEN_MAXIMUM_FRAME_SIZE,
  OID_GEN_NETWORK_LAYER_ADDRESSES,
  OID_GEN_RCV_OK,
  OID_GEN_RECEIVE_SCALE_CAPABILITIES,
  OID_GEN_RECEIVE_SCALE_PARAMETERS,
  OID_GEN_RNDIS_CONFIG_PARAMETER,
  OID_GEN_SUPPORTED_LIST,
  OID_GEN_XMIT_OK,
  OID_OFFLOAD_ENCAPSULATION,
  OID_TCP_OFFLOAD_PARAMETERS,
  RndisControl,
  RndisProtocolError,
  rndis_keepalive_complete,
  RNDIS_CONFIG_PARAM_TYPE_INTEGER,
  RNDIS_HEADER_SIZE,
  RNDIS_MSG_INIT_C,
  RNDIS_MSG_KEEPALIVE_C,
  RNDIS_STATUS_ADAPTER_NOT_READY,
  RNDIS_STATUS_FAILURE,
  RNDIS_STATUS_INVALID_DATA,
  RNDIS_STATUS_INVALID_LENGTH,
  RNDIS_STATUS_MULTICAST_FULL,
  RNDIS_STATUS_NOT_SUPPORTED,
  RNDIS_STATUS_SUCCESS,
  type NicIdentity,
  type RndisControlOptions,
} from '@hvemu/net';
import { DEFAULT_RSS_KEY, ethernetFrame, NetvscClient, rndisDataMessage } from '@hvemu/net/testing';
import { GUEST_MAC, nicSim, PEER_MAC, sameBytes, type NicSim } from './helpers/sim.js';
import {
  answerStatus,
  configParameter,
  haltMessage,
  initMessage,
  keepaliveMessage,
  networkAddress,
  queryAnswer,
  queryMessage,
  resetMessage,
  setMessage,
  u32,
  utf16,
} from './helpers/rndis-messages.js';

const NIC: NicIdentity = { mac: GUEST_MAC, mtu: 1500, maxQueues: 4, linkSpeedBps: 10e9 };
const NEW_MAC = Uint8Array.from([0x00, 0x15, 0x5d, 0xab, 0xcd, 0xef]);
const OTHER_MAC = Uint8Array.from([0x00, 0x15, 0x5d, 0x01, 0x02, 0x03]);
const MULTICAST = Uint8Array.from([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]);

/** An initialized RndisControl at NVSP 6.1. */
function control(options: RndisControlOptions = {}, nic: NicIdentity = NIC): RndisControl {
  const c = new RndisControl(nic, options);
  c.nvspVersion = NVSP_PROTOCOL_VERSION_61;
  expect(answerStatus(c.handle(initMessage(1))!)).toBe(RNDIS_STATUS_SUCCESS);
  return c;
}

const query = (c: RndisControl, oid: number, info?: Uint8Array) => queryAnswer(c.handle(queryMessage(7, oid, info))!);
const set = (c: RndisControl, oid: number, info: Uint8Array): number => answerStatus(c.handle(setMessage(9, oid, info))!);

/** A frame from the peer to `dst`: true if the guest got it. */
async function delivered(sim: NicSim, dst: Uint8Array): Promise<boolean> {
  const frame = ethernetFrame(dst, PEER_MAC, 80, () => 0x3c);
  const had = sim.guest.received(0).length;
  const before = { ...sim.nic.stats };
  sim.peer.send([frame]);
  const s = await sim.guest.until(() =>
    sim.guest.received(0).length > had
      ? 'in'
      : sim.nic.stats.rxFiltered + sim.nic.stats.rxNotReady > before.rxFiltered + before.rxNotReady
        ? 'out'
        : null,
  );
  if (s === 'in') expect(sameBytes(sim.guest.received(0)[had].frame, frame)).toBe(true);
  return s === 'in';
}

describe('RndisControl: RESET, KEEPALIVE, HALT', () => {
  it('KEEPALIVE_C echoes the request id with success', () => {
    const answer = control().handle(keepaliveMessage(0xdead0001))!;
    expect(u32(answer, 0)).toBe(RNDIS_MSG_KEEPALIVE_C);
    expect(u32(answer, 4)).toBe(answer.length);
    expect(rndis_keepalive_complete.decode(answer, RNDIS_HEADER_SIZE)).toEqual({ req_id: 0xdead0001, status: RNDIS_STATUS_SUCCESS });
  });

  it('HALT answers nothing; afterwards only INITIALIZE is taken, and it starts a fresh session', () => {
    const c = control();
    expect(set(c, OID_GEN_CURRENT_PACKET_FILTER, Uint8Array.of(0x0d, 0, 0, 0))).toBe(RNDIS_STATUS_SUCCESS);
    expect(set(c, OID_802_3_MULTICAST_LIST, MULTICAST)).toBe(RNDIS_STATUS_SUCCESS);
    expect(c.handle(haltMessage(3))).toBeNull();
    expect(c.state).toBe('halted');
    expect(query(c, OID_GEN_MAXIMUM_FRAME_SIZE).status).toBe(RNDIS_STATUS_ADAPTER_NOT_READY);
    expect(set(c, OID_GEN_CURRENT_PACKET_FILTER, Uint8Array.of(1, 0, 0, 0))).toBe(RNDIS_STATUS_ADAPTER_NOT_READY);
    expect(answerStatus(c.handle(keepaliveMessage(4))!)).toBe(RNDIS_STATUS_ADAPTER_NOT_READY);
    expect([...c.handle(resetMessage())!.subarray(RNDIS_HEADER_SIZE)]).toEqual([0x11, 0, 0x01, 0xc0, 0, 0, 0, 0]); // NOT_READY, addressing_reset 0
    expect(c.stats.rndisControlErrors).toBe(4);
    expect(c.packetFilter).toBe(0x0d); // nothing the refused SET asked for
    const init = c.handle(initMessage(5))!;
    expect(u32(init, 0)).toBe(RNDIS_MSG_INIT_C);
    expect(answerStatus(init)).toBe(RNDIS_STATUS_SUCCESS);
    expect(c.state).toBe('initialized');
    expect(c.packetFilter).toBe(0);
    expect(c.multicastCount).toBe(0);
  });

  it('INITIALIZE of another RNDIS major version: NOT_SUPPORTED, counted, the state stays', () => {
    const c = new RndisControl(NIC);
    expect(answerStatus(c.handle(initMessage(1, 2))!)).toBe(RNDIS_STATUS_NOT_SUPPORTED);
    expect(c.state).toBe('uninitialized');
    expect(c.stats.rndisControlErrors).toBe(1);
  });

  it('throws RndisProtocolError (only) for what it drops: short, msg_len not the length, unknown type, body too short', () => {
    const c = control();
    const keep = keepaliveMessage(1);
    const wrongLength = keep.slice();
    wrongLength[4] = 40;
    const unknown = keep.slice();
    unknown[0] = 7; // INDICATE: the host's to send
    const shortBody = Uint8Array.of(8, 0, 0, 0, 8, 0, 0, 0); // KEEPALIVE without its request id
    for (const [msg, fault] of [
      [keep.subarray(0, 7), 'short'],
      [wrongLength, 'bad-length'],
      [unknown, 'unknown-type'],
      [shortBody, 'short'],
    ] as const) {
      expect(() => c.handle(msg)).toThrow(RndisProtocolError);
      try {
        c.handle(msg);
      } catch (e) {
        expect((e as RndisProtocolError).fault).toBe(fault);
      }
    }
  });
});

describe('RndisControl: QUERY', () => {
  it.each([
    ['NVSP 6.1, 4 queues, a friendly name', NVSP_PROTOCOL_VERSION_61, 4, 'eth-test'],
    ['NVSP 4, 1 queue, no name', NVSP_PROTOCOL_VERSION_4, 1, undefined],
  ])('OID_GEN_SUPPORTED_LIST (%s) lists the OIDs QUERY answers, then the set-only ones', (_name, version, maxQueues, friendlyName) => {
    const c = new RndisControl({ ...NIC, maxQueues, friendlyName });
    c.nvspVersion = version;
    c.handle(initMessage(1));
    const list = query(c, OID_GEN_SUPPORTED_LIST);
    expect(list.status).toBe(RNDIS_STATUS_SUCCESS);
    const oids = Array.from({ length: list.data.length / 4 }, (_, i) => u32(list.data, i * 4));
    expect(new Set(oids).size).toBe(oids.length);
    // Set-only OIDs come last (NDIS: the list names what a miniport handles for a query or set).
    const setOnly = [
      OID_TCP_OFFLOAD_PARAMETERS,
      OID_GEN_RNDIS_CONFIG_PARAMETER,
      OID_OFFLOAD_ENCAPSULATION,
      OID_GEN_NETWORK_LAYER_ADDRESSES,
    ];
    expect(oids.slice(-setOnly.length)).toEqual(setOnly);
    const queryable = oids.slice(0, -setOnly.length);
    for (const oid of queryable) expect([oid, query(c, oid).status]).toEqual([oid, RNDIS_STATUS_SUCCESS]);
    expect(c.stats.rndisUnsupportedOids).toBe(0);
    for (const oid of [OID_802_3_CURRENT_ADDRESS, OID_802_3_MULTICAST_LIST, OID_802_3_MAXIMUM_LIST_SIZE, OID_GEN_XMIT_OK, OID_GEN_RCV_OK])
      expect(oids).toContain(oid);
    for (const oid of [OID_GEN_LINK_STATE, OID_GEN_MAX_LINK_SPEED, OID_GEN_DRIVER_VERSION]) expect(oids).toContain(oid);
    expect(oids.includes(OID_GEN_RECEIVE_SCALE_CAPABILITIES)).toBe(version >= 0x50000);
    expect(oids.includes(OID_GEN_RECEIVE_SCALE_PARAMETERS)).toBe(maxQueues >= 2);
    expect(oids.includes(OID_GEN_FRIENDLY_NAME)).toBe(friendlyName !== undefined);
    // A QUERY of a set-only OID is not supported (counted as such).
    for (const oid of setOnly) expect(query(c, oid).status).toBe(RNDIS_STATUS_NOT_SUPPORTED);
    expect(c.stats.rndisUnsupportedOids).toBe(setOnly.length);
  });

  it('addresses, the multicast list as set, its maximum, the NDIS version', () => {
    const c = control();
    expect([...query(c, OID_802_3_CURRENT_ADDRESS).data]).toEqual([...GUEST_MAC]);
    expect([...query(c, OID_802_3_PERMANENT_ADDRESS).data]).toEqual([...GUEST_MAC]);
    expect(u32(query(c, OID_802_3_MAXIMUM_LIST_SIZE).data, 0)).toBe(MAXIMUM_LIST_SIZE);
    expect(query(c, OID_802_3_MULTICAST_LIST).data.length).toBe(0);
    const two = Uint8Array.from([...MULTICAST, 0x33, 0x33, 0, 0, 0, 1]);
    expect(set(c, OID_802_3_MULTICAST_LIST, two)).toBe(RNDIS_STATUS_SUCCESS);
    expect([...query(c, OID_802_3_MULTICAST_LIST).data]).toEqual([...two]);
    expect([...query(c, OID_GEN_DRIVER_VERSION).data]).toEqual([30, 6]); // NDIS 6.30 at NVSP 6.1, a u16
  });

  it('RSS parameters read back as set (table then key), or the disable flag alone', () => {
    const c = control();
    const off = ndis_recv_scale_param.decode(query(c, OID_GEN_RECEIVE_SCALE_PARAMETERS).data);
    expect(off.flag).toBe(NDIS_RSS_PARAM_FLAG_DISABLE_RSS);
    const table = Array.from({ length: 16 }, (_, i) => i % 4);
    expect(set(c, OID_GEN_RECEIVE_SCALE_PARAMETERS, rssParameters(table, DEFAULT_RSS_KEY))).toBe(RNDIS_STATUS_SUCCESS);
    const back = query(c, OID_GEN_RECEIVE_SCALE_PARAMETERS).data;
    const p = ndis_recv_scale_param.decode(back);
    expect(p.flag).toBe(0);
    expect(Array.from({ length: p.indirect_tabsize / 4 }, (_, i) => u32(back, p.indirect_taboffset + i * 4))).toEqual(table);
    expect(sameBytes(back.subarray(p.hashkey_offset, p.hashkey_offset + p.hashkey_size), DEFAULT_RSS_KEY)).toBe(true);
  });
});

/** NDIS_RECEIVE_SCALE_PARAMETERS as Linux lays it out, with `table` and `key`. */
describe('RndisControl: RSS parameters flagged unchanged', () => {
  const OTHER_KEY = Uint8Array.from({ length: 40 }, (_, i) => (i * 7 + 1) & 0xff);
  const table = Array.from({ length: 16 }, (_, i) => i % 4);

  it('keep the key, table or hash info of this session; a new session has none to keep', () => {
    const c = control();
    expect(set(c, OID_GEN_RECEIVE_SCALE_PARAMETERS, rssParameters(table, DEFAULT_RSS_KEY))).toBe(RNDIS_STATUS_SUCCESS);
    // New key and table given, both flagged unchanged: the session's stay.
    const flags = NDIS_RSS_PARAM_FLAG_HASH_KEY_UNCHANGED | NDIS_RSS_PARAM_FLAG_ITABLE_UNCHANGED;
    expect(set(c, OID_GEN_RECEIVE_SCALE_PARAMETERS, rssParameters([3, 3], OTHER_KEY, flags))).toBe(RNDIS_STATUS_SUCCESS);
    expect(sameBytes(c.rss.key, DEFAULT_RSS_KEY)).toBe(true);
    expect([...c.rss.table]).toEqual(table);
    // A hash info of zero flagged unchanged: the session's Toeplitz hash info stays.
    const hashInfo = c.rss.hashInfo;
    expect(set(c, OID_GEN_RECEIVE_SCALE_PARAMETERS, rssParameters(table, OTHER_KEY, NDIS_RSS_PARAM_FLAG_HASH_INFO_UNCHANGED, 0))).toBe(
      RNDIS_STATUS_SUCCESS,
    );
    expect(c.rss.hashInfo).toBe(hashInfo);
    expect(sameBytes(c.rss.key, OTHER_KEY)).toBe(true);
    // A new RNDIS session: nothing of the old one is reused.
    c.handle(initMessage(9));
    expect(set(c, OID_GEN_RECEIVE_SCALE_PARAMETERS, rssParameters([], OTHER_KEY, NDIS_RSS_PARAM_FLAG_ITABLE_UNCHANGED))).toBe(
      RNDIS_STATUS_INVALID_DATA,
    );
    expect(set(c, OID_GEN_RECEIVE_SCALE_PARAMETERS, rssParameters(table, OTHER_KEY, NDIS_RSS_PARAM_FLAG_HASH_INFO_UNCHANGED, 0))).toBe(
      RNDIS_STATUS_INVALID_DATA,
    );
    expect(set(c, OID_GEN_RECEIVE_SCALE_PARAMETERS, rssParameters(table, OTHER_KEY, NDIS_RSS_PARAM_FLAG_HASH_KEY_UNCHANGED))).toBe(
      RNDIS_STATUS_SUCCESS,
    );
    expect(c.rss.key.every((b) => b === 0)).toBe(true);
  });
});

function rssParameters(table: readonly number[], key: Uint8Array, flag = 0, hashinfo = 0x1 | 0x100 | 0x200 | 0x400 | 0x1000): Uint8Array {
  const head = ndis_recv_scale_param.size;
  const info = new Uint8Array(head + table.length * 4 + key.length);
  ndis_recv_scale_param.encode(
    {
      hdr_type: 0x89,
      hdr_rev: 2,
      hdr_size: head,
      flag,
      hashinfo,
      indirect_tabsize: table.length * 4,
      indirect_taboffset: head,
      hashkey_size: key.length,
      hashkey_offset: head + table.length * 4,
    },
    info,
  );
  table.forEach((q, i) => new DataView(info.buffer).setUint32(head + i * 4, q, true));
  info.set(key, head + table.length * 4);
  return info;
}

describe('RndisControl: SET of config parameters, encapsulation, network layer addresses', () => {
  const name = utf16('NetworkAddress');
  it.each<[string, Uint8Array, number]>([
    ['shorter than rndis_config_parameter_info', networkAddress('00155dabcdef').subarray(0, 19), RNDIS_STATUS_INVALID_DATA],
    [
      'name offset past the buffer',
      configParameter('NetworkAddress', utf16('00155dabcdef'), 2, { parameter_name_offset: 500 }),
      RNDIS_STATUS_INVALID_DATA,
    ],
    [
      'name inside the structure',
      configParameter('NetworkAddress', utf16('00155dabcdef'), 2, { parameter_name_offset: 4 }),
      RNDIS_STATUS_INVALID_DATA,
    ],
    [
      'name length past the end',
      configParameter('NetworkAddress', utf16('00155dabcdef'), 2, { parameter_name_length: 0xffffffff }),
      RNDIS_STATUS_INVALID_DATA,
    ],
    [
      'value offset past the buffer',
      configParameter('NetworkAddress', utf16('00155dabcdef'), 2, { parameter_value_offset: 73 }),
      RNDIS_STATUS_INVALID_DATA,
    ],
    [
      'value length past the end',
      configParameter('NetworkAddress', utf16('00155dabcdef'), 2, { parameter_value_length: 26 }),
      RNDIS_STATUS_INVALID_DATA,
    ],
    [
      'odd name length',
      configParameter('NetworkAddress', utf16('00155dabcdef'), 2, { parameter_name_length: name.length - 1 }),
      RNDIS_STATUS_INVALID_DATA,
    ],
    ['empty name', configParameter('', utf16('00155dabcdef')), RNDIS_STATUS_INVALID_DATA],
    [
      'odd string value length',
      configParameter('NetworkAddress', utf16('00155dabcdef'), 2, { parameter_value_length: 23 }),
      RNDIS_STATUS_INVALID_DATA,
    ],
    ['a non-hex digit', networkAddress('00155dabcdeg'), RNDIS_STATUS_INVALID_DATA],
    ['11 digits', networkAddress('00155dabcde'), RNDIS_STATUS_INVALID_DATA],
    ['13 digits', networkAddress('00155dabcdef0'), RNDIS_STATUS_INVALID_DATA],
    ['with colons', networkAddress('00:15:5d:ab:cd:ef'), RNDIS_STATUS_INVALID_DATA],
    ['a multicast address', networkAddress('01155dabcdef'), RNDIS_STATUS_INVALID_DATA],
    ['all zeros', networkAddress('000000000000'), RNDIS_STATUS_INVALID_DATA],
    [
      'NetworkAddress as an integer',
      configParameter('NetworkAddress', Uint8Array.of(1, 2, 3, 4), RNDIS_CONFIG_PARAM_TYPE_INTEGER),
      RNDIS_STATUS_INVALID_DATA,
    ],
    [
      'an integer of 3 bytes',
      configParameter('*SpeedDuplex', Uint8Array.of(1, 2, 3), RNDIS_CONFIG_PARAM_TYPE_INTEGER),
      RNDIS_STATUS_INVALID_DATA,
    ],
  ])('hostile config parameter (%s): refused, counted, the MAC unchanged', (_name, info, status) => {
    const c = control({ allowMacChange: true });
    expect(set(c, OID_GEN_RNDIS_CONFIG_PARAMETER, info)).toBe(status);
    expect(c.stats.rndisControlErrors).toBe(1);
    expect([...c.nic.mac]).toEqual([...GUEST_MAC]);
    expect(set(c, OID_GEN_RNDIS_CONFIG_PARAMETER, networkAddress('00155dABCDEF'))).toBe(RNDIS_STATUS_SUCCESS); // still takes a good one
    expect([...c.nic.mac]).toEqual([...NEW_MAC]);
  });

  it('NetworkAddress: taken when allowed (any case, a C terminator tolerated), refused with FAILURE when not', () => {
    const refused = control();
    expect(set(refused, OID_GEN_RNDIS_CONFIG_PARAMETER, networkAddress('00155dabcdef'))).toBe(RNDIS_STATUS_FAILURE);
    expect(refused.stats.rndisControlErrors).toBe(1);
    expect([...query(refused, OID_802_3_CURRENT_ADDRESS).data]).toEqual([...GUEST_MAC]);
    const c = control({ allowMacChange: true });
    const terminated = configParameter('networkaddress', utf16('00155dabcdef\0'));
    expect(set(c, OID_GEN_RNDIS_CONFIG_PARAMETER, terminated)).toBe(RNDIS_STATUS_SUCCESS);
    expect([...query(c, OID_802_3_CURRENT_ADDRESS).data]).toEqual([...NEW_MAC]);
    expect([...query(c, OID_802_3_PERMANENT_ADDRESS).data]).toEqual([...GUEST_MAC]);
    expect([...GUEST_MAC]).toEqual([0x00, 0x15, 0x5d, 0x12, 0x34, 0x56]); // the caller's bytes untouched
    // A new NVSP session and a new RNDIS session keep it: Linux does not send it again after an MTU change.
    c.reset();
    c.handle(initMessage(2));
    expect([...query(c, OID_802_3_CURRENT_ADDRESS).data]).toEqual([...NEW_MAC]);
  });

  it('other config parameters are accepted and ignored, with a debug log', () => {
    const logger = new MemoryLogger();
    const c = control({ logger });
    expect(set(c, OID_GEN_RNDIS_CONFIG_PARAMETER, configParameter('*LsoV2IPv4', utf16('1')))).toBe(RNDIS_STATUS_SUCCESS);
    expect(set(c, OID_GEN_RNDIS_CONFIG_PARAMETER, configParameter('*JumboPacket', Uint8Array.of(0xea, 5, 0, 0), 0))).toBe(
      RNDIS_STATUS_SUCCESS,
    );
    expect(c.stats.rndisControlErrors).toBe(0);
    expect(logger.records.filter((r) => r.level === 'debug' && r.message.includes('"*LsoV2IPv4"'))).toHaveLength(1);
  });

  const encapsulation = (patch: Parameters<typeof ndis_offload_encapsulation.encodeNew>[0] = {}) =>
    ndis_offload_encapsulation.encodeNew({
      hdr_type: NDIS_OBJECT_TYPE_OFFLOAD_ENCAPSULATION,
      hdr_rev: 1,
      hdr_size: 28,
      ipv4_enabled: NDIS_OFFLOAD_SET_ON,
      ipv4_encapsulation_type: NDIS_ENCAPSULATION_IEEE_802_3,
      ipv4_header_size: 14,
      ipv6_enabled: NDIS_OFFLOAD_SET_ON,
      ipv6_encapsulation_type: NDIS_ENCAPSULATION_IEEE_802_3,
      ipv6_header_size: 14,
      ...patch,
    });

  it.each<[string, Uint8Array, number]>([
    ['27 bytes', encapsulation().subarray(0, 27), RNDIS_STATUS_INVALID_LENGTH],
    ['another object type', encapsulation({ hdr_type: 0xa7 }), RNDIS_STATUS_INVALID_DATA],
    ['revision 0', encapsulation({ hdr_rev: 0 }), RNDIS_STATUS_INVALID_DATA],
    ['an object size below the structure', encapsulation({ hdr_size: 20 }), RNDIS_STATUS_INVALID_DATA],
    ['an object size past what was sent', encapsulation({ hdr_size: 64 }), RNDIS_STATUS_INVALID_DATA],
    ['IPv4 other than 802.3', encapsulation({ ipv4_encapsulation_type: 0x10 }), RNDIS_STATUS_NOT_SUPPORTED],
    ['IPv6 with a 18-byte header', encapsulation({ ipv6_header_size: 18 }), RNDIS_STATUS_NOT_SUPPORTED],
  ])('OID_OFFLOAD_ENCAPSULATION with %s: refused and counted, nothing recorded', (_name, info, status) => {
    const c = control();
    expect(set(c, OID_OFFLOAD_ENCAPSULATION, info)).toBe(status);
    expect(c.stats.rndisControlErrors).toBe(1);
    expect(c.offloads.encapsulation).toBeNull();
  });

  it('OID_OFFLOAD_ENCAPSULATION of 802.3 (or "no change" of anything) is recorded', () => {
    const c = control();
    expect(set(c, OID_OFFLOAD_ENCAPSULATION, encapsulation())).toBe(RNDIS_STATUS_SUCCESS);
    expect(c.offloads.encapsulation).toMatchObject({ ipv4_enabled: NDIS_OFFLOAD_SET_ON, ipv4_header_size: 14 });
    const noChange = encapsulation({ ipv4_enabled: NDIS_OFFLOAD_SET_NO_CHANGE, ipv4_encapsulation_type: 0 });
    expect(set(c, OID_OFFLOAD_ENCAPSULATION, noChange)).toBe(RNDIS_STATUS_SUCCESS);
    expect(c.offloads.encapsulation?.ipv4_enabled).toBe(NDIS_OFFLOAD_SET_NO_CHANGE);
    expect(c.stats.rndisControlErrors).toBe(0);
  });

  it('OID_GEN_NETWORK_LAYER_ADDRESSES is accepted (nothing to do), whatever it holds', () => {
    const c = control();
    expect(set(c, OID_GEN_NETWORK_LAYER_ADDRESSES, Uint8Array.of(1, 0, 0, 0, 2, 0, 1, 0, 4, 0, 10, 0, 0, 1))).toBe(RNDIS_STATUS_SUCCESS);
    expect(set(c, OID_GEN_NETWORK_LAYER_ADDRESSES, new Uint8Array(0))).toBe(RNDIS_STATUS_SUCCESS);
    expect(c.stats).toMatchObject({ rndisControlErrors: 0, rndisUnsupportedOids: 0 });
  });

  it.each<[string, Uint8Array, number]>([
    ['7 bytes', Uint8Array.from([...MULTICAST, 1]), RNDIS_STATUS_INVALID_LENGTH],
    ['33 addresses', new Uint8Array(33 * 6).map((_, i) => (i % 6 === 0 ? 1 : 0)), RNDIS_STATUS_MULTICAST_FULL],
    ['a unicast address', Uint8Array.from([...MULTICAST, ...GUEST_MAC]), RNDIS_STATUS_INVALID_DATA],
  ])('a multicast list of %s: refused, counted, the list unchanged', (_name, info, status) => {
    const c = control();
    expect(set(c, OID_802_3_MULTICAST_LIST, MULTICAST)).toBe(RNDIS_STATUS_SUCCESS);
    expect(set(c, OID_802_3_MULTICAST_LIST, info)).toBe(status);
    expect(c.stats.rndisControlErrors).toBe(1);
    expect([...c.multicastList]).toEqual([...MULTICAST]);
  });
});

describe('RNDIS control through the device', () => {
  async function connected(options: Parameters<typeof nicSim>[0] = {}): Promise<NicSim> {
    const sim = await nicSim(options);
    await sim.guest.connect();
    return sim;
  }

  it('KEEPALIVE: KEEPALIVE_C with the request id and success', async () => {
    const sim = await connected();
    const answer = await sim.guest.rndisRequest(keepaliveMessage(0x4b41), 0x4b41);
    expect(answer.length).toBe(16);
    expect([u32(answer, 0), u32(answer, 4), u32(answer, 8), u32(answer, 12)]).toEqual([
      RNDIS_MSG_KEEPALIVE_C,
      16,
      0x4b41,
      RNDIS_STATUS_SUCCESS,
    ]);
    expect(sim.nic.stats).toMatchObject({ rndisErrors: 0, rndisControlErrors: 0 });
  });

  it('RESET: addressing_reset 1; no frame reaches the guest until it sets its filter again; RSS stays', async () => {
    const sim = await connected({ guest: { queues: 2 } });
    expect(await sim.guest.set(OID_802_3_MULTICAST_LIST, MULTICAST)).toBe(RNDIS_STATUS_SUCCESS);
    expect(await delivered(sim, GUEST_MAC)).toBe(true);
    expect(sim.nic.rndis.rss.enabled).toBe(true);
    expect(await sim.guest.rndisReset()).toEqual({ status: RNDIS_STATUS_SUCCESS, addressingReset: 1 });
    expect(u32((await sim.guest.query(OID_GEN_CURRENT_PACKET_FILTER)).data, 0)).toBe(0);
    expect((await sim.guest.query(OID_802_3_MULTICAST_LIST)).data.length).toBe(0);
    const notReady = sim.nic.stats.rxNotReady;
    expect(await delivered(sim, GUEST_MAC)).toBe(false);
    expect(sim.nic.stats.rxNotReady).toBe(notReady + 1);
    expect(sim.nic.rndis.rss.enabled).toBe(true);
    await sim.guest.setPacketFilter(NDIS_PACKET_TYPE_DIRECTED | NDIS_PACKET_TYPE_BROADCAST);
    expect(await delivered(sim, GUEST_MAC)).toBe(true);
  });

  it('HALT: data refused and counted, frames not delivered, control answered ADAPTER_NOT_READY; INITIALIZE brings it back', async () => {
    const sim = await connected();
    expect(await sim.guest.sendRaw(haltMessage(0x4a17), 0, NVSP_RNDIS_CHANNEL_CONTROL)).toBe(NVSP_STAT_SUCCESS);
    expect(sim.nic.rndis.state).toBe('halted');
    const out = ethernetFrame(PEER_MAC, GUEST_MAC, 90);
    expect(await sim.guest.sendRaw(rndisDataMessage(out))).toBe(NVSP_STAT_INVALID_RNDIS_PKT);
    expect(sim.nic.stats.rndisErrors).toBe(1);
    expect(sim.peerSink.frames.length).toBe(0);
    expect(await delivered(sim, GUEST_MAC)).toBe(false);
    expect((await sim.guest.query(OID_GEN_MAXIMUM_FRAME_SIZE)).status).toBe(RNDIS_STATUS_ADAPTER_NOT_READY);
    expect(sim.nic.stats.rndisControlErrors).toBe(1);
    expect(answerStatus(await sim.guest.rndisRequest(initMessage(0x1717), 0x1717))).toBe(RNDIS_STATUS_SUCCESS);
    expect(sim.nic.rndis.state).toBe('initialized');
    expect(sim.nic.rndis.packetFilter).toBe(0); // a fresh session: the guest sets it again
    await sim.guest.setPacketFilter(NDIS_PACKET_TYPE_DIRECTED);
    expect(await delivered(sim, GUEST_MAC)).toBe(true);
    expect(await sim.guest.sendRaw(rndisDataMessage(out))).toBe(NVSP_STAT_SUCCESS);
    expect(sim.peerSink.frames.length).toBe(1);
  });

  it('XMIT_OK / RCV_OK count the frames each way: a u64, or a u32 for a 4-byte request', async () => {
    const sim = await connected();
    for (let i = 0; i < 3; i++) await sim.guest.until(() => sim.guest.send(ethernetFrame(PEER_MAC, GUEST_MAC, 100 + i)));
    await sim.guest.until(() => sim.peerSink.frames.length === 3);
    for (let i = 0; i < 2; i++) expect(await delivered(sim, GUEST_MAC)).toBe(true);
    const xmit = await sim.guest.query(OID_GEN_XMIT_OK);
    expect(new DataView(xmit.data.buffer).getBigUint64(0, true)).toBe(3n);
    const rcv = await sim.guest.query(OID_GEN_RCV_OK);
    expect(new DataView(rcv.data.buffer).getBigUint64(0, true)).toBe(2n);
    expect([...(await sim.guest.query(OID_GEN_RCV_OK, new Uint8Array(4))).data]).toEqual([2, 0, 0, 0]);
  });

  it('OID_GEN_LINK_STATE and OID_GEN_MAX_LINK_SPEED follow the link and its speed', async () => {
    const sim = await connected({ nic: { linkSpeedBps: 25e9 } });
    const up = ndis_link_state.decode((await sim.guest.query(OID_GEN_LINK_STATE)).data);
    expect(up).toMatchObject({
      hdr_type: 0x80,
      hdr_rev: 1,
      hdr_size: 40,
      media_connect_state: 1,
      media_duplex_state: 2,
      xmit_link_speed: 25_000_000_000n,
    });
    expect(ndis_link_speed.decode((await sim.guest.query(OID_GEN_MAX_LINK_SPEED)).data)).toEqual({
      xmit_link_speed: 25_000_000_000n,
      rcv_link_speed: 25_000_000_000n,
    });
    sim.nic.disconnect();
    expect(ndis_link_state.decode((await sim.guest.query(OID_GEN_LINK_STATE)).data).media_connect_state).toBe(2);
  });

  it('NetworkAddress: refused by default (the rx filter keeps the old MAC); allowed, the current address and the rx filter change', async () => {
    const sim = await connected();
    expect(await sim.guest.set(OID_GEN_RNDIS_CONFIG_PARAMETER, networkAddress('00155dabcdef'))).toBe(RNDIS_STATUS_FAILURE);
    expect(sim.nic.stats.rndisControlErrors).toBe(1);
    expect([...(await sim.guest.query(OID_802_3_CURRENT_ADDRESS)).data]).toEqual([...GUEST_MAC]);
    expect(await delivered(sim, NEW_MAC)).toBe(false);
    sim.nic.rndis.allowMacChange = true;
    expect(await sim.guest.set(OID_GEN_RNDIS_CONFIG_PARAMETER, networkAddress('00155dabcdef'))).toBe(RNDIS_STATUS_SUCCESS);
    expect([...(await sim.guest.query(OID_802_3_CURRENT_ADDRESS)).data]).toEqual([...NEW_MAC]);
    expect([...(await sim.guest.query(OID_802_3_PERMANENT_ADDRESS)).data]).toEqual([...GUEST_MAC]);
    expect([...sim.nic.mac]).toEqual([...NEW_MAC]);
    expect(await delivered(sim, NEW_MAC)).toBe(true);
    // The permanent address still passes (a reloaded driver knows only that one); others do not.
    expect(await delivered(sim, GUEST_MAC)).toBe(true);
    const filtered = sim.nic.stats.rxFiltered;
    expect(await delivered(sim, OTHER_MAC)).toBe(false);
    expect(sim.nic.stats.rxFiltered).toBe(filtered + 1);
  });

  it('a link speed that is not a whole number of bit/s is refused when the NIC is made (a typed error, not a throw on a guest QUERY)', () => {
    for (const linkSpeedBps of [NaN, -1, 1.5, 2 ** 64, Infinity]) {
      expect(() => new RndisControl({ ...NIC, linkSpeedBps })).toThrow(HostUsageError);
      expect(() => new NetvspDevice({ backend: createPortPair()[0], mac: GUEST_MAC, linkSpeedBps })).toThrow(HostUsageError);
    }
  });

  it('a guest that unloads VMBus (a reboot) gets the permanent address back as its current one', async () => {
    const sim = await connected({ nic: { allowMacChange: true } });
    expect(await sim.guest.set(OID_GEN_RNDIS_CONFIG_PARAMETER, networkAddress('00155dabcdef'))).toBe(RNDIS_STATUS_SUCCESS);
    expect([...sim.nic.mac]).toEqual([...NEW_MAC]);
    // A new NVSP session (Linux's MTU change) keeps it ...
    await sim.guest.close();
    const again = new NetvscClient({ vmbus: sim.vmbus, memory: sim.memory, pages: sim.pages, relid: sim.attached.channel.relid });
    await again.connect();
    expect([...sim.nic.mac]).toEqual([...NEW_MAC]);
    // ... a VMBus unload does not.
    await sim.vmbus.unload();
    expect([...sim.nic.mac]).toEqual([...GUEST_MAC]);
  });

  it('NetworkAddress: the NetvspOptions allowMacChange lets the guest change its address from the start', async () => {
    const sim = await connected({ nic: { allowMacChange: true } });
    expect(sim.nic.rndis.allowMacChange).toBe(true);
    expect(await sim.guest.set(OID_GEN_RNDIS_CONFIG_PARAMETER, networkAddress('00155dabcdef'))).toBe(RNDIS_STATUS_SUCCESS);
    expect([...sim.nic.mac]).toEqual([...NEW_MAC]);
    expect(await delivered(sim, NEW_MAC)).toBe(true);
  });

  it('refused requests are counted: an information buffer outside the message, bad RSS parameters, an unknown OID', async () => {
    const sim = await connected({ guest: { queues: 2 } });
    const table = sim.nic.rndis.rss.table.slice();
    const outside = setMessage(0x51, OID_GEN_CURRENT_PACKET_FILTER, Uint8Array.of(1, 0, 0, 0), { info_buf_offset: 21 });
    expect(answerStatus(await sim.guest.rndisRequest(outside, 0x51))).toBe(RNDIS_STATUS_INVALID_LENGTH);
    const huge = setMessage(0x52, OID_GEN_CURRENT_PACKET_FILTER, Uint8Array.of(1, 0, 0, 0), { info_buflen: 0xffffffff });
    expect(answerStatus(await sim.guest.rndisRequest(huge, 0x52))).toBe(RNDIS_STATUS_INVALID_LENGTH);
    expect(sim.nic.rndis.packetFilter).not.toBe(1);
    expect(sim.nic.stats.rndisControlErrors).toBe(2);
    // A queue past the four the NIC has, then a 39-byte key.
    expect(await sim.guest.setRss(9, DEFAULT_RSS_KEY)).toBe(RNDIS_STATUS_INVALID_DATA);
    expect(await sim.guest.setRss(2, DEFAULT_RSS_KEY.subarray(0, 39))).toBe(RNDIS_STATUS_INVALID_DATA);
    expect(sim.nic.stats.rndisControlErrors).toBe(4);
    expect([...sim.nic.rndis.rss.table]).toEqual([...table]);
    expect((await sim.guest.query(0x00010108)).status).toBe(RNDIS_STATUS_NOT_SUPPORTED); // OID_GEN_TRANSMIT_BUFFER_SPACE
    expect(await sim.guest.set(0xff00ff00, new Uint8Array(4))).toBe(RNDIS_STATUS_NOT_SUPPORTED);
    expect(sim.nic.stats).toMatchObject({ rndisControlErrors: 4, rndisUnsupportedOids: 2, rndisErrors: 0 });
  });

  it('controlDrops: answers beyond the receive sections and the 64 that wait are dropped and counted; the rest arrive', async () => {
    const sim = await connected({ guest: { recvBufferBytes: 16 << 10 } });
    const sections = sim.guest.info.recvSections;
    await sim.guest.until(() => sim.nic.receiveSectionsFree === sections);
    sim.guest.holdCompletions = true; // the guest stops returning receive sections
    const waiting = 64; // netvsp's MAX_PENDING_CONTROL
    const sent = sections + waiting + 3;
    for (let i = 0; i < sent; i++)
      expect(await sim.guest.sendRaw(keepaliveMessage(1000 + i), 0, NVSP_RNDIS_CHANNEL_CONTROL)).toBe(NVSP_STAT_SUCCESS);
    expect(sim.nic.stats.controlDrops).toBe(3);
    sim.guest.holdCompletions = false;
    sim.guest.releaseHeld();
    for (let i = 0; i < sections + waiting; i++) expect(answerStatus(await sim.guest.rndisAnswer(1000 + i))).toBe(RNDIS_STATUS_SUCCESS);
    expect(answerStatus(await sim.guest.rndisRequest(keepaliveMessage(7), 7))).toBe(RNDIS_STATUS_SUCCESS);
    expect(sim.nic.stats.controlDrops).toBe(3);
  });
});
