/**
 * The SRB path under a hostile guest: any vmscsi_request field, CDB, data length against the
 * page list, page lists outside guest RAM, floods beyond the queue depth, broken rings. Every
 * request gets a defined completion; nothing outside the request's pages changes; the channel
 * and the other channels keep working.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@hvemu/memory';
import { fuzzRuns } from '../../../test/helpers.js';
import {
  MemoryBackend,
  SRB_STATUS_ERROR,
  SRB_STATUS_INVALID_LUN,
  SRB_STATUS_INVALID_REQUEST,
  SRB_STATUS_SUCCESS,
  srbStatusCode,
  STATUS_INVALID_PARAMETER,
  vstor_packet_header,
  type DiskBackend,
} from '@hvemu/storage';
import { anyCdb, hostileSrbFields, patternFor, servedCdb } from '@hvemu/storage/testing';
import { pfnsSpanned, RING_WRITE_INDEX, VM_PKT_DATA_USING_GPA_DIRECT, encodeGpaDirectHeader } from '@hvemu/vmbus';
import { settle, storageSim } from './helpers/sim.mjs';

/** Pages a hostile request may name: four target pages between canary pages, and PFNs outside RAM. */
const TARGET = 0x1200;
const CANARY_LOW = 0x11f0;
const CANARY_HIGH = 0x1204;
const OUTSIDE = [0x7fff_ffff, 0x1_0000_0000 / PAGE_SIZE + 5, 0x6000];

/** A page list the ring accepts (its PFN count matches its range) that may name pages outside RAM. */
const hostileRequest = fc
  .record({
    cdb: fc.oneof(servedCdb(), anyCdb()),
    override: hostileSrbFields(),
    pageOffset: fc.integer({ min: 0, max: 4095 }),
    rangeBytes: fc.integer({ min: 1, max: 3 * PAGE_SIZE }),
    lun: fc.integer({ min: 0, max: 3 }),
  })
  .chain((r) =>
    fc
      .array(fc.oneof({ weight: 4, arbitrary: fc.integer({ min: TARGET, max: TARGET + 3 }) }, fc.constantFrom(...OUTSIDE)), {
        minLength: pfnsSpanned(r.pageOffset, r.rangeBytes),
        maxLength: pfnsSpanned(r.pageOffset, r.rangeBytes),
      })
      .map((pfns) => ({ ...r, pfns })),
  );

