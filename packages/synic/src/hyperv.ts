/**
 * The Hyper-V enlightenment surface of a partition, in user space: every synthetic MSR
 * (partition-wide ones here, per-VP SynIC and timers in VpSynic / VpStimers), the reference
 * TSC page and the time-reference counter on an injected Clock, and the SynicPort that vmbus
 * posts through. The accelerator routes MSR exits in [0x40000000, 0x40000200) here; a
 * MsrFault means "inject #GP".
 */
import { HostUsageError, silentLogger, type Clock, type Logger } from '@hvemu/common';
import type { SynicPort } from '@hvemu/hvdef';
import { PAGE_SIZE, type GuestMemory } from '@hvemu/memory';
import { MsrFault, SynicQueueFull } from './errors.js';
import {
  HV_MAXIMUM_PROCESSORS,
  HV_CRASH_CTL_CRASH_NOTIFY,
  HV_CRASH_CTL_CRASH_NOTIFY_MSG,
  HV_PAGE_ENABLE,
  HV_PAGE_GPA_MASK,
  HV_X64_MSR_APIC_FREQUENCY,
  HV_X64_MSR_CRASH_CTL,
  HV_X64_MSR_CRASH_P0,
  HV_X64_MSR_CRASH_P4,
  HV_X64_MSR_EOM,
  HV_X64_MSR_GUEST_IDLE,
  HV_X64_MSR_GUEST_OS_ID,
  HV_X64_MSR_HYPERCALL,
  HV_X64_MSR_HYPERCALL_LOCKED,
  HV_X64_MSR_REFERENCE_TSC,
  HV_X64_MSR_RESET,
  HV_X64_MSR_TIME_REF_COUNT,
  HV_X64_MSR_TSC_FREQUENCY,
  HV_X64_MSR_VP_INDEX,
  HV_X64_MSR_VP_RUNTIME,
  HV_X64_MSR_VP_ASSIST_PAGE,
} from '@hvemu/hvdef';
import { tscPageParameters, writeTscPage, type TscModel } from './reference-tsc.js';
import { VpStimers } from './stimer.js';
import { VpSynic, type SynicInterruptSink, type SynicMessage, type SynicObserver } from './vp-synic.js';

export interface HyperVEvents {
  /**
   * The guest wrote CRASH_CTL with CrashNotify (P0-P4 are its parameters) or CrashNotifyMsg
   * (P3 is the GPA and P4 the length of a message it wrote, e.g. Linux's panic log; `message`
   * is those bytes, at most a page, or undefined when they are not in guest RAM).
   */
  crash?(vp: number, params: readonly bigint[], control: bigint, message?: Uint8Array): void;
  /** The guest wrote 1 to the RESET MSR. */
  reset?(vp: number): void;
  /** The guest read GUEST_IDLE: it wants to halt until an interrupt. */
  guestIdle?(vp: number): void;
}

export interface HyperVOptions {
  memory: GuestMemory;
  vpCount: number;
  sink: SynicInterruptSink;
  clock: Clock;
  /** The guest TSC against reference time; default 1 GHz from 0. */
  tsc?: TscModel;
  apicFrequencyHz?: bigint;
  /**
   * TIME_REF_COUNT as `vp` reads it. Default: the Clock. A backend with a real guest TSC
   * passes the reference TSC page's formula applied to that vCPU's TSC (as KVM does), so the
   * MSR and the page can never disagree.
   */
  referenceCounter?(vp: number): bigint;
  /** Installs the hypercall page contents at `gpa` (the hypercalls layer owns what goes there). */
  installHypercallPage?(gpa: number): void;
  events?: HyperVEvents;
  logger?: Logger;
  queueLimit?: number;
  /** Told of every message delivery, event flag, interrupt and EOM (traces). */
  observer?: SynicObserver;
}

const HYPERCALL_RESERVED = 0xffcn; // bits 2..11
const MSR_RANGE_END = 0x40000200;

