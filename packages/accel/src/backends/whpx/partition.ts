/**
 * WhpxPartition: the AccelPartition over the Windows Hypervisor Platform (WinHvPlatform.dll),
 * x64 and arm64.
 *
 * Setup follows what WHP requires (WinHvPlatformDefs.h, OpenVMM virt_whp): create the
 * partition; set the processor count, the interrupt controller (x64: the hypervisor's x2APIC;
 * arm64: GICv3 parameters, which setup rejects if missing), the synthetic-processor-feature
 * bank that hands SynIC, synthetic timers, reference counter/TSC, hypercall page and VP index
 * to the hypervisor, the MSR/CPUID exit configuration and the extended exits, all before
 * WHvSetupPartition; then map RAM and create the VPs (arm64: GICR base per VP).
 *
 * Each vCPU runs a loop on the JS side: WHvRunVirtualProcessor on a koffi worker thread ->
 * decode the exit context -> ExitRouter.dispatch -> completion registers (one
 * WHvSetVirtualProcessorRegisters) -> next run. stop() cancels the runs with
 * WHvCancelRunVirtualProcessor, which WHP exists for.
 */
import { silentLogger, type Logger } from '@hvemu/common';
import { GuestMemory } from '@hvemu/memory';
import { checkExitResponse } from '../../exit-decode.js';
import { checkCommonOptions, checkObject, checkInt, checkRegisters, checkSpecialRegisters, describeValue, optNames, optU32List, ramChunks } from '../../validate.js';
import type { IoDevice, MmioDevice, MsrDevice } from '../../devices.js';
import { AccelUsageError, ExitHandlerError, HypervisorUnavailableError, MemoryMapError, MissingCapabilityError } from '../../errors.js';
import { ExitRouter, fatalError } from '../../exit-router.js';
import type { Exit, ExitHandler, ExitResponse, HypercallExit, MmioExit } from '../../exits.js';
import { REG_NAMES, type DescriptorTable, type Registers, type Segment, type SpecialRegisters } from '../../registers.js';
import { runVcpus } from '../vcpu-runs.js';
import { OffloadedSynicPort, type OffloadedSynicOps } from '../offloaded-synic.js';
import type { AccelPartition, AccelVcpu, VcpuOutcome, VcpuStatus } from '../types.js';
import { mmioStoreValue } from '../x86-mmio.js';
import * as abi from './abi.js';
import { loadWhpxApi, WHP_DLL, WHP_REQUIREMENTS, WhpxCallError, type HostBuffer, type PartitionHandle, type WhpxApi } from './api.js';
import { arm64StoreValue, completeArm64, completeArm64Mmio, completeX64, completeX64Mmio, type RegisterWrite } from './completion.js';
import type { WhpxEvent } from './events.js';
import { decodeArm64Exit } from './exit-arm64.js';
import { decodeX64Exit } from './exit-x64.js';

/** arm64 GICv3 placement. Defaults: OpenVMM's Windows layout (GICD 0xFFFF0000, GICRs from 0xEFFEE000, 128 KiB each). */
export interface WhpxGicOptions {
  readonly distributorBase?: bigint;
  readonly redistributorBase?: bigint;
  /** Bytes per redistributor (RD_base + SGI_base frames, 2 x 64 KiB). */
  readonly redistributorStride?: bigint;
  /** 0 (default): no LPIs, so guests use a GICv2m-style MSI frame instead of an ITS WHP does not provide. */
  readonly lpiIntIdBits?: number;
  /** Virtual timer PPI as a GIC INTID (default 20, OpenVMM's and Hyper-V's). */
  readonly virtualTimerPpi?: number;
  /** PMU overflow PPI (default 0x17, as OpenVMM). */
  readonly performanceMonitorsPpi?: number;
}

export interface WhpxPartitionOptions {
  /** Guest architecture; default: the host's (process.arch). */
  readonly arch?: abi.WhpxArch;
  /** Number of vCPUs (VP index = APIC id on x64). Default 1. */
  readonly vcpuCount?: number;
  /** Guest RAM regions (page-aligned); the gaps are MMIO space. */
  readonly memory: readonly { gpa: number; size: number }[];
  /** Synthetic processor features handed to the hypervisor (default abi.DEFAULT_SYNTHETIC_FEATURES). */
  readonly syntheticFeatures?: readonly abi.SyntheticFeatureName[];
  /** x64: MSRs the hypervisor implements that must exit anyway (MsrActionList, set before setup). */
  readonly userMsrs?: readonly number[];
  /** x64: CPUID leaves that must exit to TypeScript (CpuidExitList); the hypervisor answers all others. */
  readonly cpuidLeaves?: readonly number[];
  /** arm64 only. */
  readonly gic?: WhpxGicOptions;
  readonly logger?: Logger;
}

