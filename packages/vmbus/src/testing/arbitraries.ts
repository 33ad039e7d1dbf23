/**
 * fast-check arbitraries for rings and packets. Exported for users: generate packets for
 * their own device handlers, ring geometries that wrap at every offset, and hostile rings.
 */
import fc from 'fast-check';
import {
  VM_PKT_COMP,
  VM_PKT_DATA_INBAND,
  VM_PKT_DATA_USING_GPA_DIRECT,
  VM_PKT_DATA_USING_XFER_PAGES,
  VMBUS_PKT_TRAILER,
  VMPACKET_DESCRIPTOR_SIZE,
} from '../ring/protocol.js';
import type { OutgoingPacket } from '../ring/writer.js';
import { encodeGpaDirectHeader } from '../device/guest-data.js';
import type { RingGeometry } from './test-ring.js';

const U64_MAX = (1n << 64n) - 1n;

/** A payload given as one buffer or as several parts gathered by the writer. */
export function payload(maxLength: number): fc.Arbitrary<Uint8Array | Uint8Array[]> {
  const bytes = (max: number): fc.Arbitrary<Uint8Array> => fc.uint8Array({ maxLength: max });
  return fc.oneof(
    { weight: 3, arbitrary: bytes(maxLength) },
    {
      weight: 1,
      arbitrary: fc
        .array(bytes(Math.max(1, Math.floor(maxLength / 3))), { minLength: 1, maxLength: 3 })
        .filter((parts) => parts.reduce((n, p) => n + p.length, 0) <= maxLength),
    },
  );
}

/** A GPA-direct header (reserved, rangecount, ranges with their PFNs), valid by construction. */
export function gpaDirectHeader(options: { maxRanges?: number; maxBytes?: number } = {}): fc.Arbitrary<Uint8Array> {
  const range = fc
    .record({
      byteOffset: fc.integer({ min: 0, max: 4095 }),
      byteCount: fc.integer({ min: 1, max: options.maxBytes ?? 3 * 4096 }),
    })
    .chain(({ byteOffset, byteCount }) =>
      fc
        .array(fc.bigInt({ min: 0n, max: U64_MAX }), {
          minLength: Math.ceil((byteOffset + byteCount) / 4096),
          maxLength: Math.ceil((byteOffset + byteCount) / 4096),
        })
        .map((pfns) => ({ byteOffset, byteCount, pfns })),
    );
  return fc.array(range, { minLength: 1, maxLength: options.maxRanges ?? 3 }).map((ranges) => encodeGpaDirectHeader(ranges));
}

/** A transfer-page header (pageset id, sender_owns_set, range count, ranges). */
export function transferPageHeader(options: { maxRanges?: number } = {}): fc.Arbitrary<Uint8Array> {
  return fc
    .record({
      pageSetId: fc.integer({ min: 0, max: 0xffff }),
      senderOwns: fc.boolean(),
      ranges: fc.array(fc.tuple(fc.nat(), fc.nat()), { minLength: 1, maxLength: options.maxRanges ?? 4 }),
    })
    .map(({ pageSetId, senderOwns, ranges }) => {
      const out = new Uint8Array(8 + ranges.length * 8);
      const dv = new DataView(out.buffer);
      dv.setUint16(0, pageSetId, true);
      dv.setUint8(2, senderOwns ? 1 : 0);
      dv.setUint32(4, ranges.length, true);
      ranges.forEach(([count, offset], i) => {
        dv.setUint32(8 + i * 8, count >>> 0, true);
        dv.setUint32(12 + i * 8, offset >>> 0, true);
      });
      return out;
    });
}

/**
 * A well-formed packet of any type the drivers use, with a payload of at most `maxPayload`
 * bytes. With `maxSpace`, packets that would occupy more ring bytes are cut down to an
 * in-band packet that fits.
 */
export function outgoingPacket(options: { maxPayload?: number; maxSpace?: number } = {}): fc.Arbitrary<OutgoingPacket> {
  const maxPayload = options.maxPayload ?? 512;
  const common = {
    flags: fc.oneof(fc.constantFrom(0, 1), fc.integer({ min: 0, max: 0xffff })),
    transactionId: fc.oneof(fc.bigInt({ min: 0n, max: 1000n }), fc.bigInt({ min: 0n, max: U64_MAX })),
    payload: payload(maxPayload),
  };
  const packet = fc.oneof(
    fc.record({ type: fc.constant(VM_PKT_DATA_INBAND), ...common }),
    fc.record({ type: fc.constant(VM_PKT_COMP), ...common }),
    fc.record({ type: fc.constant(VM_PKT_DATA_USING_GPA_DIRECT), header: gpaDirectHeader(), ...common }),
    fc.record({ type: fc.constant(VM_PKT_DATA_USING_XFER_PAGES), header: transferPageHeader(), ...common }),
  ) as fc.Arbitrary<OutgoingPacket>;
  const maxSpace = options.maxSpace;
  if (maxSpace === undefined) return packet;
  return packet.map((p) => fitPacket(p, maxSpace));
}

function fitPacket(p: OutgoingPacket, maxSpace: number): OutgoingPacket {
  const headerLength = p.header?.length ?? 0;
  const payloadLength = p.payload instanceof Uint8Array ? p.payload.length : (p.payload ?? []).reduce((n, x) => n + x.length, 0);
  const space = ((VMPACKET_DESCRIPTOR_SIZE + headerLength + payloadLength + 7) & ~7) + VMBUS_PKT_TRAILER;
  if (space <= maxSpace) return p;
  const room = Math.max(0, maxSpace - VMPACKET_DESCRIPTOR_SIZE - VMBUS_PKT_TRAILER);
  const flat = p.payload instanceof Uint8Array ? p.payload : new Uint8Array((p.payload ?? []).flatMap((x) => Array.from(x)));
  return { type: VM_PKT_DATA_INBAND, flags: p.flags, transactionId: p.transactionId, payload: flat.subarray(0, room) };
}

/**
 * Ring geometries: small data areas that wrap often, every 8-aligned start offset, flat and
 * scattered data pages, data areas starting mid-page, with and without feat_pending_send_sz.
 */
export function ringGeometry(options: { minDataSize?: number; maxDataSize?: number } = {}): fc.Arbitrary<RingGeometry> {
  const min8 = Math.ceil((options.minDataSize ?? 32) / 8);
  const max8 = Math.floor((options.maxDataSize ?? 3 * 4096) / 8);
  return fc
    .record({
      size8: fc.oneof(fc.integer({ min: min8, max: Math.max(min8, Math.min(max8, 128)) }), fc.integer({ min: min8, max: max8 })),
      startFraction: fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }),
      scattered: fc.boolean(),
      dataOffset8: fc.integer({ min: 0, max: 511 }),
      pendingSendFeature: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
    })
    .map(({ size8, startFraction, scattered, dataOffset8, pendingSendFeature }) => ({
      dataSize: size8 * 8,
      startIndex: Math.floor(startFraction * size8) * 8,
      scattered,
      dataOffset: dataOffset8 * 8,
      pendingSendFeature,
    }));
}