export class HyperV implements SynicPort {
  readonly vpCount: number;
  private readonly synics: VpSynic[];
  private readonly timers: VpStimers[];
  private guestOsId = 0n;
  private hypercall = 0n;
  private referenceTsc = 0n;
  private readonly crashParams: bigint[] = [0n, 0n, 0n, 0n, 0n];
  /** The most a crash message can be: the guest's one page (TLFS; Linux's hv_panic_page). */
  static readonly CRASH_MESSAGE_MAX = 4096;
  /** HV_X64_MSR_VP_ASSIST_PAGE per VP. */
  private readonly vpAssist: bigint[];
  private readonly tsc: TscModel;
  private readonly logger: Logger;
  private readonly postReadyListeners = new Set<(vp: number, sint: number) => void>();

  constructor(private readonly options: HyperVOptions) {
    const vpCount = options?.vpCount;
    if (!Number.isInteger(vpCount) || vpCount < 1 || vpCount > HV_MAXIMUM_PROCESSORS) {
      throw new HostUsageError(`HyperV: vpCount ${String(vpCount)} is not an integer in [1, ${HV_MAXIMUM_PROCESSORS}]`);
    }
    this.vpCount = options.vpCount;
    this.vpAssist = new Array<bigint>(options.vpCount).fill(0n);
    this.logger = options.logger ?? silentLogger;
    this.tsc = options.tsc ?? { frequencyHz: 1_000_000_000n, valueAtReferenceZero: 0n };
    this.synics = Array.from(
      { length: options.vpCount },
      (_, vp) =>
        new VpSynic(vp, options.memory, options.sink, {
          logger: this.logger,
          queueLimit: options.queueLimit,
          observer: options.observer,
          onQueueSpace: (sint) => this.postReady(vp, sint),
        }),
    );
    this.timers = this.synics.map((s, vp) => new VpStimers(vp, s, options.sink, options.clock));
  }

  /** True for MSRs in the Hyper-V synthetic range this layer answers. */
  static handles(msr: number): boolean {
    return msr >= 0x40000000 && msr < MSR_RANGE_END;
  }

  synic(vp: number): VpSynic {
    return this.synics[this.checkVp(vp)];
  }

  stimers(vp: number): VpStimers {
    return this.timers[this.checkVp(vp)];
  }

  private checkVp(vp: number): number {
    if (!(vp >= 0 && vp < this.vpCount) || vp % 1 !== 0)
      throw new HostUsageError(`vp ${String(vp)} is not one of this partition's ${this.vpCount} VPs`);
    return vp;
  }

  // ---- SynicPort ----
  postMessage(vp: number, sint: number, message: SynicMessage): 'delivered' | 'queued' | 'busy' {
    try {
      return this.synic(vp).postMessage(sint, message);
    } catch (error) {
      // The guest is not draining that SINT: refuse, and say when to try again (onPostReady).
      if (error instanceof SynicQueueFull) return 'busy';
      throw error;
    }
  }

  onPostReady(listener: (vp: number, sint: number) => void): () => void {
    this.postReadyListeners.add(listener);
    return () => this.postReadyListeners.delete(listener);
  }

  private postReady(vp: number, sint: number): void {
    for (const listener of [...this.postReadyListeners]) listener(vp, sint);
  }
  signalEvent(vp: number, sint: number, flag: number): boolean {
    return this.synic(vp).signalEvent(sint, flag);
  }

  // ---- timers ----
  nextTimerDeadline(): bigint | null {
    let next: bigint | null = null;
    for (const t of this.timers) {
      const d = t.nextDeadline();
      if (d !== null && (next === null || d < next)) next = d;
    }
    return next;
  }
  expireTimers(): void {
    for (const t of this.timers) t.expire();
  }

  /** Time-reference counter (100 ns units), the same time the reference TSC page gives. */
  referenceTime(): bigint {
    return this.options.clock.now();
  }

