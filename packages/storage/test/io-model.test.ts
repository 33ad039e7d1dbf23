/**
 * Random I/O mixes (sizes, first-page offsets, queue depths, subchannels, FUA, UNMAP, flushes)
 * through the whole path against the reference model: every read returns what the model says,
 * and after a crash of a volatile write cache the disk holds only what flush ordering allows
 * (every write acknowledged before a completed flush, or with FUA, is there).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fuzzRuns } from '../../../test/helpers.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { FileBackend, SRB_STATUS_SUCCESS } from '@hvemu/storage';
import { DiskModel, ioBatches, patternFor, VolatileCacheBackend, type IoOp, type StorvscClient } from '@hvemu/storage/testing';
import { storageSim } from './helpers/sim.mjs';

async function runOp(client: StorvscClient, model: DiskModel, op: IoOp, ss: number, channel: number): Promise<void> {
  switch (op.kind) {
    case 'read': {
      const c = await client.read(op.lba, op.blocks, ss, { channel, pageOffset: op.pageOffset });
      expect(c.srbStatus).toBe(SRB_STATUS_SUCCESS);
      expect(Buffer.from(c.data).equals(Buffer.from(model.expected(op.lba, op.blocks)))).toBe(true);
      return;
    }
    case 'write': {
      const data = patternFor(op.seed, op.lba, op.blocks, ss);
      const c = await client.write(op.lba, data, ss, { channel, fua: op.fua, pageOffset: op.pageOffset });
      expect(c.srbStatus).toBe(SRB_STATUS_SUCCESS);
      model.write(op.lba, data, op.fua);
      return;
    }
    case 'unmap': {
      const c = await client.unmap([{ lba: op.lba, blocks: op.blocks }], { channel });
      expect(c.srbStatus).toBe(SRB_STATUS_SUCCESS);
      model.unmap(op.lba, op.blocks);
      return;
    }
    case 'flush': {
      const snapshot = model.snapshot();
      const c = await client.synchronizeCache({ channel });
      expect(c.srbStatus).toBe(SRB_STATUS_SUCCESS);
      model.flushed(snapshot);
    }
  }
}

describe('random I/O against the reference model', () => {
  for (const ss of [512, 4096] as const) {
    it(`${ss}-byte sectors: reads match the model; after a crash only what flush ordering allows survives`, async () => {
      const bytes = 1 << 20;
      await fc.assert(
        fc.asyncProperty(
          ioBatches({ sectors: bytes / ss, maxBlocks: (64 * 1024) / ss, maxQueueDepth: 8 }),
          fc.integer({ min: 0, max: 3 }),
          async (batches, subchannels) => {
            const backend = new VolatileCacheBackend(bytes, ss);
            const sim = storageSim({ disks: [{ backend, sectorSize: ss }] });
            const { client } = await sim.connect({ subchannels });
            const model = new DiskModel(bytes, ss);
            for (const batch of batches) {
              await Promise.all(batch.map((op, i) => runOp(client, model, op, ss, i % client.channels.length)));
            }
            expect(model.crashViolations(backend.crash())).toEqual([]);
          },
        ),
        { numRuns: fuzzRuns(25) },
      );
    });
  }

  it('a raw image file (real asynchronous I/O, hole punching) reads back what the model says', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hvemu-model-'));
    afterAll(() => rmSync(dir, { recursive: true, force: true }));
    const bytes = 1 << 20;
    let n = 0;
    await fc.assert(
      fc.asyncProperty(ioBatches({ sectors: bytes / 512, maxBlocks: 128, maxQueueDepth: 16 }), async (batches) => {
        const backend = FileBackend.open(join(dir, `m${n++}.img`), { createSize: bytes });
        const sim = storageSim({ disks: [{ backend }] });
        const { client } = await sim.connect({ subchannels: 2 });
        const model = new DiskModel(bytes, 512);
        for (const batch of batches) await Promise.all(batch.map((op, i) => runOp(client, model, op, 512, i % client.channels.length)));
        // Everything written, read back in one go through the whole path.
        const all = await client.read(0, 2048, 512, { pageOffset: 0 });
        expect(Buffer.from(all.data).equals(Buffer.from(model.current))).toBe(true);
        await backend.close();
      }),
      { numRuns: fuzzRuns(10) },
    );
  });

  it('the model catches a device that acknowledges a flush without flushing', async () => {
    const bytes = 64 * 512;
    const backend = new VolatileCacheBackend(bytes);
    backend.flush = async () => {}; // a broken backend: the flush reaches nothing
    const sim = storageSim({ disks: [{ backend }] });
    const { client } = await sim.connect();
    const model = new DiskModel(bytes, 512);
    await runOp(client, model, { kind: 'write', lba: 3, blocks: 2, pageOffset: 0, fua: false, seed: 9 }, 512, 0);
    await runOp(client, model, { kind: 'flush' }, 512, 0);
    expect(model.crashViolations(backend.crash())).toEqual([3, 4]);
  });
});
