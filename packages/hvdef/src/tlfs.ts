/**
 * Hyper-V (TLFS) numbers and structures, named as in the TLFS and Linux
 * include/hyperv/hvgdk*.h / hvhdk*.h, declared once for every hvemu package: the page size,
 * synthetic MSRs and their fields, SynIC messages and event flags, the reference TSC page,
 * hypercall statuses and the HvPostMessage / HvSignalEvent input blocks.
 */
import { defineStruct } from '@hvemu/common';

/** Hyper-V pages are 4 KiB whatever the host's page size (HV_HYP_PAGE_SIZE). */
export const HV_HYP_PAGE_SHIFT = 12;
export const HV_HYP_PAGE_SIZE = 1 << HV_HYP_PAGE_SHIFT;

/** The most virtual processors an x64 partition can have (hvgdk_mini.h, TLFS). */
export const HV_MAXIMUM_PROCESSORS = 2048;

// ---- Synthetic MSRs (HV_X64_MSR_*) ----
export const HV_X64_MSR_GUEST_OS_ID = 0x40000000;
export const HV_X64_MSR_HYPERCALL = 0x40000001;
export const HV_X64_MSR_VP_INDEX = 0x40000002;
export const HV_X64_MSR_RESET = 0x40000003;
export const HV_X64_MSR_VP_RUNTIME = 0x40000010;
export const HV_X64_MSR_TIME_REF_COUNT = 0x40000020;
export const HV_X64_MSR_REFERENCE_TSC = 0x40000021;
export const HV_X64_MSR_TSC_FREQUENCY = 0x40000022;
export const HV_X64_MSR_APIC_FREQUENCY = 0x40000023;
/** union hv_vp_assist_msr_contents: enable (bit 0), page GPA (bits 12-63). */
export const HV_X64_MSR_VP_ASSIST_PAGE = 0x40000073;
export const HV_X64_MSR_SCONTROL = 0x40000080;
export const HV_X64_MSR_SVERSION = 0x40000081;
export const HV_X64_MSR_SIEFP = 0x40000082;
export const HV_X64_MSR_SIMP = 0x40000083;
export const HV_X64_MSR_EOM = 0x40000084;
export const HV_X64_MSR_SINT0 = 0x40000090;
export const HV_X64_MSR_SINT15 = 0x4000009f;
export const HV_X64_MSR_STIMER0_CONFIG = 0x400000b0;
export const HV_X64_MSR_STIMER3_COUNT = 0x400000b7;
export const HV_X64_MSR_GUEST_IDLE = 0x400000f0;
export const HV_X64_MSR_CRASH_P0 = 0x40000100;
export const HV_X64_MSR_CRASH_P4 = 0x40000104;
export const HV_X64_MSR_CRASH_CTL = 0x40000105;

export const HV_SYNIC_SINT_COUNT = 16;
export const HV_SYNIC_STIMER_COUNT = 4;
/** SVERSION reads this. */
export const HV_SYNIC_VERSION_1 = 1;

// ---- SINTx register (union hv_synic_sint) ----
export const HV_SYNIC_SINT_VECTOR_MASK = 0xff;
export const HV_SYNIC_SINT_MASKED = 1n << 16n;
export const HV_SYNIC_SINT_AUTO_EOI = 1n << 17n;
export const HV_SYNIC_SINT_POLLING = 1n << 18n;
/** Bits a guest may set in SINTx: vector, masked, auto_eoi, polling. */
export const HV_SYNIC_SINT_VALID = 0xffn | HV_SYNIC_SINT_MASKED | HV_SYNIC_SINT_AUTO_EOI | HV_SYNIC_SINT_POLLING;
/** SINTx after reset: masked. */
export const HV_SYNIC_SINT_RESET = HV_SYNIC_SINT_MASKED;

// ---- SIMP / SIEFP / HYPERCALL / REFERENCE_TSC: enable bit + page number ----
export const HV_PAGE_ENABLE = 1n;
export const HV_PAGE_GPA_MASK = ~0xfffn & 0xffff_ffff_ffff_ffffn;
/** HYPERCALL bit 1: locked (further writes ignored until reset). */
export const HV_X64_MSR_HYPERCALL_LOCKED = 2n;

// ---- STIMERx_CONFIG (union hv_stimer_config) ----
export const HV_STIMER_ENABLE = 1n << 0n;
export const HV_STIMER_PERIODIC = 1n << 1n;
export const HV_STIMER_LAZY = 1n << 2n;
export const HV_STIMER_AUTO_ENABLE = 1n << 3n;
export const HV_STIMER_APIC_VECTOR_SHIFT = 4n;
export const HV_STIMER_DIRECT_MODE = 1n << 12n;
export const HV_STIMER_SINT_SHIFT = 16n;
/** Bits a guest may set in STIMERx_CONFIG (13-15 and 20-63 are reserved). */
export const HV_STIMER_CONFIG_VALID = 0x000f_1fffn;

// ---- CRASH_CTL ----
export const HV_CRASH_CTL_CRASH_NOTIFY = 1n << 63n;
export const HV_CRASH_CTL_CRASH_NOTIFY_MSG = 1n << 62n;

