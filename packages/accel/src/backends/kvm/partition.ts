/**
 * KvmPartition and KvmVcpu: the AccelPartition over Linux KVM, through the native addon
 * (native/). The exit model, device maps and register shapes it uses are shared with the
 * MSHV and WHPX backends.
 *
 * How exits reach TypeScript (README.md has the measured cost):
 *   vCPU thread: fills its exit slot, publishes POSTED, spins briefly, then sleeps on a futex.
 *   JS thread:   woken by a napi threadsafe function (or already polling after a previous
 *                exit), decodes the slot into an Exit, runs the handler, writes the answer,
 *                publishes ANSWERED and wakes the vCPU thread only if it went to sleep.
 * A handler that returns a Promise keeps only its own vCPU waiting.
 */
import { performance } from 'node:perf_hooks';
import { silentLogger, type Logger } from '@hvemu/common';
import { GuestMemory, type RamRegionSpec } from '@hvemu/memory';
import { buildCpuidModel, decodeCpuid, encodeCpuid, type CpuidEntry } from '../../cpuid.js';
import type { MsrDevice } from '../../devices.js';
import { ExitRouter, fatalError, isPromise } from '../../exit-router.js';
import type {
  AccelPartition,
  AccelVcpu,
  Doorbells,
  GuestTsc,
  InterruptTriggers,
  PageLists,
  RamUsage,
  VcpuOutcome,
  VcpuStatus,
} from '../types.js';
import { AccelUsageError, ExitHandlerError, HostSystemError, HypervisorUnavailableError, native } from '../../errors.js';
import { decodeExit, encodeResponse } from '../../exit-decode.js';
import { RoutedPartition } from '../routed-partition.js';
import {
  checkCommonOptions,
  checkCpuidEntries,
  checkFinite,
  checkFunction,
  checkInt,
  checkObject,
  checkRegisters,
  checkSpecialRegisters,
  describeValue,
  MAX_GPA,
  optBool,
  optFunction,
  optInt,
  U32_MAX,
} from '../../validate.js';
import type { Exit, ExitResponse } from '../../exits.js';
import { loadAddon, type NativeEventfdWatcher, type NativePartition } from '../../native/addon.js';
import { ExitCause, HDR_JS_POLLING, Off, SlotState, SlotView } from '../../native/exit-slot.js';
import {
  packRegisters,
  packSpecialRegisters,
  unpackRegisters,
  unpackSpecialRegisters,
  type Registers,
  type SpecialRegisters,
} from '../../registers.js';

export interface MemoryRegion {
  readonly gpa: number;
  readonly size: number;
}

export interface KvmPartitionOptions {
  /** Number of vCPUs (APIC ids 0..n-1). Default 1. */
  readonly vcpuCount?: number;
  /** Guest RAM regions; the gaps are MMIO space. */
  readonly memory: readonly MemoryRegion[];
  /** CPUID leaves 0x40000000-0x400000FF shown to the guest (replacing the hypervisor's). */
  readonly hypervisorLeaves?: readonly CpuidEntry[];
  /** Last say over each vCPU's CPUID list (see cpuid.ts). */
  readonly customizeCpuid?: (entries: CpuidEntry[], vp: number) => CpuidEntry[];
  /** MSRs outside 0x40000000-0x400000FF that must exit to TypeScript. */
  readonly userMsrs?: readonly number[];
  /** A byte OUT to this port is a hypercall exit (the hypercall page's exit sequence). */
  readonly hypercallPort?: number;
  /** Finish int3 emulation failures by injecting #BP (default true). */
  readonly int3Fixup?: boolean;
  /**
   * Finish the emulation failures of fwait, fnclex, emms, fild, clac, stac and popcnt the way the CPU would
   * (default true): instructions a kernel executes that this kind of KVM's emulator stops on.
   */
  readonly instructionFixups?: boolean;
  /**
   * Complete 64-bit SYSCALLs that this kind of KVM leaves at CPL 3 (default true): the guest's
   * IA32_LSTAR write is trapped and two hardware breakpoints (its #PF handler, the entry) watch
   * for the fault; the first SYSCALL that arrives at CPL 0 without help switches the watch off.
   * See native/src/syscall_entry.cc.
   */
  readonly syscallFixup?: boolean;
  /** How long the vCPU thread spins (pause iterations) before sleeping on an exit. */
  readonly spinIterations?: number;
  /**
   * Exchange general registers through the run page (KVM_CAP_SYNC_REGS) where KVM offers it
   * (default true): a hypercall exit then needs no register ioctl. False is for comparison.
   */
  readonly syncRegs?: boolean;
  /** How long the JS thread keeps polling for the next exit after answering one (µs, default 50; 0 = never poll). */
  readonly pollMicros?: number;
  readonly logger?: Logger;
}

export type { VcpuStatus, VcpuOutcome };

/** How a vCPU ended. `error` is set when the guest or a handler failed. */

