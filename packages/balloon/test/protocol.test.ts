/**
 * The wire structures against Linux drivers/hv/hv_balloon.c (all __packed): sizes and field
 * offsets, the page-range bit layout, the encoders' bytes, and the parser's refusals.
 */
import { describe, expect, it } from 'vitest';
import * as P from '@hvemu/balloon';
import { PageSet } from '@hvemu/balloon';

describe('hv_balloon structures', () => {
  it('have the driver sizes', () => {
    // sizeof(struct ...) in hv_balloon.c
    expect(P.dm_header.size).toBe(8);
    expect(P.dm_version_request.size).toBe(16);
    expect(P.dm_version_response.size).toBe(16);
    expect(P.dm_capabilities.size).toBe(32);
    expect(P.dm_capabilities_resp_msg.size).toBe(16);
    expect(P.dm_status.size).toBe(48);
    expect(P.dm_balloon.size).toBe(16);
    expect(P.dm_balloon_response.size).toBe(16);
    expect(P.dm_unballoon_request.size).toBe(16);
    expect(P.dm_unballoon_response.size).toBe(8);
    expect(P.dm_hot_add.size).toBe(16);
    expect(P.dm_hot_add_with_region.size).toBe(24);
    expect(P.dm_hot_add_response.size).toBe(16);
    expect(P.dm_info_msg.size).toBe(16);
    expect(P.dm_info_header.size).toBe(8);
    // 510 ranges fill one 4 KiB page exactly.
    expect(P.dm_balloon_response.size + P.DM_MAX_RANGES_PER_MESSAGE * 8).toBe(4096);
  });

  it('have the driver offsets', () => {
    expect(P.dm_version_request.offsetOf).toMatchObject({ type: 0, size: 2, trans_id: 4, version: 8, is_last_attempt: 12 });
    expect(P.dm_capabilities.offsetOf).toMatchObject({ caps: 8, min_page_cnt: 16, max_page_number: 24 });
    expect(P.dm_status.offsetOf).toMatchObject({
      num_avail: 8,
      num_committed: 16,
      page_file_size: 24,
      zero_free: 32,
      page_file_writes: 40,
      io_diff: 44,
    });
    expect(P.dm_balloon.offsetOf).toMatchObject({ num_pages: 8, reservedz: 12 });
    expect(P.dm_balloon_response.offsetOf).toMatchObject({ reservedz: 8, more_pages_range_count: 12 });
    expect(P.dm_unballoon_request.offsetOf).toMatchObject({ more_pages: 8, range_count: 12 });
    expect(P.dm_hot_add_with_region.offsetOf).toMatchObject({ range: 8, region: 16 });
    expect(P.dm_hot_add_response.offsetOf).toMatchObject({ page_count: 8, result: 12 });
    expect(P.dm_info_msg.offsetOf).toMatchObject({ reserved: 8, info_size: 12 });
  });

  it('use the driver constants', () => {
    expect(P.HV_DM_GUID).toBe('525074dc-8985-46e2-8057-a307dc18a502');
    expect([P.DYNMEM_PROTOCOL_VERSION_WIN7, P.DYNMEM_PROTOCOL_VERSION_WIN8, P.DYNMEM_PROTOCOL_VERSION_WIN10]).toEqual([
      3, 0x10000, 0x20000,
    ]);
    expect(P.LINUX_DM_VERSIONS).toEqual([0x20000, 0x10000, 3]);
    expect([P.DM_VERSION_REQUEST, P.DM_BALLOON_RESPONSE, P.DM_MEM_HOT_ADD_RESPONSE, P.DM_INFO_MESSAGE]).toEqual([1, 7, 11, 12]);
  });

  it('page ranges: start_page bits 0-39, page_cnt bits 40-63', () => {
    expect(P.encodePageRange(0x12_3456_789a, 0xabcdef)).toBe(0xabcdef_12_3456_789an);
    expect(P.decodePageRange(0xabcdef_12_3456_789an)).toEqual({ startPage: 0x12_3456_789a, pageCount: 0xabcdef });
    const b = new Uint8Array(8);
    P.writePageRange(new DataView(b.buffer), 0, 0xff_ffff_ffff, 0xff_ffff);
    expect(new DataView(b.buffer).getBigUint64(0, true)).toBe(2n ** 64n - 1n);
  });

  it('encoders write what the driver reads', () => {
    const v = P.encodeVersionResponse(7, true);
    expect(P.dm_version_response.decode(v)).toEqual({ type: 2, size: 16, trans_id: 7, is_accepted: 1n });
    expect(P.dm_capabilities_resp_msg.decode(P.encodeCapabilitiesResponse(9, true))).toEqual({
      type: 4,
      size: 16,
      trans_id: 9,
      is_accepted: 1n,
    });
    expect(P.dm_balloon.decode(P.encodeBalloonRequest(3, 1000))).toEqual({ type: 6, size: 16, trans_id: 3, num_pages: 1000, reservedz: 0 });
    const u = P.encodeUnballoonRequest(4, true, [0x100, 512, 0x1_0000_0000, 1]);
    expect(P.dm_unballoon_request.decode(u)).toEqual({ type: 8, size: 32, trans_id: 4, more_pages: 1, range_count: 2 });
    expect(new DataView(u.buffer).getBigUint64(24, true)).toBe(P.encodePageRange(0x1_0000_0000, 1));
    const h = P.encodeHotAddRequest(5, { startPage: 0x100000, pageCount: 32768 }, { startPage: 0x100000, pageCount: 65536 });
    expect(P.dm_hot_add_with_region.decode(h)).toEqual({
      type: 10,
      size: 24,
      trans_id: 5,
      range: P.encodePageRange(0x100000, 32768),
      region: P.encodePageRange(0x100000, 65536),
    });
    expect(P.encodeHotAddRequest(5, { startPage: 1, pageCount: 2 }).length).toBe(16);
    const info = P.encodeInfoMaxPageCount(6, 0x12345);
    expect(P.dm_info_msg.decode(info)).toEqual({ type: 12, size: 32, trans_id: 6, reserved: 0, info_size: 16 });
    expect(P.dm_info_header.decode(info, 16)).toEqual({ type: P.INFO_TYPE_MAX_PAGE_CNT, data_size: 8 });
    expect(new DataView(info.buffer).getBigUint64(24, true)).toBe(0x12345n);
  });

  it('parses every guest message and round-trips balloon responses', () => {
    const resp = P.encodeBalloonResponse(11, true, [0x1000, 512, 0xff_ffff_ffff, 0xff_ffff]);
    const m = P.parseGuestMessage(resp);
    expect(m).toEqual({
      type: P.DM_BALLOON_RESPONSE,
      transId: 11,
      morePages: true,
      ranges: Float64Array.of(0x1000, 512, 0xff_ffff_ffff, 0xff_ffff),
    });
    // Ring padding after hdr.size is fine.
    const padded = new Uint8Array(resp.length + 8);
    padded.set(resp);
    expect(P.parseGuestMessage(padded)).toEqual(m);
    const status = P.dm_status.encodeNew({ type: 5, size: 48, trans_id: 1, num_avail: 10n, num_committed: 20n, zero_free: 3n, io_diff: 9 });
    expect(P.parseGuestMessage(status)).toEqual({
      type: 5,
      transId: 1,
      status: { numAvail: 10, numCommitted: 20, pageFileSize: 0, zeroFree: 3, pageFileWrites: 0, ioDiff: 9 },
    });
    const ver = P.dm_version_request.encodeNew({ type: 1, size: 16, trans_id: 2, version: 0x20000, is_last_attempt: 1 });
    expect(P.parseGuestMessage(ver)).toEqual({ type: 1, transId: 2, version: 0x20000, isLastAttempt: true });
    expect(P.parseGuestMessage(P.dm_hot_add_response.encodeNew({ type: 11, size: 16, page_count: 5, result: 1 }))).toEqual({
      type: 11,
      transId: 0,
      pageCount: 5,
      result: 1,
    });
  });

  it('refuses malformed messages with a fault code, never a throw', () => {
    const fault = (b: Uint8Array) => {
      const r = P.parseGuestMessage(b);
      expect(r).toBeInstanceOf(P.BalloonProtocolError);
      expect((r as P.BalloonProtocolError).outcome).toBe('message-dropped');
      return (r as P.BalloonProtocolError).fault;
    };
    expect(fault(new Uint8Array(7))).toBe('short');
    const ver = P.dm_version_request.encodeNew({ type: 1, size: 16 });
    expect(fault(ver.subarray(0, 12))).toBe('size-mismatch'); // hdr.size past the packet
    expect(fault(P.dm_version_request.encodeNew({ type: 1, size: 12 }))).toBe('size-mismatch');
    expect(fault(P.dm_status.encodeNew({ type: 5, size: 40 }))).toBe('size-mismatch');
    const lying = P.encodeBalloonResponse(0, false, [1, 1]);
    new DataView(lying.buffer).setUint32(12, 5 << 1, true); // 5 ranges claimed, 1 present
    expect(fault(lying)).toBe('range-count');
    const big = new Uint8Array(4104);
    new DataView(big.buffer).setUint16(0, 7, true);
    new DataView(big.buffer).setUint16(2, 4104, true);
    expect(fault(big)).toBe('oversize');
    expect(fault(P.encodeBalloonRequest(0, 1))).toBe('unexpected'); // a host message
    expect(fault(Uint8Array.of(99, 0, 8, 0, 0, 0, 0, 0))).toBe('unknown-type');
  });
});

