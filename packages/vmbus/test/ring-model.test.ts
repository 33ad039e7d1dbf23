import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  hv_ring_buffer,
  vmpacket_descriptor,
  RingWriter,
  VM_PKT_COMP,
  VM_PKT_DATA_INBAND,
  VM_PKT_DATA_USING_GPA_DIRECT,
  VMBUS_PKT_TRAILER,
} from '@hvemu/vmbus';
import {
  createTestRing,
  gpaDirectHeader,
  guardsIntact,
  ringGeometry,
  ringModelProperty,
  RingModel,
  type RingGeometry,
} from '@hvemu/vmbus/testing';
import { fuzzRuns } from '../../../test/helpers.js';

describe('wire structures', () => {
  it('match the sizes and offsets of the Linux structures', () => {
    expect(hv_ring_buffer.size).toBe(4096);
    expect(hv_ring_buffer.offsetOf).toMatchObject({
      write_index: 0,
      read_index: 4,
      interrupt_mask: 8,
      pending_send_sz: 12,
      feature_bits: 0x40,
    });
    expect(vmpacket_descriptor.size).toBe(16);
    expect(vmpacket_descriptor.offsetOf).toMatchObject({ type: 0, offset8: 2, len8: 4, flags: 6, trans_id: 8 });
  });

  it('lays a packet out as descriptor, payload padded to 8, and the previous-index trailer', () => {
    const t = createTestRing({ dataSize: 256, startIndex: 48 });
    expect(
      t.writer.write({ type: VM_PKT_DATA_INBAND, flags: 1, transactionId: 0x1122334455667788n, payload: Uint8Array.of(1, 2, 3) }),
    ).toBe(true);
    const d = t.ring.data;
    expect(vmpacket_descriptor.decode(d.view(48, 16)!)).toEqual({ type: 6, offset8: 2, len8: 3, flags: 1, trans_id: 0x1122334455667788n });
    expect(Array.from(d.view(64, 8)!)).toEqual([1, 2, 3, 0, 0, 0, 0, 0]);
    expect(d.getU64(72)).toBe(48n << 32n);
    expect(t.ring.snapshot().writeIndex).toBe(80);
  });
});

describe('trans_id', () => {
  it('reads back as a bigint, a number when safe (else NaN), and an echo value that round-trips unchanged', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.constantFrom(0n, 2n ** 32n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 64n - 1n)),
        (tid) => {
          const t = createTestRing({ dataSize: 256 });
          expect(t.writer.write({ type: VM_PKT_COMP, transactionId: tid })).toBe(true);
          let echo: number | bigint = -1;
          t.reader.readBatch((p) => {
            expect(p.transactionId).toBe(tid);
            const safe = tid <= BigInt(Number.MAX_SAFE_INTEGER);
            expect(p.transactionIdNumber).toBe(safe ? Number(tid) : NaN);
            echo = p.transactionIdEcho;
            expect(typeof echo).toBe(safe ? 'number' : 'bigint');
          });
          // The echo written into a completion carries the same 64 bits.
          expect(t.writer.write({ type: VM_PKT_COMP, transactionId: echo })).toBe(true);
          t.reader.readBatch((p) => expect(p.transactionId).toBe(tid));
        },
      ),
      { numRuns: fuzzRuns(300) },
    );
  });
});

describe('ring model (fast-check, model-based)', () => {
  it('agrees with the reference model on every write, read, peek, mask and signal', () => {
    fc.assert(ringModelProperty(ringGeometry()), { numRuns: fuzzRuns(300) });
  });

  it('agrees on tiny rings that are full most of the time', () => {
    fc.assert(ringModelProperty(ringGeometry({ minDataSize: 32, maxDataSize: 160 })), { numRuns: fuzzRuns(300) });
  });
});

describe('wrap-around', () => {
  it('round-trips a packet starting at every 8-aligned offset of the data area, flat and scattered', () => {
    for (const scattered of [false, true]) {
      const dataSize = 4096 + 512;
      for (let start = 0; start < dataSize; start += 8) {
        const geometry = { dataSize, startIndex: start, scattered, dataOffset: scattered ? 3000 : 0 };
        const t = createTestRing(geometry);
        const payload = Uint8Array.from({ length: 301 }, (_, i) => (i * 7 + start) & 0xff);
        expect(t.writer.write({ type: VM_PKT_COMP, transactionId: BigInt(start), payload })).toBe(true);
        const got: number[] = [];
        t.reader.readBatch((p) => {
          expect(p.transactionId).toBe(BigInt(start));
          got.push(...p.payload().subarray(0, 301));
        });
        expect(got).toEqual(Array.from(payload));
        expect(guardsIntact(t, geometry)).toBe(true);
      }
    }
  });
});

