/** HyperV and the SynIC as a careless host caller uses them: typed refusals naming the value. */
import { describe, expect, it } from 'vitest';
import { HV_MAXIMUM_PROCESSORS, HV_X64_MSR_GUEST_OS_ID } from '@hvemu/hvdef';
import { HostUsageError, ManualClock } from '@hvemu/common';
import { GuestMemory } from '@hvemu/memory';
import { HyperV, tscPageParameters } from '@hvemu/synic';

const sink = { raise: () => {} };
const make = (vpCount: unknown) =>
  new HyperV({ memory: GuestMemory.createShared(1 << 16), vpCount: vpCount as number, clock: new ManualClock(), sink });
const anyValue = (v: unknown): never => v as never;

describe('HyperV at its API edge', () => {
  it.each([0, -1, 1.5, NaN, '2', undefined, HV_MAXIMUM_PROCESSORS + 1, 1e9])(
    'vpCount %s is a HostUsageError, at once (no allocation sized by it)',
    (n) => {
      expect(() => make(n)).toThrow(HostUsageError);
      expect(() => make(n)).toThrow(`vpCount ${String(n)} is not an integer in [1, ${HV_MAXIMUM_PROCESSORS}]`);
    },
  );

  it('takes every count up to the Hyper-V maximum', () => {
    expect(make(1).vpCount).toBe(1);
    expect(make(HV_MAXIMUM_PROCESSORS).vpCount).toBe(HV_MAXIMUM_PROCESSORS);
  });

  it('refuses VPs it does not have, SINTs and flags out of range, and non-u64 MSR values', () => {
    const hv = make(2);
    expect(() => hv.synic(2)).toThrow(HostUsageError);
    expect(() => hv.synic(NaN)).toThrow(HostUsageError);
    expect(() => hv.signalEvent(0, 16, 0)).toThrow(HostUsageError);
    expect(() => hv.signalEvent(0, 0, 2048)).toThrow(HostUsageError);
    expect(() => hv.writeMsr(0, HV_X64_MSR_GUEST_OS_ID, anyValue(5))).toThrow(HostUsageError);
    expect(() => hv.writeMsr(0, HV_X64_MSR_GUEST_OS_ID, 1n << 64n)).toThrow(HostUsageError);
  });

  it('refuses a TSC frequency that is not a positive bigint, and a clock going backwards', () => {
    expect(() => tscPageParameters({ frequencyHz: 0n, valueAtReferenceZero: 0n })).toThrow(HostUsageError);
    expect(() => tscPageParameters({ frequencyHz: anyValue(1e9), valueAtReferenceZero: 0n })).toThrow(HostUsageError);
    const clock = new ManualClock(10n);
    expect(() => clock.advance(-1n)).toThrow(HostUsageError);
    expect(() => clock.set(5n)).toThrow(HostUsageError);
    expect(() => clock.advance(anyValue(1))).toThrow(HostUsageError);
    expect(clock.now()).toBe(10n);
  });
});