const PAGE = 4096;
const GIC_DEFAULTS = {
  distributorBase: 0xffff_0000n,
  redistributorBase: 0xeffe_e000n,
  redistributorStride: 0x2_0000n,
  lpiIntIdBits: 0,
  virtualTimerPpi: 20,
  performanceMonitorsPpi: 0x17,
};

/** WhpxPartition.create's options: the common ones, then the WHPX ones (before any DLL call). */
function checkWhpxOptions(opts: WhpxPartitionOptions): void {
  const what = 'WhpxPartition.create: options';
  const o = checkCommonOptions(opts, 'WhpxPartition.create', 256);
  if (o['arch'] !== undefined && o['arch'] !== 'x64' && o['arch'] !== 'arm64') {
    throw new AccelUsageError(`${what}.arch must be 'x64' or 'arm64', not ${describeValue(o['arch'])}`);
  }
  optNames(o['syntheticFeatures'], `${what}.syntheticFeatures`, abi.SyntheticFeature);
  optU32List(o['cpuidLeaves'], `${what}.cpuidLeaves`);
  if (o['gic'] !== undefined) {
    const g = checkObject(o['gic'], `${what}.gic`);
    for (const k of ['distributorBase', 'redistributorBase', 'redistributorStride'] as const) {
      const v = g[k];
      if (v !== undefined && (typeof v !== 'bigint' || v < 0n || v >= 1n << 52n)) throw new AccelUsageError(`${what}.gic.${k} must be a bigint address below 2^52, not ${describeValue(v)}`);
    }
    if (g['lpiIntIdBits'] !== undefined) checkInt(g['lpiIntIdBits'], `${what}.gic.lpiIntIdBits`, 0, 32);
    for (const k of ['virtualTimerPpi', 'performanceMonitorsPpi'] as const) if (g[k] !== undefined) checkInt(g[k], `${what}.gic.${k}`, 16, 31);
  }
}

/** The checked HRESULT of one call. */
function check(call: string, hr: number): void {
  if (abi.failed(hr)) throw new WhpxCallError(call, hr);
}

class WhpxVcpu implements AccelVcpu {
  status: VcpuStatus = 'created';
  exits = 0;
  /** True while a handler for this vCPU's exit runs: register access is allowed then. */
  inHandler = false;
  /** SINTs this VP should report deliverable; `deliverabilityDirty` = not yet written to the VP. */
  sintMask = 0;
  deliverabilityDirty = false;

  constructor(
    readonly index: number,
    readonly exitContext: HostBuffer,
    private readonly owner: WhpxPartition,
  ) {}

  get parked(): boolean {
    return this.status !== 'running' || this.inHandler;
  }

  private checkParked(): void {
    if (!this.parked) throw new AccelUsageError(`vCPU ${this.index} is running: registers are accessible only while it is parked`);
  }

  private checkX64(): void {
    if (this.owner.arch !== 'x64') throw new AccelUsageError(`vCPU ${this.index} is arm64: use getArm64Registers()/readRegisters()`);
  }

  getRegisters(): Registers {
    this.checkParked();
    this.checkX64();
    return this.owner.readGeneralRegisters(this.index);
  }

  setRegisters(regs: Registers): void {
    checkRegisters(regs, `vCPU ${this.index}: setRegisters: registers`);
    this.checkParked();
    this.checkX64();
    this.owner.writeRegisters(this.index, REG_NAMES.map((n) => ({ name: abi.WHvX64Register[n], value: BigInt.asUintN(64, regs[n]) })));
  }

  getSpecialRegisters(): SpecialRegisters {
    this.checkParked();
    this.checkX64();
    return this.owner.readSpecialRegisters(this.index);
  }

  setSpecialRegisters(sregs: SpecialRegisters): void {
    checkSpecialRegisters(sregs, `vCPU ${this.index}: setSpecialRegisters: registers`);
    this.checkParked();
    this.checkX64();
    this.owner.writeSpecialRegisters(this.index, sregs);
  }

  /** Raw 64-bit register access by WHV_REGISTER_NAME (either architecture). */
  readRegisters(names: readonly number[]): bigint[] {
    this.checkParked();
    return this.owner.readRegisters64(this.index, names);
  }

  writeRegisters(writes: readonly RegisterWrite[]): void {
    this.checkParked();
    this.owner.writeRegisters(this.index, writes);
  }

  /** arm64: X0-X30, SP, PC, PSTATE. */
  getArm64Registers(): { x: bigint[]; sp: bigint; pc: bigint; pstate: bigint } {
    this.checkParked();
    const names = [...Array.from({ length: 31 }, (_, i) => abi.arm64X(i)), abi.WHvArm64RegisterSp, abi.WHvArm64RegisterPc, abi.WHvArm64RegisterPstate];
    const v = this.owner.readRegisters64(this.index, names);
    return { x: v.slice(0, 31), sp: v[31], pc: v[32], pstate: v[33] };
  }
}

