/**
 * storvsp end to end on the simulated partition: the TypeScript storvsc (Linux's order) over
 * real VMBus rings, SynIC messages and GPA-direct page lists, against memory disks.
 */
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@hvemu/memory';
import { VM_PKT_DATA_INBAND } from '@hvemu/vmbus';
import {
  MemoryBackend,
  ScsiDisk,
  scsi,
  SRB_STATUS_AUTOSENSE_VALID,
  SRB_STATUS_ERROR,
  SRB_STATUS_INVALID_LUN,
  SRB_STATUS_SUCCESS,
  STATUS_INVALID_DEVICE_STATE,
  STATUS_REVISION_MISMATCH,
  STORAGE_CHANNEL_SUPPORTS_MULTI_CHANNEL,
  VMSTOR_PROTO_VERSION_WIN7,
  VMSTOR_PROTO_VERSION_WIN10,
  VSTOR_OPERATION_QUERY_PROTOCOL_VERSION,
  VSTOR_OPERATION_END_INITIALIZATION,
  VSTOR_OPERATION_EXECUTE_SRB,
  SRB_STATUS_INVALID_REQUEST,
  vstor_packet_header,
  vmstorage_protocol_version,
} from '@hvemu/storage';
import { LEGACY_STORVSC_VERSIONS, patternFor } from '@hvemu/storage/testing';
import { settle, storageSim } from './helpers/sim.mjs';

const senseOf = (s: Uint8Array) => ({ key: s[2] & 0xf, asc: s[12], ascq: s[13] });

