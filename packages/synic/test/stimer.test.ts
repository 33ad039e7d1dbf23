import { describe, expect, it } from 'vitest';
import {
  HV_STIMER_AUTO_ENABLE,
  HV_STIMER_DIRECT_MODE,
  HV_STIMER_ENABLE,
  HV_STIMER_PERIODIC,
  HV_X64_MSR_EOM,
  HV_X64_MSR_SCONTROL,
  HV_X64_MSR_SIMP,
  HV_X64_MSR_SINT0,
  HV_X64_MSR_STIMER0_CONFIG,
  HVMSG_TIMER_EXPIRED,
  hv_message,
  hv_timer_message_payload,
} from '@hvemu/hvdef';
import { ManualClock } from '@hvemu/common';
import { GuestMemory, PAGE_SIZE } from '@hvemu/memory';
import { HyperV } from '@hvemu/synic';

const CONFIG = (n: number) => HV_X64_MSR_STIMER0_CONFIG + 2 * n;
const COUNT = (n: number) => HV_X64_MSR_STIMER0_CONFIG + 2 * n + 1;
const sint = (s: number) => BigInt(s) << 16n;
const vector = (v: number) => BigInt(v) << 4n;

function setup(simp = true) {
  const memory = GuestMemory.createShared(16 * PAGE_SIZE);
  const clock = new ManualClock(1000n);
  const raised: number[] = [];
  const hv = new HyperV({ memory, vpCount: 1, clock, sink: { raise: (_vp, v) => raised.push(v) } });
  hv.writeMsr(0, HV_X64_MSR_SCONTROL, 1n);
  if (simp) hv.writeMsr(0, HV_X64_MSR_SIMP, 0x3000n | 1n);
  hv.writeMsr(0, HV_X64_MSR_SINT0 + 3, 0x50n);
  const slot = () => hv_message.decode(memory.bytes(0x3000 + 3 * 256, 256));
  const payload = () => hv_timer_message_payload.decode(slot().payload);
  const consume = () => {
    const pending = (memory.readU8(0x3000 + 3 * 256 + 5) & 1) !== 0;
    memory.writeU32(0x3000 + 3 * 256, 0);
    if (pending) hv.writeMsr(0, HV_X64_MSR_EOM, 0n);
  };
  const tick = (to: bigint) => {
    clock.set(to);
    hv.expireTimers();
  };
  return { memory, clock, raised, hv, slot, payload, consume, tick };
}