export class WhpxPartition implements AccelPartition {
  readonly backend = 'whpx' as const;
  readonly arch: abi.WhpxArch;
  readonly memory: GuestMemory;
  readonly vcpus: readonly WhpxVcpu[];
  /** How vmbus reaches the guest: the hypervisor's SynIC through WHvPost.../WHvSignal... */
  readonly synic: OffloadedSynicPort;
  private readonly router: ExitRouter;
  private readonly logger: Logger;
  private readonly ram: HostBuffer[] = [];
  private readonly exitContextSize: number;
  private stopping = false;
  private closed = false;
  private running: Promise<VcpuOutcome[]> | undefined;

  private constructor(
    private readonly api: WhpxApi,
    private readonly handle: PartitionHandle,
    opts: WhpxPartitionOptions & { arch: abi.WhpxArch },
  ) {
    this.arch = opts.arch;
    this.logger = opts.logger ?? silentLogger;
    this.exitContextSize = abi.RUN_VP_EXIT_CONTEXT_SIZE[this.arch];
    const count = opts.vcpuCount ?? 1;
    this.configure(opts, count);
    check('WHvSetupPartition', api.setupPartition(handle));
    const vcpus: WhpxVcpu[] = [];
    this.vcpus = vcpus;
    try {
      this.memory = this.mapMemory(opts.memory);
      for (let i = 0; i < count; i++) vcpus.push(this.createVp(i, opts.gic));
    } catch (e) {
      // create() deletes the partition; the VPs and buffers are ours to release.
      for (const v of vcpus) api.deleteVirtualProcessor(handle, v.index);
      for (const b of [...this.ram, ...vcpus.map((v) => v.exitContext)]) api.free(b);
      throw e;
    }
    this.router = new ExitRouter(this.memory.regions, this.logger);
    this.synic = new OffloadedSynicPort(this.synicOps(), { vpCount: count, logger: this.logger });
  }

  /** Opens WHP and builds a partition; `api` replaces the koffi/DLL layer (tests). */
  static create(opts: WhpxPartitionOptions, api?: WhpxApi): WhpxPartition {
    checkWhpxOptions(opts);
    const a = api ?? loadWhpxApi();
    const arch = opts.arch ?? (process.arch === 'arm64' ? 'arm64' : 'x64');
    checkCapabilities(a, arch, opts);
    const created = a.createPartition();
    check('WHvCreatePartition', created.hr);
    try {
      return new WhpxPartition(a, created.handle, { ...opts, arch });
    } catch (e) {
      a.deletePartition(created.handle);
      throw e;
    }
  }

  // --- setup ----------------------------------------------------------------------------

  private setProperty(name: keyof typeof abi.WHvPartitionPropertyCode, value: Uint8Array): void {
    check(`WHvSetPartitionProperty(${name})`, this.api.setPartitionProperty(this.handle, abi.WHvPartitionPropertyCode[name], value));
  }

  /** Every property WHP needs before WHvSetupPartition, in OpenVMM's order (ExtendedVmExits last). */
  private configure(opts: WhpxPartitionOptions, count: number): void {
    this.setProperty('ProcessorCount', u32Bytes(count));
    if (this.arch === 'x64') this.setProperty('LocalApicEmulationMode', u32Bytes(abi.LocalApicEmulationMode.X2Apic));
    else this.setProperty('Arm64IcParameters', gicParameters(opts.gic));
    const bank0 = abi.syntheticFeatureMask(opts.syntheticFeatures ?? abi.DEFAULT_SYNTHETIC_FEATURES, this.arch);
    this.setProperty('SyntheticProcessorFeaturesBanks', abi.WhvSyntheticProcessorFeaturesBanks.encodeNew({ banksCount: 1, bank0 }));
    if (this.arch === 'x64') this.configureX64Exits(opts);
    this.setProperty('ExtendedVmExits', u64Bytes(extendedExits(this.arch, opts)));
  }

  private configureX64Exits(opts: WhpxPartitionOptions): void {
    // MSRs the hypervisor does not implement exit instead of raising #GP in the guest.
    this.setProperty('X64MsrExitBitmap', u64Bytes(1n << BigInt(abi.X64MsrExitBitmap.UnhandledMsrs)));
    const msrs = opts.userMsrs ?? [];
    if (msrs.length > 0) {
      const list = new Uint8Array(msrs.length * abi.WhvMsrActionEntry.size);
      msrs.forEach((index, i) => abi.WhvMsrActionEntry.encode({ index, readAction: abi.MsrAction.Exit, writeAction: abi.MsrAction.Exit }, list, i * abi.WhvMsrActionEntry.size));
      this.setProperty('MsrActionList', list);
    }
    const leaves = opts.cpuidLeaves ?? [];
    if (leaves.length > 0) this.setProperty('CpuidExitList', Uint8Array.from(new Uint8Array(Uint32Array.from(leaves).buffer)));
  }