  readMsr(vp: number, msr: number): bigint {
    this.checkVp(vp);
    if (VpSynic.owns(msr)) return this.synics[vp].readMsr(msr);
    if (VpStimers.owns(msr)) return this.timers[vp].readMsr(msr);
    switch (msr) {
      case HV_X64_MSR_GUEST_OS_ID:
        return this.guestOsId;
      case HV_X64_MSR_HYPERCALL:
        return this.hypercall;
      case HV_X64_MSR_VP_INDEX:
        return BigInt(vp);
      case HV_X64_MSR_RESET:
        return 0n;
      case HV_X64_MSR_VP_RUNTIME:
        return this.options.clock.now();
      case HV_X64_MSR_TIME_REF_COUNT:
        return this.options.referenceCounter?.(vp) ?? this.options.clock.now();
      case HV_X64_MSR_REFERENCE_TSC:
        return this.referenceTsc;
      case HV_X64_MSR_TSC_FREQUENCY:
        return this.tsc.frequencyHz;
      case HV_X64_MSR_APIC_FREQUENCY:
        return this.options.apicFrequencyHz ?? 1_000_000_000n;
      case HV_X64_MSR_GUEST_IDLE:
        this.options.events?.guestIdle?.(vp);
        return 0n;
      case HV_X64_MSR_CRASH_CTL:
        return HV_CRASH_CTL_CRASH_NOTIFY | HV_CRASH_CTL_CRASH_NOTIFY_MSG; // what the host supports
      case HV_X64_MSR_VP_ASSIST_PAGE:
        return this.vpAssist[vp];
      default:
        if (msr >= HV_X64_MSR_CRASH_P0 && msr <= HV_X64_MSR_CRASH_P4) return this.crashParams[msr - HV_X64_MSR_CRASH_P0];
        throw new MsrFault(msr, null, 'not an implemented Hyper-V MSR');
    }
  }

  writeMsr(vp: number, msr: number, value: bigint): void {
    this.checkVp(vp);
    if (typeof value !== 'bigint' || value < 0n || value > 0xffff_ffff_ffff_ffffn) {
      throw new HostUsageError(`writeMsr: value ${String(value)} is not a u64 bigint`);
    }
    // Reported before it takes effect, so a trace has the cause before what it triggers (an EOM's redelivery).
    if (msr !== HV_X64_MSR_EOM) this.options.observer?.msrWritten?.(vp, msr, value);
    if (VpSynic.owns(msr)) return this.synics[vp].writeMsr(msr, value);
    if (VpStimers.owns(msr)) return this.timers[vp].writeMsr(msr, value);
    switch (msr) {
      case HV_X64_MSR_GUEST_OS_ID:
        this.guestOsId = value;
        // Clearing the guest OS id disables the hypercall page (TLFS; KVM does the same).
        if (value === 0n) this.hypercall &= ~HV_PAGE_ENABLE;
        return;
      case HV_X64_MSR_HYPERCALL:
        return this.writeHypercall(msr, value);
      case HV_X64_MSR_RESET:
        if (value & 1n) this.options.events?.reset?.(vp);
        return;
      case HV_X64_MSR_REFERENCE_TSC:
        return this.writeReferenceTsc(msr, value);
      case HV_X64_MSR_VP_ASSIST_PAGE:
        return this.writeVpAssist(vp, msr, value);
      case HV_X64_MSR_CRASH_CTL:
        if (value & ~(HV_CRASH_CTL_CRASH_NOTIFY | HV_CRASH_CTL_CRASH_NOTIFY_MSG)) throw new MsrFault(msr, value, 'reserved bits set');
        if (value !== 0n) this.reportCrash(vp, value);
        return;
      case HV_X64_MSR_VP_INDEX:
      case HV_X64_MSR_VP_RUNTIME:
      case HV_X64_MSR_TIME_REF_COUNT:
      case HV_X64_MSR_TSC_FREQUENCY:
      case HV_X64_MSR_APIC_FREQUENCY:
        throw new MsrFault(msr, value, 'read-only MSR');
      default:
        if (msr >= HV_X64_MSR_CRASH_P0 && msr <= HV_X64_MSR_CRASH_P4) {
          this.crashParams[msr - HV_X64_MSR_CRASH_P0] = value;
          return;
        }
        throw new MsrFault(msr, value, 'not an implemented Hyper-V MSR');
    }
  }

