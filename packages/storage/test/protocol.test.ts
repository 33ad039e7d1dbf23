/**
 * The wire structures against Linux storvsc_drv.c's sizes and offsets, and the parse/encode
 * helpers' edges.
 */
import { describe, expect, it } from 'vitest';
import {
  encodeVstorReply,
  hv_fc_wwn_packet,
  packetSizeFor,
  parseVstorPacket,
  senseSizeFor,
  StorvspProtocolError,
  srbStatusCode,
  vmscsi_request,
  vmscsi_request_pre_win8,
  vmstorage_channel_properties,
  vmstorage_protocol_version,
  vstor_packet,
  VMSCSI_SIZE_DELTA,
  VMSTOR_PROTO_VERSION_WIN6,
  VMSTOR_PROTO_VERSION_WIN7,
  VMSTOR_PROTO_VERSION_WIN8,
  VMSTOR_PROTO_VERSION_WIN8_1,
  VMSTOR_PROTO_VERSION_WIN10,
  VSTOR_OPERATION_COMPLETE_IO,
  VSTOR_OPERATION_CREATE_SUB_CHANNELS,
  SRB_STATUS_AUTOSENSE_VALID,
  SRB_STATUS_ERROR,
  SRB_STATUS_QUEUE_FROZEN,
  scsi,
} from '@hvemu/storage';

describe('storvsc wire structures', () => {
  it('have the sizes of storvsc_drv.c: vstor_packet 64 (48 pre-Win8), vmscsi_request 52 (36), properties 24', () => {
    expect(vstor_packet.size).toBe(64);
    expect(vmscsi_request.size).toBe(0x34);
    expect(vmscsi_request_pre_win8.size).toBe(0x24);
    expect(vmscsi_request.size - vmscsi_request_pre_win8.size).toBe(VMSCSI_SIZE_DELTA);
    expect(vmstorage_channel_properties.size).toBe(24);
    expect(vmstorage_protocol_version.size).toBe(4);
    expect(hv_fc_wwn_packet.size).toBe(36);
    // The union is 0x34 bytes at 12, and vm_srb is its largest member.
    expect(vstor_packet.offsetOf.buffer).toBe(12);
    expect(vstor_packet.size - 12).toBe(vmscsi_request.size);
  });

  it('puts every vmscsi_request field where Linux does', () => {
    expect(vmscsi_request.offsetOf).toMatchObject({
      length: 0,
      srb_status: 2,
      scsi_status: 3,
      port_number: 4,
      path_id: 5,
      target_id: 6,
      lun: 7,
      cdb_length: 8,
      sense_info_length: 9,
      data_in: 10,
      data_transfer_length: 12,
      cdb: 16,
      queue_tag: 38,
      queue_action: 39,
      srb_flags: 40,
      time_out_value: 44,
      queue_sort_key: 48,
    });
    expect(vmstorage_channel_properties.offsetOf).toMatchObject({ max_channel_cnt: 4, flags: 8, max_transfer_bytes: 12 });
  });

  it('versions: packet and sense sizes change at Windows 8 (5.1)', () => {
    expect([
      VMSTOR_PROTO_VERSION_WIN6,
      VMSTOR_PROTO_VERSION_WIN7,
      VMSTOR_PROTO_VERSION_WIN8,
      VMSTOR_PROTO_VERSION_WIN8_1,
      VMSTOR_PROTO_VERSION_WIN10,
    ]).toEqual([0x0200, 0x0402, 0x0501, 0x0600, 0x0602]);
    expect(
      [VMSTOR_PROTO_VERSION_WIN6, VMSTOR_PROTO_VERSION_WIN7, VMSTOR_PROTO_VERSION_WIN8, VMSTOR_PROTO_VERSION_WIN10].map(packetSizeFor),
    ).toEqual([48, 48, 64, 64]);
    expect([VMSTOR_PROTO_VERSION_WIN7, VMSTOR_PROTO_VERSION_WIN8].map(senseSizeFor)).toEqual([0x12, 0x14]);
  });

  it('parses what a guest sends and refuses what is shorter than any request', () => {
    const p = new Uint8Array(64);
    p[0] = VSTOR_OPERATION_CREATE_SUB_CHANNELS;
    p[4] = 1;
    p[12] = 3;
    const r = parseVstorPacket(p);
    expect(r).toMatchObject({ operation: VSTOR_OPERATION_CREATE_SUB_CHANNELS, flags: 1, length: 64 });
    expect((r as { body: Uint8Array }).body[0]).toBe(3);
    expect(parseVstorPacket(new Uint8Array(100))).toMatchObject({ length: 64 });
    expect(parseVstorPacket(new Uint8Array(48))).toMatchObject({ length: 48 });
    const short = parseVstorPacket(new Uint8Array(47));
    expect(short).toBeInstanceOf(StorvspProtocolError);
    expect(short).toMatchObject({ fault: 'short-packet', outcome: 'message-dropped' });
  });

  it('replies are COMPLETE_IO of the asked size with the union cut to fit', () => {
    const reply = encodeVstorReply(48, 0xc0000059, new Uint8Array(52).fill(7));
    expect(reply.length).toBe(48);
    expect(vstor_packet.decode(new Uint8Array([...reply, ...new Uint8Array(16)]))).toMatchObject({
      operation: VSTOR_OPERATION_COMPLETE_IO,
      status: 0xc0000059,
    });
    expect(reply.subarray(12).every((b) => b === 7)).toBe(true);
  });

  it('SRB status codes lose their flag bits', () => {
    expect(srbStatusCode(SRB_STATUS_ERROR | SRB_STATUS_AUTOSENSE_VALID | SRB_STATUS_QUEUE_FROZEN)).toBe(SRB_STATUS_ERROR);
  });

  it('CDB and sense layouts are big-endian and tile their sizes', () => {
    const cdb = scsi.read_write_16.encodeNew({ opcode: scsi.READ_16, lba: 0x1_0000_0002n, transfer_length: 0x01020304 });
    expect([...cdb]).toEqual([0x88, 0, 0, 0, 0, 1, 0, 0, 0, 2, 1, 2, 3, 4, 0, 0]);
    expect(scsi.read_write_16.decode(cdb)).toMatchObject({ lba: 0x1_0000_0002n, transfer_length: 0x01020304 });
    const sense = scsi.senseData(scsi.ILLEGAL_REQUEST, scsi.ASC_LBA_OUT_OF_RANGE);
    expect([sense[0], sense[2], sense[7], sense[12], sense[13], sense.length]).toEqual([0x70, 5, 10, 0x21, 0, 18]);
    expect([6, 10, 10, 16, 12].map((_, i) => scsi.cdbLengthOf([0x00, 0x28, 0x5a, 0x88, 0xa8][i]))).toEqual([6, 10, 10, 16, 12]);
  });
});
