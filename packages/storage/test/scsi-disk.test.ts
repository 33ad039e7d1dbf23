/**
 * The SCSI disk alone, with host buffers: every served command's data and every refusal's sense.
 */
import { describe, expect, it } from 'vitest';
import { MemoryBackend, ScsiDisk, scsi, type DataBuffer, type DataDirection, type ScsiResult } from '@hvemu/storage';

class HostBuffer implements DataBuffer {
  constructor(readonly bytes: Uint8Array) {}
  get length(): number {
    return this.bytes.length;
  }
  read(offset: number, target: Uint8Array, targetOffset = 0, length = target.length - targetOffset): void {
    target.set(this.bytes.subarray(offset, offset + length), targetOffset);
  }
  write(offset: number, source: Uint8Array, sourceOffset = 0, length = source.length - sourceOffset): void {
    this.bytes.set(source.subarray(sourceOffset, sourceOffset + length), offset);
  }
}

function disk(bytes = 1 << 20, sectorSize: 512 | 4096 = 512, readOnly = false) {
  const backend = new MemoryBackend(bytes);
  return { backend, disk: new ScsiDisk(backend, { sectorSize, readOnly, serial: 'SER123' }) };
}

async function run(d: ScsiDisk, cdb: Uint8Array, direction: DataDirection = 'none', data = new Uint8Array(0)) {
  const buffer = new HostBuffer(data);
  const result = await d.execute({ cdb, data: buffer, direction });
  return { result, data: buffer.bytes };
}

const sense = (r: ScsiResult) => (r.sense ? { key: r.sense[2], asc: r.sense[12], ascq: r.sense[13] } : null);
const ILLEGAL = (asc: number) => ({ key: scsi.ILLEGAL_REQUEST, asc, ascq: 0 });

