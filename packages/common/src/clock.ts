/**
 * Time is injected. Timers, the reference TSC page and the time-reference counter read a
 * Clock, so tests and trace replay are deterministic. Units: Hyper-V reference time,
 * 100-nanosecond ticks since partition start (HV_CLOCK_HZ = 10^7), as a bigint.
 */
import { HostUsageError } from './errors.js';
export const HV_CLOCK_HZ = 10_000_000n;

export interface Clock {
  /** Reference time now, in 100 ns units. Never decreases. */
  now(): bigint;
}

/** Wall-clock reference time from process.hrtime, starting at 0 when created. */
export class MonotonicClock implements Clock {
  private readonly origin = process.hrtime.bigint();
  now(): bigint {
    return (process.hrtime.bigint() - this.origin) / 100n;
  }
}

/** A clock that moves only when told to: tests and replay. */
export class ManualClock implements Clock {
  private time: bigint;
  constructor(start: bigint = 0n) {
    this.time = start;
  }
  now(): bigint {
    return this.time;
  }
  /** Moves time forward by `ticks` (100 ns units). */
  advance(ticks: bigint): void {
    if (typeof ticks !== 'bigint' || ticks < 0n)
      throw new HostUsageError(`ManualClock.advance(${String(ticks)}): ticks must be a non-negative bigint (a clock cannot go backwards)`);
    this.time += ticks;
  }
  /** Sets the time; it may not go backwards. */
  set(time: bigint): void {
    if (typeof time !== 'bigint' || time < this.time)
      throw new HostUsageError(
        `ManualClock.set(${String(time)}): time must be a bigint no earlier than ${this.time} (a clock cannot go backwards)`,
      );
    this.time = time;
  }
}