// ---- SynIC messages ----
export const HV_MESSAGE_SIZE = 256;
export const HV_MESSAGE_PAYLOAD_BYTE_COUNT = 240;
export const HVMSG_NONE = 0x00000000;
export const HVMSG_TIMER_EXPIRED = 0x80000010;
/** Message types a guest may post: non-zero, bit 31 clear. */
export const HV_MESSAGE_TYPE_HYPERVISOR_MASK = 0x80000000;
/** hv_message_flags.msg_pending */
export const HV_MESSAGE_FLAG_PENDING = 1;

/** struct hv_message_header: the first 16 bytes of hv_message. */
export const HV_MESSAGE_HEADER_SIZE = 16;
export const hv_message_header = defineStruct('hv_message_header', HV_MESSAGE_HEADER_SIZE, [
  [0, 'message_type', 'u32'],
  [4, 'payload_size', 'u8'],
  [5, 'message_flags', 'u8'],
  [6, 'reserved', 'u16'],
  [8, 'sender', 'u64'],
]);

/** union hv_register_value: every VP register moves as 16 bytes (Get/SetVpRegisters, WHV_REGISTER_VALUE). */
export const HV_REGISTER_VALUE_SIZE = 16;

/** struct hv_message: one slot of the SIMP page. */
export const hv_message = defineStruct('hv_message', HV_MESSAGE_SIZE, [
  [0, 'message_type', 'u32'],
  [4, 'payload_size', 'u8'],
  [5, 'message_flags', 'u8'],
  [6, 'reserved', 'u16'],
  [8, 'sender', 'u64'], // port id or sender
  [16, 'payload', { bytes: HV_MESSAGE_PAYLOAD_BYTE_COUNT }],
]);

/** struct hv_timer_message_payload (HVMSG_TIMER_EXPIRED). */
export const hv_timer_message_payload = defineStruct('hv_timer_message_payload', 24, [
  [0, 'timer_index', 'u32'],
  [4, 'reserved', 'u32'],
  [8, 'expiration_time', 'u64'],
  [16, 'delivery_time', 'u64'],
]);

/** Event flags: one 256-byte slot of the SIEFP page per SINT, 2048 flags each. */
export const HV_EVENT_FLAGS_BYTE_COUNT = 256;
export const HV_EVENT_FLAGS_COUNT = HV_EVENT_FLAGS_BYTE_COUNT * 8;

/** struct ms_hyperv_tsc_page (the reference TSC page). */
export const ms_hyperv_tsc_page = defineStruct('ms_hyperv_tsc_page', 4096, [
  [0, 'tsc_sequence', 'u32'],
  [4, 'reserved1', 'u32'],
  [8, 'tsc_scale', 'u64'],
  [16, 'tsc_offset', 'u64'], // s64 on the wire; two's complement
  [24, 'reserved2', { bytes: 4096 - 24 }],
]);

// ---- Hypercall status (HV_STATUS_*) ----
export const HV_STATUS_SUCCESS = 0x0;
export const HV_STATUS_INVALID_HYPERCALL_CODE = 0x2;
export const HV_STATUS_INVALID_HYPERCALL_INPUT = 0x3;
export const HV_STATUS_INVALID_ALIGNMENT = 0x4;
export const HV_STATUS_INVALID_PARAMETER = 0x5;
export const HV_STATUS_ACCESS_DENIED = 0x6;
export const HV_STATUS_INVALID_PARTITION_STATE = 0x7;
export const HV_STATUS_UNKNOWN_PROPERTY = 0x9;
export const HV_STATUS_INSUFFICIENT_MEMORY = 0xb;
export const HV_STATUS_INVALID_VP_INDEX = 0xe;
export const HV_STATUS_INVALID_PORT_ID = 0x11;
export const HV_STATUS_INVALID_CONNECTION_ID = 0x12;
export const HV_STATUS_INSUFFICIENT_BUFFERS = 0x13;
export const HV_STATUS_INVALID_VP_STATE = 0x15;

// ---- HvPostMessage / HvSignalEvent ----
/** Connection ids are 24 bits (HV_CONNECTION_ID). */
export const HV_CONNECTION_ID_MASK = 0xff_ffff;

/** struct hv_input_post_message: the HvPostMessage input block (memory, 8-byte aligned GPA in RDX). */
export const hv_input_post_message = defineStruct('hv_input_post_message', 16 + HV_MESSAGE_PAYLOAD_BYTE_COUNT, [
  [0, 'connectionid', 'u32'],
  [4, 'reserved', 'u32'],
  [8, 'message_type', 'u32'],
  [12, 'payload_size', 'u32'],
  [16, 'payload', { bytes: HV_MESSAGE_PAYLOAD_BYTE_COUNT }],
]);

/** struct hv_input_signal_event: the HvSignalEvent input (fast: RDX holds these 8 bytes). */
export const hv_input_signal_event = defineStruct('hv_input_signal_event', 8, [
  [0, 'connectionid', 'u32'],
  [4, 'flag_number', 'u16'],
  [6, 'rsvd_z', 'u16'],
]);
