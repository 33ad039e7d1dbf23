/**
 * Reference time on a backend that exposes the guest TSC (`AccelVcpu.tsc`; KVM here): the TscModel the reference
 * TSC page publishes, measured from the backend, and the TIME_REF_COUNT reader that applies
 * the page's own formula to the calling vCPU's TSC (as KVM does), so a guest comparing the
 * MSR with the page sees no drift at all.
 *
 * Measured on this project's KVM: the guest TSC ticks at KVM_GET_TSC_KHZ (2.445 GHz) in wall
 * time, even though guest code runs at ~1M instructions/s, and vCPU TSCs agree (KVM
 * synchronises the TSC writes made at vCPU creation).
 */
import { HV_CLOCK_HZ, type Clock } from '@hvemu/common';
import { AccelUsageError, type AccelPartition, type GuestTsc } from '@hvemu/accel';
import { referenceTimeFromTsc, tscPageParameters, type TscModel } from '@hvemu/synic';

/** Bracketed TSC reads taken; the tightest bracket sets the model. */
const TSC_SAMPLES = 16;

/**
 * The guest TSC against `clock`: frequency from the backend, and the TSC value at reference
 * time 0 from a TSC read bracketed by two clock reads. The later clock read is used, so the
 * TSC-derived time runs at most one bracket ahead of the Clock the timers use: a guest never
 * sees a timer fire before its deadline by its own reading. Of TSC_SAMPLES brackets the
 * tightest is taken, so a host that descheduled this thread mid-read (a loaded machine) does
 * not leave a skew of milliseconds between the guest's TIME_REF_COUNT and the timestamps the
 * host writes (a timer message's DeliveryTime).
 * vCPU 0 must be parked (not yet started): call at attach time.
 */
export function measureTscModel(partition: AccelPartition, clock: Clock): TscModel {
  const guestTsc = tscOf(partition, 0);
  const frequencyHz = BigInt(guestTsc.khz()) * 1000n;
  let best: { window: bigint; tsc: bigint; after: bigint } | undefined;
  for (let i = 0; i < TSC_SAMPLES; i++) {
    const before = clock.now();
    const tsc = guestTsc.read();
    const after = clock.now();
    if (!best || after - before < best.window) best = { window: after - before, tsc, after };
  }
  return { frequencyHz, valueAtReferenceZero: best!.tsc - (best!.after * frequencyHz) / HV_CLOCK_HZ };
}

/** TIME_REF_COUNT for `vp`: the reference TSC page's formula on that vCPU's TSC (read while it is parked at the MSR exit). */
export function tscReferenceCounter(partition: AccelPartition, model: TscModel): (vp: number) => bigint {
  const params = tscPageParameters(model);
  return (vp) => referenceTimeFromTsc(tscOf(partition, vp).read(), params);
}

/** vCPU `vp`'s guest TSC: an optional AccelVcpu capability (KVM has it; MSHV and WHPX keep time in the hypervisor). */
function tscOf(partition: AccelPartition, vp: number): GuestTsc {
  const tsc = partition.vcpus[vp]?.tsc;
  if (!tsc)
    throw new AccelUsageError(`reference time: the ${partition.backend} partition gives no guest TSC (vcpu.tsc): pass a TscModel instead`);
  return tsc;
}
