/**
 * The half of MshvPartition and WhpxPartition that is the same because both run vCPUs from
 * TypeScript on the Hyper-V hypervisor: the vCPU loop (run -> decode -> ExitRouter.dispatch
 * -> completion registers -> run again), the parking rule for register access, device and
 * handler registration, stop/close ordering, and the x64 register file over 16-byte
 * HV_REGISTER_VALUEs. A backend supplies how to run a VP once, how to decode and handle what
 * came back, how to kick a running VP, how to release its resources, and its register names.
 *
 * Run failures: a backend's runOnce() reports 'interrupted' for a run the host interrupted
 * with nothing to handle (MSHV: EINTR/EAGAIN from MSHV_RUN_VP, retried without limit as the
 * kernel expects of an ioctl a signal interrupted), `{ transient }` for a failure worth a few
 * retries (at most MAX_TRANSIENT_FAILURES in a row), and throws for anything else. WHP has no
 * such case: a canceled run returns S_OK with the Canceled exit reason.
 */
import type { Logger } from '@hvemu/common';
import { GuestMemory, type RamRegionSpec } from '@hvemu/memory';
import { AccelUsageError, ExitHandlerError, HostSystemError, MemoryMapError } from '../../errors.js';
import { checkExitResponse } from '../../exit-decode.js';
import { ExitRouter, fatalError } from '../../exit-router.js';
import type { Exit, ExitResponse, MmioExit } from '../../exits.js';
import type { Registers, SpecialRegisters } from '../../registers.js';
import { checkRegisters, checkSpecialRegisters, ramChunks } from '../../validate.js';
import type { OffloadedSynicPort } from '../offloaded-synic.js';
import type { AccelPartition, AccelVcpu, BackendName, VcpuOutcome, VcpuStatus } from '../types.js';
import { runVcpus } from '../vcpu-runs.js';
import { RoutedPartition } from '../routed-partition.js';
import { mmioStoreValue, type MmioInstruction } from '../x86-mmio.js';
import {
  completeX64Mmio,
  generalFromValues,
  generalRegisterNames,
  generalWrites,
  HV_REGISTER_VALUE_SIZE,
  specialFromValues,
  specialRegisterNames,
  specialWrites,
  type RegisterWrite,
  type X64InterceptContext,
  type X64RegisterNames,
} from './x64.js';

export const MAX_TRANSIENT_FAILURES = 8;
const PAGE = 4096;

export type RunOnceResult = 'exit' | 'interrupted' | { readonly transient: Error };

/** What a vCPU needs of its partition for register access. */
export interface VcpuRegisterAccess {
  readonly x64Names: X64RegisterNames;
  readRegisterValues(vp: number, names: readonly number[]): Uint8Array;
  writeRegisters(vp: number, writes: readonly RegisterWrite[]): void;
  readGeneralRegisters(vp: number): Registers;
}

/** A vCPU of a TypeScript-driven backend. Registers: only while parked (not running, or inside a handler for its own exit). */
export class HvVcpu implements AccelVcpu {
  status: VcpuStatus = 'created';
  exits = 0;
  /** True while a handler for this vCPU's exit runs: register access is allowed then. */
  inHandler = false;
  /** SINTs whose deliverability this VP should report (a stop kick must not drop them). */
  sintMask = 0;

  constructor(
    readonly index: number,
    protected readonly owner: VcpuRegisterAccess,
  ) {}

  get parked(): boolean {
    return this.status !== 'running' || this.inHandler;
  }

  protected checkParked(): void {
    if (!this.parked) throw new AccelUsageError(`vCPU ${this.index} is running: registers are accessible only while it is parked`);
  }

  /** x64 register access; WHPX arm64 VPs refuse it. */
  protected checkX64(): void {}

  getRegisters(): Registers {
    this.checkParked();
    this.checkX64();
    return this.owner.readGeneralRegisters(this.index);
  }

  setRegisters(regs: Registers): void {
    checkRegisters(regs, `vCPU ${this.index}: setRegisters: registers`);
    this.checkParked();
    this.checkX64();
    this.owner.writeRegisters(this.index, generalWrites(this.owner.x64Names, regs));
  }

  getSpecialRegisters(): SpecialRegisters {
    this.checkParked();
    this.checkX64();
    return specialFromValues(this.owner.readRegisterValues(this.index, specialRegisterNames(this.owner.x64Names)));
  }

  setSpecialRegisters(sregs: SpecialRegisters): void {
    checkSpecialRegisters(sregs, `vCPU ${this.index}: setSpecialRegisters: registers`);
    this.checkParked();
    this.checkX64();
    this.owner.writeRegisters(this.index, specialWrites(this.owner.x64Names, sregs));
  }
}

