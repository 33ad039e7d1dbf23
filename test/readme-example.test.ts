/**
 * The README's kit example, verbatim, so the documentation cannot drift from the API.
 */
import fc from 'fast-check';
import { RingCorruptError, type PacketView } from '@hvemu/vmbus';
import { applyCorruption, createTestRing, hostileRing, outgoingPacket, ringGeometry } from '@hvemu/vmbus/testing';
import { describe, it } from 'vitest';

// Your device's handler: here, one that echoes each request's first u32.
function myHandler(p: PacketView): number {
  return p.payloadLength >= 4 ? p.u32(p.payloadOffset) : -1;
}

describe('README example', () => {
  it('runs', () => {
    // Every well-formed packet, at every position in rings of every shape, reaches the handler intact.
    fc.assert(
      fc.property(ringGeometry({ minDataSize: 2048 }), outgoingPacket({ maxPayload: 512 }), (g, packet) => {
        const t = createTestRing(g);
        t.writer.write(packet);
        let handled = 0;
        t.reader.readBatch((p) => {
          myHandler(p);
          handled++;
        });
        return handled === 1;
      }),
    );

    // A hostile guest's ring never reaches the handler: the reader stops with a RingCorruptError.
    fc.assert(
      fc.property(hostileRing(), (h) => {
        const t = createTestRing(h.geometry);
        applyCorruption(t, h);
        try {
          t.reader.readBatch(myHandler);
          t.writer.freeBytes();
        } catch (e) {
          return e instanceof RingCorruptError;
        }
        return true; // some corruptions only show when more data arrives
      }),
    );
  });
});
