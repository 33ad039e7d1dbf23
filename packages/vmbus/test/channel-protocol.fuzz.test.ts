import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  CHANNEL_MESSAGES,
  CHANNELMSG_GPADL_BODY,
  CHANNELMSG_GPADL_HEADER,
  CHANNELMSG_INITIATE_CONTACT,
  CHANNELMSG_OFFERCHANNEL,
  CHANNELMSG_OPENCHANNEL,
  CHANNELMSG_VERSION_RESPONSE,
  ChannelProtocolError,
  GPADL_BODY_MAX_PFNS,
  GPADL_HEADER_MAX_PFNS,
  VERSION_WIN10_V5_3,
  channelMessageSize,
  encodeChannelMessage,
  encodeInitiateContact,
  encodeVersionResponse,
  gpadlMessages,
  isKnownMessageType,
  parseChannelMessage,
  vmbus_channel_offer,
  vmbus_channel_offer_channel,
} from '@hvemu/vmbus';
import { fuzzRuns } from '../../../test/helpers.js';

/** sizeof() of each message struct in Linux include/linux/hyperv.h (and hyperv_vmbus.h). */
const LINUX_SIZES: Record<number, number> = {
  1: 196, // vmbus_channel_offer_channel
  2: 12, // vmbus_channel_rescind_offer
  3: 8,
  4: 8,
  5: 148, // vmbus_channel_open_channel
  6: 20, // vmbus_channel_open_result
  7: 12, // vmbus_channel_close_channel
  8: 20, // vmbus_channel_gpadl_header (fixed part)
  9: 16, // vmbus_channel_gpadl_body (fixed part)
  10: 20, // vmbus_channel_gpadl_created
  11: 16, // vmbus_channel_gpadl_teardown
  12: 12, // vmbus_channel_gpadl_torndown
  13: 12, // vmbus_channel_relid_released
  14: 40, // vmbus_channel_initiate_contact
  15: 16, // vmbus_channel_version_response
  16: 8,
  17: 8,
  21: 40, // vmbus_channel_tl_connect_request
  22: 16, // vmbus_channel_modifychannel
  23: 44,
  24: 16, // vmbus_channel_modifychannel_response
};

describe('channel message structures', () => {
  it('have the Linux sizes', () => {
    expect(vmbus_channel_offer.size).toBe(176);
    expect(vmbus_channel_offer_channel.size).toBe(196);
    for (const [type, size] of Object.entries(LINUX_SIZES))
      expect([Number(type), channelMessageSize(Number(type) as never)]).toEqual([Number(type), size]);
    expect(
      Object.keys(CHANNEL_MESSAGES)
        .map(Number)
        .sort((a, b) => a - b),
    ).toEqual(Object.keys(LINUX_SIZES).map(Number));
  });

  it('offer fields sit at the Linux offsets (+8 in the message)', () => {
    const o = vmbus_channel_offer_channel.offsetOf;
    expect([o.if_type, o.if_instance, o.chn_flags, o.mmio_megabytes, o.user_def, o.sub_channel_index]).toEqual([8, 24, 56, 58, 60, 180]);
    expect([o.child_relid, o.monitorid, o.monitor_allocated, o.is_dedicated_interrupt, o.connection_id]).toEqual([184, 188, 189, 190, 192]);
  });

  it('encodes GUIDs in the Windows mixed-endian layout', () => {
    const bytes = encodeChannelMessage(CHANNELMSG_OFFERCHANNEL, { if_type: 'f8615163-df3e-46c5-913f-f2d2f965ed0e' });
    expect([...bytes.subarray(8, 24)]).toEqual([
      0x63, 0x51, 0x61, 0xf8, 0x3e, 0xdf, 0xc5, 0x46, 0x91, 0x3f, 0xf2, 0xd2, 0xf9, 0x65, 0xed, 0x0e,
    ]);
  });

  it('round-trips every fixed message', () => {
    for (const type of Object.keys(CHANNEL_MESSAGES).map(Number)) {
      if (type === CHANNELMSG_GPADL_HEADER || type === CHANNELMSG_GPADL_BODY) continue;
      const bytes = encodeChannelMessage(type as never, {});
      expect(bytes.length).toBe(LINUX_SIZES[type]);
      const m = parseChannelMessage(bytes);
      expect(m).not.toBeInstanceOf(ChannelProtocolError);
      expect((m as { msgtype: number }).msgtype).toBe(type);
    }
  });

  it('decodes the >= 5.0 form of INITIATE_CONTACT and the 6.0 VERSION_RESPONSE', () => {
    const ic = parseChannelMessage(
      encodeInitiateContact({ vmbus_version_requested: VERSION_WIN10_V5_3, target_vcpu: 3, msg_sint: 2, msg_vtl: 0, feature_flags: 0x21 }),
    );
    expect(ic).toMatchObject({ msgtype: CHANNELMSG_INITIATE_CONTACT, target_vcpu: 3, msg_sint: 2, msg_vtl: 0, feature_flags: 0x21 });
    const v1 = encodeVersionResponse({ version_supported: 1, msg_conn_id: 4 }, false);
    const v2 = encodeVersionResponse({ version_supported: 1, msg_conn_id: 4, supported_features: 0x20 }, true);
    expect([v1.length, v2.length]).toEqual([16, 20]);
    expect(parseChannelMessage(v2)).toMatchObject({ msgtype: CHANNELMSG_VERSION_RESPONSE, msg_conn_id: 4, supported_features: 0x20 });
    expect(parseChannelMessage(v1)).toMatchObject({ supported_features: 0 });
  });

  it('splits GPADLs as Linux does: 26 PFNs in the header, 28 per body, all <= 240 bytes', () => {
    for (const pages of [1, 26, 27, 54, 55, 200]) {
      const msgs = gpadlMessages(
        1,
        0xe1e10,
        Array.from({ length: pages }, (_, i) => i + 100),
        pages * 4096,
      );
      expect(msgs.length).toBe(1 + Math.ceil(Math.max(0, pages - GPADL_HEADER_MAX_PFNS) / GPADL_BODY_MAX_PFNS));
      for (const m of msgs) expect(m.length).toBeLessThanOrEqual(240);
      const header = parseChannelMessage(msgs[0]);
      expect(header).toMatchObject({ msgtype: CHANNELMSG_GPADL_HEADER, range_buflen: 8 + 8 * pages, rangecount: 1 });
    }
  });
});