export abstract class HvPartition<V extends HvVcpu> extends RoutedPartition implements AccelPartition, VcpuRegisterAccess {
  abstract readonly backend: BackendName;
  abstract override readonly memory: GuestMemory;
  abstract readonly vcpus: readonly V[];
  /** How vmbus reaches the guest: the hypervisor's SynIC. */
  abstract readonly synic: OffloadedSynicPort;
  /** The backend's names for the x64 registers. */
  abstract readonly x64Names: X64RegisterNames;
  protected abstract override readonly router: ExitRouter;
  protected stopping = false;
  protected running: Promise<VcpuOutcome[]> | undefined;
  constructor(protected readonly logger: Logger) {
    super();
  }

  // --- what a backend supplies ---------------------------------------------------------------

  /** 16-byte values of `names` for VP `vp`. */
  abstract readRegisterValues(vp: number, names: readonly number[]): Uint8Array;
  /** Writes all of `writes` to VP `vp` in one call. */
  abstract writeRegisters(vp: number, writes: readonly RegisterWrite[]): void;
  /** Runs VP `v` until the hypervisor returns. */
  protected abstract runOnce(v: V): Promise<RunOnceResult>;
  /** Decodes and handles what the last run returned; true when the vCPU must stop. */
  protected abstract handleRun(v: V): Promise<boolean>;
  /** Makes a running VP return from its run (stop()). */
  protected abstract kick(v: V): void;
  /** Releases the backend's handles once no run is in flight (close()). */
  protected abstract release(): void;
  /**
   * Backs [gpa, gpa + size) (at most 4 GiB, page-aligned) with new zeroed host memory mapped
   * into the guest; returns it as a GuestMemory region. `label` names it (MSHV memfd names).
   */
  protected abstract mapChunk(gpa: number, size: number, label: string): RamRegionSpec;
  /** Unmaps a chunk mapChunk mapped. Its host memory stays allocated: views handed out stay valid memory. */
  protected abstract unmapChunk(gpa: number, size: number): void;
  /** False for a partition whose VPs have no x64 register file (WHPX arm64). */
  protected get isX64(): boolean {
    return true;
  }

  // --- guest RAM ---------------------------------------------------------------------------

  /** The creation-time RAM map (setup calls it once). */
  protected mapInitialRam(regions: readonly { gpa: number; size: number }[]): GuestMemory {
    const specs = regions
      .map((r, i) => {
        if (r.gpa % PAGE !== 0 || r.size % PAGE !== 0 || r.size <= 0) {
          throw new MemoryMapError(`RAM region ${i} (gpa 0x${r.gpa.toString(16)}, size 0x${r.size.toString(16)}) is not page-aligned`);
        }
        this.noteRam(r.gpa, r.size);
        return this.mapRegion(r.gpa, r.size, `hvemu-ram-${i}`);
      })
      .flat();
    try {
      return new GuestMemory(specs);
    } catch (e) {
      throw new MemoryMapError(`bad guest memory map: ${(e as Error).message}`, { cause: e });
    }
  }

  private mapRegion(gpa: number, size: number, label: string): RamRegionSpec[] {
    return ramChunks({ size }).map(({ offset, size: n }) =>
      this.mapChunk(gpa + offset, n, offset === 0 ? label : `${label}+${offset.toString(16)}`),
    );
  }

  protected mapRam(gpa: number, size: number): RamRegionSpec[] {
    return this.mapRegion(gpa, size, `hvemu-ram-0x${gpa.toString(16)}`);
  }

  protected unmapRam(gpa: number, size: number): void {
    for (const { offset, size: n } of ramChunks({ size })) this.unmapChunk(gpa + offset, n);
  }

  /** No host call here can release the pages: the guest sees zeros (KVM also frees the host memory). */
  protected discardPages(gpa: number, size: number): void {
    const zeros = new Uint8Array(Math.min(size, 1 << 20));
    for (let at = 0; at < size; at += zeros.length) this.memory.write(gpa + at, zeros.subarray(0, Math.min(zeros.length, size - at)));
  }

  // --- registers ---------------------------------------------------------------------------

  readRegisters64(vp: number, names: readonly number[]): bigint[] {
    const out = this.readRegisterValues(vp, names);
    const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
    return names.map((_, i) => view.getBigUint64(i * HV_REGISTER_VALUE_SIZE, true));
  }

  readGeneralRegisters(vp: number): Registers {
    return generalFromValues(this.readRegisterValues(vp, generalRegisterNames(this.x64Names)));
  }

  /** Registers for a fatal-exit report, or undefined if they cannot be read. */
  protected tryRegisters(vp: number): Registers | undefined {
    if (!this.isX64) return undefined;
    try {
      return this.readGeneralRegisters(vp);
    } catch {
      return undefined;
    }
  }

  // --- AccelPartition ----------------------------------------------------------------------

  abstract interrupt(vp: number, vector: number): boolean;

