/**
 * Ring buffer and packet wire structures, named as in Linux include/linux/hyperv.h.
 * Sizes are the guest drivers' `sizeof`s; defineStruct checks the rows tile them exactly.
 */
import { defineStruct } from '@hvemu/common';

/** struct hv_ring_buffer: the 4 KiB control page in front of each ring's data area. */
export const hv_ring_buffer = defineStruct('hv_ring_buffer', 4096, [
  [0x00, 'write_index', 'u32'], // written only by the producer
  [0x04, 'read_index', 'u32'], // written only by the consumer
  [0x08, 'interrupt_mask', 'u32'], // set by the consumer while it drains: "don't signal me"
  [0x0c, 'pending_send_sz', 'u32'], // set by a blocked producer: "signal me when this many bytes are free"
  [0x10, 'reserved1', { bytes: 48 }], // u32 reserved1[12]
  [0x40, 'feature_bits', 'u32'], // bit 0: feat_pending_send_sz
  [0x44, 'reserved2', { bytes: 4096 - 0x44 }],
]);

/** Size of the control page; the data area follows it. */
export const HV_RING_HEADER_SIZE = hv_ring_buffer.size;
/** feature_bits.feat_pending_send_sz */
export const FEAT_PENDING_SEND_SZ = 1 << 0;

/** Indexes into a Uint32Array over the control page (for Atomics). */
export const RING_WRITE_INDEX = hv_ring_buffer.offsetOf.write_index >> 2;
export const RING_READ_INDEX = hv_ring_buffer.offsetOf.read_index >> 2;
export const RING_INTERRUPT_MASK = hv_ring_buffer.offsetOf.interrupt_mask >> 2;
export const RING_PENDING_SEND_SZ = hv_ring_buffer.offsetOf.pending_send_sz >> 2;
export const RING_FEATURE_BITS = hv_ring_buffer.offsetOf.feature_bits >> 2;

/** struct vmpacket_descriptor: the 16-byte header of every ring packet. */
export const vmpacket_descriptor = defineStruct('vmpacket_descriptor', 16, [
  [0, 'type', 'u16'],
  [2, 'offset8', 'u16'], // payload offset from the descriptor start, in 8-byte units
  [4, 'len8', 'u16'], // total packet length including the descriptor, in 8-byte units
  [6, 'flags', 'u16'],
  [8, 'trans_id', 'u64'],
]);
export const VMPACKET_DESCRIPTOR_SIZE = vmpacket_descriptor.size;

/** The u64 each packet is followed by in the ring (previous write index << 32). Not counted in len8. */
export const VMBUS_PKT_TRAILER = 8;

/** enum vmbus_packet_type */
export const VM_PKT_INVALID = 0x0;
export const VM_PKT_SYNCH = 0x1;
export const VM_PKT_ADD_XFER_PAGESET = 0x2;
export const VM_PKT_RM_XFER_PAGESET = 0x3;
export const VM_PKT_ESTABLISH_GPADL = 0x4;
export const VM_PKT_TEARDOWN_GPADL = 0x5;
export const VM_PKT_DATA_INBAND = 0x6;
export const VM_PKT_DATA_USING_XFER_PAGES = 0x7;
export const VM_PKT_DATA_USING_GPADL = 0x8;
export const VM_PKT_DATA_USING_GPA_DIRECT = 0x9;
export const VM_PKT_CANCEL_REQUEST = 0xa;
export const VM_PKT_COMP = 0xb;
export const VM_PKT_DATA_USING_ADDITIONAL_PKT = 0xc;
export const VM_PKT_ADDITIONAL_DATA = 0xd;

/** The packet types the guest drivers exchange over channel rings; others break the ring. */
export const RING_PACKET_TYPES: ReadonlySet<number> = new Set([
  VM_PKT_DATA_INBAND,
  VM_PKT_DATA_USING_XFER_PAGES,
  VM_PKT_DATA_USING_GPA_DIRECT,
  VM_PKT_COMP,
]);

/** RING_PACKET_TYPES as a bit mask (bit n set for type n), for a branch-free check on the hot path. */
export const RING_PACKET_TYPE_MASK = [...RING_PACKET_TYPES].reduce((mask, t) => mask | (1 << t), 0);

/** VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED */
export const VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED = 1;

/**
 * struct vmdata_gpa_direct / vmbus_packet_mpb_array header after the descriptor: reserved,
 * range count, then `rangecount` gpa ranges.
 */
export const vmdata_gpa_direct_header = defineStruct('vmdata_gpa_direct_header', 8, [
  [0, 'reserved', 'u32'],
  [4, 'rangecount', 'u32'],
]);

/** struct gpa_range header: followed by ceil((byte_offset + byte_count) / 4096) u64 PFNs. */
export const gpa_range = defineStruct('gpa_range', 8, [
  [0, 'byte_count', 'u32'],
  [4, 'byte_offset', 'u32'],
]);

/** struct vmtransfer_page_packet_header after the descriptor. */
export const vmtransfer_page_packet_header = defineStruct('vmtransfer_page_packet_header', 8, [
  [0, 'xfer_pageset_id', 'u16'],
  [2, 'sender_owns_set', 'u8'],
  [3, 'reserved', 'u8'],
  [4, 'range_cnt', 'u32'],
]);

/** struct vmtransfer_page_range */
export const vmtransfer_page_range = defineStruct('vmtransfer_page_range', 8, [
  [0, 'byte_count', 'u32'],
  [4, 'byte_offset', 'u32'],
]);

/** Largest packet len8 can describe (u16 count of 8-byte units). */
export const VMBUS_MAX_PACKET_SIZE = 0xffff * 8;