describe('parseChannelMessage refuses', () => {
  const fault = (bytes: Uint8Array): string => {
    const r = parseChannelMessage(bytes);
    expect(r).toBeInstanceOf(ChannelProtocolError);
    expect((r as ChannelProtocolError).outcome).toBe('message-dropped');
    return (r as ChannelProtocolError).fault;
  };
  it('truncated headers, unknown types, truncated and oversized messages, partial GPADL words', () => {
    expect(fault(new Uint8Array(7))).toBe('truncated-header');
    for (const t of [0, 18, 19, 20, 25, 0xffffffff]) {
      const b = new Uint8Array(200);
      new DataView(b.buffer).setUint32(0, t, true);
      expect(fault(b)).toBe('unknown-type');
    }
    expect(fault(encodeChannelMessage(CHANNELMSG_OPENCHANNEL, {}).subarray(0, 147))).toBe('truncated');
    expect(fault(encodeChannelMessage(CHANNELMSG_OFFERCHANNEL, {}).subarray(0, 195))).toBe('truncated');
    expect(fault(new Uint8Array(241))).toBe('oversized');
    const header = gpadlMessages(1, 1, [5], 4096)[0];
    expect(fault(header.subarray(0, 20))).toBe('malformed');
    expect(fault(header.subarray(0, 27))).toBe('malformed');
  });
});

describe('parser fuzzing', () => {
  it('never throws on arbitrary bytes; accepts exactly the known types at full size', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 260 }), (bytes) => {
        const r = parseChannelMessage(bytes);
        if (r instanceof ChannelProtocolError) return;
        expect(isKnownMessageType(r.msgtype)).toBe(true);
        expect(bytes.length).toBeGreaterThanOrEqual(channelMessageSize(r.msgtype));
        expect(bytes.length).toBeLessThanOrEqual(240);
      }),
      { numRuns: fuzzRuns(2000) },
    );
  });

  it('every message type, mutated: full-size messages of each type parse, any truncation is refused', () => {
    const types = Object.keys(CHANNEL_MESSAGES).map(Number);
    fc.assert(
      fc.property(fc.constantFrom(...types), fc.uint8Array({ minLength: 240, maxLength: 240 }), fc.nat(240), (type, noise, cut) => {
        const bytes = noise.slice();
        new DataView(bytes.buffer).setUint32(0, type, true);
        const size = channelMessageSize(type as never);
        const length = Math.max(size, cut);
        const variable = type === CHANNELMSG_GPADL_HEADER || type === CHANNELMSG_GPADL_BODY;
        const r = parseChannelMessage(bytes.subarray(0, length));
        if (!variable) expect(r).not.toBeInstanceOf(ChannelProtocolError);
        else expect(r instanceof ChannelProtocolError).toBe(length === size || (length - size) % 8 !== 0);
        if (size > 8) expect(parseChannelMessage(bytes.subarray(0, Math.min(cut, size - 1)))).toBeInstanceOf(ChannelProtocolError);
      }),
      { numRuns: fuzzRuns(2000) },
    );
  });
});