  private mapMemory(regions: readonly { gpa: number; size: number }[]): GuestMemory {
    const flags = abi.WHvMapGpaRangeFlag.Read | abi.WHvMapGpaRangeFlag.Write | abi.WHvMapGpaRangeFlag.Execute;
    const specs = regions.map((r, i) => {
      if (r.gpa % PAGE !== 0 || r.size % PAGE !== 0 || r.size <= 0) {
        throw new MemoryMapError(`RAM region ${i} (gpa 0x${r.gpa.toString(16)}, size 0x${r.size.toString(16)}) is not page-aligned`);
      }
      return ramChunks(r).map(({ offset, size }) => {
        const gpa = r.gpa + offset;
        const buf = this.api.allocate(size);
        this.ram.push(buf);
        check(`WHvMapGpaRange(0x${gpa.toString(16)})`, this.api.mapGpaRange(this.handle, buf.address, BigInt(gpa), BigInt(size), flags));
        return { gpa, size, buffer: buf.bytes.buffer, byteOffset: buf.bytes.byteOffset };
      });
    }).flat();
    try {
      return new GuestMemory(specs);
    } catch (e) {
      throw new MemoryMapError(`bad guest memory map: ${(e as Error).message}`, { cause: e });
    }
  }

  private createVp(index: number, gic: WhpxGicOptions | undefined): WhpxVcpu {
    check(`WHvCreateVirtualProcessor2(${index})`, this.api.createVirtualProcessor(this.handle, index));
    let exitContext: HostBuffer | undefined;
    try {
      exitContext = this.api.allocate(PAGE);
      if (this.arch === 'arm64') {
        // Every VP needs its redistributor before it runs; one contiguous GICR region.
        const g = { ...GIC_DEFAULTS, ...gic };
        this.writeRegisters(index, [{ name: abi.WHvArm64RegisterGicrBaseGpa, value: g.redistributorBase + BigInt(index) * g.redistributorStride }]);
      }
      return new WhpxVcpu(index, exitContext, this);
    } catch (e) {
      // Not in `vcpus` yet: the constructor's clean-up would miss this VP and its buffer.
      if (exitContext) this.api.free(exitContext);
      this.api.deleteVirtualProcessor(this.handle, index);
      throw e;
    }
  }

  /** The partition handle is deleted at close(): a DLL call with it afterwards is a use after free. */
  private checkOpen(call: string): void {
    if (this.closed) throw new AccelUsageError(`${call}: the partition is closed`);
  }

  // --- registers --------------------------------------------------------------------------

  readRegisterValues(vp: number, names: readonly number[]): Uint8Array {
    this.checkOpen('WHvGetVirtualProcessorRegisters');
    const values = new Uint8Array(names.length * abi.WHV_REGISTER_VALUE_SIZE);
    check('WHvGetVirtualProcessorRegisters', this.api.getVirtualProcessorRegisters(this.handle, vp, Uint32Array.from(names), values));
    return values;
  }

  readRegisters64(vp: number, names: readonly number[]): bigint[] {
    const out = this.readRegisterValues(vp, names);
    const view = new DataView(out.buffer);
    return names.map((_, i) => view.getBigUint64(i * abi.WHV_REGISTER_VALUE_SIZE, true));
  }

  /** One WHvSetVirtualProcessorRegisters for all of `writes`. */
  writeRegisters(vp: number, writes: readonly RegisterWrite[]): void {
    if (writes.length === 0) return;
    this.checkOpen('WHvSetVirtualProcessorRegisters');
    const values = new Uint8Array(writes.length * abi.WHV_REGISTER_VALUE_SIZE);
    const view = new DataView(values.buffer);
    writes.forEach((w, i) => {
      view.setBigUint64(i * 16, BigInt.asUintN(64, w.value), true);
      view.setBigUint64(i * 16 + 8, BigInt.asUintN(64, w.high ?? 0n), true);
    });
    check('WHvSetVirtualProcessorRegisters', this.api.setVirtualProcessorRegisters(this.handle, vp, Uint32Array.from(writes, (w) => w.name), values));
  }

  readGeneralRegisters(vp: number): Registers {
    const values = this.readRegisters64(vp, REG_NAMES.map((n) => abi.WHvX64Register[n]));
    const r = {} as Record<keyof Registers, bigint>;
    REG_NAMES.forEach((n, i) => (r[n] = values[i]));
    return r;
  }

  readSpecialRegisters(vp: number): SpecialRegisters {
    const segs = Object.entries(abi.WHvX64SegmentRegister);
    const controls = [abi.WHvX64RegisterCr0, abi.WHvX64RegisterCr2, abi.WHvX64RegisterCr3, abi.WHvX64RegisterCr4, abi.WHvX64RegisterCr8, abi.WHvX64RegisterEfer, abi.WHvX64RegisterApicBase];
    const out = this.readRegisterValues(vp, [...segs.map(([, n]) => n), abi.WHvX64RegisterGdtr, abi.WHvX64RegisterIdtr, ...controls]);
    const at = (i: number): Uint8Array => out.subarray(i * 16, (i + 1) * 16);
    const view = new DataView(out.buffer);
    const result: Record<string, unknown> = {};
    segs.forEach(([name], i) => (result[name] = segmentFromWhp(at(i))));
    result['gdt'] = tableFromWhp(at(segs.length));
    result['idt'] = tableFromWhp(at(segs.length + 1));
    ['cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer', 'apicBase'].forEach((n, i) => (result[n] = view.getBigUint64((segs.length + 2 + i) * 16, true)));
    return result as unknown as SpecialRegisters;
  }

