/**
 * fast-check arbitraries for network property tests: Ethernet frames (every size from the
 * header to the MTU, unicast to a given MAC, broadcast, IPv4/IPv6 TCP flows for RSS), RNDIS
 * data messages (well formed, with PPI chains) and hostile ones (each mutation a guest can
 * make to a message's lengths, offsets and PPI chain).
 */
import fc from 'fast-check';
import {
  NBL_HASH_VALUE,
  IEEE_8021Q_INFO,
  RNDIS_HEADER_SIZE,
  RNDIS_PACKET_HEADER_SIZE,
  TCPIP_CHKSUM_PKTINFO,
  writeRndisPacketHeader,
} from '../rndis.js';
import { VLAN_HLEN, vlanTci, writeCtag } from '../ethernet.js';

export const ETH_HEADER = 14;

/**
 * `frame` with the 802.1Q tag an IEEE_8021Q_INFO PPI value names (ndis_pkt_8021q_info: pri
 * bits 0-2, cfi 3, vlanid 4-15) put back after the MACs: the frame as it was on the wire, as
 * Linux's stack sees it after netvsc hands the tag over out of band.
 */
export function withVlanTag(frame: Uint8Array, info: number): Uint8Array {
  const out = new Uint8Array(frame.length + VLAN_HLEN);
  out.set(frame.subarray(0, 12), 0);
  writeCtag(out, 12, vlanTci(info));
  out.set(frame.subarray(12), 12 + VLAN_HLEN);
  return out;
}

/** A frame of exactly `length` bytes (>= 14) to `dst` from `src`, ethertype 0x88b5 (local experimental), payload `fill`. */
export function ethernetFrame(dst: Uint8Array, src: Uint8Array, length: number, fill: (i: number) => number = (i) => i & 0xff): Uint8Array {
  const f = new Uint8Array(length);
  f.set(dst, 0);
  f.set(src, 6);
  f[12] = 0x88;
  f[13] = 0xb5;
  for (let i = ETH_HEADER; i < length; i++) f[i] = fill(i);
  return f;
}

/** Frames to `dst` of every size from 14 to `mtu + 14`, with random contents (a sequence number first for order checks). */
export function frameArbitrary(dst: Uint8Array, options: { mtu?: number; minLength?: number } = {}): fc.Arbitrary<Uint8Array> {
  const max = (options.mtu ?? 1500) + ETH_HEADER;
  return fc
    .record({
      length: fc.integer({ min: options.minLength ?? ETH_HEADER, max }),
      seed: fc.integer({ min: 0, max: 255 }),
      src: fc.uint8Array({ minLength: 6, maxLength: 6 }),
    })
    .map(({ length, seed, src }) => {
      src[0] &= 0xfe; // a unicast source
      return ethernetFrame(dst, src, length, (i) => (i * 31 + seed) & 0xff);
    });
}

/** An IPv4 TCP frame of flow (srcIp, dstIp, sport, dport) to `dst`, for RSS tests. */
export function tcp4Frame(dst: Uint8Array, flow: { srcIp: number; dstIp: number; sport: number; dport: number }, payload = 0): Uint8Array {
  const f = new Uint8Array(ETH_HEADER + 20 + 20 + payload);
  f.set(dst, 0);
  f.set([0x02, 0, 0, 0, 0, 0x99], 6);
  f[12] = 0x08;
  f[13] = 0x00;
  const ip = new DataView(f.buffer, ETH_HEADER);
  ip.setUint8(0, 0x45);
  ip.setUint16(2, 40 + payload);
  ip.setUint8(8, 64);
  ip.setUint8(9, 6);
  ip.setUint32(12, flow.srcIp);
  ip.setUint32(16, flow.dstIp);
  ip.setUint16(20, flow.sport);
  ip.setUint16(22, flow.dport);
  return f;
}

export function tcp4FlowArbitrary(): fc.Arbitrary<{ srcIp: number; dstIp: number; sport: number; dport: number }> {
  return fc.record({
    srcIp: fc.integer({ min: 0, max: 0xffffffff }),
    dstIp: fc.integer({ min: 0, max: 0xffffffff }),
    sport: fc.integer({ min: 0, max: 0xffff }),
    dport: fc.integer({ min: 0, max: 0xffff }),
  });
}

