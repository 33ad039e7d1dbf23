/**
 * Hyper-V enlightenments on an accelerator without Hyper-V support (KVM here): the user-space
 * SynIC, timers and synthetic MSRs of @hvemu/synic and the hypercall dispatch of
 * @hvemu/hypercalls, attached to any AccelPartition through its public hooks (KVM is the one
 * that needs them: it has no Hyper-V of its own):
 *
 * - CPUID 0x40000000-0x4000000A from `hypervCpuidLeaves` (passed at partition creation);
 * - every MSR in [0x40000000, 0x40000200) to HyperV (a MsrFault becomes #GP);
 * - the hypercall page: enabling HV_X64_MSR_HYPERCALL writes `out imm8,%al; ret` there, and the
 *   partition turns that OUT into a hypercall exit answered by the dispatcher;
 * - a fast HvSignalEvent (flag 0) rings a doorbell instead of exiting where the partition has
 *   `doorbells` (KVM ioeventfd; signal-doorbell.ts), the exit path staying as fallback;
 * - SynIC interrupts as MSIs into the in-kernel LAPIC. AutoEOI SINTs need nothing more on
 *   this KVM: its LAPIC keeps no in-service state (measured; packages/synic/README.md);
 * - reference time: the TSC model is measured from the backend (KVM_GET_TSC_KHZ and the
 *   guest TSC against the Clock) and TIME_REF_COUNT is the TSC page's formula on the reading
 *   vCPU's TSC (reference-time.ts);
 * - synthetic timers driven by a real-time timer on the injected Clock.
 */
import { MonotonicClock, silentLogger, type Clock, type Logger } from '@hvemu/common';
import type { AccelPartition, CpuidEntry } from '@hvemu/accel';
import { HypercallDispatcher, hypercallPage } from '@hvemu/hypercalls';
import { HyperV, hypervCpuidLeaves, MsrFault, type HyperVEvents, type HypervCpuidConfig, type TscModel } from '@hvemu/synic';
import { measureTscModel, tscReferenceCounter } from './reference-time.js';
import { SIGNAL_DOORBELL_PORT, SignalDoorbell, type DoorbellStats } from './signal-doorbell.js';
import type { TraceHooks } from './trace-capture.js';

/** The port the hypercall page's OUT names. */
export const HYPERCALL_PORT = 0x99;
const HV_MSR_FIRST = 0x40000000;
/**
 * Up to HV_X64_MSR_CRASH_CTL: the accelerator traps 0x40000000-0x400000FF as a range and each
 * MSR past it individually (a handful of filter slots), so the span stops at the last one used.
 */
const HV_MSR_COUNT = 0x106;

export interface EnlightenmentConfig {
  cpuid?: HypervCpuidConfig;
  hypercallPort?: number;
}

/** Options to spread into KvmPartition.create so the guest sees Hyper-V. */
export function enlightenedPartitionOptions(config: EnlightenmentConfig = {}): {
  hypervisorLeaves: CpuidEntry[];
  hypercallPort: number;
} {
  const leaves = hypervCpuidLeaves(config.cpuid).map((l) => ({ ...l, flags: 0 }));
  return { hypervisorLeaves: leaves, hypercallPort: config.hypercallPort ?? HYPERCALL_PORT };
}

export interface AttachOptions {
  clock?: Clock;
  /** Default: measured from the partition (vCPU 0 must not have started yet). */
  tsc?: TscModel;
  /** Port of the fast-HvSignalEvent doorbell; null: no doorbell, every hypercall exits. */
  signalDoorbellPort?: number | null;
  events?: HyperVEvents;
  logger?: Logger;
  hypercallPort?: number;
  /** Trace capture (trace-capture.ts): SynIC deliveries, hypercalls and doorbell signals. */
  trace?: Pick<TraceHooks, 'synic' | 'onCall' | 'onResult' | 'onDoorbellSignal'>;
}