  writeSpecialRegisters(vp: number, s: SpecialRegisters): void {
    const writes: RegisterWrite[] = [];
    for (const [name, reg] of Object.entries(abi.WHvX64SegmentRegister)) writes.push({ name: reg, ...segmentToWhp(s[name as keyof typeof abi.WHvX64SegmentRegister]) });
    writes.push({ name: abi.WHvX64RegisterGdtr, ...tableToWhp(s.gdt) }, { name: abi.WHvX64RegisterIdtr, ...tableToWhp(s.idt) });
    const controls: [number, bigint][] = [
      [abi.WHvX64RegisterCr0, s.cr0], [abi.WHvX64RegisterCr2, s.cr2], [abi.WHvX64RegisterCr3, s.cr3], [abi.WHvX64RegisterCr4, s.cr4],
      [abi.WHvX64RegisterCr8, s.cr8], [abi.WHvX64RegisterEfer, s.efer], [abi.WHvX64RegisterApicBase, s.apicBase],
    ];
    for (const [name, value] of controls) writes.push({ name, value });
    this.writeRegisters(vp, writes);
  }

  // --- SynIC ------------------------------------------------------------------------------

  private synicOps(): OffloadedSynicOps {
    return {
      post: (vp, sint, message) => this.postMessage(vp, sint, message),
      signal: (vp, sint, flag) => this.signalEvent(vp, sint, flag),
      requestDeliverable: (vp, mask) => this.requestDeliverable(vp, mask),
    };
  }

  private postMessage(vp: number, sint: number, message: Uint8Array): 'ok' | 'busy' {
    this.checkOpen('WHvPostVirtualProcessorSynicMessage');
    const hr = this.api.postVirtualProcessorSynicMessage(this.handle, vp, sint, message);
    if (!abi.failed(hr)) return 'ok';
    if (abi.hvStatusOf(hr) !== abi.HV_STATUS_OBJECT_IN_USE) {
      // Kept queued rather than lost: a SINT the guest has not enabled yet fails this way too.
      this.logger.warn('WHvPostVirtualProcessorSynicMessage failed; message kept for retry', { vp, sint, hresult: abi.formatHresult(hr) });
    }
    return 'busy';
  }

  private signalEvent(vp: number, sint: number, flag: number): boolean {
    this.checkOpen('WHvSignalVirtualProcessorSynicEvent');
    const params = abi.WhvSynicEventParameters.encodeNew({ vpIndex: vp, targetSint: sint, targetVtl: 0, flagNumber: flag });
    const r = this.api.signalVirtualProcessorSynicEvent(this.handle, params);
    if (abi.failed(r.hr)) {
      // ERROR_HV_INVALID_SYNIC_STATE: the guest has not configured the SINT; nothing to signal.
      this.logger.warn('WHvSignalVirtualProcessorSynicEvent failed', { vp, sint, flag, hresult: abi.formatHresult(r.hr) });
      return false;
    }
    return r.newlySignaled;
  }

  /**
   * Keeps `mask` in vp's DeliverabilityNotifications register. A parked VP gets the write at
   * once; a VP inside WHvRunVirtualProcessor is canceled and gets it before its next run, so
   * the register is never written under a running VP.
   */
  private requestDeliverable(vp: number, mask: number): void {
    const v = this.vcpus[vp];
    v.sintMask = mask & 0xffff;
    if (v.parked) this.writeDeliverability(v);
    else {
      v.deliverabilityDirty = true;
      this.api.cancelRunVirtualProcessor(this.handle, vp);
    }
  }

  private writeDeliverability(v: WhpxVcpu): void {
    v.deliverabilityDirty = false;
    this.writeRegisters(v.index, [{ name: abi.deliverabilityRegister(this.arch), value: BigInt(v.sintMask) << abi.DELIVERABILITY_SINT_SHIFT }]);
  }

  // --- AccelPartition --------------------------------------------------------------------

  addIoDevice(device: IoDevice): void {
    this.checkOpen('addIoDevice');
    this.router.addIoDevice(device);
  }

  addMmioDevice(device: MmioDevice): void {
    this.checkOpen('addMmioDevice');
    this.router.addMmioDevice(device);
  }

  /** MSRs the hypervisor does not implement exit (UnhandledMsrs); ones it does need `userMsrs` at create time. */
  addMsrDevice(device: MsrDevice): void {
    this.checkOpen('addMsrDevice');
    this.router.addMsrDevice(device);
  }

