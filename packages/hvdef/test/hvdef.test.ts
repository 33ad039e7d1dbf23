/** The structures' sizes and offsets against the guest drivers' (Linux hvgdk_mini.h / hyperv.h). */
import { describe, expect, it } from 'vitest';
import {
  decodeControl,
  encodeControl,
  HV_HYP_PAGE_SIZE,
  HV_MESSAGE_PAYLOAD_BYTE_COUNT,
  HV_MESSAGE_SIZE,
  hv_input_post_message,
  hv_input_signal_event,
  hv_message,
  hv_timer_message_payload,
  HVCALL_POST_MESSAGE,
  HVCALL_SIGNAL_EVENT,
  ms_hyperv_tsc_page,
} from '@hvemu/hvdef';

describe('@hvemu/hvdef', () => {
  it('declares the structures at the sizes the guest drivers use', () => {
    expect(HV_HYP_PAGE_SIZE).toBe(4096);
    expect([hv_message.size, HV_MESSAGE_SIZE, HV_MESSAGE_PAYLOAD_BYTE_COUNT]).toEqual([256, 256, 240]);
    expect(hv_message.offsetOf.payload).toBe(16);
    expect(hv_input_post_message.size).toBe(256);
    expect(hv_input_post_message.offsetOf.payload).toBe(16);
    expect(hv_input_signal_event.size).toBe(8);
    expect(hv_input_signal_event.offsetOf.flag_number).toBe(4);
    expect(hv_timer_message_payload.size).toBe(24);
    expect(ms_hyperv_tsc_page.size).toBe(4096);
  });

  it('encodes the hypercall control word as the TLFS lays it out', () => {
    expect(encodeControl({ code: HVCALL_POST_MESSAGE })).toBe(0x5cn);
    expect(encodeControl({ code: HVCALL_SIGNAL_EVENT, fast: true })).toBe(0x1005dn);
    expect(encodeControl({ code: 0x13, repCount: 3, repStart: 1, variableHeaderSize: 2 })).toBe(
      0x13n | (2n << 17n) | (3n << 32n) | (1n << 48n),
    );
    expect(decodeControl(0x1005dn)).toMatchObject({ code: HVCALL_SIGNAL_EVENT, fast: true, reservedBitsSet: false });
    expect(decodeControl(1n << 63n).reservedBitsSet).toBe(true);
  });
});