describe('zero copy', () => {
  it('returns a view of the ring itself when the packet does not wrap', () => {
    const t = createTestRing({ dataSize: 1024 });
    t.writer.write({ type: VM_PKT_DATA_INBAND, payload: new Uint8Array(64).fill(9) });
    const p = t.reader.peek()!;
    const view = p.payload();
    expect(view.buffer).toBe(t.memory.regions[0].bytes.buffer);
    view[0] = 42; // visible in guest memory: it is the guest's ring
    expect(t.ring.data.getU8(16)).toBe(42);
  });

  it('copies into a scratch buffer only when the packet wraps', () => {
    const t = createTestRing({ dataSize: 1024, startIndex: 1024 - 32 });
    t.writer.write({ type: VM_PKT_DATA_INBAND, payload: new Uint8Array(64).fill(5) });
    const view = t.reader.peek()!.payload();
    expect(view.buffer).not.toBe(t.memory.regions[0].bytes.buffer);
    expect(Array.from(view)).toEqual(new Array(64).fill(5));
  });

  it('gathers a payload from several buffers', () => {
    const t = createTestRing({ dataSize: 512, startIndex: 480 });
    const parts = [Uint8Array.of(1, 2), Uint8Array.of(), Uint8Array.of(3, 4, 5, 6, 7), Uint8Array.of(8)];
    t.writer.write({ type: VM_PKT_DATA_INBAND, payload: parts });
    expect(Array.from(t.reader.peek()!.payload())).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  });
});

describe('signalling (Linux ring_buffer.c rules)', () => {
  const packet = { type: VM_PKT_DATA_INBAND, payload: new Uint8Array(40) };

  it('signals the reader only when the ring goes from empty to non-empty', () => {
    const t = createTestRing();
    t.writer.write(packet);
    t.writer.write(packet);
    expect(t.signalsToReader).toBe(1);
    t.reader.readBatch(() => {}, 1); // still one packet left: not empty
    t.writer.write(packet);
    expect(t.signalsToReader).toBe(1);
    t.reader.readBatch(() => {});
    t.writer.write(packet);
    expect(t.signalsToReader).toBe(2);
  });

  it('does not signal while the reader has interrupt_mask set, and unmask reports data that raced in', () => {
    const t = createTestRing();
    t.reader.mask();
    t.writer.write(packet);
    expect(t.signalsToReader).toBe(0);
    expect(t.reader.unmask()).toBe(true);
    t.reader.readBatch(() => {});
    expect(t.reader.unmask()).toBe(false);
  });

  it('publishes a batch once and signals at most once', () => {
    const t = createTestRing();
    const seenInside: number[] = [];
    t.writer.batch((w) => {
      for (let i = 0; i < 5; i++) w.write(packet);
      seenInside.push(t.ring.snapshot().writeIndex);
    });
    expect(seenInside).toEqual([0]); // nothing visible to the reader until the batch ends
    expect(t.signalsToReader).toBe(1);
    expect(t.reader.readBatch(() => {})).toBe(5);
  });

  it('drain() reads everything, leaves the mask clear, and is not signalled meanwhile', () => {
    const t = createTestRing();
    let n = 0;
    t.writer.write(packet);
    const read = t.reader.drain(() => {
      if (n++ === 0) t.writer.write(packet); // arrives while draining: masked, no signal
    });
    expect(read).toBe(2);
    expect(t.signalsToReader).toBe(1);
    expect(t.ring.snapshot().interruptMask).toBe(0);
  });

  it('signals the writer only when free space crosses its pending_send_sz', () => {
    const t = createTestRing({ dataSize: 1024 });
    const space = RingWriter.ringSpace(0, 40);
    let written = 0;
    while (t.writer.write(packet)) written++;
    expect(written).toBe(Math.floor((1024 - 1) / space));
    expect(t.writer.requestSpace(2 * space)).toBe(false);
    t.reader.readBatch(() => {}, 1); // free goes from < 2*space+... still not enough
    const free1 = 1024 - (written - 1) * space;
    expect(t.signalsToWriter).toBe(free1 > 2 * space ? 1 : 0);
    t.reader.readBatch(() => {}, 2);
    expect(t.signalsToWriter).toBe(1);
    t.reader.readBatch(() => {}, 1); // already above: no second signal
    expect(t.signalsToWriter).toBe(1);
  });

  it('never signals for space without feat_pending_send_sz (the writer polls)', () => {
    const t = createTestRing({ dataSize: 512, pendingSendFeature: false });
    while (t.writer.write(packet));
    expect(t.writer.requestSpace(200)).toBe(false);
    expect(t.ring.snapshot().pendingSendSize).toBe(0);
    t.reader.readBatch(() => {});
    expect(t.signalsToWriter).toBe(0);
    expect(t.writer.requestSpace(200)).toBe(true);
  });

  it('keeps a gap: a packet that exactly fills the free space is refused', () => {
    const t = createTestRing({ dataSize: 256 });
    expect(t.writer.write({ type: VM_PKT_DATA_INBAND, payload: new Uint8Array(8) })).toBe(true); // 32 bytes
    // 16 + 200 + 8 = 224 = exactly the free space: refused, or read == write would mean empty
    expect(t.writer.write({ type: VM_PKT_DATA_INBAND, payload: new Uint8Array(200) })).toBe(false);
    expect(t.writer.write({ type: VM_PKT_DATA_INBAND, payload: new Uint8Array(192) })).toBe(true);
  });

  it('refuses, as a host error, a packet that could never fit the ring', () => {
    const t = createTestRing({ dataSize: 128 });
    expect(() => t.writer.write({ type: VM_PKT_DATA_INBAND, payload: new Uint8Array(104) })).toThrow(/can never fit/);
    expect(() => t.writer.write({ type: VM_PKT_DATA_INBAND, header: new Uint8Array(4) })).toThrow(/multiple of 8/);
  });
});