  onHypercall(handler: ExitHandler<HypercallExit>): void {
    this.checkOpen('onHypercall');
    this.router.onHypercall(handler);
  }

  onExit(handler: ExitHandler): void {
    this.checkOpen('onExit');
    this.router.onExit(handler);
  }

  /** x64: fixed, edge, physical destination = APIC id `vp`. arm64: assert GIC INTID `vector` (PPI 16-31 on `vp`, SPI 32-1019). */
  interrupt(vp: number, vector: number): boolean {
    this.checkOpen('WHvRequestInterrupt');
    if (!Number.isInteger(vp) || vp < 0 || vp >= this.vcpus.length) throw new AccelUsageError(`no vCPU ${vp}`);
    const control = this.arch === 'x64' ? x64InterruptControl(vp, vector) : arm64InterruptControl(vp, vector);
    return !abi.failed(this.api.requestInterrupt(this.handle, control));
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
    for (const v of this.vcpus) if (v.status === 'running') this.api.cancelRunVirtualProcessor(this.handle, v.index);
  }

  /** Stops the vCPUs, then deletes them and the partition once their runs have returned. */
  close(): void {
    if (this.closed) return;
    this.stop();
    this.closed = true;
    const release = (): void => {
      for (const v of this.vcpus) this.api.deleteVirtualProcessor(this.handle, v.index);
      this.api.deletePartition(this.handle);
      for (const v of this.vcpus) this.api.free(v.exitContext);
    };
    if (this.running) void this.running.then(release, release);
    else release();
    // Guest RAM stays allocated: GuestMemory views handed out must stay valid (as on KVM and MSHV).
  }

  // --- run loop ----------------------------------------------------------------------------

  private async runVcpu(v: WhpxVcpu): Promise<VcpuOutcome> {
    v.status = 'running';
    const done = (cause: VcpuOutcome['cause'], error?: Error): VcpuOutcome => {
      v.status = 'stopped';
      return { vp: v.index, cause, error, exits: v.exits };
    };
    const decode = this.arch === 'x64' ? decodeX64Exit : decodeArm64Exit;
    while (!this.stopping) {
      try {
        if (v.deliverabilityDirty) this.writeDeliverability(v);
        const hr = await this.api.runVirtualProcessor(this.handle, v.index, v.exitContext, this.exitContextSize);
        check('WHvRunVirtualProcessor', hr);
      } catch (e) {
        return done('host-error', e as Error);
      }
      v.exits++;
      try {
        const stop = await this.handleEvent(v, decode(v.index, v.exitContext.bytes.subarray(0, this.exitContextSize)));
        if (stop) return done('handler-stop');
      } catch (e) {
        return done('host-error', e as Error);
      }
    }
    return done('stop-requested');
  }

  /** Handles one decoded exit; true when the vCPU must stop. */
  private async handleEvent(v: WhpxVcpu, ev: WhpxEvent): Promise<boolean> {
    switch (ev.kind) {
      case 'canceled':
        // stop() (the loop sees `stopping`) or a deliverability update (applied before the next run).
        return false;
      case 'ignored':
        this.logger.debug('WHPX exit ignored', { vp: v.index, what: ev.what, reason: ev.reason, detail: ev.detail });
        return false;
      case 'sint-deliverable':
        // The notification is one-shot: the hypervisor cleared the bits it reported.
        v.sintMask &= ~ev.sints;
        this.synic.onSintDeliverable(v.index, ev.sints);
        return false;
      case 'mmio-x64':
        return this.handleMmioX64(v, ev);
      case 'mmio-arm64':
        return this.handleMmioArm64(v, ev);
      case 'exit':
        return this.handleExit(v, ev);
    }
  }

  private async handleExit(v: WhpxVcpu, ev: Extract<WhpxEvent, { kind: 'exit' }>): Promise<boolean> {
    const response = await this.dispatch(v, ev.exit);
    const { exit } = ev;
    if (exit.kind === 'shutdown' || exit.kind === 'unrecoverable') {
      if (response?.stop === false) return false;
      throw fatalError({ ...exit, registers: this.tryRegisters(v.index) });
    }
    if (ev.completion) {
      const writes = ev.completion.arch === 'x64' ? completeX64(exit, ev.completion, response) : completeArm64(exit, ev.completion, response);
      this.writeRegisters(v.index, writes);
    }
    return response?.stop === true;
  }

  private async handleMmioX64(v: WhpxVcpu, ev: Extract<WhpxEvent, { kind: 'mmio-x64' }>): Promise<boolean> {
    // The exit context's RIP is authoritative for the faulting instruction.
    const regs = { ...this.readGeneralRegisters(v.index), rip: ev.context.rip };
    const { instruction } = ev;
    const exit: MmioExit = { kind: 'mmio', vp: v.index, gpa: ev.gpa, size: instruction.size, isWrite: instruction.isWrite, data: instruction.isWrite ? mmioStoreValue(instruction, regs) : 0n };
    const response = await this.dispatch(v, exit);
    this.writeRegisters(v.index, completeX64Mmio(instruction, regs, response));
    return response?.stop === true;
  }