/** KVM_MP_STATE_RUNNABLE: an application processor that runs without INIT/SIPI. */
const MP_STATE_RUNNABLE = 0;
const MSI_ADDRESS_BASE = 0xfee00000;
/** KVM_MSR_FILTER_MAX_RANGES - 1: the MSRs outside the Hyper-V range the filter can trap (native/src/kvm_partition.cc). */
const KVM_EXTRA_MSRS = 15;
/** PageMap::kMaxPages (native/src/page_map.h): 1 GiB per page-list view. */
const MAX_PAGE_LIST = 1 << 18;
const HYPERV_MSR_FIRST = 0x40000000;
const HYPERV_MSR_LAST = 0x400000ff;
/**
 * After answering, the JS thread polls this long for the next exit before going back to the
 * event loop. Back-to-back exits on this KVM are >= ~12 us apart, so 50 us keeps a burst of
 * exits on the fast path; an idle guest costs at most 50 us of JS-thread spinning.
 */
const DEFAULT_POLL_MICROS = 50;
/** Longest the JS thread stays in one exit-polling burst before it lets the event loop run (ms). */
const DRAIN_BUDGET_MS = 2;

/** Where a vCPU's time went since it was started (nanoseconds, from the vCPU thread). */
export interface VcpuTimes {
  /** Inside KVM_RUN: guest execution plus the kernel's own exit handling. */
  readonly runNs: bigint;
  /** Blocked on exits, from posting to seeing the answer (the user-space handling cost). */
  readonly waitNs: bigint;
}

export class KvmVcpu implements AccelVcpu {
  /** Exits this vCPU has posted (including ones still being answered). */
  exits = 0;
  status: VcpuStatus = 'created';
  /** Set when the vCPU stopped for a reason run() reports as failure. */
  error: Error | undefined;

  constructor(
    private readonly nativePartition: NativePartition,
    readonly index: number,
    private readonly slot: SlotView,
    private readonly isClosed: () => boolean = () => false,
  ) {}

  /** Runs a native vCPU call; a closed partition's vCPU refuses every call with AccelUsageError. */
  private call<T>(what: string, fn: () => T): T {
    if (this.isClosed()) throw new AccelUsageError(`vCPU ${this.index}: ${what}: the partition is closed`);
    return native(fn);
  }

  /** Time accounting; exact once the vCPU has stopped, approximate while it runs. */
  times(): VcpuTimes {
    return { runNs: this.slot.big(Off.statRunNs), waitNs: this.slot.big(Off.statWaitNs) };
  }

  /** General registers. Only while the vCPU is not running or is stopped at an exit (inside a handler). */
  getRegisters(): Registers {
    return unpackRegisters(this.call('getRegisters', () => this.nativePartition.getRegs(this.index)));
  }
  setRegisters(regs: Registers): void {
    checkRegisters(regs, `vCPU ${this.index}: setRegisters: registers`);
    this.call('setRegisters', () => this.nativePartition.setRegs(this.index, packRegisters(regs)));
  }
  getSpecialRegisters(): SpecialRegisters {
    return unpackSpecialRegisters(this.call('getSpecialRegisters', () => this.nativePartition.getSregs(this.index)));
  }
  setSpecialRegisters(sregs: SpecialRegisters): void {
    checkSpecialRegisters(sregs, `vCPU ${this.index}: setSpecialRegisters: registers`);
    this.call('setSpecialRegisters', () => this.nativePartition.setSregs(this.index, packSpecialRegisters(sregs)));
  }
  /** XMM0-15, 16 bytes each (little-endian), e.g. for XMM fast hypercall output. Parked only. */
  getXmm(): Uint8Array {
    return this.call('getXmm', () => this.nativePartition.getXmm(this.index));
  }
  setXmm(xmm: Uint8Array): void {
    if (!(xmm instanceof Uint8Array) || xmm.length !== 256) {
      throw new AccelUsageError(`vCPU ${this.index}: setXmm: xmm must be a Uint8Array of 256 bytes, not ${describeValue(xmm)}`);
    }
    this.call('setXmm', () => this.nativePartition.setXmm(this.index, xmm));
  }
  /** The AccelVcpu face of tscKhz()/guestTsc(). */
  readonly tsc: GuestTsc = { khz: () => this.tscKhz(), read: () => this.guestTsc() };
  /** The guest TSC frequency in kHz as the backend runs this vCPU (KVM_GET_TSC_KHZ). */
  tscKhz(): number {
    return this.call('tscKhz', () => this.nativePartition.getTscKhz(this.index));
  }
  /** The guest's TSC (IA32_TSC) now. Parked only (not started, stopped, or inside an exit handler). */
  guestTsc(): bigint {
    return this.call('guestTsc', () => this.nativePartition.getGuestTsc(this.index));
  }
  /**
   * The in-kernel LAPIC's 1 KiB register page (KVM_GET_LAPIC): register r at offset r*16 as
   * in the xAPIC MMIO layout (ISR words at 0x100 + 16*i, IRR at 0x200 + 16*i). Parked only.
   */
  lapicRegisters(): Uint8Array {
    return this.call('lapicRegisters', () => this.nativePartition.getLapic(this.index));
  }
  /** Lets an application processor run without waiting for INIT/SIPI. */
  makeRunnable(): void {
    this.call('makeRunnable', () => this.nativePartition.setMpState(this.index, MP_STATE_RUNNABLE));
  }
  setCpuid(entries: readonly CpuidEntry[]): void {
    checkCpuidEntries(entries, `vCPU ${this.index}: setCpuid: entries`);
    this.call('setCpuid', () => this.nativePartition.setCpuid(this.index, encodeCpuid(entries)));
  }
}

