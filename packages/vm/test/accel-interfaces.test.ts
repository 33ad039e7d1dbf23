/**
 * packages/vm over AccelPartition only: the enlightenments, the signal doorbell and reference
 * time feature-test the optional capabilities instead of naming KVM. On a partition without
 * doorbells or a guest TSC (the MSHV fake here) they take the exit path or ask for a model.
 */
import { describe, expect, it } from 'vitest';
import { ManualClock } from '@hvemu/common';
import { AccelUsageError, MshvPartition } from '@hvemu/accel';
import { FakeMshvSys } from '@hvemu/accel/testing';
import { HypercallDispatcher } from '@hvemu/hypercalls';
import { silentLogger } from '@hvemu/common';
import { attachHyperV, measureTscModel, SignalDoorbell } from '@hvemu/vm';

describe('packages/vm on a partition without the optional capabilities', () => {
  it('attachHyperV works without doorbells (fast HvSignalEvent exits) when given a TSC model', () => {
    const p = MshvPartition.create({ memory: [{ gpa: 0, size: 1 << 20 }] }, new FakeMshvSys());
    try {
      expect(p.doorbells).toBeUndefined();
      expect(p.vcpus[0].tsc).toBeUndefined();
      const enl = attachHyperV(p, { clock: new ManualClock(), tsc: { frequencyHz: 1_000_000_000n, valueAtReferenceZero: 0n } });
      expect(enl.doorbell).toBeUndefined();
      enl.dispose();
    } finally {
      p.close();
    }
  });

  it('reference time and the doorbell say which capability is missing', () => {
    const p = MshvPartition.create({ memory: [{ gpa: 0, size: 1 << 20 }] }, new FakeMshvSys());
    try {
      expect(() => measureTscModel(p, new ManualClock())).toThrow(AccelUsageError);
      expect(() => measureTscModel(p, new ManualClock())).toThrow(/vcpu\.tsc/);
      const hypercalls = new HypercallDispatcher({ memory: p.memory, logger: silentLogger });
      expect(() => new SignalDoorbell(p, hypercalls, 0x9a, silentLogger)).toThrow(/partition\.doorbells/);
    } finally {
      p.close();
    }
  });
});