describe('synthetic timers', () => {
  it('one-shot, message mode: fires at its deadline with expiration and delivery time, then disables', () => {
    const t = setup();
    t.hv.writeMsr(0, COUNT(1), 5000n);
    t.hv.writeMsr(0, CONFIG(1), HV_STIMER_ENABLE | sint(3));
    expect(t.hv.nextTimerDeadline()).toBe(5000n);
    t.tick(4999n);
    expect(t.raised).toEqual([]);
    t.tick(5003n);
    expect(t.slot().message_type).toBe(HVMSG_TIMER_EXPIRED);
    expect(t.payload()).toMatchObject({ timer_index: 1, expiration_time: 5000n, delivery_time: 5003n });
    expect(t.raised).toEqual([0x50]);
    expect(t.hv.readMsr(0, CONFIG(1)) & HV_STIMER_ENABLE).toBe(0n);
    expect(t.hv.nextTimerDeadline()).toBeNull();
  });

  it('a one-shot timer whose deadline has passed fires at once', () => {
    const t = setup();
    t.hv.writeMsr(0, CONFIG(0), HV_STIMER_ENABLE | sint(3));
    t.hv.writeMsr(0, COUNT(0), 10n); // long past (now = 1000)
    t.hv.expireTimers();
    expect(t.payload()).toMatchObject({ timer_index: 0, expiration_time: 10n, delivery_time: 1000n });
  });

  it('periodic: drops missed ticks (lazy), keeps the phase, never bursts', () => {
    const t = setup();
    t.hv.writeMsr(0, COUNT(2), 100n);
    t.hv.writeMsr(0, CONFIG(2), HV_STIMER_ENABLE | HV_STIMER_PERIODIC | HV_STIMER_DIRECT_MODE | vector(0x60));
    t.tick(1100n);
    expect(t.raised).toEqual([0x60]);
    t.tick(1555n); // 4.55 periods late: one expiry, not four
    expect(t.raised).toEqual([0x60, 0x60]);
    expect(t.hv.nextTimerDeadline()).toBe(1600n); // same phase
  });

  it('auto-enable: a non-zero count enables, zero disables', () => {
    const t = setup();
    t.hv.writeMsr(0, CONFIG(0), HV_STIMER_AUTO_ENABLE | HV_STIMER_DIRECT_MODE | vector(0x61));
    expect(t.hv.nextTimerDeadline()).toBeNull();
    t.hv.writeMsr(0, COUNT(0), 2000n);
    expect(t.hv.readMsr(0, CONFIG(0)) & HV_STIMER_ENABLE).toBe(HV_STIMER_ENABLE);
    t.hv.writeMsr(0, COUNT(0), 0n);
    expect(t.hv.readMsr(0, CONFIG(0)) & HV_STIMER_ENABLE).toBe(0n);
  });

  it('a message-mode timer on SINT 0 is disabled at once', () => {
    const t = setup();
    t.hv.writeMsr(0, CONFIG(0), HV_STIMER_ENABLE | sint(0));
    expect(t.hv.readMsr(0, CONFIG(0)) & HV_STIMER_ENABLE).toBe(0n);
  });

  it('an expiry that finds the slot busy is retried on EOM, not lost', () => {
    const t = setup();
    t.hv.postMessage(0, 3, { type: 1, payload: Uint8Array.of(1) }); // the slot is busy
    t.hv.writeMsr(0, COUNT(0), 1500n);
    t.hv.writeMsr(0, CONFIG(0), HV_STIMER_ENABLE | sint(3));
    t.tick(1500n);
    expect(t.slot().message_type).toBe(1);
    expect(t.slot().message_flags & 1).toBe(1); // msg_pending: the guest will EOM
    t.clock.set(1700n);
    t.consume();
    expect(t.slot().message_type).toBe(HVMSG_TIMER_EXPIRED);
    // DeliveryTime is when the message reached the slot (TLFS), not when the timer fired.
    expect(t.payload()).toMatchObject({ expiration_time: 1500n, delivery_time: 1700n });
  });

  it('an expiry before SIMP is enabled is delivered when it is', () => {
    const t = setup(false);
    t.hv.writeMsr(0, COUNT(0), 1200n);
    t.hv.writeMsr(0, CONFIG(0), HV_STIMER_ENABLE | sint(3));
    t.tick(1300n);
    expect(t.raised).toEqual([]);
    t.hv.writeMsr(0, HV_X64_MSR_SIMP, 0x3000n | 1n);
    expect(t.payload()).toMatchObject({ expiration_time: 1200n, delivery_time: 1300n });
    expect(t.raised).toEqual([0x50]);
  });

  it('a periodic message-mode timer queues one expiry while the previous is undelivered', () => {
    const t = setup();
    t.hv.postMessage(0, 3, { type: 1, payload: Uint8Array.of(1) }); // busy
    t.hv.writeMsr(0, COUNT(1), 100n);
    t.hv.writeMsr(0, CONFIG(1), HV_STIMER_ENABLE | HV_STIMER_PERIODIC | sint(3));
    for (let now = 1100n; now <= 2000n; now += 100n) t.tick(now);
    expect(t.hv.synic(0).queuedMessages(3)).toBe(1);
  });

  it('absurd configurations: huge counts and past deadlines neither throw nor spin', () => {
    const t = setup();
    t.hv.writeMsr(0, COUNT(0), 0xffff_ffff_ffff_ffffn);
    t.hv.writeMsr(0, CONFIG(0), HV_STIMER_ENABLE | HV_STIMER_PERIODIC | HV_STIMER_DIRECT_MODE | vector(0x70));
    t.tick(1_000_000n);
    expect(t.raised).toEqual([]);
    t.hv.writeMsr(0, COUNT(1), 1n);
    t.hv.writeMsr(0, CONFIG(1), HV_STIMER_ENABLE | HV_STIMER_PERIODIC | HV_STIMER_DIRECT_MODE | vector(0x71));
    t.tick(10_000_000_000n); // 10^10 periods late: one expiry
    expect(t.raised).toEqual([0x71]);
    // A direct-mode vector below 16 is never raised.
    t.hv.writeMsr(0, COUNT(2), 1n);
    t.hv.writeMsr(0, CONFIG(2), HV_STIMER_ENABLE | HV_STIMER_DIRECT_MODE | vector(3));
    t.tick(10_000_000_001n);
    expect(t.raised).toEqual([0x71, 0x71]);
  });
});
