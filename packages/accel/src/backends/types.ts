/**
 * What every accelerator backend offers, whoever runs the vCPUs: KVM (native addon), MSHV
 * (/dev/mshv) and WHPX (WinHvPlatform.dll). Code above accel (synic, vmbus, vm) programs
 * against these interfaces; only the composition root picks a backend.
 */
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
}

/**
 * A SynIC message as vmbus posts it (structurally @hvemu/synic's SynicMessage): the
 * hypervisor builds the 16-byte hv_message header from `type` and the payload's length.
 */
export interface PortMessage {
  readonly type: number;
  readonly payload: Uint8Array;
}

/**
 * @hvemu/synic's SynicPort, structurally: how vmbus reaches the guest. On KVM hvemu's own
 * SynIC serves it; on MSHV and WHPX the hypervisor owns the SynIC and the backend serves it
 * with OffloadedSynicPort.
 */
export interface SynicPortLike {
  postMessage(vp: number, sint: number, message: PortMessage): 'delivered' | 'queued' | 'busy';
  signalEvent(vp: number, sint: number, flag: number): boolean;
  onPostReady?(listener: (vp: number, sint: number) => void): () => void;
}