/** An eventfd that injects an MSI when written (KVM irqfd): no ioctl per interrupt. */
export interface Irqfd {
  readonly fd: number;
  trigger(): void;
}

/**
 * Guest pages listed by PFN, seen as one flat host buffer (a second mapping of the same
 * memfd pages): GPADL rings and buffers without a copy or a paged accessor.
 */
export interface PageListView {
  readonly bytes: Uint8Array;
  /** Unmaps now; `bytes` becomes empty. Without it the mapping goes when `bytes` is collected. */
  unmap(): void;
}

/** An eventfd that counts guest writes to a doorbell address without a user-space exit. */
export interface Ioeventfd {
  readonly fd: number;
  /** Reads and resets the count of guest writes since the last call. */
  take(): bigint;
  /** Deassigns it: later guest writes exit to user space again. */
  remove(): void;
  /**
   * Calls `onWrites(count)` on the JS thread soon after the guest writes (a native epoll
   * thread wakes the event loop; no timer, no exit). Counts coalesce; `take()` still works.
   */
  watch(onWrites: (count: bigint) => void): void;
}

/**
 * GuestMemory regions for the RAM map. A region larger than 4 GiB comes from the addon as
 * several buffers (Node 20 makes no external ArrayBuffer, and no Uint8Array, beyond 2^32
 * bytes), which become adjacent GuestMemory regions: reads and writes cross them, but one
 * zero-copy view (GuestMemory.bytes) cannot.
 */
function ramSpecs(ram: readonly MemoryRegion[], buffers: ArrayBuffer[][]): { gpa: number; size: number; buffer: ArrayBuffer }[] {
  const specs: { gpa: number; size: number; buffer: ArrayBuffer }[] = [];
  ram.forEach((r, i) => {
    let gpa = r.gpa;
    for (const buffer of buffers[i]) {
      specs.push({ gpa, size: buffer.byteLength, buffer });
      gpa += buffer.byteLength;
    }
  });
  return specs;
}

/**
 * Partitions with vCPUs running, held strongly: the native callbacks hold a partition only
 * weakly (an unclosed, unreachable partition is collected and its VM released by the addon's
 * finalizer), but one whose vCPUs run must stay alive until run() settles, reachable or not.
 */
const running = new Set<KvmPartition>();

export class KvmPartition extends RoutedPartition implements AccelPartition {
  readonly backend = 'kvm' as const;
  readonly memory: GuestMemory;
  /** AccelPartition's optional capabilities, all served on KVM. */
  readonly doorbells: Doorbells = { create: (spec) => this.createIoeventfd(spec) };
  readonly interruptTriggers: InterruptTriggers = { create: (vp, vector) => this.createIrqfd(vp, vector) };
  readonly pageLists: PageLists = { map: (pfns) => this.mapPageList(pfns) };

  readonly vcpus: readonly KvmVcpu[];
  private readonly nativePartition: NativePartition;
  private readonly slots: readonly SlotView[];
  private readonly header: Int32Array;
  private readonly inFlight: boolean[];
  private readonly ended: boolean[];
  protected readonly router: ExitRouter;
  private readonly userMsrs: number[];
  /** Single MSRs outside the Hyper-V range the filter still has room for. */
  private readonly extraMsrCapacity: number;
  private readonly pollMs: number;
  private readonly logger: Logger;
  private runWaiters: { resolve: (o: VcpuOutcome[]) => void; reject: (e: unknown) => void }[] = [];
  private outcomes: (VcpuOutcome | undefined)[];
  private watcher: NativeEventfdWatcher | undefined;
  private readonly watched = new Map<number, () => void>();