describe('storvsp with the TypeScript storvsc', () => {
  it('runs Linux init: 6.2 accepted, properties with multi-channel and the max transfer', async () => {
    const sim = storageSim();
    const { init } = await sim.connect();
    expect(init.version).toBe(VMSTOR_PROTO_VERSION_WIN10);
    expect(init.properties.flags & STORAGE_CHANNEL_SUPPORTS_MULTI_CHANNEL).toBe(STORAGE_CHANNEL_SUPPORTS_MULTI_CHANNEL);
    expect(init.properties.max_channel_cnt).toBe(4);
    expect(init.properties.max_transfer_bytes).toBe(2 << 20);
    expect(sim.device.version).toBe(VMSTOR_PROTO_VERSION_WIN10);
  });

  it('refuses versions it does not speak with REVISION_MISMATCH, so an old guest falls back to 4.2 with 48-byte packets', async () => {
    const sim = storageSim({ device: { versions: [VMSTOR_PROTO_VERSION_WIN7] } });
    await sim.vmbus.connect();
    await sim.vmbus.requestOffers();
    const client = sim.makeClient({ versions: LEGACY_STORVSC_VERSIONS, legacySizes: true });
    const init = await client.connect();
    expect(init.version).toBe(VMSTOR_PROTO_VERSION_WIN7);
    expect(client.packetSize).toBe(48);
    // No multi-channel before Windows 8.
    expect(init.properties.max_channel_cnt).toBe(0);
    const data = patternFor(3, 8, 2, 512);
    expect((await client.write(8, data, 512)).srbStatus).toBe(SRB_STATUS_SUCCESS);
    const back = await client.read(8, 2, 512);
    expect(back.srbStatus).toBe(SRB_STATUS_SUCCESS);
    expect(Buffer.from(back.data).equals(Buffer.from(data))).toBe(true);
    // An error's sense fits the pre-Win8 0x12 bytes.
    const bad = await client.read(1 << 20, 1, 512);
    expect(bad.sense.length).toBe(0x12);
    expect(senseOf(bad.sense)).toEqual({ key: scsi.ILLEGAL_REQUEST, asc: 0x21, ascq: 0 });
  });

  it('answers a version query in the version it is asked with failure, and a query after agreement is out of sequence', async () => {
    const sim = storageSim();
    const { client } = await sim.connect();
    const again = await client.control(
      VSTOR_OPERATION_QUERY_PROTOCOL_VERSION,
      vmstorage_protocol_version.encodeNew({ major_minor: 0x0602 }),
    );
    expect(vstor_packet_header.decode(again).status).toBe(STATUS_INVALID_DEVICE_STATE);
    const end = await client.control(VSTOR_OPERATION_END_INITIALIZATION);
    expect(vstor_packet_header.decode(end).status).toBe(STATUS_INVALID_DEVICE_STATE);
    expect(STATUS_REVISION_MISMATCH).toBe(0xc0000059);
  });

  it('writes and reads through many-page GPA-direct lists at every first-page offset, 512 and 4096-byte sectors', async () => {
    const sim = storageSim({
      disks: [{ backend: new MemoryBackend(4 << 20) }, { backend: new MemoryBackend(4 << 20), sectorSize: 4096 }],
    });
    const { client } = await sim.connect();
    for (const [lun, ss] of [
      [0, 512],
      [1, 4096],
    ] as const) {
      for (const pageOffset of [0, 512, 4095]) {
        const blocks = (300 * 1024) / ss; // 75+ pages
        const data = patternFor(lun * 10 + pageOffset, 5, blocks, ss);
        const w = await client.write(5, data, ss, { lun, pageOffset });
        expect(w).toMatchObject({ srbStatus: SRB_STATUS_SUCCESS, scsiStatus: 0, dataTransferLength: data.length });
        const r = await client.read(5, blocks, ss, { lun, pageOffset: (pageOffset + 100) % PAGE_SIZE });
        expect(r.dataTransferLength).toBe(data.length);
        expect(Buffer.from(r.data).equals(Buffer.from(data))).toBe(true);
      }
      const cap = await client.readCapacity16({ lun });
      const dv = new DataView(cap.data.buffer);
      expect(dv.getBigUint64(0, false)).toBe(BigInt((4 << 20) / ss - 1));
      expect(dv.getUint32(8, false)).toBe(ss);
    }
  });

  it('moves data in pages above 4 GiB', async () => {
    const sim = storageSim({ highMemory: true });
    const { client } = await sim.connect();
    const data = patternFor(9, 0, 64, 512);
    expect((await client.write(0, data, 512, { pageOffset: 1024 })).srbStatus).toBe(SRB_STATUS_SUCCESS);
    const r = await client.read(0, 64, 512, { pageOffset: 7 });
    expect(Buffer.from(r.data).equals(Buffer.from(data))).toBe(true);
  });

  it('reports errors with sense: LBA out of range, unsupported opcode, write to a read-only disk, a missing LUN', async () => {
    const sim = storageSim({ disks: [{ backend: new MemoryBackend(1 << 20) }, { backend: new MemoryBackend(1 << 20), readOnly: true }] });
    const { client } = await sim.connect();
    const out = await client.read(2048, 1, 512);
    expect(out).toMatchObject({ srbStatus: SRB_STATUS_ERROR | SRB_STATUS_AUTOSENSE_VALID, scsiStatus: 2, dataTransferLength: 0 });
    expect(senseOf(out.sense)).toEqual({ key: scsi.ILLEGAL_REQUEST, asc: 0x21, ascq: 0 });
    const opcode = await client.execute({ cdb: Uint8Array.of(0xd0, 0, 0, 0, 0, 0) });
    expect(senseOf(opcode.sense)).toEqual({ key: scsi.ILLEGAL_REQUEST, asc: 0x20, ascq: 0 });
    const ro = await client.write(0, new Uint8Array(512), 512, { lun: 1 });
    expect(senseOf(ro.sense)).toEqual({ key: scsi.DATA_PROTECT, asc: 0x27, ascq: 0 });
    const missing = await client.read(0, 1, 512, { lun: 7 });
    expect(missing.srbStatus).toBe(SRB_STATUS_INVALID_LUN | SRB_STATUS_AUTOSENSE_VALID);
    expect(senseOf(missing.sense)).toEqual({ key: scsi.ILLEGAL_REQUEST, asc: 0x25, ascq: 0 });
    const otherTarget = await client.inquiry(null, 36, { target: 1 });
    expect(otherTarget.srbStatus & 0x3f).toBe(SRB_STATUS_INVALID_LUN);
    // INQUIRY to an empty LUN of a populated target: peripheral qualifier 3, so the scan goes on.
    const pq = await client.inquiry(null, 36, { lun: 9 });
    expect(pq.srbStatus).toBe(SRB_STATUS_SUCCESS);
    expect(pq.data[0]).toBe(0x7f);
  });

  it('REPORT LUNS lists the target, and a hot add and remove send ENUMERATE_BUS', async () => {
    const sim = storageSim();
    const { client } = await sim.connect();
    const report = async () => {
      const cdb = scsi.report_luns_cdb.encodeNew({ opcode: scsi.REPORT_LUNS, allocation_length: 256 });
      const r = await client.execute({ cdb, readLength: 256 });
      const n = new DataView(r.data.buffer).getUint32(0, false) / 8;
      return Array.from({ length: n }, (_, i) => r.data[9 + i * 8]);
    };
    expect(await report()).toEqual([0]);
    sim.controller.attach({ target: 0, lun: 3 }, new ScsiDisk(new MemoryBackend(1 << 20)));
    await settle();
    client.poll();
    expect(client.rescans).toBe(1);
    expect(await report()).toEqual([0, 3]);
    sim.controller.detach({ target: 0, lun: 3 });
    await settle();
    client.poll();
    expect(client.rescans).toBe(2);
    const gone = await client.read(0, 1, 512, { lun: 3 });
    expect(gone.srbStatus & 0x3f).toBe(SRB_STATUS_INVALID_LUN);
  });

  it('CREATE_SUB_CHANNELS offers subchannels; I/O on every channel, each with its own queue', async () => {
    const sim = storageSim({ disks: [{ backend: new MemoryBackend(2 << 20) }] });
    const { client } = await sim.connect({ subchannels: 3 });
    expect(client.channels).toHaveLength(4);
    expect(
      sim.attached
        .openChannels()
        .map((c) => c.subChannelIndex)
        .sort(),
    ).toEqual([0, 1, 2, 3]);
    const writes = [0, 1, 2, 3].map((ch) => client.write(ch * 16, patternFor(ch + 1, ch * 16, 16, 512), 512, { channel: ch }));
    expect((await Promise.all(writes)).map((w) => w.srbStatus)).toEqual([1, 1, 1, 1]);
    for (const ch of [3, 2, 1, 0]) {
      const r = await client.read(ch * 16, 16, 512, { channel: (ch + 1) % 4 });
      expect(Buffer.from(r.data).equals(Buffer.from(patternFor(ch + 1, ch * 16, 16, 512)))).toBe(true);
    }
    for (const q of sim.attached.openChannels().map((c) => c.queue)) expect(q.stats.packetsRead).toBeGreaterThan(0);
  });

  it('flush and FUA reach the backend before their completion', async () => {
    const backend = new MemoryBackend(1 << 20);
    const sim = storageSim({ disks: [{ backend }] });
    const { client } = await sim.connect();
    await client.write(0, new Uint8Array(512).fill(1), 512, { fua: true });
    expect(backend.stats.fuaWrites).toBe(1);
    const done = await client.synchronizeCache();
    expect(done.srbStatus).toBe(SRB_STATUS_SUCCESS);
    expect(backend.stats.flushes).toBe(1);
    await client.unmap([{ lba: 0, blocks: 1 }]);
    expect(backend.stats.unmaps).toBe(1);
    expect((await client.read(0, 1, 512)).data.every((b) => b === 0)).toBe(true);
  });

  it('a backend failure is MEDIUM ERROR on that request only', async () => {
    const backend = new MemoryBackend(1 << 20);
    const sim = storageSim({ disks: [{ backend }] });
    const { client } = await sim.connect();
    backend.failNext('read');
    const bad = await client.read(0, 1, 512);
    expect(senseOf(bad.sense)).toEqual({ key: scsi.MEDIUM_ERROR, asc: 0x11, ascq: 0 });
    expect((await client.read(0, 1, 512)).srbStatus).toBe(SRB_STATUS_SUCCESS);
    expect(sim.logger.records.some((r) => r.level === 'error' && r.message.includes('backend I/O failed'))).toBe(true);
  });

  it('a channel closed with I/O in flight: the late completion goes nowhere, nothing is written to revoked pages, stop() waits for the backend', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    class GatedBackend extends MemoryBackend {
      override async read(offset: number, target: Uint8Array): Promise<void> {
        await gate;
        return super.read(offset, target);
      }
    }
    const backend = new GatedBackend(1 << 20);
    backend.bytes.fill(0x77);
    const sim = storageSim({ disks: [{ backend }] });
    const { client } = await sim.connect();
    const pending = client.read(0, 8, 512).catch((e: unknown) => e);
    await settle();
    expect(sim.device.outstanding).toBe(1);
    await client.close();
    expect(await pending).toMatchObject({ message: 'closed' });
    let stopped = false;
    const stop = sim.device.stop().then(() => (stopped = true));
    await settle();
    expect(stopped).toBe(false);
    release();
    await stop;
    expect(sim.device.outstanding).toBe(0);
    // The client's data pages never saw the disk's 0x77 bytes: the copy into them was refused.
    expect(sim.memory.bytes(0x900 * PAGE_SIZE, 512 * PAGE_SIZE).includes(0x77)).toBe(false);
    expect(sim.logger.records.filter((r) => r.level === 'error')).toEqual([]);
  });

  it('an SRB before END_INITIALIZATION is refused in the size the guest used: INVALID_DEVICE_STATE, INVALID_REQUEST', async () => {
    const sim = storageSim();
    await sim.vmbus.connect();
    await sim.vmbus.requestOffers();
    const client = sim.makeClient();
    await client.open();
    const ch = client.channels[0];
    const replies: Uint8Array[] = [];
    for (const [id, size] of [
      [5n, 64],
      [6n, 48],
    ] as const) {
      const srb = new Uint8Array(size);
      srb[0] = VSTOR_OPERATION_EXECUTE_SRB;
      srb[12 + 8] = 6; // cdb_length
      ch.rings.outbound.write({ type: VM_PKT_DATA_INBAND, flags: 1, transactionId: id, payload: srb });
    }
    await settle();
    ch.rings.inbound.drain((p) => void replies.push(p.payload().slice()));
    expect(replies.map((r) => [r.length, vstor_packet_header.decode(r).status, r[12 + 2]])).toEqual([
      [64, STATUS_INVALID_DEVICE_STATE, SRB_STATUS_INVALID_REQUEST],
      [48, STATUS_INVALID_DEVICE_STATE, SRB_STATUS_INVALID_REQUEST],
    ]);
  });
});
