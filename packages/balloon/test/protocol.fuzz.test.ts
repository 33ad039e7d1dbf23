/**
 * The guest-message parser against any bytes: hostile variants of every message type and raw
 * noise. It never throws; it returns a message or a BalloonProtocolError; what it accepts has
 * the structure's size (or a range list that fits hdr.size exactly), and a balloon response's
 * ranges re-encode to the same bytes.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import * as P from '@hvemu/balloon';
import { hostileGuestMessage } from '@hvemu/balloon/testing';
import { fuzzRuns } from '../../../test/helpers.js';

describe('hv_balloon parser fuzz', () => {
  it('never throws; accepts only well-sized messages; balloon responses round-trip', () => {
    fc.assert(
      fc.property(fc.oneof(hostileGuestMessage({ maxCount: 0xff_ffff }), fc.uint8Array({ maxLength: 4200 })), (bytes) => {
        const r = P.parseGuestMessage(bytes);
        if (r instanceof P.BalloonProtocolError) {
          expect(r.outcome).toBe('message-dropped');
          return;
        }
        const size = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint16(2, true);
        expect(size).toBeLessThanOrEqual(bytes.length);
        if (r.type === P.DM_BALLOON_RESPONSE) {
          expect(size).toBe(16 + r.ranges.length * 4);
          const again = P.encodeBalloonResponse(r.transId, r.morePages, r.ranges);
          // reservedz is not kept: compare past it.
          expect(again.subarray(12)).toEqual(bytes.subarray(12, size));
          for (let i = 0; i < r.ranges.length; i += 2) {
            expect(r.ranges[i]).toBeLessThanOrEqual(P.DM_RANGE_MAX_PFN);
            expect(r.ranges[i + 1]).toBeLessThanOrEqual(P.DM_RANGE_MAX_PAGES);
          }
        } else {
          const sizes: Record<number, number> = { 1: 16, 3: 32, 5: 48, 9: 8, 11: 16 };
          expect(size).toBe(sizes[r.type]);
        }
      }),
      { numRuns: fuzzRuns(2000) },
    );
  });
});