describe('ScsiDisk', () => {
  it('standard INQUIRY: a disk, Msft Virtual Disk, cut to the allocation length', async () => {
    const { disk: d } = disk();
    const { result, data } = await run(
      d,
      scsi.inquiry_cdb.encodeNew({ opcode: scsi.INQUIRY, allocation_length: 36 }),
      'in',
      new Uint8Array(64),
    );
    expect(result.transferred).toBe(36);
    expect(data[0]).toBe(0);
    expect(Buffer.from(data.subarray(8, 32)).toString()).toBe('Msft    Virtual Disk    ');
    const short = await run(d, scsi.inquiry_cdb.encodeNew({ opcode: scsi.INQUIRY, allocation_length: 5 }), 'in', new Uint8Array(64));
    expect(short.result.transferred).toBe(5);
    const badPage = await run(
      d,
      scsi.inquiry_cdb.encodeNew({ opcode: scsi.INQUIRY, page_code: 0x80, allocation_length: 36 }),
      'in',
      new Uint8Array(64),
    );
    expect(sense(badPage.result)).toEqual(ILLEGAL(0x24));
  });

  it('VPD pages 0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2', async () => {
    const { disk: d } = disk(1 << 20, 4096);
    const vpd = async (page: number) =>
      (
        await run(
          d,
          scsi.inquiry_cdb.encodeNew({ opcode: scsi.INQUIRY, flags: 1, page_code: page, allocation_length: 255 }),
          'in',
          new Uint8Array(255),
        )
      ).data;
    const supported = await vpd(0);
    expect([...supported.subarray(4, 4 + supported[3])]).toEqual([0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2]);
    const serial = await vpd(0x80);
    expect(Buffer.from(serial.subarray(4, 4 + serial[3])).toString()).toBe('SER123');
    const ids = await vpd(0x83);
    expect(ids[4 + 1] & 0x0f).toBe(3); // first designator: NAA
    expect(ids[8] >> 4).toBe(5); // NAA IEEE Registered
    const limits = scsi.block_limits_vpd.decode(await vpd(0xb0));
    expect(limits).toMatchObject({
      page_code: 0xb0,
      page_length: 0x3c,
      wsnz: 1,
      max_transfer_length: (2 << 20) / 4096,
      max_unmap_descriptor_count: 256,
    });
    const chars = scsi.block_device_characteristics_vpd.decode(await vpd(0xb1));
    expect(chars.medium_rotation_rate).toBe(1);
    const lbp = scsi.logical_block_provisioning_vpd.decode(await vpd(0xb2));
    expect(lbp.flags & (scsi.LBP_LBPU | scsi.LBP_LBPWS | scsi.LBP_LBPWS10)).toBe(0xe0);
    const none = await run(
      d,
      scsi.inquiry_cdb.encodeNew({ opcode: scsi.INQUIRY, flags: 1, page_code: 0x99, allocation_length: 255 }),
      'in',
      new Uint8Array(255),
    );
    expect(sense(none.result)).toEqual(ILLEGAL(0x24));
  });

  it('READ CAPACITY 10 and 16 for 512 and 4096-byte sectors; 10 says 0xFFFFFFFF past 2^32 blocks', async () => {
    for (const ss of [512, 4096] as const) {
      const { disk: d } = disk(8 << 20, ss);
      const r10 = await run(d, Uint8Array.of(scsi.READ_CAPACITY_10, 0, 0, 0, 0, 0, 0, 0, 0, 0), 'in', new Uint8Array(8));
      expect(scsi.read_capacity_10_data.decode(r10.data)).toEqual({ last_lba: (8 << 20) / ss - 1, block_length: ss });
      const r16 = await run(
        d,
        scsi.read_capacity_16_cdb.encodeNew({ opcode: scsi.SERVICE_ACTION_IN_16, service_action: 0x10, allocation_length: 32 }),
        'in',
        new Uint8Array(32),
      );
      expect(scsi.read_capacity_16_data.decode(r16.data)).toMatchObject({ last_lba: BigInt((8 << 20) / ss - 1), block_length: ss });
      expect(scsi.read_capacity_16_data.decode(r16.data).lbp_lowest_aligned & scsi.RC16_LBPME).toBe(scsi.RC16_LBPME);
    }
    const huge = new ScsiDisk({ ...new MemoryBackend(512), byteLength: 2 ** 33 * 512, readOnly: false } as never);
    const r = await run(huge, Uint8Array.of(scsi.READ_CAPACITY_10, 0, 0, 0, 0, 0, 0, 0, 0, 0), 'in', new Uint8Array(8));
    expect(scsi.read_capacity_10_data.decode(r.data).last_lba).toBe(0xffffffff);
  });

  it('READ and WRITE 6/10/12/16 land at the same place; 6 with length 0 moves 256 blocks', async () => {
    const { disk: d, backend } = disk();
    const data = new Uint8Array(4 * 512).map((_, i) => (i * 7) & 0xff);
    const cdbs = [
      Uint8Array.of(scsi.WRITE_6, 0, 0, 16, 4, 0),
      scsi.read_write_10.encodeNew({ opcode: scsi.WRITE_10, lba: 16, transfer_length: 4 }),
      scsi.read_write_12.encodeNew({ opcode: scsi.WRITE_12, lba: 16, transfer_length: 4 }),
      scsi.read_write_16.encodeNew({ opcode: scsi.WRITE_16, lba: 16n, transfer_length: 4 }),
    ];
    for (const cdb of cdbs) {
      backend.bytes.fill(0);
      const w = await run(d, cdb, 'out', data);
      expect(w.result).toMatchObject({ status: 0, transferred: 2048 });
      expect(Buffer.from(backend.bytes.subarray(16 * 512, 20 * 512)).equals(Buffer.from(data))).toBe(true);
      const readCdb = cdb.slice();
      readCdb[0] = {
        [scsi.WRITE_6]: scsi.READ_6,
        [scsi.WRITE_10]: scsi.READ_10,
        [scsi.WRITE_12]: scsi.READ_12,
        [scsi.WRITE_16]: scsi.READ_16,
      }[cdb[0]]!;
      const r = await run(d, readCdb, 'in', new Uint8Array(2048));
      expect(Buffer.from(r.data).equals(Buffer.from(data))).toBe(true);
    }
    const r256 = await run(d, Uint8Array.of(scsi.READ_6, 0, 0, 0, 0, 0), 'in', new Uint8Array(256 * 512));
    expect(r256.result.transferred).toBe(256 * 512);
  });

  it('refuses a range past the end (LBA OUT OF RANGE), a transfer over the limit (INVALID FIELD), a short buffer or the wrong direction (invalid request)', async () => {
    const { disk: d } = disk();
    const past = await run(
      d,
      scsi.read_write_16.encodeNew({ opcode: scsi.READ_16, lba: 2047n, transfer_length: 2 }),
      'in',
      new Uint8Array(1024),
    );
    expect(sense(past.result)).toEqual(ILLEGAL(0x21));
    const wrap = await run(
      d,
      scsi.read_write_16.encodeNew({ opcode: scsi.READ_16, lba: 0xffff_ffff_ffff_ffffn, transfer_length: 2 }),
      'in',
      new Uint8Array(1024),
    );
    expect(sense(wrap.result)).toEqual(ILLEGAL(0x21));
    const big = await run(d, scsi.read_write_10.encodeNew({ opcode: scsi.READ_10, transfer_length: 0xffff }), 'in', new Uint8Array(0));
    expect(sense(big.result)).toEqual(ILLEGAL(0x21));
    const { disk: large } = disk(64 << 20);
    const over = await run(large, scsi.read_write_10.encodeNew({ opcode: scsi.READ_10, transfer_length: 8192 }), 'in', new Uint8Array(0));
    expect(sense(over.result)).toEqual(ILLEGAL(0x24));
    const short = await run(d, scsi.read_write_10.encodeNew({ opcode: scsi.READ_10, transfer_length: 2 }), 'in', new Uint8Array(512));
    expect(short.result.invalidRequest).toMatch(/512-byte buffer/);
    const wrongWay = await run(d, scsi.read_write_10.encodeNew({ opcode: scsi.WRITE_10, transfer_length: 1 }), 'in', new Uint8Array(512));
    expect(wrongWay.result.invalidRequest).toMatch(/flows in/);
    const truncatedCdb = await run(d, Uint8Array.of(scsi.READ_16, 0, 0), 'in', new Uint8Array(512));
    expect(truncatedCdb.result.invalidRequest).toMatch(/3-byte CDB/);
  });

  it('every other opcode is INVALID COMMAND OPERATION CODE', async () => {
    const { disk: d } = disk();
    for (const op of [0x04, 0x15, 0x1e, 0x2f, 0x3b, 0x4d, 0x55, 0x89, 0xa3, 0xff]) {
      expect(sense((await run(d, Uint8Array.of(op, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))).result)).toEqual(ILLEGAL(0x20));
    }
  });

  it('a read-only disk refuses WRITE, WRITE SAME and UNMAP with DATA PROTECT / WRITE PROTECTED and says WP in MODE SENSE', async () => {
    const { disk: d, backend } = disk(1 << 20, 512, true);
    const wp = { key: scsi.DATA_PROTECT, asc: 0x27, ascq: 0 };
    expect(
      sense((await run(d, scsi.read_write_10.encodeNew({ opcode: scsi.WRITE_10, transfer_length: 1 }), 'out', new Uint8Array(512))).result),
    ).toEqual(wp);
    expect(
      sense(
        (await run(d, scsi.write_same_16.encodeNew({ opcode: scsi.WRITE_SAME_16, transfer_length: 1 }), 'out', new Uint8Array(512))).result,
      ),
    ).toEqual(wp);
    expect(
      sense((await run(d, scsi.unmap_cdb.encodeNew({ opcode: scsi.UNMAP, parameter_list_length: 24 }), 'out', new Uint8Array(24))).result),
    ).toEqual(wp);
    expect(backend.stats.writes + backend.stats.unmaps).toBe(0);
    const ms = await run(d, Uint8Array.of(scsi.MODE_SENSE_6, 0, 0x3f, 0, 255, 0), 'in', new Uint8Array(255));
    expect(ms.data[2] & scsi.MODE_DSP_WP).toBe(scsi.MODE_DSP_WP);
    // Reads and flushes still work.
    expect(
      (await run(d, scsi.read_write_10.encodeNew({ opcode: scsi.READ_10, transfer_length: 1 }), 'in', new Uint8Array(512))).result.status,
    ).toBe(0);
    expect((await run(d, Uint8Array.of(scsi.SYNCHRONIZE_CACHE_10, 0, 0, 0, 0, 0, 0, 0, 0, 0))).result.status).toBe(0);
  });

  it('MODE SENSE 6/10: the caching page with WCE, block descriptors, DBD, LLBAA, saved values refused', async () => {
    const { disk: d } = disk(1 << 20, 4096);
    const six = await run(d, Uint8Array.of(scsi.MODE_SENSE_6, 0, scsi.MODE_PAGE_CACHING, 0, 255, 0), 'in', new Uint8Array(255));
    expect(six.result.transferred).toBe(4 + 8 + 20);
    expect(six.data[0]).toBe(4 + 8 + 20 - 1);
    expect(six.data[3]).toBe(8);
    expect((six.data[4 + 5] << 16) | (six.data[4 + 6] << 8) | six.data[4 + 7]).toBe(4096);
    expect(six.data[12]).toBe(0x08);
    expect(six.data[14] & 0x04).toBe(0x04);
    const ten = await run(
      d,
      scsi.mode_sense_10_cdb.encodeNew({ opcode: scsi.MODE_SENSE_10, flags: scsi.MODE_SENSE_LLBAA, page: 0x3f, allocation_length: 255 }),
      'in',
      new Uint8Array(255),
    );
    expect(ten.data[7]).toBe(16);
    expect(ten.result.transferred).toBe(8 + 16 + 20 + 12);
    const dbd = await run(d, Uint8Array.of(scsi.MODE_SENSE_6, scsi.MODE_SENSE_DBD, 0x08, 0, 255, 0), 'in', new Uint8Array(255));
    expect(dbd.data[3]).toBe(0);
    expect(sense((await run(d, Uint8Array.of(scsi.MODE_SENSE_6, 0, 0xc8, 0, 255, 0), 'in', new Uint8Array(255))).result)).toEqual(
      ILLEGAL(0x39),
    );
    expect(sense((await run(d, Uint8Array.of(scsi.MODE_SENSE_6, 0, 0x1c, 0, 255, 0), 'in', new Uint8Array(255))).result)).toEqual(
      ILLEGAL(0x24),
    );
  });

  it('WRITE SAME 10/16 repeats one block; with UNMAP and a zero block it deallocates; NDOB needs no data; 0 blocks refused', async () => {
    const { disk: d, backend } = disk();
    const block = new Uint8Array(512).fill(0xab);
    const w = await run(d, scsi.write_same_10.encodeNew({ opcode: scsi.WRITE_SAME_10, lba: 10, transfer_length: 3 }), 'out', block);
    expect(w.result.status).toBe(0);
    expect(backend.bytes.subarray(10 * 512, 13 * 512).every((b) => b === 0xab)).toBe(true);
    expect(backend.bytes[13 * 512]).toBe(0);
    const u = await run(
      d,
      scsi.write_same_16.encodeNew({ opcode: scsi.WRITE_SAME_16, flags: scsi.WRITE_SAME_UNMAP, lba: 10n, transfer_length: 2 }),
      'out',
      new Uint8Array(512),
    );
    expect(u.result.status).toBe(0);
    expect(backend.stats.unmaps).toBe(1);
    expect(backend.bytes.subarray(10 * 512, 12 * 512).every((b) => b === 0)).toBe(true);
    expect(backend.bytes[12 * 512]).toBe(0xab);
    const ndob = await run(
      d,
      scsi.write_same_16.encodeNew({
        opcode: scsi.WRITE_SAME_16,
        flags: scsi.WRITE_SAME_UNMAP | scsi.WRITE_SAME_NDOB,
        lba: 12n,
        transfer_length: 1,
      }),
    );
    expect(ndob.result.status).toBe(0);
    expect(backend.bytes[12 * 512]).toBe(0);
    expect(
      sense((await run(d, scsi.write_same_10.encodeNew({ opcode: scsi.WRITE_SAME_10, lba: 1, transfer_length: 0 }), 'out', block)).result),
    ).toEqual(ILLEGAL(0x24));
  });

  it('UNMAP: descriptors checked first (one bad one unmaps nothing), a list shorter than its header refused', async () => {
    const { disk: d, backend } = disk();
    backend.bytes.fill(0xcc);
    const list = (ranges: [bigint, number][]) => {
      const out = new Uint8Array(8 + 16 * ranges.length);
      scsi.unmap_parameter_header.encode({ data_length: out.length - 2, block_descriptor_data_length: 16 * ranges.length }, out);
      ranges.forEach(([lba, count], i) => scsi.unmap_block_descriptor.encode({ lba, count }, out, 8 + 16 * i));
      return out;
    };
    const cdb = (n: number) => scsi.unmap_cdb.encodeNew({ opcode: scsi.UNMAP, parameter_list_length: n });
    const bad = list([
      [0n, 4],
      [2047n, 2],
    ]);
    expect(sense((await run(d, cdb(bad.length), 'out', bad)).result)).toEqual(ILLEGAL(0x21));
    expect(backend.stats.unmaps).toBe(0);
    const good = list([
      [0n, 4],
      [100n, 1],
    ]);
    expect((await run(d, cdb(good.length), 'out', good)).result.status).toBe(0);
    expect(backend.stats.unmaps).toBe(2);
    expect(backend.bytes.subarray(0, 2048).every((b) => b === 0)).toBe(true);
    expect(backend.bytes[2048]).toBe(0xcc);
    expect(sense((await run(d, cdb(4), 'out', new Uint8Array(4))).result)).toEqual(ILLEGAL(0x1a));
  });

  it('SYNCHRONIZE CACHE 10/16 flushes the backend; TEST UNIT READY, START STOP UNIT, REQUEST SENSE answer', async () => {
    const { disk: d, backend } = disk();
    await run(d, Uint8Array.of(scsi.SYNCHRONIZE_CACHE_10, 0, 0, 0, 0, 0, 0, 0, 0, 0));
    await run(d, scsi.sync_cache_16.encodeNew({ opcode: scsi.SYNCHRONIZE_CACHE_16 }));
    expect(backend.stats.flushes).toBe(2);
    expect(sense((await run(d, scsi.sync_cache_16.encodeNew({ opcode: scsi.SYNCHRONIZE_CACHE_16, lba: 5000n }))).result)).toEqual(
      ILLEGAL(0x21),
    );
    expect((await run(d, new Uint8Array(6))).result.status).toBe(0);
    expect((await run(d, Uint8Array.of(scsi.START_STOP_UNIT, 0, 0, 0, 1, 0))).result.status).toBe(0);
    const rs = await run(d, Uint8Array.of(scsi.REQUEST_SENSE, 0, 0, 0, 18, 0), 'in', new Uint8Array(18));
    expect([rs.data[0], rs.data[2], rs.data[12]]).toEqual([0x70, 0, 0]);
    expect(sense((await run(d, Uint8Array.of(scsi.REQUEST_SENSE, 1, 0, 0, 18, 0), 'in', new Uint8Array(18))).result)).toEqual(
      ILLEGAL(0x24),
    );
  });
});
