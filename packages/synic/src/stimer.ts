/**
 * The four synthetic timers of one VP (STIMERx_CONFIG / STIMERx_COUNT), on an injected Clock.
 *
 * TLFS rules, as KVM implements them and the issue asks:
 * - a one-shot timer's count is an absolute deadline; one whose deadline has passed fires at
 *   once; it disables itself when it fires;
 * - a periodic timer's count is the period; missed periods are dropped, keeping the phase
 *   (lazy), never delivered as a burst;
 * - AutoEnable: writing a non-zero count sets Enable; writing 0 clears it;
 * - a message-mode timer with SINTx = 0 is disabled; direct mode raises its own vector with
 *   no message;
 * - message-mode expiries go through the SINT's message queue, so a busy slot or a
 *   not-yet-enabled SIMP delays them (retried on EOM / SIMP enable) instead of losing them;
 *   while one is undelivered, a periodic timer queues no more.
 * Time never passes inside this class: the owner calls `expire()` at or after
 * `nextDeadline()` (a real-time driver, or a test advancing a ManualClock).
 */
import type { Clock } from '@hvemu/common';
import { MsrFault, SynicQueueFull } from './errors.js';
import {
  HV_STIMER_APIC_VECTOR_SHIFT,
  HV_STIMER_AUTO_ENABLE,
  HV_STIMER_CONFIG_VALID,
  HV_STIMER_DIRECT_MODE,
  HV_STIMER_ENABLE,
  HV_STIMER_PERIODIC,
  HV_STIMER_SINT_SHIFT,
  HV_SYNIC_STIMER_COUNT,
  HV_X64_MSR_STIMER0_CONFIG,
  HV_X64_MSR_STIMER3_COUNT,
  HVMSG_TIMER_EXPIRED,
  hv_timer_message_payload,
} from '@hvemu/hvdef';
import type { SynicInterruptSink, VpSynic } from './vp-synic.js';

interface TimerState {
  config: bigint;
  count: bigint;
  /** Reference time of the next expiry, or null when not armed. */
  deadline: bigint | null;
  /** A TIMER_EXPIRED message is queued and not yet in the slot. */
  messageInFlight: boolean;
}

export interface StimerEvent {
  timer: number;
  expiration: bigint;
  delivery: bigint;
  mode: 'message' | 'direct';
}

export class VpStimers {
  private readonly timers: TimerState[] = Array.from({ length: HV_SYNIC_STIMER_COUNT }, () => ({
    config: 0n,
    count: 0n,
    deadline: null,
    messageInFlight: false,
  }));
  /** Expiries so far (diagnostics, tests). */
  readonly fired: StimerEvent[] = [];
  private readonly keepHistory: number;

  constructor(
    readonly vp: number,
    private readonly synic: VpSynic,
    private readonly sink: SynicInterruptSink,
    private readonly clock: Clock,
    options: { history?: number } = {},
  ) {
    this.keepHistory = options.history ?? 64;
  }

  static owns(msr: number): boolean {
    return msr >= HV_X64_MSR_STIMER0_CONFIG && msr <= HV_X64_MSR_STIMER3_COUNT;
  }

  readMsr(msr: number): bigint {
    const { timer, isCount } = decode(msr);
    return isCount ? this.timers[timer].count : this.timers[timer].config;
  }

  writeMsr(msr: number, value: bigint): void {
    const { timer, isCount } = decode(msr);
    const t = this.timers[timer];
    if (isCount) {
      t.count = value;
      if (value === 0n) t.config &= ~HV_STIMER_ENABLE;
      else if (t.config & HV_STIMER_AUTO_ENABLE) t.config |= HV_STIMER_ENABLE;
    } else {
      if (value & ~HV_STIMER_CONFIG_VALID) throw new MsrFault(msr, value, 'reserved bits set');
      let config = value;
      // A message-mode timer on SINT 0 is disabled at once (TLFS).
      if (config & HV_STIMER_ENABLE && !(config & HV_STIMER_DIRECT_MODE) && sintOf(config) === 0) config &= ~HV_STIMER_ENABLE;
      t.config = config;
    }
    this.arm(t);
  }

  private arm(t: TimerState): void {
    t.deadline = null;
    if (!(t.config & HV_STIMER_ENABLE) || t.count === 0n) return;
    const now = this.clock.now();
    t.deadline = t.config & HV_STIMER_PERIODIC ? now + t.count : t.count;
  }

  /** Earliest armed deadline, or null. */
  nextDeadline(): bigint | null {
    let next: bigint | null = null;
    for (const t of this.timers) if (t.deadline !== null && (next === null || t.deadline < next)) next = t.deadline;
    return next;
  }

  /** Fires every timer whose deadline is at or before now. */
  expire(): void {
    const now = this.clock.now();
    this.timers.forEach((t, index) => {
      if (t.deadline === null || t.deadline > now) return;
      const expiration = t.deadline;
      this.fire(index, t, expiration, now);
      if (t.config & HV_STIMER_PERIODIC) {
        const period = t.count;
        // Lazy: the next tick after now, on the original phase; missed ticks are dropped.
        const late = now - expiration;
        t.deadline = now + (period - (late % period));
      } else {
        t.deadline = null;
        t.config &= ~HV_STIMER_ENABLE;
      }
    });
  }

  private fire(index: number, t: TimerState, expiration: bigint, now: bigint): void {
    const direct = (t.config & HV_STIMER_DIRECT_MODE) !== 0n;
    this.record({ timer: index, expiration, delivery: now, mode: direct ? 'direct' : 'message' });
    if (direct) {
      const vector = Number((t.config >> HV_STIMER_APIC_VECTOR_SHIFT) & 0xffn);
      if (vector >= 16) this.sink.raise(this.vp, vector, false);
      return;
    }
    if (t.messageInFlight) return; // one undelivered expiry is enough: drop, don't burst
    const payload = hv_timer_message_payload.encodeNew({ timer_index: index, expiration_time: expiration, delivery_time: now });
    t.messageInFlight = true;
    try {
      this.synic.postMessage(sintOf(t.config), {
        type: HVMSG_TIMER_EXPIRED,
        payload,
        beforeWrite: (p) =>
          hv_timer_message_payload.encode({ timer_index: index, expiration_time: expiration, delivery_time: this.clock.now() }, p),
        onDelivered: () => {
          t.messageInFlight = false;
        },
      });
    } catch (error) {
      // A full SINT queue: this expiry is dropped like a missed lazy tick; the next one retries.
      t.messageInFlight = false;
      if (!(error instanceof SynicQueueFull)) throw error;
    }
  }

  private record(e: StimerEvent): void {
    this.fired.push(e);
    if (this.fired.length > this.keepHistory) this.fired.shift();
  }

  reset(): void {
    for (const t of this.timers) {
      t.config = t.count = 0n;
      t.deadline = null;
      t.messageInFlight = false;
    }
  }
}

function decode(msr: number): { timer: number; isCount: boolean } {
  const off = msr - HV_X64_MSR_STIMER0_CONFIG;
  return { timer: off >> 1, isCount: (off & 1) === 1 };
}

function sintOf(config: bigint): number {
  return Number((config >> HV_STIMER_SINT_SHIFT) & 0xfn);
}
