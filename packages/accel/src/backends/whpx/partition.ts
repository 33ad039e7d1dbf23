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
import type { GuestMemory, RamRegionSpec } from '@hvemu/memory';
import { checkCommonOptions, checkObject, checkInt, describeValue, optNames, optU32List } from '../../validate.js';
import { AccelUsageError, HypervisorUnavailableError, MissingCapabilityError } from '../../errors.js';
import { ExitRouter } from '../../exit-router.js';
import type { MmioExit } from '../../exits.js';
import { HvPartition, HvVcpu, type RunOnceResult } from '../hv-common/partition.js';
import { encodeRegisterValues, HV_REGISTER_VALUE_SIZE, type RegisterWrite } from '../hv-common/x64.js';
import { OffloadedSynicPort, type OffloadedSynicOps } from '../offloaded-synic.js';
import * as abi from './abi.js';
import { loadWhpxApi, WHP_DLL, WHP_REQUIREMENTS, WhpxCallError, type HostBuffer, type PartitionHandle, type WhpxApi } from './api.js';
import { arm64StoreValue, completeArm64, completeArm64Mmio, completeX64, WHPX_X64_NAMES } from './completion.js';
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
      if (v !== undefined && (typeof v !== 'bigint' || v < 0n || v >= 1n << 52n))
        throw new AccelUsageError(`${what}.gic.${k} must be a bigint address below 2^52, not ${describeValue(v)}`);
    }
    if (g['lpiIntIdBits'] !== undefined) checkInt(g['lpiIntIdBits'], `${what}.gic.lpiIntIdBits`, 0, 32);
    for (const k of ['virtualTimerPpi', 'performanceMonitorsPpi'] as const)
      if (g[k] !== undefined) checkInt(g[k], `${what}.gic.${k}`, 16, 31);
  }
}

/** The checked HRESULT of one call. */
function check(call: string, hr: number): void {
  if (abi.failed(hr)) throw new WhpxCallError(call, hr);
}

class WhpxVcpu extends HvVcpu {
  /** The SINT mask is not yet written to the VP (it was running when it changed). */
  deliverabilityDirty = false;

  constructor(
    index: number,
    protected override readonly owner: WhpxPartition,
    readonly exitContext: HostBuffer,
  ) {
    super(index, owner);
  }

  protected override checkX64(): void {
    if (this.owner.arch !== 'x64') throw new AccelUsageError(`vCPU ${this.index} is arm64: use getArm64Registers()/readRegisters()`);
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
    const names = [
      ...Array.from({ length: 31 }, (_, i) => abi.arm64X(i)),
      abi.WHvArm64RegisterSp,
      abi.WHvArm64RegisterPc,
      abi.WHvArm64RegisterPstate,
    ];
    const v = this.owner.readRegisters64(this.index, names);
    return { x: v.slice(0, 31), sp: v[31], pc: v[32], pstate: v[33] };
  }
}

export class WhpxPartition extends HvPartition<WhpxVcpu> {
  readonly backend = 'whpx' as const;
  readonly x64Names = WHPX_X64_NAMES;
  readonly arch: abi.WhpxArch;
  readonly memory: GuestMemory;
  readonly vcpus: readonly WhpxVcpu[];
  /** How vmbus reaches the guest: the hypervisor's SynIC through WHvPost.../WHvSignal... */
  readonly synic: OffloadedSynicPort;
  protected readonly router: ExitRouter;
  private readonly ram: HostBuffer[] = [];
  private readonly exitContextSize: number;