describe('PageSet', () => {
  it('adds, tests, removes and takes runs across word boundaries', () => {
    const s = new PageSet(200);
    expect(s.limit).toBe(224);
    s.add(30, 5);
    s.add(64, 64);
    s.add(199, 1);
    expect(s.size).toBe(70);
    expect(s.noneIn(35, 29)).toBe(true);
    expect(s.noneIn(34, 2)).toBe(false);
    expect(s.allIn(64, 64)).toBe(true);
    expect(s.allIn(63, 2)).toBe(false);
    expect(s.noneIn(220, 10)).toBe(false); // past the limit
    expect(() => s.add(33, 3)).toThrow();
    expect(s.runs()).toEqual([30, 5, 64, 64, 199, 1]);
    expect(s.take(40, 510, 0xffffff)).toEqual([30, 5, 64, 35]);
    expect(s.size).toBe(30);
    expect(s.take(100, 1, 10)).toEqual([99, 10]);
    expect(s.runs()).toEqual([109, 19, 199, 1]);
    s.grow(1000);
    s.add(900, 10);
    expect(s.runs()).toEqual([109, 19, 199, 1, 900, 10]);
    s.remove(109, 19);
    expect(() => s.remove(109, 1)).toThrow();
    s.clear();
    expect(s.size).toBe(0);
    expect(s.runs()).toEqual([]);
  });
});
