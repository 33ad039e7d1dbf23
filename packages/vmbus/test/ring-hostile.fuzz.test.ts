import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MemoryLogger } from '@hvemu/common';
import { RingCorruptError, RingReader, RingWriter, VM_PKT_DATA_INBAND, RING_WRITE_INDEX } from '@hvemu/vmbus';
import {
  applyCorruption,
  CORRUPTION_KINDS,
  createTestRing,
  EXPECTED_FAULT,
  exerciseCorruptedRing,
  guardsIntact,
  hostileRing,
  ringGeometry,
} from '@hvemu/vmbus/testing';
import { fuzzRuns } from '../../../test/helpers.js';

describe('hostile rings', () => {
  it('reports each corruption as the RingCorruptError it is, breaks the ring, and touches nothing outside it', () => {
    const seen = new Set<string>();
    fc.assert(
      fc.property(hostileRing(), (h) => {
        const logger = new MemoryLogger();
        const t = createTestRing(h.geometry, logger);
        applyCorruption(t, h);
        const error = exerciseCorruptedRing(t, h);
        const expected = EXPECTED_FAULT[h.kind];
        expect(error).toBeInstanceOf(RingCorruptError);
        expect((error as RingCorruptError).fault).toBe(expected.fault);
        expect((error as RingCorruptError).outcome).toBe('ring-broken');
        // Logged once, with the fault.
        expect(logger.records.filter((r) => r.level === 'warn').map((r) => r.fields?.fault)).toEqual([expected.fault]);
        // The ring stays broken: the same error, no further access.
        const end = expected.end === 'reader' ? t.reader : t.writer;
        expect(end.broken).toBe(error);
        if (expected.end === 'reader') expect(() => t.reader.peek()).toThrow(error as Error);
        else expect(() => t.writer.write({ type: VM_PKT_DATA_INBAND })).toThrow(error as Error);
        expect(guardsIntact(t, h.geometry)).toBe(true);
        seen.add(h.kind);
      }),
      { numRuns: fuzzRuns(400) },
    );
    expect([...seen].sort()).toEqual([...CORRUPTION_KINDS].sort());
  });

  it('survives arbitrary bytes in the control page and data area: clean packets or RingCorruptError, always terminating', () => {
    fc.assert(
      fc.property(
        ringGeometry({ minDataSize: 128, maxDataSize: 2048 }),
        fc.array(fc.tuple(fc.nat(), fc.nat(0xffffffff)), { maxLength: 64 }),
        fc.array(fc.tuple(fc.nat(), fc.nat(0xffffffff)), { maxLength: 4 }),
        (g, dataWords, controlWords) => {
          const t = createTestRing(g);
          // A few honest packets, then the hostile guest scribbles over the ring.
          for (let i = 0; i < 3; i++) t.writer.write({ type: VM_PKT_DATA_INBAND, payload: new Uint8Array(i * 9) });
          for (const [at, v] of dataWords) t.ring.data.setU32((at % (g.dataSize / 4)) * 4, v);
          for (const [at, v] of controlWords) Atomics.store(t.ring.control, at % 17, v);
          let packets = 0;
          let bytes = 0;
          try {
            const reader = new RingReader(t.ring, { signal: () => {} });
            while (
              reader.readBatch((p) => {
                packets++;
                bytes += p.payload().length + p.header().length;
                p.gpaRanges();
                p.transferPages();
              }, 1) === 1
            ) {
              if (packets > g.dataSize / 24) throw new Error('read more packets than the ring can hold');
            }
          } catch (e) {
            if (!(e instanceof RingCorruptError)) throw e;
          }
          try {
            const writer = new RingWriter(t.ring, { signal: () => {} });
            writer.write({ type: VM_PKT_DATA_INBAND, payload: new Uint8Array(16) });
          } catch (e) {
            if (!(e instanceof RingCorruptError)) throw e;
          }
          expect(bytes).toBeLessThan(g.dataSize);
          expect(guardsIntact(t, g)).toBe(true);
        },
      ),
      { numRuns: fuzzRuns(400) },
    );
  });

  it('refuses to attach to a ring whose indices are already invalid', () => {
    const t = createTestRing({ dataSize: 512 });
    Atomics.store(t.ring.control, RING_WRITE_INDEX, 513);
    expect(() => new RingReader(t.ring, { signal: () => {} })).toThrow(RingCorruptError);
    expect(() => new RingWriter(t.ring, { signal: () => {} })).toThrow(RingCorruptError);
  });
});