  private constructor(opts: KvmPartitionOptions) {
    super();
    checkOptions(opts);
    const addon = loadAddon();
    const NativeKvmPartition = addon.KvmPartition;
    if (!NativeKvmPartition) throw new HypervisorUnavailableError(addon.probeKvm().message);
    const vcpuCount = opts.vcpuCount ?? 1;
    this.logger = opts.logger ?? silentLogger;
    this.pollMs = (opts.pollMicros ?? DEFAULT_POLL_MICROS) / 1000;
    this.userMsrs = [...(opts.userMsrs ?? [])];
    // The SYSCALL fixup takes one filter range for IA32_LSTAR (native/src/syscall_entry.cc).
    this.extraMsrCapacity = KVM_EXTRA_MSRS - ((opts.syscallFixup ?? true) ? 1 : 0);
    const ram = opts.memory.map(({ gpa, size }) => ({ gpa, size }));
    this.nativePartition = native(
      () =>
        new NativeKvmPartition(
          {
            vcpuCount,
            ram,
            userMsrs: this.userMsrs,
            hypercallPort: opts.hypercallPort,
            int3Fixup: opts.int3Fixup ?? true,
            instructionFixups: opts.instructionFixups ?? true,
            syscallFixup: opts.syscallFixup ?? true,
            spinIterations: opts.spinIterations,
            syncRegs: opts.syncRegs,
          },
          // Weakly: the addon's threadsafe function holds this callback for the partition's
          // life, so a strong `this` here would keep every unclosed partition (its VM fds and
          // RAM) alive for ever. While vCPUs run, `running` holds the partition instead.
          KvmPartition.weakly(this, KvmPartition.drainOf),
        ),
    );
    try {
      this.memory = new GuestMemory(ramSpecs(ram, this.nativePartition.ramBuffers()));
      for (const r of ram) this.noteRam(r.gpa, r.size);
      this.router = new ExitRouter(this.memory, this.logger);
      const exitBuffer = this.nativePartition.exitBuffer();
      this.header = new Int32Array(exitBuffer, 0, 16);
      this.slots = Array.from({ length: vcpuCount }, (_, vp) => new SlotView(exitBuffer, vp));
      this.vcpus = this.slots.map((slot, vp) => new KvmVcpu(this.nativePartition, vp, slot, () => this.closed));
      this.inFlight = new Array<boolean>(vcpuCount).fill(false);
      this.ended = new Array<boolean>(vcpuCount).fill(false);
      this.outcomes = new Array<VcpuOutcome | undefined>(vcpuCount).fill(undefined);
      this.programCpuid(opts);
    } catch (e) {
      this.nativePartition.close();
      throw e;
    }
  }

  /**
   * A callback for the addon that reaches `partition` through a WeakRef only. Made here, and
   * `fn` a static function, not in the constructor: V8 keeps a closure's whole enclosing
   * context, and the constructor's (and a method's) holds `this`.
   */
  private static weakly<A extends unknown[]>(partition: KvmPartition, fn: (p: KvmPartition, ...args: A) => void): (...args: A) => void {
    const ref = new WeakRef(partition);
    return (...args: A) => {
      const p = ref.deref();
      if (p) fn(p, ...args);
    };
  }

  private static drainOf(p: KvmPartition): void {
    p.drain();
  }

  private static fdsReadyOf(p: KvmPartition, fds: number[]): void {
    p.onFdsReady(fds);
  }

  /**
   * Creates a KVM partition: VM, in-kernel irqchip, RAM, vCPUs with the conservative CPUID
   * model. Options of the wrong type or out of range are an AccelUsageError naming the option;
   * a RAM map KVM cannot take is a MemoryMapError.
   */
  static create(opts: KvmPartitionOptions): KvmPartition {
    return new KvmPartition(opts);
  }

  /** Whether KVM is usable here (open + API 12 + a VM can be created), with the reason if not. */
  static probe(): { ok: boolean; reason: string } {
    try {
      const p = loadAddon().probeKvm();
      return { ok: p.ok, reason: p.message };
    } catch (e) {
      return { ok: false, reason: (e as Error).message };
    }
  }

  private programCpuid(opts: KvmPartitionOptions): void {
    const supported = decodeCpuid(native(() => this.nativePartition.supportedCpuid()));
    for (const v of this.vcpus) {
      const entries = buildCpuidModel(supported, {
        apicId: v.index,
        hypervisorLeaves: opts.hypervisorLeaves,
        customize: opts.customizeCpuid ? (e) => opts.customizeCpuid!(e, v.index) : undefined,
      });
      v.setCpuid(entries);
    }
  }

  // ---- devices and handlers -------------------------------------------------------------

  /** Handles MSR exits for [msr, msr+count). MSRs outside the Hyper-V range are added to the filter. */
  override addMsrDevice(device: MsrDevice): void {
    this.checkOpen('addMsrDevice');
    // KVM's MSR filter holds the Hyper-V range plus KVM_EXTRA_MSRS single MSRs: a device that
    // needs more is refused before any list is built, and a native refusal adds nothing.
    const filtered = new Set(this.userMsrs.filter((m) => m < HYPERV_MSR_FIRST || m > HYPERV_MSR_LAST));
    const capacity = this.extraMsrCapacity;
    this.router.addMsrDevice(device, {
      maxExtra: capacity - filtered.size,
      add: (extra) => {
        const next = [...this.userMsrs, ...extra.filter((m) => !filtered.has(m))];
        if (new Set(next.filter((m) => m < HYPERV_MSR_FIRST || m > HYPERV_MSR_LAST)).size > capacity) {
          throw new AccelUsageError(`addMsrDevice: KVM can trap at most ${capacity} MSRs outside 0x40000000-0x400000ff`);
        }
        native(() => this.nativePartition.setUserMsrs(next));
        this.userMsrs.splice(0, this.userMsrs.length, ...next);
      },
    });
  }

