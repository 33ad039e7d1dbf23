import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { HV_X64_MSR_EOM, HV_X64_MSR_SCONTROL, HV_X64_MSR_SIEFP, HV_X64_MSR_SIMP, HV_X64_MSR_SINT0, hv_message } from '@hvemu/hvdef';
import { HostUsageError } from '@hvemu/common';
import { hvemuSynicSystem, synicSlotProperty, TEST_SIMP_GPA } from '@hvemu/synic/testing';
import { GuestMemory, PAGE_SIZE } from '@hvemu/memory';
import { SynicQueueFull, VpSynic } from '@hvemu/synic';
import { fuzzRuns } from '../../../test/helpers.js';

describe('message slots (model-based)', () => {
  it('agree with the reference model: order, no loss, no duplicates, msg_pending, interrupts', () => {
    fc.assert(synicSlotProperty(hvemuSynicSystem), { numRuns: fuzzRuns(300) });
  });
});

describe('message slots', () => {
  it('writes the hv_message layout and publishes message_type last', () => {
    const s = hvemuSynicSystem();
    s.post(2, 1, Uint8Array.of(9, 8, 7));
    const msg = hv_message.decode(s.memory.bytes(TEST_SIMP_GPA + 2 * 256, 256));
    expect(msg).toMatchObject({ message_type: 1, payload_size: 3, message_flags: 0, sender: 0n });
    expect(Array.from(msg.payload.subarray(0, 3))).toEqual([9, 8, 7]);
    expect(s.interrupts(2)).toBe(1);
  });

  it('queues behind a busy slot, sets msg_pending, and delivers the next on EOM', () => {
    const s = hvemuSynicSystem();
    s.post(1, 5, Uint8Array.of(1));
    s.post(1, 6, Uint8Array.of(2));
    expect(s.readSlot(1)).toMatchObject({ type: 5, pending: true });
    expect(s.synic.queuedMessages(1)).toBe(1);
    expect(s.consumeSlot(1)).toBe(true); // the guest saw msg_pending and wrote EOM
    expect(s.readSlot(1)).toMatchObject({ type: 6, pending: false });
    expect(s.interrupts(1)).toBe(2);
  });

  it('holds messages while the SINT is masked and delivers them when unmasked', () => {
    const s = hvemuSynicSystem();
    s.setMasked(3, true);
    s.post(3, 7, new Uint8Array(0));
    expect(s.readSlot(3)).toBeNull();
    expect(s.interrupts(3)).toBe(0);
    s.setMasked(3, false);
    expect(s.readSlot(3)).toMatchObject({ type: 7 });
    expect(s.interrupts(3)).toBe(1);
  });

  it('never interrupts a polling SINT, but still fills its slot', () => {
    const s = hvemuSynicSystem();
    s.setPolling(0, true);
    s.post(0, 3, Uint8Array.of(1));
    expect(s.readSlot(0)).toMatchObject({ type: 3 });
    expect(s.interrupts(0)).toBe(0);
  });

  it('keeps messages while SIMP is disabled, and delivers them to where SIMP points when enabled', () => {
    const memory = GuestMemory.createShared(16 * PAGE_SIZE);
    const raised: number[] = [];
    const synic = new VpSynic(0, memory, { raise: (_vp, v) => raised.push(v) });
    synic.writeMsr(HV_X64_MSR_SCONTROL, 1n);
    synic.writeMsr(HV_X64_MSR_SINT0 + 2, 0xf3n);
    synic.postMessage(2, { type: 1, payload: Uint8Array.of(42) });
    expect(raised).toEqual([]);
    synic.writeMsr(HV_X64_MSR_SIMP, 0x5000n | 1n);
    expect(memory.readU32(0x5000 + 2 * 256)).toBe(1);
    expect(memory.readU8(0x5000 + 2 * 256 + 16)).toBe(42);
    expect(raised).toEqual([0xf3]);
    // Moving SIMP: later messages land on the new page.
    memory.writeU32(0x5000 + 2 * 256, 0);
    synic.writeMsr(HV_X64_MSR_SIMP, 0x7000n | 1n);
    synic.postMessage(2, { type: 2, payload: Uint8Array.of(43) });
    expect(memory.readU32(0x7000 + 2 * 256)).toBe(2);
    expect(memory.readU32(0x5000 + 2 * 256)).toBe(0);
  });

  it('bounds each SINT queue', () => {
    const memory = GuestMemory.createShared(16 * PAGE_SIZE);
    const synic = new VpSynic(0, memory, { raise: () => {} }, { queueLimit: 3 });
    for (let i = 0; i < 3; i++) synic.postMessage(4, { type: 1, payload: new Uint8Array(0) });
    expect(() => synic.postMessage(4, { type: 1, payload: new Uint8Array(0) })).toThrow(SynicQueueFull);
    expect(() => synic.postMessage(4, { type: 1, payload: new Uint8Array(241) })).toThrow(HostUsageError);
  });

  it('copies a queued payload, so the caller may reuse its buffer at once', () => {
    const s = hvemuSynicSystem();
    const buffer = Uint8Array.of(1, 1);
    s.synic.postMessage(1, { type: 5, payload: buffer });
    s.synic.postMessage(1, { type: 6, payload: buffer.fill(2) }); // queued behind the first
    buffer.fill(3);
    s.consumeSlot(1);
    expect(Array.from(s.readSlot(1)!.payload)).toEqual([2, 2]);
  });

  it('an EOM with nothing pending changes nothing', () => {
    const s = hvemuSynicSystem();
    s.post(1, 5, Uint8Array.of(1));
    s.synic.writeMsr(HV_X64_MSR_EOM, 0n);
    expect(s.readSlot(1)).toMatchObject({ type: 5, pending: false });
    expect(s.interrupts(1)).toBe(1);
  });
});