  private constructor(
    private readonly api: WhpxApi,
    private readonly handle: PartitionHandle,
    opts: WhpxPartitionOptions & { arch: abi.WhpxArch },
  ) {
    super(opts.logger ?? silentLogger);
    this.arch = opts.arch;
    this.exitContextSize = abi.RUN_VP_EXIT_CONTEXT_SIZE[this.arch];
    const count = opts.vcpuCount ?? 1;
    this.configure(opts, count);
    check('WHvSetupPartition', api.setupPartition(handle));
    const vcpus: WhpxVcpu[] = [];
    this.vcpus = vcpus;
    try {
      this.memory = this.mapInitialRam(opts.memory);
      for (let i = 0; i < count; i++) vcpus.push(this.createVp(i, opts.gic));
    } catch (e) {
      // create() deletes the partition; the VPs and buffers are ours to release.
      for (const v of vcpus) api.deleteVirtualProcessor(handle, v.index);
      for (const b of [...this.ram, ...vcpus.map((v) => v.exitContext)]) api.free(b);
      throw e;
    }
    this.router = new ExitRouter(this.memory, this.logger);
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
      msrs.forEach((index, i) =>
        abi.WhvMsrActionEntry.encode(
          { index, readAction: abi.MsrAction.Exit, writeAction: abi.MsrAction.Exit },
          list,
          i * abi.WhvMsrActionEntry.size,
        ),
      );
      this.setProperty('MsrActionList', list);
    }
    const leaves = opts.cpuidLeaves ?? [];
    if (leaves.length > 0) this.setProperty('CpuidExitList', Uint8Array.from(new Uint8Array(Uint32Array.from(leaves).buffer)));
  }

  protected mapChunk(gpa: number, size: number): RamRegionSpec {
    const flags = abi.WHvMapGpaRangeFlag.Read | abi.WHvMapGpaRangeFlag.Write | abi.WHvMapGpaRangeFlag.Execute;
    const buf = this.api.allocate(size);
    this.ram.push(buf);
    check(`WHvMapGpaRange(0x${gpa.toString(16)})`, this.api.mapGpaRange(this.handle, buf.address, BigInt(gpa), BigInt(size), flags));
    return { gpa, size, buffer: buf.bytes.buffer, byteOffset: buf.bytes.byteOffset };
  }

  protected unmapChunk(gpa: number, size: number): void {
    check(`WHvUnmapGpaRange(0x${gpa.toString(16)})`, this.api.unmapGpaRange(this.handle, BigInt(gpa), BigInt(size)));
  }

  private createVp(index: number, gic: WhpxGicOptions | undefined): WhpxVcpu {
    check(`WHvCreateVirtualProcessor2(${index})`, this.api.createVirtualProcessor(this.handle, index));
    let exitContext: HostBuffer | undefined;
    try {
      exitContext = this.api.allocate(PAGE);
      if (this.arch === 'arm64') {
        // Every VP needs its redistributor before it runs; one contiguous GICR region.
        const g = { ...GIC_DEFAULTS, ...gic };
        this.writeRegisters(index, [
          { name: abi.WHvArm64RegisterGicrBaseGpa, value: g.redistributorBase + BigInt(index) * g.redistributorStride },
        ]);
      }
      return new WhpxVcpu(index, this, exitContext);
    } catch (e) {
      // Not in `vcpus` yet: the constructor's clean-up would miss this VP and its buffer.
      if (exitContext) this.api.free(exitContext);
      this.api.deleteVirtualProcessor(this.handle, index);
      throw e;
    }
  }

  // --- registers --------------------------------------------------------------------------

  /** The partition handle is deleted at close(): a DLL call with it afterwards is a use after free (checkOpen). */
  readRegisterValues(vp: number, names: readonly number[]): Uint8Array {
    this.checkOpen('WHvGetVirtualProcessorRegisters');
    const values = new Uint8Array(names.length * HV_REGISTER_VALUE_SIZE);
    check('WHvGetVirtualProcessorRegisters', this.api.getVirtualProcessorRegisters(this.handle, vp, Uint32Array.from(names), values));
    return values;
  }

  /** One WHvSetVirtualProcessorRegisters for all of `writes`. */
  writeRegisters(vp: number, writes: readonly RegisterWrite[]): void {
    if (writes.length === 0) return;
    this.checkOpen('WHvSetVirtualProcessorRegisters');
    check(
      'WHvSetVirtualProcessorRegisters',
      this.api.setVirtualProcessorRegisters(
        this.handle,
        vp,
        Uint32Array.from(writes, (w) => w.name),
        encodeRegisterValues(writes),
      ),
    );
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
    this.writeRegisters(v.index, [
      { name: abi.deliverabilityRegister(this.arch), value: BigInt(v.sintMask) << abi.DELIVERABILITY_SINT_SHIFT },
    ]);
  }

  // --- AccelPartition --------------------------------------------------------------------
  // addMsrDevice (RoutedPartition's): MSRs the hypervisor does not implement exit (UnhandledMsrs); ones it does need `userMsrs` at create time.

  /** x64: fixed, edge, physical destination = APIC id `vp`. arm64: assert GIC INTID `vector` (PPI 16-31 on `vp`, SPI 32-1019). */
  interrupt(vp: number, vector: number): boolean {
    this.checkOpen('WHvRequestInterrupt');
    this.checkVp(vp);
    const control = this.arch === 'x64' ? x64InterruptControl(vp, vector) : arm64InterruptControl(vp, vector);
    return !abi.failed(this.api.requestInterrupt(this.handle, control));
  }

  /** WHvCancelRunVirtualProcessor, which WHP exists for. */
  protected kick(v: WhpxVcpu): void {
    this.api.cancelRunVirtualProcessor(this.handle, v.index);
  }

  /** Deletes the VPs and the partition once their runs have returned (guest RAM stays allocated). */
  protected release(): void {
    for (const v of this.vcpus) this.api.deleteVirtualProcessor(this.handle, v.index);
    this.api.deletePartition(this.handle);
    for (const v of this.vcpus) this.api.free(v.exitContext);
  }

  protected override get isX64(): boolean {
    return this.arch === 'x64';
  }

  // --- run loop ----------------------------------------------------------------------------

  /** One WHvRunVirtualProcessor; a SINT mask that changed while the VP ran is written first. */
  protected async runOnce(v: WhpxVcpu): Promise<RunOnceResult> {
    if (v.deliverabilityDirty) this.writeDeliverability(v);
    check('WHvRunVirtualProcessor', await this.api.runVirtualProcessor(this.handle, v.index, v.exitContext, this.exitContextSize));
    return 'exit';
  }

  protected handleRun(v: WhpxVcpu): Promise<boolean> {
    const decode = this.arch === 'x64' ? decodeX64Exit : decodeArm64Exit;
    return this.handleEvent(v, decode(v.index, v.exitContext.bytes.subarray(0, this.exitContextSize)));
  }

  private async handleEvent(v: WhpxVcpu, ev: WhpxEvent): Promise<boolean> {
    switch (ev.kind) {
      case 'canceled':
        // stop() (the loop sees `stopping`) or a deliverability update (applied before the next run).
        return false;
      case 'ignored':
        this.logger.debug('WHPX exit ignored', { vp: v.index, what: ev.what, reason: ev.reason, detail: ev.detail });
        return false;
      case 'sint-deliverable':
        this.sintDeliverable(v, ev.sints);
        return false;
      case 'mmio-x64':
        return this.finishX64Mmio(v, ev.context, ev.gpa, ev.instruction);
      case 'mmio-arm64': {
        const { access } = ev;
        const source = access.isWrite && access.srt !== 31 ? this.readRegisters64(v.index, [abi.arm64X(access.srt)])[0] : 0n;
        const exit: MmioExit = {
          kind: 'mmio',
          vp: v.index,
          gpa: ev.gpa,
          size: access.size,
          isWrite: access.isWrite,
          data: access.isWrite ? arm64StoreValue(access, source) : 0n,
        };
        return this.finishExit(v, exit, (response) => completeArm64Mmio(access, ev.pc, response));
      }
      case 'exit': {
        const { exit, completion } = ev;
        return this.finishExit(v, exit, (response) => {
          if (!completion) return [];
          return completion.arch === 'x64' ? completeX64(exit, completion, response) : completeArm64(exit, completion, response);
        });
      }
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
    throw new MissingCapabilityError(
      `${WHP_DLL}: no Arm64Support in WHvCapabilityCodeFeatures: arm64 WHP needs Windows 11 24H2 build 26100.3915 or later`,
    );
  }
  if (arch === 'x64' && (features & abi.CAPABILITY_FEATURE_LOCAL_APIC_EMULATION) === 0n) {
    throw new MissingCapabilityError(`${WHP_DLL}: no LocalApicEmulation in WHvCapabilityCodeFeatures (needs Windows 10 1809+)`);
  }
  requireBits('extended VM exits', capabilityU64(api, abi.WHvCapabilityCode.ExtendedVmExits) ?? 0n, extendedExits(arch, opts), (m) =>
    bitNames(abi.ExtendedVmExit, m),
  );
  const synthetic =
    capabilityU64(
      api,
      abi.WHvCapabilityCode.SyntheticProcessorFeaturesBanks,
      abi.WhvSyntheticProcessorFeaturesBanks.size,
      abi.WhvSyntheticProcessorFeaturesBanks.offsetOf.bank0,
    ) ?? 0n;
  requireBits(
    'synthetic processor features',
    synthetic,
    abi.syntheticFeatureMask(opts.syntheticFeatures ?? abi.DEFAULT_SYNTHETIC_FEATURES, arch),
    abi.syntheticFeatureNames,
  );
}

