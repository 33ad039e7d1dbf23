/**
 * NVSP and RNDIS as data: sizes against the Linux driver's sizeof (drivers/net/hyperv/
 * hyperv_net.h, include/linux/rndis.h; the offload and RSS objects checked with gcc against
 * the same declarations), round trips, and the parsers fuzzed with every byte string (they
 * refuse with a fault, never throw, never read outside what they were given).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  encodeNvsp,
  forEachPpi,
  ndis_link_speed,
  ndis_link_state,
  ndis_object_header,
  ndis_offload,
  ndis_offload_encapsulation,
  ndis_offload_params,
  ndis_recv_scale_cap,
  ndis_recv_scale_param,
  NDIS_OFFLOAD_SIZE_6_0,
  NDIS_OFFLOAD_SIZE_6_1,
  nvsp_1_message_revoke_receive_buffer,
  nvsp_1_message_revoke_send_buffer,
  nvsp_1_message_send_ndis_version,
  nvsp_1_message_send_receive_buffer,
  nvsp_1_message_send_receive_buffer_complete,
  nvsp_1_message_send_rndis_packet,
  nvsp_1_message_send_rndis_packet_complete,
  nvsp_1_message_send_send_buffer,
  nvsp_1_message_send_send_buffer_complete,
  nvsp_2_send_ndis_config,
  nvsp_4_send_vf_association,
  nvsp_4_sw_datapath,
  nvsp_5_send_indirect_table,
  nvsp_5_subchannel_complete,
  nvsp_5_subchannel_request,
  nvsp_message_init,
  nvsp_message_init_complete,
  NVSP_MESSAGE_SIZE,
  NVSP_MSG_TYPE_INIT,
  NVSP_MSG1_TYPE_SEND_RNDIS_PKT,
  NVSP_PROTOCOL_VERSIONS,
  NvspProtocolError,
  parseNvspGuestMessage,
  parseNvspHostMessage,
  parseRndisPacket,
  rndis_config_parameter_info,
  rndis_halt_request,
  rndis_indicate_status,
  rndis_initialize_complete,
  rndis_initialize_request,
  rndis_keepalive_complete,
  rndis_keepalive_request,
  rndis_packet,
  rndis_per_packet_info,
  rndis_query_complete,
  rndis_query_request,
  rndis_reset_complete,
  rndis_reset_request,
  rndis_set_complete,
  rndis_set_request,
  RNDIS_HEADER_SIZE,
  RNDIS_PACKET_HEADER_SIZE,
  RndisPacketLayout,
  TCPIP_CHKSUM_PKTINFO,
  NBL_HASH_VALUE,
  toeplitz,
  rssHash,
  NDIS_HASH_IPV4,
  NDIS_HASH_TCP_IPV4,
  NDIS_HASH_IPV6,
  NDIS_HASH_TCP_IPV6,
} from '@hvemu/net';
import { DEFAULT_RSS_KEY, frameArbitrary, ppiArbitrary, rndisDataMessage, tcp4Frame } from '@hvemu/net/testing';
import { fuzzRuns } from '../../../test/helpers.js';

describe('sizes as the Linux driver has them', () => {
  it.each([
    ['nvsp_message', NVSP_MESSAGE_SIZE, 40],
    ['nvsp_message_init', nvsp_message_init.size, 8],
    ['nvsp_1_message_send_receive_buffer (packed)', nvsp_1_message_send_receive_buffer.size, 6],
    ['nvsp_1_message_send_receive_buffer_complete', nvsp_1_message_send_receive_buffer_complete.size, 24],
    ['nvsp_1_message_send_send_buffer_complete', nvsp_1_message_send_send_buffer_complete.size, 8],
    ['nvsp_1_message_send_rndis_packet', nvsp_1_message_send_rndis_packet.size, 12],
    ['nvsp_2_send_ndis_config', nvsp_2_send_ndis_config.size, 16],
    ['nvsp_5_subchannel_request', nvsp_5_subchannel_request.size, 8],
    ['rndis_packet', rndis_packet.size, 36],
    ['RNDIS header + rndis_packet', RNDIS_PACKET_HEADER_SIZE, 44],
    ['rndis_per_packet_info', rndis_per_packet_info.size, 12],
    ['rndis_initialize_complete', rndis_initialize_complete.size, 44],
    ['rndis_query_request', rndis_query_request.size, 20],
    ['rndis_query_complete', rndis_query_complete.size, 16],
    ['ndis_offload (NDIS_OFFLOAD_SIZE)', ndis_offload.size, 156],
    ['NDIS_OFFLOAD_SIZE_6_0', NDIS_OFFLOAD_SIZE_6_0, 112],
    ['NDIS_OFFLOAD_SIZE_6_1', NDIS_OFFLOAD_SIZE_6_1, 144],
    ['ndis_offload_params', ndis_offload_params.size, 28],
    ['ndis_recv_scale_cap (packed)', ndis_recv_scale_cap.size, 18],
    ['ndis_recv_scale_param', ndis_recv_scale_param.size, 40],
    // hyperv_net.h, the NVSP bodies (nvsp_1_message_revoke_* are not __packed: one u16, 2 either way).
    ['nvsp_message_init_complete (packed)', nvsp_message_init_complete.size, 12],
    ['nvsp_1_message_send_ndis_version (packed)', nvsp_1_message_send_ndis_version.size, 8],
    ['nvsp_1_message_send_send_buffer (packed)', nvsp_1_message_send_send_buffer.size, 6],
    ['nvsp_1_message_revoke_receive_buffer', nvsp_1_message_revoke_receive_buffer.size, 2],
    ['nvsp_1_message_revoke_send_buffer', nvsp_1_message_revoke_send_buffer.size, 2],
    ['nvsp_1_message_send_rndis_packet_complete', nvsp_1_message_send_rndis_packet_complete.size, 4],
    ['nvsp_4_send_vf_association (packed)', nvsp_4_send_vf_association.size, 8],
    ['nvsp_4_sw_datapath (packed)', nvsp_4_sw_datapath.size, 4],
    ['nvsp_5_subchannel_complete (packed)', nvsp_5_subchannel_complete.size, 8],
    ['nvsp_5_send_indirect_table (packed)', nvsp_5_send_indirect_table.size, 8],
    // hyperv_net.h, the RNDIS bodies (all u32 fields, no padding); RNDIS_HEADER_SIZE is rndis_message's
    // ndis_msg_type + msg_len, sizeof(struct rndis_message) - sizeof(union rndis_message_container).
    ['RNDIS_HEADER_SIZE', RNDIS_HEADER_SIZE, 8],
    ['rndis_initialize_request', rndis_initialize_request.size, 16],
    ['rndis_halt_request', rndis_halt_request.size, 4],
    ['rndis_set_request', rndis_set_request.size, 20],
    ['rndis_set_complete', rndis_set_complete.size, 8],
    ['rndis_reset_request', rndis_reset_request.size, 4],
    ['rndis_reset_complete', rndis_reset_complete.size, 8],
    ['rndis_indicate_status', rndis_indicate_status.size, 12],
    ['rndis_keepalive_request', rndis_keepalive_request.size, 4],
    ['rndis_keepalive_complete', rndis_keepalive_complete.size, 8],
    ['rndis_config_parameter_info', rndis_config_parameter_info.size, 20],
    ['ndis_object_header', ndis_object_header.size, 4],
  ])('%s is %i bytes', (_name, size, linux) => expect(size).toBe(linux));

  // Not in Linux (its netvsc never sends them): NDIS's own (ntddndis.h), natural alignment.
  it.each([
    ['NDIS_OFFLOAD_ENCAPSULATION (NDIS_SIZEOF_OFFLOAD_ENCAPSULATION_REVISION_1)', ndis_offload_encapsulation.size, 28],
    ['NDIS_LINK_SPEED (two ULONG64)', ndis_link_speed.size, 16],
    ['NDIS_LINK_STATE (NDIS_SIZEOF_LINK_STATE_REVISION_1: the ULONG64 speeds aligned at 16)', ndis_link_state.size, 40],
  ])('%s is %i bytes', (_name, size, ndis) => expect(size).toBe(ndis));

  it('versions are tried newest first, as netvsc_connect_vsp does', () => {
    expect(NVSP_PROTOCOL_VERSIONS).toEqual([0x60001, 0x60000, 0x50000, 0x40000, 0x30002, 2]);
  });
});

describe('NVSP parser', () => {
  it('round-trips the guest messages it takes and refuses short or unknown ones', () => {
    const init = encodeNvsp(NVSP_MSG_TYPE_INIT, nvsp_message_init, { min_protocol_ver: 2, max_protocol_ver: 0x60001 });
    expect(parseNvspGuestMessage(init)).toEqual({ msg_type: 1, min_protocol_ver: 2, max_protocol_ver: 0x60001 });
    // Hosts accept a message as short as its body (OpenVMM takes 28-byte v1 messages).
    expect(parseNvspGuestMessage(init.subarray(0, 12))).toMatchObject({ msg_type: 1 });
    expect((parseNvspGuestMessage(init.subarray(0, 11)) as NvspProtocolError).fault).toBe('short');
    expect((parseNvspGuestMessage(new Uint8Array([2, 0, 0, 0, ...new Array(36).fill(0)])) as NvspProtocolError).fault).toBe('unknown-type');
    expect((parseNvspGuestMessage(new Uint8Array(3)) as NvspProtocolError).fault).toBe('short');
    const rndis = encodeNvsp(NVSP_MSG1_TYPE_SEND_RNDIS_PKT, nvsp_1_message_send_rndis_packet, {
      channel_type: 1,
      send_buf_section_index: 0xffffffff,
    });
    expect(parseNvspHostMessage(rndis)).toMatchObject({ msg_type: 107, channel_type: 1, send_buf_section_index: 0xffffffff });
  });

  it('never throws on any bytes, and what it accepts has a known type and enough bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), fc.integer({ min: 0, max: 140 }), (bytes, type) => {
        if (bytes.length >= 4 && type < 140) new DataView(bytes.buffer).setUint32(0, type, true);
        for (const parse of [parseNvspGuestMessage, parseNvspHostMessage]) {
          const m = parse(bytes);
          if (m instanceof NvspProtocolError) continue;
          expect(bytes.length).toBeGreaterThanOrEqual(6); // the smallest body: a revoke's u16 id
          expect(m.msg_type).toBe(new DataView(bytes.buffer).getUint32(0, true));
        }
      }),
      { numRuns: fuzzRuns(2000) },
    );
  });
});

describe('RNDIS data message parser', () => {
  it('finds the frame and PPIs of every well-formed message', () => {
    fc.assert(
      fc.property(frameArbitrary(new Uint8Array(6), { mtu: 300 }), ppiArbitrary(), (frame, ppis) => {
        const m = rndisDataMessage(frame, ppis);
        const layout = new RndisPacketLayout();
        expect(parseRndisPacket(m, m.length, layout)).toBeNull();
        expect(Buffer.from(m.subarray(layout.dataOffset, layout.dataOffset + layout.dataLength)).equals(Buffer.from(frame))).toBe(true);
        const seen: number[] = [];
        const area = m.subarray(layout.ppiOffset, layout.ppiOffset + layout.ppiLength);
        expect(
          forEachPpi(area, (type, _i, at) => seen.push(type, new DataView(area.buffer, area.byteOffset).getUint32(at, true))),
        ).toBeNull();
        expect(seen).toEqual(ppis.map((v) => v >>> 0));
      }),
      { numRuns: fuzzRuns(300) },
    );
  });

  it('on any bytes: a fault, or a frame and PPI area inside the message; the PPI walk ends', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 44, maxLength: 200 }), fc.integer({ min: 0, max: 260 }), (bytes, msgLen) => {
        const layout = new RndisPacketLayout();
        const fault = parseRndisPacket(bytes, msgLen, layout);
        if (fault !== null) return;
        expect(layout.dataOffset + layout.dataLength).toBeLessThanOrEqual(msgLen);
        expect(layout.ppiOffset + layout.ppiLength).toBeLessThanOrEqual(msgLen);
        const area = bytes.subarray(0, Math.min(bytes.length, layout.ppiLength));
        let elements = 0;
        forEachPpi(area, (_t, _i, at, n) => {
          elements++;
          expect(at + n).toBeLessThanOrEqual(area.length);
        });
        expect(elements).toBeLessThanOrEqual(Math.floor(area.length / 12));
      }),
      { numRuns: fuzzRuns(3000) },
    );
  });

  it('parsing a message in place at any offset of a larger buffer gives what parsing a copy gives', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 0, maxLength: 200 }),
        fc.integer({ min: 0, max: 260 }),
        fc.integer({ min: 0, max: 64 }),
        fc.uint8Array({ minLength: 0, maxLength: 16 }),
        (bytes, msgLen, at, tail) => {
          const big = new Uint8Array(at + bytes.length + tail.length).fill(0xa5);
          big.set(bytes, at);
          big.set(tail, at + bytes.length);
          const copy = new RndisPacketLayout();
          const inPlace = new RndisPacketLayout();
          // The copy holds the message only (what the scratch copy did): the in-place parse must not see past it either.
          const viewOfMessage = big.subarray(0, at + bytes.length);
          expect(parseRndisPacket(viewOfMessage, msgLen, inPlace, at)).toBe(parseRndisPacket(bytes, msgLen, copy));
          expect(inPlace).toEqual(copy);
        },
      ),
      { numRuns: fuzzRuns(3000) },
    );
  });

  it('refuses PPI elements that lie about their size or offset', () => {
    const m = rndisDataMessage(new Uint8Array(20), [TCPIP_CHKSUM_PKTINFO, 1, NBL_HASH_VALUE, 7]);
    const area = m.subarray(44, 44 + 32);
    const dv = new DataView(area.buffer, area.byteOffset);
    dv.setUint32(16, 40, true); // the second element claims more than is left
    expect(forEachPpi(area, () => {})).toBe('bad-ppi-element');
    dv.setUint32(16, 16, true);
    dv.setUint32(24, 17, true); // its data starts past its end
    expect(forEachPpi(area, () => {})).toBe('bad-ppi-element');
    dv.setUint32(24, 4, true); // its data starts inside its own header
    expect(forEachPpi(area, () => {})).toBe('bad-ppi-element');
  });
});

describe('Toeplitz (the Microsoft RSS verification suite)', () => {
  // https://learn.microsoft.com/windows-hardware/drivers/network/verifying-the-rss-hash-calculation
  const v4 = [
    { src: [66, 9, 149, 187], dst: [161, 142, 100, 80], sport: 2794, dport: 1766, ip: 0x323e8fc2, tcp: 0x51ccc178 },
    { src: [199, 92, 111, 2], dst: [65, 69, 140, 83], sport: 14230, dport: 4739, ip: 0xd718262a, tcp: 0xc626b0ea },
    { src: [24, 19, 198, 95], dst: [12, 22, 207, 184], sport: 12898, dport: 38024, ip: 0xd2d0a5de, tcp: 0x5c2b394a },
  ];
  it.each(v4)('IPv4 $src -> $dst', ({ src, dst, sport, dport, ip, tcp }) => {
    const ipOf = (a: number[]) => ((a[0] << 24) | (a[1] << 16) | (a[2] << 8) | a[3]) >>> 0;
    const frame = tcp4Frame(new Uint8Array(6), { srcIp: ipOf(src), dstIp: ipOf(dst), sport, dport });
    expect(rssHash(DEFAULT_RSS_KEY, NDIS_HASH_IPV4, frame)).toBe(ip);
    expect(rssHash(DEFAULT_RSS_KEY, NDIS_HASH_IPV4 | NDIS_HASH_TCP_IPV4, frame)).toBe(tcp);
    expect(toeplitz(DEFAULT_RSS_KEY, Uint8Array.from([...src, ...dst]), 0, 8).hash).toBe(ip);
  });

  it('IPv6 3ffe:2501:200:1fff::7 -> 3ffe:2501:200:3::1 (2794 -> 1766)', () => {
    const frame = new Uint8Array(14 + 40 + 20);
    frame[12] = 0x86;
    frame[13] = 0xdd;
    frame[14] = 0x60;
    frame[14 + 6] = 6;
    frame.set([0x3f, 0xfe, 0x25, 0x01, 0x02, 0x00, 0x1f, 0xff, 0, 0, 0, 0, 0, 0, 0, 7], 22);
    frame.set([0x3f, 0xfe, 0x25, 0x01, 0x02, 0x00, 0x00, 0x03, 0, 0, 0, 0, 0, 0, 0, 1], 38);
    new DataView(frame.buffer).setUint16(54, 2794);
    new DataView(frame.buffer).setUint16(56, 1766);
    expect(rssHash(DEFAULT_RSS_KEY, NDIS_HASH_IPV6, frame)).toBe(0x2cc18cd5);
    expect(rssHash(DEFAULT_RSS_KEY, NDIS_HASH_IPV6 | NDIS_HASH_TCP_IPV6, frame)).toBe(0x40207d3d);
  });

  it('frames it cannot hash (ARP, short, hash type not asked for) get no hash', () => {
    const arp = new Uint8Array(60);
    arp[12] = 0x08;
    arp[13] = 0x06;
    expect(rssHash(DEFAULT_RSS_KEY, NDIS_HASH_IPV4, arp)).toBeNull();
    expect(rssHash(DEFAULT_RSS_KEY, NDIS_HASH_IPV4, new Uint8Array(10))).toBeNull();
    expect(rssHash(DEFAULT_RSS_KEY, NDIS_HASH_IPV6, tcp4Frame(new Uint8Array(6), { srcIp: 1, dstIp: 2, sport: 3, dport: 4 }))).toBeNull();
  });
});