describe('GPA-direct packets', () => {
  it('decodes the range list the writer put in the header', () => {
    fc.assert(
      fc.property(gpaDirectHeader(), fc.uint8Array({ maxLength: 64 }), (header, payload) => {
        const t = createTestRing({ dataSize: 4096 });
        expect(t.writer.write({ type: VM_PKT_DATA_USING_GPA_DIRECT, header, payload })).toBe(true);
        const p = t.reader.peek()!;
        const ranges = p.gpaRanges();
        const dv = new DataView(header.buffer);
        expect(ranges.length).toBe(dv.getUint32(4, true));
        let at = 8;
        for (const r of ranges) {
          expect(r.byteCount).toBe(dv.getUint32(at, true));
          expect(r.byteOffset).toBe(dv.getUint32(at + 4, true));
          r.pfns.forEach((pfn, i) => {
            const expected = dv.getBigUint64(at + 8 + i * 8, true);
            // PFNs beyond 2^53 cannot be RAM; they only need to stay out of range.
            if (expected < 1n << 53n) expect(pfn).toBe(Number(expected));
            else expect(pfn).toBeGreaterThanOrEqual(2 ** 53);
          });
          at += 8 + r.pfns.length * 8;
        }
      }),
      { numRuns: fuzzRuns(100) },
    );
  });
});

describe('RingModel on its own', () => {
  it('computes packet space as Linux does (align8(16 + header + payload) + trailer)', () => {
    const m = new RingModel(100, true);
    expect(m.write({ type: 6, payload: new Uint8Array(60) })).toBe(true); // 16+60 -> 80 + 8 = 88 < 100
    expect(m.freeBytes).toBe(100 - 88);
    expect(m.write({ type: 6 })).toBe(false); // 24 > 12 free
    expect(VMBUS_PKT_TRAILER).toBe(8);
  });

  it('is exercised with geometries covering every start offset class', () => {
    const seen = new Set<string>();
    fc.assert(
      fc.property(ringGeometry(), (g: RingGeometry) => {
        expect(g.startIndex % 8).toBe(0);
        expect(g.startIndex).toBeLessThan(g.dataSize);
        seen.add(`${g.scattered}/${g.startIndex === 0}`);
      }),
      { numRuns: 200 },
    );
    expect(seen.size).toBe(4);
  });
});