  private async handleMmioArm64(v: WhpxVcpu, ev: Extract<WhpxEvent, { kind: 'mmio-arm64' }>): Promise<boolean> {
    const { access } = ev;
    const source = access.isWrite && access.srt !== 31 ? this.readRegisters64(v.index, [abi.arm64X(access.srt)])[0] : 0n;
    const exit: MmioExit = { kind: 'mmio', vp: v.index, gpa: ev.gpa, size: access.size, isWrite: access.isWrite, data: access.isWrite ? arm64StoreValue(access, source) : 0n };
    const response = await this.dispatch(v, exit);
    this.writeRegisters(v.index, completeArm64Mmio(access, ev.pc, response));
    return response?.stop === true;
  }

  /** Registers for a fatal-exit report (x64), or undefined if they cannot be read. */
  private tryRegisters(vp: number): Registers | undefined {
    if (this.arch !== 'x64') return undefined;
    try {
      return this.readGeneralRegisters(vp);
    } catch {
      return undefined;
    }
  }

  /** Routes an exit with register access open for the handler; a throwing handler becomes ExitHandlerError. */
  private async dispatch(v: WhpxVcpu, exit: Exit): Promise<ExitResponse | void> {
    v.inHandler = true;
    try {
      const response = await this.router.dispatch(exit);
      checkExitResponse(exit, response);  // NaN, 1.5 or 2^70 fail the handler instead of reaching the registers
      return response;
    } catch (err) {
      throw new ExitHandlerError(`vCPU ${v.index}: handler for ${exit.kind} failed: ${(err as Error)?.message ?? String(err)}`, v.index, { cause: err });
    } finally {
      v.inHandler = false;
    }
  }
}

// --- capability checks ------------------------------------------------------------------------

function capabilityU64(api: WhpxApi, code: number, size = 8, offset = 0): bigint | undefined {
  const buf = new Uint8Array(size);
  const r = api.getCapability(code, buf);
  if (abi.failed(r.hr)) return undefined;
  return new DataView(buf.buffer).getBigUint64(offset, true);
}

/** Fails early, with a message that says what to fix, when the host cannot run this partition. */
function checkCapabilities(api: WhpxApi, arch: abi.WhpxArch, opts: WhpxPartitionOptions): void {
  const present = new Uint8Array(4);
  const r = api.getCapability(abi.WHvCapabilityCode.HypervisorPresent, present);
  if (abi.failed(r.hr) || new DataView(present.buffer).getUint32(0, true) === 0) {
    throw new HypervisorUnavailableError(
      `${WHP_DLL} is loaded but reports no hypervisor (WHvCapabilityCodeHypervisorPresent = FALSE): the Windows hypervisor is not running. ` +
        `Needs ${WHP_REQUIREMENTS}, hardware virtualization enabled in firmware, and a reboot after enabling the feature.`,
    );
  }
  const features = capabilityU64(api, abi.WHvCapabilityCode.Features) ?? 0n;
  if (arch === 'arm64' && (features & abi.CAPABILITY_FEATURE_ARM64_SUPPORT) === 0n) {
    throw new MissingCapabilityError(`${WHP_DLL}: no Arm64Support in WHvCapabilityCodeFeatures: arm64 WHP needs Windows 11 24H2 build 26100.3915 or later`);
  }
  if (arch === 'x64' && (features & abi.CAPABILITY_FEATURE_LOCAL_APIC_EMULATION) === 0n) {
    throw new MissingCapabilityError(`${WHP_DLL}: no LocalApicEmulation in WHvCapabilityCodeFeatures (needs Windows 10 1809+)`);
  }
  requireBits('extended VM exits', capabilityU64(api, abi.WHvCapabilityCode.ExtendedVmExits) ?? 0n, extendedExits(arch, opts), (m) => bitNames(abi.ExtendedVmExit, m));
  const synthetic = capabilityU64(api, abi.WHvCapabilityCode.SyntheticProcessorFeaturesBanks, abi.WhvSyntheticProcessorFeaturesBanks.size, abi.WhvSyntheticProcessorFeaturesBanks.offsetOf.bank0) ?? 0n;
  requireBits('synthetic processor features', synthetic, abi.syntheticFeatureMask(opts.syntheticFeatures ?? abi.DEFAULT_SYNTHETIC_FEATURES, arch), abi.syntheticFeatureNames);
}

function requireBits(what: string, supported: bigint, wanted: bigint, names: (mask: bigint) => string[]): void {
  const missing = wanted & ~supported;
  if (missing !== 0n) throw new MissingCapabilityError(`${WHP_DLL}: ${what} not supported by this host: ${names(missing).join(', ')}`);
}

function bitNames(table: Record<string, number>, mask: bigint): string[] {
  return Object.entries(table).filter(([, bit]) => (mask >> BigInt(bit)) & 1n).map(([n]) => n);
}