  // ---- interrupts and doorbells --------------------------------------------------------

  /** Fixed, edge-triggered interrupt `vector` to the vCPU with APIC id `vp`. True when delivered. */
  interrupt(vp: number, vector: number): boolean {
    this.checkOpen('interrupt');
    const { address, data } = this.msiFor(vp, vector);
    return native(() => this.nativePartition.signalMsi(address, data)) > 0;
  }

  /** Raw MSI (address/data as a device would write them). Returns KVM's answer (>0 delivered). */
  signalMsi(address: number, data: number): number {
    this.checkOpen('signalMsi');
    checkInt(address, 'signalMsi: address', 0, MAX_GPA - 1);
    checkInt(data, 'signalMsi: data', 0, U32_MAX);
    return native(() => this.nativePartition.signalMsi(address, data));
  }

  /**
   * Drives input `gsi` (0-23) of the in-kernel IOAPIC: a legacy device's interrupt line. An
   * edge-triggered pin (ISA devices: the UART) takes `true` then `false` as one interrupt.
   */
  setIrqLine(gsi: number, level: boolean): void {
    this.checkOpen('setIrqLine');
    checkInt(gsi, 'setIrqLine: gsi', 0, 23);
    if (typeof level !== 'boolean') throw new AccelUsageError('setIrqLine: level must be a boolean');
    native(() => this.nativePartition.setIrqLine(gsi, level));
  }

  /**
   * An eventfd that raises `vector` on vCPU `vp` when written. `trigger()` after close() is
   * an AccelUsageError: the eventfd is closed with the partition and its number may belong to
   * another file by then, so the write goes through the addon, which knows the partition's fds.
   */
  createIrqfd(vp: number, vector: number): Irqfd {
    this.checkOpen('createIrqfd');
    const { address, data } = this.msiFor(vp, vector);
    const fd = native(() => this.nativePartition.addIrqfdMsi(address, data));
    return {
      fd,
      trigger: () => {
        this.checkOpen(`irqfd ${fd}: trigger`);
        native(() => this.nativePartition.triggerIrqfd(fd));
      },
    };
  }

  /**
   * An eventfd counting guest writes of `length` bytes (0: any) to an MMIO address or port.
   * After remove() or close(), take() and watch() are AccelUsageErrors (the eventfd is closed
   * and its number may be another file's); remove() again is a no-op.
   */
  createIoeventfd(spec: { space: 'mmio' | 'pio'; address: number; length: number; datamatch?: bigint }): Ioeventfd {
    this.checkOpen('createIoeventfd');
    checkIoeventfdSpec(spec);
    const fd = native(() => this.nativePartition.addIoeventfd(spec.address, spec.length, spec.space === 'pio', spec.datamatch));
    let removed = false;
    const usable = (what: string): void => {
      this.checkOpen(`ioeventfd ${fd}: ${what}`);
      if (removed) throw new AccelUsageError(`ioeventfd ${fd}: ${what}: the ioeventfd was removed`);
    };
    const take = (): bigint => {
      usable('take');
      return native(() => this.nativePartition.takeIoeventfd(fd));
    };
    return {
      fd,
      take,
      remove: () => {
        if (removed || this.closed) return;
        removed = true;
        this.unwatch(fd);
        native(() => this.nativePartition.removeIoeventfd(fd));
      },
      watch: (onWrites) => {
        usable('watch');
        checkFunction(onWrites, `ioeventfd ${fd}: watch(onWrites): onWrites`);
        this.watchFd(fd, () => {
          if (removed || this.closed) return;
          const n = take();
          if (n > 0n) onWrites(n);
        });
      },
    };
  }

  private watchFd(fd: number, onReady: () => void): void {
    if (!this.watcher) {
      const Watcher = loadAddon().EventfdWatcher;
      if (!Watcher) throw new HypervisorUnavailableError('this build of the native addon has no eventfd watcher');
      // As the exit callback: the watcher must not keep the partition alive.
      const onReady = KvmPartition.weakly(this, KvmPartition.fdsReadyOf);
      this.watcher = native(() => new Watcher(onReady));
    }
    if (this.watched.has(fd)) throw new AccelUsageError(`eventfd ${fd} is already watched`);
    this.watched.set(fd, onReady);
    native(() => this.watcher!.add(fd));
  }

  private unwatch(fd: number): void {
    if (this.watched.delete(fd)) this.watcher?.remove(fd);
  }

  private onFdsReady(fds: number[]): void {
    for (const fd of fds) {
      const onReady = this.watched.get(fd);
      if (!onReady) continue;
      try {
        onReady();
      } catch (e) {
        this.logger.error('ioeventfd watcher callback threw', { fd, error: String(e) });
      }
    }
  }

  /** Maps guest pages `pfns` (each must be RAM) side by side into one host view. It stays valid after close(). */
  // ---- guest RAM at run time --------------------------------------------------------------