  private writeHypercall(msr: number, value: bigint): void {
    if (this.hypercall & HV_X64_MSR_HYPERCALL_LOCKED) return; // locked until reset: writes are ignored
    if (value & HYPERCALL_RESERVED) throw new MsrFault(msr, value, 'reserved bits set');
    if (value & HV_PAGE_ENABLE) {
      if (this.guestOsId === 0n) throw new MsrFault(msr, value, 'GUEST_OS_ID must be set first');
      const gpa = Number(value & HV_PAGE_GPA_MASK);
      if (!this.options.memory.contains(gpa, PAGE_SIZE)) throw new MsrFault(msr, value, 'hypercall page is not guest RAM');
      this.options.installHypercallPage?.(gpa);
    }
    this.hypercall = value;
  }

  /**
   * The VP assist page. Linux writes it on every CPU, unchecked (hv_cpu_init), so a #GP here
   * is an "unchecked MSR access error" in its log. hvemu advertises none of the features that
   * read the page (APIC-access MSRs, enlightened VMCS, nested), so the MSR only has to hold
   * its value: enable and a page of guest RAM, reserved bits 1-11 clear.
   */
  private reportCrash(vp: number, control: bigint): void {
    const message = control & HV_CRASH_CTL_CRASH_NOTIFY_MSG ? this.crashMessage(this.crashParams[3], this.crashParams[4]) : undefined;
    this.logger.error(`vp ${vp}: guest crash`, {
      params: this.crashParams.map((p) => `0x${p.toString(16)}`),
      ...(message ? { messageBytes: message.length } : {}),
    });
    this.options.events?.crash?.(vp, [...this.crashParams], control, message);
  }

  /** The guest's crash message: `length` bytes (at most a page) at `gpa`, or undefined when they are not all in guest RAM. */
  private crashMessage(gpa: bigint, length: bigint): Uint8Array | undefined {
    const size = Number(length > BigInt(HyperV.CRASH_MESSAGE_MAX) ? HyperV.CRASH_MESSAGE_MAX : length);
    if (gpa > BigInt(Number.MAX_SAFE_INTEGER) || !this.options.memory.contains(Number(gpa), size)) return undefined;
    const bytes = new Uint8Array(size);
    this.options.memory.read(Number(gpa), bytes);
    return bytes;
  }

  private writeVpAssist(vp: number, msr: number, value: bigint): void {
    if (value & 0xffen) throw new MsrFault(msr, value, 'reserved bits set');
    if (value & HV_PAGE_ENABLE) {
      const gpa = Number(value & HV_PAGE_GPA_MASK);
      if (!this.options.memory.contains(gpa, PAGE_SIZE)) throw new MsrFault(msr, value, 'VP assist page is not guest RAM');
    }
    this.vpAssist[vp] = value;
  }

  private writeReferenceTsc(msr: number, value: bigint): void {
    if (value & 0xffen) throw new MsrFault(msr, value, 'reserved bits set');
    if (value & HV_PAGE_ENABLE) {
      const gpa = Number(value & HV_PAGE_GPA_MASK);
      if (!this.options.memory.contains(gpa, PAGE_SIZE)) throw new MsrFault(msr, value, 'reference TSC page is not guest RAM');
      writeTscPage(this.options.memory.u32Array(gpa, PAGE_SIZE / 4), tscPageParameters(this.tsc));
    }
    this.referenceTsc = value;
  }

  /** Resets every VP's SynIC and timers and the partition MSRs (a guest reset). */
  reset(): void {
    for (const s of this.synics) s.reset();
    for (const t of this.timers) t.reset();
    this.guestOsId = this.hypercall = this.referenceTsc = 0n;
    this.crashParams.fill(0n);
  }
}
