/**
 * fast-check arbitraries for the storage path: CDBs (well-formed ones of every command a disk
 * serves, and anything at all), hostile vmscsi_request fields, and I/O mixes for model tests.
 */
import fc from 'fast-check';
import * as C from '../scsi/cdb.js';
import type { SrbSpec } from './client.js';

/** Any CDB: a random opcode (served or not) and random bytes, 1 to 16 long. */
export function anyCdb(): fc.Arbitrary<Uint8Array> {
  return fc.uint8Array({ minLength: 1, maxLength: 16 });
}

/** A CDB of one of the served commands with random fields (LBAs and lengths anywhere). */
export function servedCdb(): fc.Arbitrary<Uint8Array> {
  const lengths: Record<number, number> = {};
  const opcodes = [
    C.TEST_UNIT_READY,
    C.REQUEST_SENSE,
    C.READ_6,
    C.WRITE_6,
    C.INQUIRY,
    C.MODE_SENSE_6,
    C.START_STOP_UNIT,
    C.READ_CAPACITY_10,
    C.READ_10,
    C.WRITE_10,
    C.SYNCHRONIZE_CACHE_10,
    C.WRITE_SAME_10,
    C.UNMAP,
    C.MODE_SENSE_10,
    C.READ_16,
    C.WRITE_16,
    C.SYNCHRONIZE_CACHE_16,
    C.WRITE_SAME_16,
    C.SERVICE_ACTION_IN_16,
    C.REPORT_LUNS,
    C.READ_12,
    C.WRITE_12,
  ];
  for (const op of opcodes) lengths[op] = C.cdbLengthOf(op);
  return fc
    .constantFrom(...opcodes)
    .chain((op) => fc.uint8Array({ minLength: lengths[op] - 1, maxLength: lengths[op] - 1 }).map((rest) => Uint8Array.of(op, ...rest)));
}

/** vmscsi_request fields a hostile guest may set to anything. */
export function hostileSrbFields(): fc.Arbitrary<NonNullable<SrbSpec['override']>> {
  return fc.record(
    {
      length: fc.integer({ min: 0, max: 0xffff }),
      srb_status: fc.integer({ min: 0, max: 0xff }),
      scsi_status: fc.integer({ min: 0, max: 0xff }),
      port_number: fc.integer({ min: 0, max: 0xff }),
      path_id: fc.integer({ min: 0, max: 0xff }),
      target_id: fc.integer({ min: 0, max: 0xff }),
      lun: fc.integer({ min: 0, max: 0xff }),
      cdb_length: fc.integer({ min: 0, max: 0xff }),
      sense_info_length: fc.integer({ min: 0, max: 0xff }),
      data_in: fc.integer({ min: 0, max: 0xff }),
      data_transfer_length: fc.oneof(fc.integer({ min: 0, max: 1 << 16 }), fc.integer({ min: 0, max: 0xffffffff })),
      srb_flags: fc.integer({ min: 0, max: 0xffffffff }),
    },
    { requiredKeys: [] },
  );
}

/** One I/O of a mix. `lba`/`blocks` address sectors; `seed` makes a write's data. */
export type IoOp =
  | { kind: 'read'; lba: number; blocks: number; pageOffset: number }
  | { kind: 'write'; lba: number; blocks: number; pageOffset: number; fua: boolean; seed: number }
  | { kind: 'unmap'; lba: number; blocks: number }
  | { kind: 'flush' };

export interface IoMixOptions {
  sectors: number;
  /** Largest request, in sectors. */
  maxBlocks: number;
  /** Requests in flight at once (a batch). */
  maxQueueDepth: number;
}

/**
 * Batches of I/O issued together (one batch = one queue depth's worth), none of whose
 * writes, unmaps and reads overlap each other: the disk is split in `maxQueueDepth` slots and
 * each request stays in its own slot, so the model never has to guess an order.
 */
export function ioBatches(o: IoMixOptions): fc.Arbitrary<IoOp[][]> {
  const slot = Math.floor(o.sectors / o.maxQueueDepth);
  const maxBlocks = Math.max(1, Math.min(o.maxBlocks, slot));
  const opIn = (index: number): fc.Arbitrary<IoOp> =>
    fc.integer({ min: 1, max: maxBlocks }).chain((blocks) =>
      fc.integer({ min: index * slot, max: index * slot + slot - blocks }).chain((lba) =>
        fc.oneof(
          {
            weight: 4,
            arbitrary: fc.record({
              kind: fc.constant('read' as const),
              lba: fc.constant(lba),
              blocks: fc.constant(blocks),
              pageOffset: pageOffset(),
            }),
          },
          {
            weight: 4,
            arbitrary: fc.record({
              kind: fc.constant('write' as const),
              lba: fc.constant(lba),
              blocks: fc.constant(blocks),
              pageOffset: pageOffset(),
              fua: fc.boolean(),
              seed: fc.integer({ min: 1, max: 0xffff }),
            }),
          },
          { weight: 1, arbitrary: fc.record({ kind: fc.constant('unmap' as const), lba: fc.constant(lba), blocks: fc.constant(blocks) }) },
          { weight: 1, arbitrary: fc.constant({ kind: 'flush' as const }) },
        ),
      ),
    );
  const batch = fc
    .uniqueArray(fc.integer({ min: 0, max: o.maxQueueDepth - 1 }), { minLength: 1, maxLength: o.maxQueueDepth })
    .chain((slots) => fc.tuple(...slots.map(opIn)));
  return fc.array(batch, { minLength: 1, maxLength: 12 });
}

/** First-page offsets: sector-aligned ones Linux uses and odd ones a guest may send. */
function pageOffset(): fc.Arbitrary<number> {
  return fc.oneof(fc.constant(0), fc.constantFrom(512, 2048, 3584), fc.integer({ min: 0, max: 4095 }));
}

/** The bytes a write with `seed` puts at `lba` (distinct per seed and sector, never all zero). */
export function patternFor(seed: number, lba: number, blocks: number, sectorSize: number): Uint8Array {
  const out = new Uint8Array(blocks * sectorSize);
  for (let i = 0; i < out.length; i++) out[i] = ((seed * 31 + (lba + Math.floor(i / sectorSize)) * 7 + i) % 255) + 1;
  return out;
}