describe('event flags', () => {
  function setup() {
    const memory = GuestMemory.createShared(16 * PAGE_SIZE);
    const raised: number[] = [];
    const synic = new VpSynic(0, memory, { raise: (_vp, v) => raised.push(v) });
    synic.writeMsr(HV_X64_MSR_SCONTROL, 1n);
    synic.writeMsr(HV_X64_MSR_SINT0 + 2, 0xf3n);
    return { memory, raised, synic };
  }

  it('sets the flag bit in the SINT slot and interrupts only on 0 -> 1', () => {
    const { memory, raised, synic } = setup();
    synic.writeMsr(HV_X64_MSR_SIEFP, 0x4000n | 1n);
    expect(synic.signalEvent(2, 37)).toBe(true);
    expect(synic.signalEvent(2, 37)).toBe(false);
    expect(raised).toEqual([0xf3]);
    // flag 37 of SINT 2: byte 2*256 + 4, bit 5
    expect(memory.readU8(0x4000 + 2 * 256 + 4)).toBe(1 << 5);
    memory.writeU8(0x4000 + 2 * 256 + 4, 0); // the guest clears it (xchg in Linux)
    expect(synic.signalEvent(2, 37)).toBe(true);
    expect(raised).toEqual([0xf3, 0xf3]);
  });

  it('holds flags set while SIEFP is disabled and applies them when it is enabled', () => {
    const { memory, raised, synic } = setup();
    synic.signalEvent(2, 5);
    expect(raised).toEqual([]);
    synic.writeMsr(HV_X64_MSR_SIEFP, 0x4000n | 1n);
    expect(memory.readU8(0x4000 + 2 * 256)).toBe(1 << 5);
    expect(raised).toEqual([0xf3]);
  });

  it('remembers an interrupt for a masked SINT and raises it on unmask', () => {
    const { raised, synic } = setup();
    synic.writeMsr(HV_X64_MSR_SIEFP, 0x4000n | 1n);
    synic.writeMsr(HV_X64_MSR_SINT0 + 2, 0xf3n | (1n << 16n));
    synic.signalEvent(2, 1);
    expect(raised).toEqual([]);
    synic.writeMsr(HV_X64_MSR_SINT0 + 2, 0xf3n);
    expect(raised).toEqual([0xf3]);
  });

  it('rejects flag numbers outside the 2048 flags of a slot', () => {
    const { synic } = setup();
    expect(() => synic.signalEvent(2, 2048)).toThrow(HostUsageError);
    expect(() => synic.signalEvent(16, 0)).toThrow(HostUsageError);
  });
});