describe('storvsp against a hostile guest', () => {
  it('completes every hostile SRB with a defined status, touches nothing outside its pages, and keeps every channel working', async () => {
    const sim = storageSim({ disks: [{ backend: new MemoryBackend(1 << 20) }, { backend: new MemoryBackend(1 << 20), readOnly: true }] });
    const { client } = await sim.connect({ subchannels: 1 });
    const canary = () => [
      Buffer.from(sim.memory.bytes(CANARY_LOW * PAGE_SIZE, 16 * PAGE_SIZE)),
      Buffer.from(sim.memory.bytes(CANARY_HIGH * PAGE_SIZE, 16 * PAGE_SIZE)),
    ];
    sim.memory.bytes(CANARY_LOW * PAGE_SIZE, 0x20 * PAGE_SIZE).fill(0xee);
    const before = canary();
    await fc.assert(
      fc.asyncProperty(fc.array(hostileRequest, { minLength: 1, maxLength: 6 }), async (requests) => {
        const target = sim.memory.bytes(TARGET * PAGE_SIZE, 4 * PAGE_SIZE);
        target.fill(0xa5);
        const completions = await Promise.all(
          requests.map((r, i) =>
            client.execute({
              cdb: r.cdb,
              lun: r.lun,
              pfns: r.pfns,
              pageOffset: r.pageOffset,
              rangeBytes: r.rangeBytes,
              override: r.override,
              channel: i % 2,
            }),
          ),
        );
        for (const c of completions) {
          expect([SRB_STATUS_SUCCESS, SRB_STATUS_ERROR, SRB_STATUS_INVALID_REQUEST, SRB_STATUS_INVALID_LUN]).toContain(
            srbStatusCode(c.srbStatus),
          );
          if (srbStatusCode(c.srbStatus) !== SRB_STATUS_SUCCESS) expect(c.dataTransferLength).toBe(0);
        }
        // Target pages: only bytes inside some request's range may have changed.
        const allowed = new Uint8Array(4 * PAGE_SIZE);
        for (const r of requests) {
          const named = Math.min(r.rangeBytes, r.override.data_transfer_length ?? 0);
          for (let b = 0; b < named; b++) {
            const page = Math.floor((r.pageOffset + b) / PAGE_SIZE);
            const pfn = r.pfns[page];
            if (pfn !== undefined && pfn >= TARGET && pfn < TARGET + 4)
              allowed[(pfn - TARGET) * PAGE_SIZE + ((r.pageOffset + b) % PAGE_SIZE)] = 1;
          }
        }
        const touched = target.findIndex((b, i) => b !== 0xa5 && !allowed[i]);
        expect(touched).toBe(-1);
        const [low, high] = canary();
        expect(low.equals(before[0]) && high.equals(before[1])).toBe(true);
      }),
      { numRuns: fuzzRuns(60) },
    );
    // Both channels still serve well-formed I/O.
    for (const channel of [0, 1]) {
      const data = patternFor(channel + 5, 100, 4, 512);
      expect((await client.write(100, data, 512, { channel })).srbStatus).toBe(SRB_STATUS_SUCCESS);
      expect(Buffer.from((await client.read(100, 4, 512, { channel })).data).equals(Buffer.from(data))).toBe(true);
    }
    expect(sim.attached.openChannels()).toHaveLength(2);
  });

  it('refuses, with INVALID_REQUEST and nothing read or written: data longer than the page list, a transfer without pages, bad cdb_length or data_in', async () => {
    const backend = new MemoryBackend(1 << 20);
    const sim = storageSim({ disks: [{ backend }] });
    const { client } = await sim.connect();
    const read8 = Uint8Array.of(0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0);
    const cases = [
      { cdb: read8, pfns: [TARGET], rangeBytes: 4096, override: { data_transfer_length: 8192 } },
      { cdb: read8, override: { data_transfer_length: 4096 } },
      { cdb: read8, readLength: 4096, override: { cdb_length: 0 } },
      { cdb: read8, readLength: 4096, override: { cdb_length: 17 } },
      { cdb: read8, readLength: 4096, override: { data_in: 3 } },
      { cdb: read8, readLength: 4096, override: { data_in: 0 } }, // a read that says it writes
      { cdb: read8, pfns: [TARGET, 0x7fffffff], rangeBytes: 8192, override: { data_transfer_length: 8192, data_in: 1 } },
      { cdb: read8, readLength: 4096, override: { data_transfer_length: 3 << 20 } },
    ];
    for (const spec of cases) {
      const c = await client.execute(spec);
      expect({ srb: c.srbStatus, transferred: c.dataTransferLength }).toEqual({ srb: SRB_STATUS_INVALID_REQUEST, transferred: 0 });
    }
    expect(backend.stats.reads).toBe(0);
    expect(sim.logger.records.filter((r) => r.message.includes('SRB refused') || r.message.includes('invalid SRB')).length).toBe(
      cases.length,
    );
  });

  it('a flood beyond the queue depth is backpressure: at most maxOutstanding in the disk, the rest wait in the ring, all complete', async () => {
    let gate!: () => void;
    const opened = new Promise<void>((r) => (gate = r));
    let inDisk = 0;
    let peak = 0;
    const slow = new MemoryBackend(1 << 20);
    const backend: DiskBackend = {
      byteLength: slow.byteLength,
      readOnly: false,
      read: async (o, t) => {
        peak = Math.max(peak, ++inDisk);
        await opened;
        inDisk--;
        return slow.read(o, t);
      },
      write: (o, s, f) => slow.write(o, s, f),
      flush: () => slow.flush(),
      unmap: (o, l) => slow.unmap(o, l),
      close: async () => {},
    };
    const sim = storageSim({ disks: [{ backend }], device: { maxOutstanding: 4 } });
    const { client } = await sim.connect();
    const reads = Array.from({ length: 64 }, (_, i) => client.read(i, 1, 512));
    await settle(50);
    expect(peak).toBe(4);
    expect(sim.device.outstanding).toBe(4);
    expect(sim.device.stats.backpressured).toBeGreaterThan(0);
    gate();
    const done = await Promise.all(reads);
    expect(done.every((c) => c.srbStatus === SRB_STATUS_SUCCESS)).toBe(true);
    expect(peak).toBe(4);
    expect(sim.device.outstanding).toBe(0);
    await expect(sim.device.stop()).resolves.toBeUndefined();
  });

  it('drops and logs a packet too short to be a request; a control request with pages is refused; the channel goes on', async () => {
    const sim = storageSim();
    const { client } = await sim.connect();
    const ch = client.channels[0];
    ch.rings.outbound.write({ type: 6, transactionId: 77n, payload: new Uint8Array(16) });
    const control = new Uint8Array(64);
    control[0] = 10; // QUERY_PROPERTIES, but GPA-direct
    ch.rings.outbound.write({
      type: VM_PKT_DATA_USING_GPA_DIRECT,
      transactionId: 78n,
      header: encodeGpaDirectHeader([{ byteCount: 512, byteOffset: 0, pfns: [TARGET] }]),
      payload: control,
    });
    expect((await client.read(0, 1, 512)).srbStatus).toBe(SRB_STATUS_SUCCESS);
    expect(sim.device.stats.dropped).toBe(1);
    expect(sim.logger.records.filter((r) => r.message === 'storvsp: packet dropped')).toHaveLength(1);
    // 78 was answered (the client had not asked it, so it is stray): INVALID_PARAMETER. 77 got nothing.
    expect(client.stray.map((p) => [p.transactionId, vstor_packet_header.decode(p.payload).status])).toEqual([
      [78n, STATUS_INVALID_PARAMETER],
    ]);
    expect(sim.attached.openChannels()).toHaveLength(1);
  });

  it('a guest that breaks a subchannel ring loses that channel only', async () => {
    const sim = storageSim();
    const { client } = await sim.connect({ subchannels: 2 });
    const victim = client.channels[2];
    // An unaligned write_index: the host's reader refuses the ring.
    Atomics.store(victim.rings.outbound.ring.control, RING_WRITE_INDEX, 13);
    victim.signalHost();
    await settle();
    expect(
      sim.attached
        .openChannels()
        .map((c) => c.subChannelIndex)
        .sort(),
    ).toEqual([0, 1]);
    for (const channel of [0, 1]) expect((await client.read(0, 1, 512, { channel })).srbStatus).toBe(SRB_STATUS_SUCCESS);
  });

  it('a ring broken while the channel is backpressured fails that channel when the device reads it again, without a new signal', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    class GatedBackend extends MemoryBackend {
      override async read(offset: number, target: Uint8Array): Promise<void> {
        await gate;
        return super.read(offset, target);
      }
    }
    const sim = storageSim({ disks: [{ backend: new GatedBackend(1 << 20) }], device: { maxOutstanding: 2 } });
    const { client } = await sim.connect({ subchannels: 1 });
    const reads = [0, 1, 2, 3].map((i) => client.read(i, 1, 512, { channel: 1 }).catch((e: unknown) => e));
    await settle();
    expect(sim.device.outstanding).toBe(2); // two wait unread in the ring
    Atomics.store(client.channels[1].rings.outbound.ring.control, RING_WRITE_INDEX, 13);
    release();
    await settle();
    expect(sim.attached.openChannels().map((c) => c.subChannelIndex)).toEqual([0]);
    expect(sim.logger.records.some((r) => r.message === 'storvsp: ring failed')).toBe(true);
    expect((await client.read(0, 1, 512, { channel: 0 })).srbStatus).toBe(SRB_STATUS_SUCCESS);
    // The two the failed channel never read stay unanswered; closing the client ends them.
    await client.close();
    const ended = await Promise.all(reads);
    expect(ended.filter((r) => r instanceof Error)).toHaveLength(2);
  });
});
