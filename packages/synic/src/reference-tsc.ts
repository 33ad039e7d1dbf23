/**
 * Reference time from the guest's TSC: the reference TSC page (tsc_sequence, tsc_scale,
 * tsc_offset) and the arithmetic both it and TIME_REF_COUNT share, so a guest comparing them
 * sees no drift. reference time = ((tsc * tsc_scale) >> 64) + tsc_offset, in 100 ns units.
 */
import { HostUsageError, HV_CLOCK_HZ } from '@hvemu/common';
import { ms_hyperv_tsc_page } from '@hvemu/hvdef';

const U64 = (1n << 64n) - 1n;

/** How the guest's TSC relates to reference time: it counts `frequencyHz` and read `valueAtReferenceZero` at time 0. */
export interface TscModel {
  frequencyHz: bigint;
  valueAtReferenceZero: bigint;
}

export interface TscPageParameters {
  scale: bigint;
  /** Signed. */
  offset: bigint;
}

export function tscPageParameters(tsc: TscModel): TscPageParameters {
  if (typeof tsc.frequencyHz !== 'bigint' || tsc.frequencyHz <= 0n)
    throw new HostUsageError(`TSC frequency ${String(tsc.frequencyHz)} Hz is not a positive bigint`);
  const scale = ((HV_CLOCK_HZ << 64n) / tsc.frequencyHz) & U64;
  const offset = -((tsc.valueAtReferenceZero * scale) >> 64n);
  return { scale, offset };
}

/** What a guest computes from the page for a TSC reading. */
export function referenceTimeFromTsc(tscValue: bigint, p: TscPageParameters): bigint {
  return ((tscValue * p.scale) >> 64n) + p.offset;
}

/** The guest TSC value at reference time `t` under the model. */
export function tscAtReferenceTime(t: bigint, tsc: TscModel): bigint {
  return tsc.valueAtReferenceZero + (t * tsc.frequencyHz) / HV_CLOCK_HZ;
}

/**
 * Writes the page with the sequence protocol: sequence 0 first (the guest falls back to the
 * MSR), then scale and offset, then a new sequence that is never 0 or 0xFFFFFFFF.
 */
export function writeTscPage(words: Uint32Array, p: TscPageParameters): number {
  const seqIndex = ms_hyperv_tsc_page.offsetOf.tsc_sequence / 4;
  const previous = Atomics.load(words, seqIndex);
  Atomics.store(words, seqIndex, 0);
  const scaleIndex = ms_hyperv_tsc_page.offsetOf.tsc_scale / 4;
  const offsetIndex = ms_hyperv_tsc_page.offsetOf.tsc_offset / 4;
  const offset = p.offset & U64;
  Atomics.store(words, scaleIndex, Number(p.scale & 0xffff_ffffn));
  Atomics.store(words, scaleIndex + 1, Number(p.scale >> 32n));
  Atomics.store(words, offsetIndex, Number(offset & 0xffff_ffffn));
  Atomics.store(words, offsetIndex + 1, Number(offset >> 32n));
  let next = (previous + 1) >>> 0;
  if (next === 0 || next === 0xffff_ffff) next = 1;
  Atomics.store(words, seqIndex, next);
  return next;
}