/** A well-formed RNDIS data message carrying `frame` with the u32 PPIs `ppis` ([type, value, ...]). */
export function rndisDataMessage(frame: Uint8Array, ppis: readonly number[] = []): Uint8Array {
  const headerLength = RNDIS_PACKET_HEADER_SIZE + (ppis.length / 2) * 16;
  const m = new Uint8Array(headerLength + frame.length);
  writeRndisPacketHeader(new DataView(m.buffer), 0, frame.length, ppis);
  m.set(frame, headerLength);
  return m;
}

/** PPI lists a Linux guest sends: none, checksum, VLAN, hash, in any combination. */
export function ppiArbitrary(): fc.Arbitrary<number[]> {
  return fc
    .subarray([TCPIP_CHKSUM_PKTINFO, IEEE_8021Q_INFO, NBL_HASH_VALUE])
    .chain((types) => fc.tuple(...types.map((t) => fc.integer({ min: 0, max: 0xffffffff }).map((v) => [t, v] as const))))
    .map((pairs) => pairs.flatMap(([t, v]) => [t, t === IEEE_8021Q_INFO ? v & 0xfff0 : v]));
}

/** A u32 field of an RNDIS data message a hostile guest can set to anything. */
export const RNDIS_PACKET_FIELDS = {
  msg_len: 4,
  data_offset: RNDIS_HEADER_SIZE,
  data_len: RNDIS_HEADER_SIZE + 4,
  oob_data_offset: RNDIS_HEADER_SIZE + 8,
  oob_data_len: RNDIS_HEADER_SIZE + 12,
  num_oob_data_elements: RNDIS_HEADER_SIZE + 16,
  per_pkt_info_offset: RNDIS_HEADER_SIZE + 20,
  per_pkt_info_len: RNDIS_HEADER_SIZE + 24,
} as const;

export type RndisMutation =
  | { kind: 'field'; field: keyof typeof RNDIS_PACKET_FIELDS; value: number }
  | { kind: 'ppi-size'; value: number }
  | { kind: 'ppi-offset'; value: number }
  | { kind: 'truncate'; length: number }
  | { kind: 'bytes'; at: number; value: number };

/** One hostile change to a data message: any field, a PPI element's size or offset, a cut, a byte. */
export function rndisMutationArbitrary(): fc.Arbitrary<RndisMutation> {
  const anyU32 = fc.oneof(
    fc.integer({ min: 0, max: 0xffffffff }),
    fc.integer({ min: 0, max: 200 }),
    fc.constantFrom(0xffffffff, 0x80000000, 0xfffffff0),
  );
  return fc.oneof(
    fc.record({
      kind: fc.constant('field' as const),
      field: fc.constantFrom(...(Object.keys(RNDIS_PACKET_FIELDS) as (keyof typeof RNDIS_PACKET_FIELDS)[])),
      value: anyU32,
    }),
    fc.record({ kind: fc.constant('ppi-size' as const), value: anyU32 }),
    fc.record({ kind: fc.constant('ppi-offset' as const), value: anyU32 }),
    fc.record({ kind: fc.constant('truncate' as const), length: fc.integer({ min: 0, max: 200 }) }),
    fc.record({ kind: fc.constant('bytes' as const), at: fc.integer({ min: 0, max: 120 }), value: fc.integer({ min: 0, max: 255 }) }),
  );
}

/** Applies `m` to a copy of `message` (a data message with at least one PPI for the PPI mutations). */
export function applyRndisMutation(message: Uint8Array, m: RndisMutation): Uint8Array {
  const out = message.slice();
  const dv = new DataView(out.buffer);
  const firstPpi = RNDIS_PACKET_HEADER_SIZE;
  switch (m.kind) {
    case 'field':
      if (out.length >= RNDIS_PACKET_FIELDS[m.field] + 4) dv.setUint32(RNDIS_PACKET_FIELDS[m.field], m.value >>> 0, true);
      return out;
    case 'ppi-size':
      if (out.length >= firstPpi + 12) dv.setUint32(firstPpi, m.value >>> 0, true);
      return out;
    case 'ppi-offset':
      if (out.length >= firstPpi + 12) dv.setUint32(firstPpi + 8, m.value >>> 0, true);
      return out;
    case 'truncate':
      return out.slice(0, Math.min(out.length, m.length));
    case 'bytes':
      if (m.at < out.length) out[m.at] = m.value;
      return out;
  }
}