  /** A new memslot over a new memfd (the addon checks alignment, the platform hole and overlap too). */
  protected mapRam(gpa: number, size: number): RamRegionSpec[] {
    return ramSpecs([{ gpa, size }], [native(() => this.nativePartition.addRam(gpa, size))]);
  }

  /** Deletes the memslot; the addon detaches every JS buffer over the region before its mapping can go. */
  protected unmapRam(gpa: number): void {
    native(() => this.nativePartition.removeRam(gpa));
  }

  /** FALLOC_FL_PUNCH_HOLE on the memfd: zeros for the guest and JS, the host pages freed. */
  protected discardPages(gpa: number, size: number): void {
    native(() => this.nativePartition.discardRam(gpa, size));
  }

  /** One addon call for the whole batch (the addon checks every pair again before punching any). */
  protected override discardPageRanges(pairs: Float64Array): void {
    native(() => this.nativePartition.discardRanges(pairs));
  }

  /** fstat of each region's memfd: the bytes the host really holds. */
  protected override regionUsage(): RamUsage[] {
    return native(() => this.nativePartition.ramUsage()).map((r) => ({ gpa: r.gpa, size: r.size, allocatedBytes: r.allocated }));
  }

  mapPageList(pfns: ArrayLike<number>): PageListView {
    this.checkOpen('mapPageList');
    if (pfns === null || typeof pfns !== 'object' || typeof (pfns as { length?: unknown }).length !== 'number') {
      throw new AccelUsageError(`mapPageList(pfns): pfns must be an array of page numbers, not ${describeValue(pfns)}`);
    }
    // Before anything is sized by it (Float64Array.from of a 2^30-long array-like is 8 GiB).
    if (!Number.isInteger(pfns.length) || pfns.length < 1 || pfns.length > MAX_PAGE_LIST) {
      throw new AccelUsageError(`mapPageList(pfns): a page list must have 1..${MAX_PAGE_LIST} pages, not ${pfns.length}`);
    }
    const buffer = native(() => this.nativePartition.mapPages(Float64Array.from(pfns)));
    const addon = loadAddon();
    return {
      bytes: new Uint8Array(buffer),
      unmap: () => addon.unmapPages?.(buffer),
    };
  }

  /** Refuses calls on a closed partition: AccelUsageError naming the call. */
  private msiFor(vp: number, vector: number): { address: number; data: number } {
    // APIC ids are 0..n-1; 0xff would be a broadcast to every vCPU, not "vCPU 255".
    if (typeof vp !== 'number' || !Number.isInteger(vp) || vp < 0 || vp >= this.vcpus.length) {
      throw new AccelUsageError(`APIC id ${describeValue(vp)} is out of range (the partition has vCPUs 0..${this.vcpus.length - 1})`);
    }
    if (typeof vector !== 'number' || !Number.isInteger(vector) || vector < 16 || vector > 255) {
      throw new AccelUsageError(`interrupt vector ${describeValue(vector)} must be 16..255`);
    }
    // Physical destination mode, fixed delivery, edge: the whole message is dest id + vector.
    return { address: MSI_ADDRESS_BASE + vp * 0x1000, data: vector };
  }

  // ---- running ---------------------------------------------------------------------------

  /**
   * Starts the given vCPUs (default: all) and resolves when every vCPU that was started has
   * stopped, with the latest outcome of each; rejects with the first vCPU's error (a
   * GuestFatalError, ExitHandlerError or HostSystemError) if any ended with one.
   *
   * Misuse is a rejected promise with AccelUsageError, never a synchronous throw: a closed
   * partition, `vps` that is not an array of vCPU indices, an index that names no vCPU, a vCPU
   * named twice, or one that is already running (other vCPUs may be started while some run).
   * `run([])` starts nothing and resolves at once with `[]`, as on MSHV and WHPX.
   */
  run(vps?: readonly number[]): Promise<VcpuOutcome[]> {
    let list: readonly number[];
    try {
      list = this.runList(vps);
    } catch (e) {
      return Promise.reject(e);
    }
    if (list.length === 0) return Promise.resolve([]);
    running.add(this);
    const done = new Promise<VcpuOutcome[]>((resolve, reject) => this.runWaiters.push({ resolve, reject }));
    for (const vp of list) {
      const v = this.vcpus[vp];
      this.ended[vp] = false;
      this.outcomes[vp] = undefined;
      v.error = undefined;
      v.status = 'running';
      try {
        native(() => this.nativePartition.start(vp));
      } catch (e) {
        // This vCPU never ran: it ends now with the error, the ones started above are asked
        // to stop, and the run rejects with the error once they have.
        v.status = 'stopped';
        v.error = e as Error;
        this.ended[vp] = true;
        this.outcomes[vp] = { vp, cause: 'host-error', error: v.error, exits: v.exits };
        this.stop();
        break;
      }
    }
    // vCPUs never started count as ended, so run() resolves when the started ones stop.
    this.vcpus.forEach((v) => {
      if (v.status === 'created') this.ended[v.index] = true;
    });
    this.settleIfDone(false);
    return done;
  }