  protected checkVp(vp: number): void {
    if (!Number.isInteger(vp) || vp < 0 || vp >= this.vcpus.length) throw new AccelUsageError(`no vCPU ${vp}`);
  }

  run(vps?: readonly number[]): Promise<VcpuOutcome[]> {
    if (!this.closed && !this.running) this.stopping = false; // before the loops test it
    const { started, result } = runVcpus({ closed: this.closed, running: this.running }, this.vcpus, vps, (v) => this.runVcpu(v));
    if (!started) return result;
    this.running = started.finally(() => (this.running = undefined));
    return result;
  }

  stop(): void {
    if (this.stopping) return;
    this.stopping = true;
    for (const v of this.vcpus) {
      if (v.status !== 'running') continue;
      try {
        this.kick(v);
      } catch (e) {
        this.logger.warn('stop kick failed', { vp: v.index, error: (e as Error).message });
      }
    }
  }

  /**
   * Stops the vCPUs and releases the backend's handles; while runs are still in flight (they
   * hold the VPs and write into their buffers) the release waits until they have returned.
   * Guest RAM stays mapped: GuestMemory views handed out must stay valid (as on KVM).
   */
  close(): void {
    if (this.closed) return;
    this.stop();
    this.closed = true;
    this.router.dispose();
    const release = (): void => this.release();
    if (this.running) void this.running.then(release, release);
    else release();
  }

  // --- the vCPU loop -------------------------------------------------------------------------

  private async runVcpu(v: V): Promise<VcpuOutcome> {
    v.status = 'running';
    let failures = 0;
    const done = (cause: VcpuOutcome['cause'], error?: Error): VcpuOutcome => {
      v.status = 'stopped';
      return { vp: v.index, cause, error, exits: v.exits };
    };
    while (!this.stopping) {
      let result: RunOnceResult;
      try {
        result = await this.runOnce(v);
      } catch (e) {
        if (this.stopping) break; // a run that failed because we are tearing down
        return done('host-error', e instanceof Error ? e : new HostSystemError(String(e), undefined));
      }
      if (result === 'interrupted') continue;
      if (result !== 'exit') {
        if (this.stopping) break;
        if (++failures <= MAX_TRANSIENT_FAILURES) continue;
        return done('host-error', result.transient);
      }
      failures = 0;
      v.exits++;
      try {
        if (await this.handleRun(v)) return done('handler-stop');
      } catch (e) {
        return done('host-error', e as Error);
      }
    }
    return done('stop-requested');
  }

  /** The hypervisor reported SINTs deliverable (one-shot: it cleared the bits it reported). */
  protected sintDeliverable(v: V, sints: number): void {
    v.sintMask &= ~sints;
    this.synic.onSintDeliverable(v.index, sints);
  }

  /**
   * Routes `exit`, then applies `complete(response)`. A fatal exit (shutdown, unrecoverable)
   * stops the vCPU with GuestFatalError unless a handler answers `{ stop: false }`.
   */
  protected async finishExit(v: V, exit: Exit, complete: (response: ExitResponse | void) => RegisterWrite[]): Promise<boolean> {
    const response = await this.dispatch(v, exit);
    if (exit.kind === 'shutdown' || exit.kind === 'unrecoverable') {
      if (response?.stop === false) return false;
      throw fatalError({ ...exit, registers: exit.registers ?? this.tryRegisters(v.index) });
    }
    this.writeRegisters(v.index, complete(response));
    return response?.stop === true;
  }

  /** An x64 memory intercept: emulate the decoded instruction against the registers (the intercept's RIP is authoritative). */
  protected finishX64Mmio(v: V, context: X64InterceptContext, gpa: number, instruction: MmioInstruction): Promise<boolean> {
    const regs = { ...this.readGeneralRegisters(v.index), rip: context.rip };
    const exit: MmioExit = {
      kind: 'mmio',
      vp: v.index,
      gpa,
      size: instruction.size,
      isWrite: instruction.isWrite,
      data: instruction.isWrite ? mmioStoreValue(instruction, regs) : 0n,
    };
    return this.finishExit(v, exit, (response) => completeX64Mmio(this.x64Names, instruction, regs, response));
  }

  /** Routes an exit with register access open for the handler; a throwing handler becomes ExitHandlerError. */
  private async dispatch(v: V, exit: Exit): Promise<ExitResponse | void> {
    v.inHandler = true;
    try {
      const response = await this.router.dispatch(exit);
      checkExitResponse(exit, response); // NaN, 1.5 or 2^70 fail the handler instead of reaching the registers
      return response;
    } catch (err) {
      throw new ExitHandlerError(`vCPU ${v.index}: handler for ${exit.kind} failed: ${(err as Error)?.message ?? String(err)}`, v.index, {
        cause: err,
      });
    } finally {
      v.inHandler = false;
    }
  }
}
