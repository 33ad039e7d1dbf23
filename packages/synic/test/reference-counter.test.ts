import { describe, expect, it } from 'vitest';
import { HV_X64_MSR_TIME_REF_COUNT } from '@hvemu/hvdef';
import { ManualClock } from '@hvemu/common';
import { GuestMemory, PAGE_SIZE } from '@hvemu/memory';
import { HyperV, referenceTimeFromTsc, tscPageParameters } from '@hvemu/synic';

describe('TIME_REF_COUNT from a backend reference counter', () => {
  it('answers each vp from the hook (the TSC page formula on that vCPU), not the clock', () => {
    const tsc = { frequencyHz: 2_000_000_000n, valueAtReferenceZero: 5_000n };
    const guestTsc = [7_000_000n, 9_000_000n];
    const params = tscPageParameters(tsc);
    const hv = new HyperV({
      memory: GuestMemory.createShared(4 * PAGE_SIZE),
      vpCount: 2,
      clock: new ManualClock(42n),
      sink: { raise: () => {} },
      tsc,
      referenceCounter: (vp) => referenceTimeFromTsc(guestTsc[vp], params),
    });
    expect(hv.readMsr(0, HV_X64_MSR_TIME_REF_COUNT)).toBe(referenceTimeFromTsc(7_000_000n, params));
    expect(hv.readMsr(1, HV_X64_MSR_TIME_REF_COUNT)).toBe(referenceTimeFromTsc(9_000_000n, params));
  });

  it('falls back to the clock without a hook', () => {
    const hv = new HyperV({
      memory: GuestMemory.createShared(4 * PAGE_SIZE),
      vpCount: 1,
      clock: new ManualClock(42n),
      sink: { raise: () => {} },
    });
    expect(hv.readMsr(0, HV_X64_MSR_TIME_REF_COUNT)).toBe(42n);
  });
});