export interface Enlightenments {
  readonly hyperv: HyperV;
  readonly hypercalls: HypercallDispatcher;
  /** The TSC model the reference TSC page and TIME_REF_COUNT use. */
  readonly tsc: TscModel;
  /** Doorbell counters, when the doorbell is on. */
  readonly doorbell: DoorbellStats | undefined;
  /** Delivers pending doorbell signals now (otherwise the native eventfd watcher does, as soon as the guest writes). */
  drainDoorbells(): void;
  /** Stops the timer driver and the doorbell watchers. */
  dispose(): void;
}

export function attachHyperV(partition: AccelPartition, options: AttachOptions = {}): Enlightenments {
  const logger = options.logger ?? silentLogger;
  const clock = options.clock ?? new MonotonicClock();
  const port = options.hypercallPort ?? HYPERCALL_PORT;
  // Without the doorbell capability the page's fast HvSignalEvent takes the exit path.
  const doorbellPort = !partition.doorbells
    ? null
    : options.signalDoorbellPort === undefined
      ? SIGNAL_DOORBELL_PORT
      : options.signalDoorbellPort;
  const memory = partition.memory;
  const tsc = options.tsc ?? measureTscModel(partition, clock);
  const driver = new TimerDriver(clock, () => hyperv);
  const hyperv: HyperV = new HyperV({
    memory,
    vpCount: partition.vcpus.length,
    clock,
    tsc,
    referenceCounter: tscReferenceCounter(partition, tsc),
    logger,
    events: options.events,
    observer: options.trace?.synic,
    sink: { raise: (vp, vector) => void partition.interrupt(vp, vector) },
    installHypercallPage: (gpa) => memory.write(gpa, hypercallPage({ port, doorbellPort: doorbellPort ?? undefined })),
  });
  const hypercalls = new HypercallDispatcher({ memory, logger, onCall: options.trace?.onCall, onResult: options.trace?.onResult });
  const doorbell =
    doorbellPort === null ? undefined : new SignalDoorbell(partition, hypercalls, doorbellPort, logger, options.trace?.onDoorbellSignal);
  partition.addMsrDevice({
    msr: HV_MSR_FIRST,
    count: HV_MSR_COUNT,
    read: (msr, vp) => faultAsUndefined(() => hyperv.readMsr(vp, msr)),
    write: (msr, value, vp) => {
      const ok = faultAsUndefined(() => (hyperv.writeMsr(vp, msr, value), true)) === true;
      driver.reschedule();
      return ok;
    },
  });
  partition.onHypercall((exit) => ({ value: hypercalls.dispatch(exit.vp, { rcx: exit.control, rdx: exit.input, r8: exit.output }) }));
  return {
    hyperv,
    hypercalls,
    tsc,
    doorbell: doorbell?.stats,
    drainDoorbells: () => doorbell?.drain(),
    dispose: () => {
      driver.dispose();
      doorbell?.dispose();
    },
  };
}

/** Runs an MSR access; a MsrFault (#GP) becomes undefined, which the partition injects as #GP. */
function faultAsUndefined<T>(access: () => T): T | undefined {
  try {
    return access();
  } catch (error) {
    if (error instanceof MsrFault) return undefined;
    throw error;
  }
}

/**
 * Fires synthetic timers on time: after any MSR write (a timer may have been armed) and after
 * each expiry, a host timer is set for the earliest deadline.
 */
class TimerDriver {
  private handle: NodeJS.Timeout | undefined;
  private armedFor: bigint | null = null;

  constructor(
    private readonly clock: Clock,
    private readonly hyperv: () => HyperV,
  ) {}

  reschedule(): void {
    const next = this.hyperv().nextTimerDeadline();
    if (next === this.armedFor) return;
    if (this.handle) clearTimeout(this.handle);
    this.handle = undefined;
    this.armedFor = next;
    if (next === null) return;
    // Reference time is in 100 ns units.
    const delayMs = Math.max(0, Number(next - this.clock.now()) / 10_000);
    this.handle = setTimeout(
      () => {
        this.handle = undefined;
        this.armedFor = null;
        this.hyperv().expireTimers();
        this.reschedule();
      },
      Math.min(delayMs, 2 ** 31 - 1),
    );
  }

  dispose(): void {
    if (this.handle) clearTimeout(this.handle);
    this.handle = undefined;
  }
}