function requireBits(what: string, supported: bigint, wanted: bigint, names: (mask: bigint) => string[]): void {
  const missing = wanted & ~supported;
  if (missing !== 0n) throw new MissingCapabilityError(`${WHP_DLL}: ${what} not supported by this host: ${names(missing).join(', ')}`);
}

function bitNames(table: Record<string, number>, mask: bigint): string[] {
  return Object.entries(table)
    .filter(([, bit]) => (mask >> BigInt(bit)) & 1n)
    .map(([n]) => n);
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
  const control =
    BigInt(abi.X64_INTERRUPT_TYPE_FIXED) | (BigInt(abi.X64_DESTINATION_PHYSICAL) << 8n) | (BigInt(abi.X64_TRIGGER_EDGE) << 12n);
  return abi.WhvInterruptControlX64.encodeNew({ control, destination: vp, vector });
}

/** Edge semantics: asserted once (an MSI through a v2m frame is an edge on an SPI); level lines would also need a deassert. */
export function arm64InterruptControl(vp: number, intid: number): Uint8Array {
  if (!Number.isInteger(intid) || intid < 16 || intid > 1019)
    throw new AccelUsageError(`GIC INTID ${intid} is not a PPI or SPI (16..1019)`);
  return abi.WhvInterruptControlArm64.encodeNew({
    interruptControl: abi.ARM64_INTERRUPT_TYPE_FIXED | abi.ARM64_INTERRUPT_ASSERTED,
    destinationAddress: BigInt(vp),
    requestedVector: intid,
  });
}
