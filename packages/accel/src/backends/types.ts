/**
 * What every accelerator backend offers, whoever runs the vCPUs: KVM (native addon), MSHV
 * (/dev/mshv) and WHPX (WinHvPlatform.dll). Code above accel (synic, vmbus, vm) programs
 * against these interfaces; only the composition root picks a backend.
 */
import type { SynicPort } from '@hvemu/hvdef';
import type { GuestMemory } from '@hvemu/memory';
import type { IoDevice, MmioDevice, MsrDevice } from '../devices.js';
import type { ExitHandler, HypercallExit } from '../exits.js';
import type { Registers, SpecialRegisters } from '../registers.js';

export type BackendName = 'kvm' | 'mshv' | 'whpx';

export type VcpuStatus = 'created' | 'running' | 'stopped';

/** How one vCPU's run ended. */
export interface VcpuOutcome {
  readonly vp: number;
  readonly cause: 'stop-requested' | 'handler-stop' | 'host-error';
  readonly error: Error | undefined;
  readonly exits: number;
}

export interface AccelVcpu {
  readonly index: number;
  readonly status: VcpuStatus;
  /** Exits this vCPU has reported. */
  readonly exits: number;
  /** Register access: only while the vCPU is parked (not started, stopped, or inside a handler for its exit). */
  getRegisters(): Registers;
  setRegisters(regs: Registers): void;
  getSpecialRegisters(): SpecialRegisters;
  setSpecialRegisters(sregs: SpecialRegisters): void;
  /** The guest TSC, where the backend exposes it (KVM). Feature-test: `vcpu.tsc?.read()`. */
  readonly tsc?: GuestTsc;
}

// --- optional capabilities: members a backend has only where it can serve them; code above
// accel feature-tests them (`partition.doorbells?.create(...)`) instead of naming a backend.

/** The guest's time-stamp counter as the backend runs a vCPU. Parked vCPUs only (like registers). */
export interface GuestTsc {
  /** Ticks per millisecond (KVM_GET_TSC_KHZ). */
  khz(): number;
  /** IA32_TSC now. */
  read(): bigint;
}

/** Where a doorbell listens: an I/O port or an MMIO address, `length` bytes (0: any), optionally one value only. */
export interface DoorbellSpec {
  readonly space: 'mmio' | 'pio';
  readonly address: number;
  readonly length: number;
  readonly datamatch?: bigint;
}

/** Counts guest writes to a doorbell without an exit to user space (KVM: ioeventfd). */
export interface Doorbell {
  /** Reads and resets the count of guest writes since the last call. */
  take(): bigint;
  /** Calls `onWrites(count)` on the JS thread soon after the guest writes (counts coalesce). */
  watch(onWrites: (count: bigint) => void): void;
  /** Later guest writes exit to user space again. */
  remove(): void;
}

export interface Doorbells {
  create(spec: DoorbellSpec): Doorbell;
}

/** An interrupt raised without a hypervisor call per interrupt (KVM: irqfd). */
export interface InterruptTrigger {
  trigger(): void;
}

export interface InterruptTriggers {
  /** A trigger for fixed `vector` on vCPU `vp` (APIC id). */
  create(vp: number, vector: number): InterruptTrigger;
}

/** Guest pages listed by PFN seen as one flat host buffer (GPADL rings without a copy). */
export interface PageListMapping {
  readonly bytes: Uint8Array;
  unmap(): void;
}

export interface PageLists {
  map(pfns: ArrayLike<number>): PageListMapping;
}

/**
 * Guest RAM changed while the partition lives (memory hot add, dynamic memory, ballooning).
 * Each change reaches `partition.memory` (GuestMemory.onChange listeners hear of it) and the
 * partition's exit routing. Misuse (unaligned, overlapping RAM or an MMIO device, no such
 * region, the last region) is an AccelUsageError or MemoryMapError and changes nothing.
 */
export interface MemoryControl {
  /** Maps new zeroed RAM at [gpa, gpa + size) (page-aligned). */
  addRam(region: { readonly gpa: number; readonly size: number }): void;
  /**
   * Unmaps the RAM region added at `gpa` (a region given at creation or by addRam, whole).
   * Views of it handed out before are detached (KVM) or stop being guest memory: none reaches
   * unmapped host memory.
   */
  removeRam(gpa: number): void;
  /** The guest's pages in [gpa, gpa + size) become zero; where the backend can, their host memory is released. */
  discardRam(gpa: number, size: number): void;
  /**
   * Many discards in one call (ballooning): `ranges` holds (gpa, size) pairs. Every pair is
   * checked first (page-aligned, non-empty, inside one RAM region); if one is not, nothing is
   * discarded (AccelUsageError). Returns the bytes discarded. On KVM one addon call punches
   * them all.
   */
  discardRanges(ranges: Float64Array): number;
  /**
   * Host memory each RAM region holds now: `allocatedBytes` is what the host has backing it
   * (KVM: the memfd's allocated blocks, which drop when pages are discarded); a backend that
   * cannot tell reports the region's size.
   */
  ramUsage(): RamUsage[];
}

/** One RAM region's host memory (MemoryControl.ramUsage). */
export interface RamUsage {
  readonly gpa: number;
  readonly size: number;
  readonly allocatedBytes: number;
}

export interface AccelPartition {
  readonly backend: BackendName;
  readonly memory: GuestMemory;
  readonly vcpus: readonly AccelVcpu[];
  addIoDevice(device: IoDevice): void;
  addMmioDevice(device: MmioDevice): void;
  addMsrDevice(device: MsrDevice): void;
  onHypercall(handler: ExitHandler<HypercallExit>): void;
  onExit(handler: ExitHandler): void;
  /** Fixed, edge-triggered `vector` to vCPU `vp` (x86: APIC id; arm64: an SPI/PPI INTID). True when delivered. */
  interrupt(vp: number, vector: number): boolean;
  /**
   * Runs vCPUs `vps` (default: all) until they stop. Misuse (closed, not an array of vCPU
   * indices, an unknown or repeated index, an already running vCPU) is a rejected promise with
   * AccelUsageError, never a synchronous throw; `run([])` resolves at once with `[]`.
   */
  run(vps?: readonly number[]): Promise<VcpuOutcome[]>;
  stop(): void;
  close(): void;
  /** Exit-free guest-to-host doorbells (KVM). */
  readonly doorbells?: Doorbells;
  /** Exit-free host-to-guest interrupts (KVM irqfd). */
  readonly interruptTriggers?: InterruptTriggers;
  /** Flat views of guest page lists (KVM: memfd pages mapped again). */
  readonly pageLists?: PageLists;
  /** Guest RAM added, removed and discarded at run time (all backends). */
  readonly memoryControl?: MemoryControl;
  /**
   * The guest's SynIC, where the hypervisor owns it (MSHV, WHPX: OffloadedSynicPort). Absent
   * on KVM, where hvemu's own SynIC (@hvemu/synic) is attached instead.
   */
  readonly synic?: SynicPort;
}