  /** The vCPU list of a run() call, checked (see run()). */
  private runList(vps: readonly number[] | undefined): readonly number[] {
    if (this.closed) throw new AccelUsageError('run: the partition is closed');
    if (vps === undefined) vps = this.vcpus.map((v) => v.index);
    if (!Array.isArray(vps)) throw new AccelUsageError(`run(vps): vps must be an array of vCPU indices, not ${describeValue(vps)}`);
    const seen = new Set<number>();
    for (const vp of vps as unknown[]) {
      if (typeof vp !== 'number' || !Number.isInteger(vp) || vp < 0 || vp >= this.vcpus.length) {
        throw new AccelUsageError(`run(vps): ${describeValue(vp)} names no vCPU (the partition has vCPUs 0..${this.vcpus.length - 1})`);
      }
      if (seen.has(vp)) throw new AccelUsageError(`run(vps): vCPU list ${vps.join(',')} names vCPU ${vp} twice`);
      seen.add(vp);
      if (this.vcpus[vp].status === 'running') throw new AccelUsageError(`run(vps): vCPU ${vp} is already running`);
    }
    return vps;
  }

  /** Asks every vCPU to stop; run() resolves once they have. */
  stop(): void {
    if (!this.closed) this.nativePartition.requestStop();
  }

  /**
   * Stops and joins all vCPU threads and releases the VM and its eventfds. Afterwards every
   * call on the partition, its vCPUs and its irqfd/ioeventfd handles is an AccelUsageError
   * (stop(), close() and Ioeventfd.remove() are no-ops). Guest memory (GuestMemory and page-list
   * views) stays valid: the RAM stays mapped until the last view of it is collected.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.router.dispose();
    this.watcher?.close();
    this.watched.clear();
    this.nativePartition.close();
    this.drain(); // collect EXITED slots so pending run() promises settle
    this.settleIfDone(true);
  }

  // ---- exit dispatch (JS thread) ---------------------------------------------------------

  private drain(): void {
    if (this.pollMs <= 0) {
      this.scan();
      return;
    }
    // Keep polling while exits keep coming; the vCPU threads skip the wake-up meanwhile.
    // The clock is read every few scans only: it costs more than a scan.
    // A guest that exits back to back would keep this loop busy for ever and starve the
    // event loop (host timers, I/O, the SynIC timer driver): after DRAIN_BUDGET_MS the loop
    // returns; later exits wake it again through the threadsafe function, after the event
    // loop has had its turn.
    Atomics.exchange(this.header, HDR_JS_POLLING, 1);
    const started = performance.now();
    let idleSince = started;
    for (let i = 1; ; i++) {
      const busy = this.scan() > 0;
      if (busy) idleSince = -1;
      if ((i & 31) !== 0) continue;
      const now = performance.now();
      if (now - started > DRAIN_BUDGET_MS) break;
      if (busy) continue;
      if (idleSince < 0) idleSince = now;
      else if (now - idleSince > this.pollMs || this.allEnded()) break;
    }
    Atomics.exchange(this.header, HDR_JS_POLLING, 0);
    this.scan(); // anything posted while we were turning polling off
  }

  private allEnded(): boolean {
    return this.ended.every((e) => e);
  }

  private scan(): number {
    let handled = 0;
    for (const slot of this.slots) {
      const vp = slot.vp;
      const state = slot.state();
      if (state === SlotState.posted && !this.inFlight[vp]) {
        this.handle(slot);
        handled++;
      } else if (state === SlotState.exited && !this.ended[vp] && this.vcpus[vp].status === 'running') {
        this.onVcpuEnded(slot);
        handled++;
      }
    }
    return handled;
  }

  private handle(slot: SlotView): void {
    const vcpu = this.vcpus[slot.vp];
    vcpu.exits++;
    let exit: Exit | undefined;
    try {
      exit = decodeExit(slot);
      const response = this.router.dispatch(exit);
      if (isPromise(response)) {
        this.inFlight[slot.vp] = true;
        const e = exit;
        response.then(
          (r) => this.complete(slot, e, r),
          (err: unknown) => this.fail(slot, e, err),
        );
        return;
      }
      this.complete(slot, exit, response);
    } catch (err) {
      this.fail(slot, exit, err);
    }
  }

  private complete(slot: SlotView, exit: Exit, response: ExitResponse | void): void {
    let stop: boolean;
    try {
      stop = encodeResponse(slot, exit, response);
    } catch (err) {
      // An answer that cannot be encoded (value NaN, 'abc', 2^70) fails the handler: the vCPU
      // is stopped with ExitHandlerError. Also for async handlers, whose slot would otherwise
      // stay unanswered (the vCPU and run() waiting for ever).
      this.fail(slot, exit, err);
      return;
    }
    this.inFlight[slot.vp] = false;
    if (stop && (exit.kind === 'shutdown' || exit.kind === 'unrecoverable')) {
      this.vcpus[slot.vp].error ??= fatalError(exit);
    }
    if (slot.publishAnswer()) this.nativePartition.wake(slot.vp);
  }

  private fail(slot: SlotView, exit: Exit | undefined, err: unknown): void {
    const vcpu = this.vcpus[slot.vp];
    const what = exit ? `${exit.kind} exit` : 'exit';
    vcpu.error ??= new ExitHandlerError(`vCPU ${slot.vp}: handler for ${what} failed: ${(err as Error)?.message ?? String(err)}`, slot.vp, {
      cause: err,
    });
    this.logger.error('exit handler failed; stopping vCPU', { vp: slot.vp, kind: exit?.kind, error: String(err) });
    this.complete(slot, exit ?? { kind: 'halt', vp: slot.vp }, { stop: true });
  }

  private onVcpuEnded(slot: SlotView): void {
    const vp = slot.vp;
    const vcpu = this.vcpus[vp];
    const cause = Number(slot.big(Off.a3));
    const detail = slot.big(Off.a1);
    if (cause === ExitCause.hostError) {
      vcpu.error ??= new HostSystemError(`vCPU ${vp}: KVM_RUN failed (errno ${detail})`, Number(detail));
    }
    vcpu.status = 'stopped';
    this.ended[vp] = true;
    this.outcomes[vp] = {
      vp,
      cause: cause === ExitCause.hostError ? 'host-error' : cause === ExitCause.handlerStop ? 'handler-stop' : 'stop-requested',
      error: vcpu.error,
      exits: vcpu.exits,
    };
    this.settleIfDone(false);
  }

  private settleIfDone(force: boolean): void {
    if (!force && !this.allEnded()) return;
    running.delete(this);
    if (!this.closed) this.nativePartition.idle();
    const outcomes = this.outcomes.filter((o): o is VcpuOutcome => o !== undefined);
    const waiters = this.runWaiters;
    this.runWaiters = [];
    const failed = outcomes.find((o) => o.error);
    for (const w of waiters) {
      if (failed) w.reject(failed.error);
      else w.resolve(outcomes);
    }
  }
}

/** KvmPartition.create's options (see KvmPartitionOptions); the RAM map's layout is KVM's to judge. */
function checkOptions(opts: KvmPartitionOptions): void {
  const o = checkCommonOptions(opts, 'KvmPartition.create', 256);
  if (o['hypercallPort'] !== undefined) checkInt(o['hypercallPort'], 'KvmPartition.create: options.hypercallPort', 0, 0xffff);
  optBool(o['int3Fixup'], 'KvmPartition.create: options.int3Fixup');
  optBool(o['instructionFixups'], 'KvmPartition.create: options.instructionFixups');
  optBool(o['syscallFixup'], 'KvmPartition.create: options.syscallFixup');
  optBool(o['syncRegs'], 'KvmPartition.create: options.syncRegs');
  optInt(o['spinIterations'], 'KvmPartition.create: options.spinIterations', 0, U32_MAX, 0);
  // NaN would make the exit poll loop never see its deadline; Infinity likewise.
  if (o['pollMicros'] !== undefined) checkFinite(o['pollMicros'], 'KvmPartition.create: options.pollMicros', 0, 1_000_000);
  if (o['hypervisorLeaves'] !== undefined) {
    checkCpuidEntries(o['hypervisorLeaves'], 'KvmPartition.create: options.hypervisorLeaves', 256).forEach((e, i) => {
      if (e.function < 0x40000000 || e.function > 0x400000ff) {
        throw new AccelUsageError(
          `KvmPartition.create: options.hypervisorLeaves[${i}].function 0x${e.function.toString(16)} is outside 0x40000000-0x400000ff`,
        );
      }
    });
  }
  optFunction(o['customizeCpuid'], 'KvmPartition.create: options.customizeCpuid');
}

/** createIoeventfd's spec: a space, an address in it, an access length, an optional u64 datamatch. */
function checkIoeventfdSpec(spec: unknown): void {
  const s = checkObject(spec, 'createIoeventfd: spec');
  if (s['space'] !== 'mmio' && s['space'] !== 'pio') {
    throw new AccelUsageError(`createIoeventfd: spec.space must be 'mmio' or 'pio', not ${describeValue(s['space'])}`);
  }
  checkInt(s['address'], 'createIoeventfd: spec.address', 0, s['space'] === 'pio' ? 0xffff : MAX_GPA - 1);
  const length = s['length'];
  if (length !== 0 && length !== 1 && length !== 2 && length !== 4 && length !== 8) {
    throw new AccelUsageError(`createIoeventfd: spec.length must be 0 (any), 1, 2, 4 or 8, not ${describeValue(length)}`);
  }
  const dm = s['datamatch'];
  if (dm !== undefined && (typeof dm !== 'bigint' || dm < 0n || dm >= 1n << 64n)) {
    throw new AccelUsageError(`createIoeventfd: spec.datamatch must be a bigint in 0..2^64-1, not ${describeValue(dm)}`);
  }
}