/**
 * x64: MSR exits, hypercall exits (HvPostMessage and everything the hypervisor does not
 * handle), UnknownSynicConnection (HvSignalEvent to a connection nobody registered), CPUID
 * exits when leaves are listed. arm64: hypercall exits only: OpenVMM leaves
 * UnknownSynicConnection off there ("TODO-aarch64: hypervisor bug").
 */
export function extendedExits(arch: abi.WhpxArch, opts: Pick<WhpxPartitionOptions, 'cpuidLeaves'>): bigint {
  const bit = (name: keyof typeof abi.ExtendedVmExit): bigint => 1n << BigInt(abi.ExtendedVmExit[name]);
  if (arch === 'arm64') return bit('HypercallExit');
  let mask = bit('X64MsrExit') | bit('HypercallExit') | bit('UnknownSynicConnection');
  if ((opts.cpuidLeaves ?? []).length > 0) mask |= bit('X64CpuidExit');
  return mask;
}

// --- encoders ---------------------------------------------------------------------------------

function u32Bytes(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0, true);
  return b;
}

function u64Bytes(v: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt.asUintN(64, v), true);
  return b;
}

export function gicParameters(gic: WhpxGicOptions | undefined): Uint8Array {
  const g = { ...GIC_DEFAULTS, ...gic };
  return abi.WhvArm64IcParameters.encodeNew({
    emulationMode: abi.ARM64_IC_EMULATION_GICV3,
    gicdBaseAddress: g.distributorBase,
    gitsTranslaterBaseAddress: 0n, // no ITS: WHP does not implement one usable for MSIs
    gicLpiIntIdBits: g.lpiIntIdBits,
    gicPpiOverflowInterruptFromCntv: g.virtualTimerPpi,
    gicPpiPerformanceMonitorsInterrupt: g.performanceMonitorsPpi,
  });
}

export function x64InterruptControl(vp: number, vector: number): Uint8Array {
  if (!Number.isInteger(vector) || vector < 16 || vector > 255) throw new AccelUsageError(`vector ${vector} is not 16..255`);
  const control = BigInt(abi.X64_INTERRUPT_TYPE_FIXED) | (BigInt(abi.X64_DESTINATION_PHYSICAL) << 8n) | (BigInt(abi.X64_TRIGGER_EDGE) << 12n);
  return abi.WhvInterruptControlX64.encodeNew({ control, destination: vp, vector });
}

/** Edge semantics: asserted once (an MSI through a v2m frame is an edge on an SPI); level lines would also need a deassert. */
export function arm64InterruptControl(vp: number, intid: number): Uint8Array {
  if (!Number.isInteger(intid) || intid < 16 || intid > 1019) throw new AccelUsageError(`GIC INTID ${intid} is not a PPI or SPI (16..1019)`);
  return abi.WhvInterruptControlArm64.encodeNew({
    interruptControl: abi.ARM64_INTERRUPT_TYPE_FIXED | abi.ARM64_INTERRUPT_ASSERTED,
    destinationAddress: BigInt(vp),
    requestedVector: intid,
  });
}

/** WHV_X64_SEGMENT_REGISTER -> Segment (attributes: type 0-3, S 4, DPL 5-6, P 7, AVL 12, L 13, D/B 14, G 15). */
function segmentFromWhp(b: Uint8Array): Segment {
  const s = abi.WhvX64SegmentRegister.decode(b);
  const a = s.attributes;
  const bit = (n: number): boolean => ((a >>> n) & 1) === 1;
  return { base: s.base, limit: s.limit, selector: s.selector, type: a & 0xf, s: bit(4), dpl: (a >>> 5) & 3, present: bit(7), avl: bit(12), l: bit(13), db: bit(14), g: bit(15), unusable: !bit(7) };
}

function segmentToWhp(s: Segment): { value: bigint; high: bigint } {
  const b = (v: boolean, n: number): number => (v ? 1 << n : 0);
  const attributes = (s.type & 0xf) | b(s.s, 4) | ((s.dpl & 3) << 5) | b(s.present && !s.unusable, 7) | b(s.avl, 12) | b(s.l, 13) | b(s.db, 14) | b(s.g, 15);
  const bytes = abi.WhvX64SegmentRegister.encodeNew({ base: BigInt.asUintN(64, s.base), limit: s.limit >>> 0, selector: s.selector & 0xffff, attributes });
  const view = new DataView(bytes.buffer);
  return { value: view.getBigUint64(0, true), high: view.getBigUint64(8, true) };
}

function tableFromWhp(b: Uint8Array): DescriptorTable {
  const t = abi.WhvX64TableRegister.decode(b);
  return { limit: t.limit, base: t.base };
}

function tableToWhp(t: DescriptorTable): { value: bigint; high: bigint } {
  return { value: BigInt(t.limit & 0xffff) << 48n, high: BigInt.asUintN(64, t.base) };
}
