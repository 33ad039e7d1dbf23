/**
 * MshvPartition: the AccelPartition over Linux /dev/mshv (6.15+, root partition or L1VH).
 *
 * Setup follows the order the kernel requires (mshv.h, QEMU, cloud-hypervisor): create the
 * partition, set the "early" synthetic-processor-feature property, initialize, create the VPs,
 * map guest RAM, install intercepts. The hypervisor then owns the LAPIC, SynIC, synthetic
 * timers, reference TSC and hypercall page; hvemu sees port I/O, unmapped-GPA (MMIO),
 * intercepted MSRs/CPUID leaves and the hypercalls it asked for.
 *
 * Each vCPU runs a loop on the JS side: RUN_VP on the libuv threadpool (koffi async) ->
 * decode hv_message -> ExitRouter.dispatch -> completion registers -> next RUN_VP.
 *
 * Stop/kick: a threadpool thread cannot be signalled by the VMM (it does not know which
 * thread runs the ioctl), so stop() asks the hypervisor for an exit instead: it sets the NMI
 * and interrupt bits of HV_X64_REGISTER_DELIVERABILITY_NOTIFICATIONS on every running VP. The
 * hypervisor answers with HVMSG_X64_INTERRUPTION_DELIVERABLE as soon as the VP could take one,
 * RUN_VP returns, and the loop sees the stop flag. (OpenVMM writes this register on running
 * VPs for SINT notifications, so it may be written while RUN_VP blocks. That a halted VP is
 * also woken this way is an inference, not verified here.) An EINTR from RUN_VP (a signal
 * someone else sent) is retried.
 */
import { silentLogger, type Logger } from '@hvemu/common';
import { GuestMemory } from '@hvemu/memory';
import { checkExitResponse } from '../../exit-decode.js';
import { checkCommonOptions, checkRegisters, checkSpecialRegisters, optNames, optU32List, ramChunks } from '../../validate.js';
import type { IoDevice, MmioDevice, MsrDevice } from '../../devices.js';
import { AccelUsageError, ExitHandlerError, HostSystemError, HypervisorUnavailableError, MemoryMapError } from '../../errors.js';
import { ExitRouter, fatalError } from '../../exit-router.js';
import type { Exit, ExitHandler, ExitResponse, HypercallExit, MmioExit } from '../../exits.js';
import { REG_NAMES, type DescriptorTable, type Registers, type Segment, type SpecialRegisters } from '../../registers.js';
import { runVcpus } from '../vcpu-runs.js';
import { OffloadedSynicPort, type OffloadedSynicOps } from '../offloaded-synic.js';
import type { AccelPartition, AccelVcpu, VcpuOutcome, VcpuStatus } from '../types.js';
import { mmioStoreValue } from '../x86-mmio.js';
import * as abi from './abi.js';
import { completeIntercept, completeMmio, type RegisterWrite } from './completion.js';
import { decodeRunMessage, type MshvEvent } from './messages.js';
import { KoffiMshvSys, MshvSysError, type HostBuffer, type MshvSys } from './sys.js';

export interface MshvPartitionOptions {
  /** Number of vCPUs (VP index = APIC id = 0..n-1). Default 1. */
  readonly vcpuCount?: number;
  /** Guest RAM regions (page-aligned); the gaps are MMIO space. */
  readonly memory: readonly { gpa: number; size: number }[];
  /** Synthetic processor features requested before initialization (default DEFAULT_SYNTHETIC_FEATURES). */
  readonly syntheticFeatures?: readonly (keyof typeof abi.SyntheticFeature)[];
  /** MSRs (outside the hypervisor's 0x40000000-0x400000FF) that must exit to TypeScript. */
  readonly userMsrs?: readonly number[];
  /** CPUID leaves that must exit to TypeScript (the hypervisor answers all others). */
  readonly cpuidLeaves?: readonly number[];
  readonly logger?: Logger;
}

interface HvcallResult {
  readonly status: number;
  readonly reps: number;
  readonly output: Uint8Array;
}

const PAGE = 4096;
const MAX_EAGAIN_RETRIES = 16;
const MAX_RUN_FAILURES = 8;
const MAX_MSR_INTERCEPTS = 1024;
const VP_REGISTER_VALUE = abi.HV_REGISTER_VALUE_SIZE;

class MshvVcpu implements AccelVcpu {
  status: VcpuStatus = 'created';
  exits = 0;
  /** True while a handler for this vCPU's exit runs: register access is allowed then. */
  inHandler = false;
  /** SINTs whose deliverability this VP should report (kept so that a stop kick does not drop them). */
  sintMask = 0;

  constructor(
    readonly index: number,
    readonly fd: number,
    readonly runBuffer: HostBuffer,
    private readonly owner: MshvPartition,
  ) {}

  private checkParked(): void {
    if (this.status === 'running' && !this.inHandler) {
      throw new AccelUsageError(`vCPU ${this.index} is running: registers are accessible only while it is parked`);
    }
  }

  getRegisters(): Registers {
    this.checkParked();
    return this.owner.readGeneralRegisters(this.index);
  }

  setRegisters(regs: Registers): void {
    checkRegisters(regs, `vCPU ${this.index}: setRegisters: registers`);
    this.checkParked();
    this.owner.writeRegisters(this.index, REG_NAMES.map((n) => ({ name: abi.HvX64Register[n], value: BigInt.asUintN(64, regs[n]) })));
  }

  getSpecialRegisters(): SpecialRegisters {
    this.checkParked();
    return this.owner.readSpecialRegisters(this.index);
  }

  setSpecialRegisters(sregs: SpecialRegisters): void {
    checkSpecialRegisters(sregs, `vCPU ${this.index}: setSpecialRegisters: registers`);
    this.checkParked();
    this.owner.writeSpecialRegisters(this.index, sregs);
  }
}

export class MshvPartition implements AccelPartition {
  readonly backend = 'mshv' as const;
  readonly memory: GuestMemory;
  readonly vcpus: readonly MshvVcpu[];
  /** How vmbus reaches the guest: the hypervisor's SynIC through PostMessageDirect / SignalEventDirect. */
  readonly synic: OffloadedSynicPort;
  private readonly router: ExitRouter;
  private readonly logger: Logger;
  private readonly ram: HostBuffer[] = [];
  private readonly hvIn: HostBuffer;
  private readonly hvOut: HostBuffer;
  private stopping = false;
  private closed = false;
  private running: Promise<VcpuOutcome[]> | undefined;

  private constructor(
    private readonly sys: MshvSys,
    private readonly devFd: number,
    private readonly ptFd: number,
    opts: MshvPartitionOptions,
  ) {
    this.logger = opts.logger ?? silentLogger;
    const count = opts.vcpuCount ?? 1;
    const vcpus: MshvVcpu[] = [];
    this.vcpus = vcpus;
    // Everything allocated from here on is released if setup fails part-way: create() closes
    // only the partition and /dev/mshv fds.
    const pages: HostBuffer[] = [];
    try {
      this.hvIn = sys.alloc(PAGE);
      pages.push(this.hvIn);
      this.hvOut = sys.alloc(PAGE);
      pages.push(this.hvOut);
      this.setProperty(abi.HV_PARTITION_PROPERTY_SYNTHETIC_PROC_FEATURES, abi.syntheticFeatureMask(opts.syntheticFeatures ?? abi.DEFAULT_SYNTHETIC_FEATURES));
      sys.ioctl(ptFd, abi.MSHV_INITIALIZE_PARTITION, null);
      const pool = Number(process.env['UV_THREADPOOL_SIZE'] ?? 4);
      if (count >= pool) {
        // Each running vCPU holds one libuv threadpool worker for the whole RUN_VP.
        this.logger.warn(`MSHV: ${count} vCPUs need more than UV_THREADPOOL_SIZE=${pool} threadpool workers (set it before Node starts)`);
      }
      for (let i = 0; i < count; i++) vcpus.push(this.createVp(i));
      this.memory = this.mapMemory(opts.memory);
      this.router = new ExitRouter(this.memory.regions, this.logger);
      this.installIntercepts(opts);
    } catch (e) {
      for (const v of vcpus) {
        sys.close(v.fd);
        sys.free(v.runBuffer);
      }
      for (const buf of [...this.ram, ...pages]) sys.free(buf);
      throw e;
    }
    this.synic = new OffloadedSynicPort(this.synicOps(), { vpCount: count, logger: this.logger });
  }

  /** Opens /dev/mshv and builds a partition; `sys` replaces the koffi/libc layer (tests). */
  static create(opts: MshvPartitionOptions, sys?: MshvSys): MshvPartition {
    const o = checkCommonOptions(opts, 'MshvPartition.create', 256);
    optNames(o['syntheticFeatures'], 'MshvPartition.create: options.syntheticFeatures', abi.SyntheticFeature);
    optU32List(o['cpuidLeaves'], 'MshvPartition.create: options.cpuidLeaves');
    const s = sys ?? loadSys();
    const devFd = openDevice(s);
    let ptFd = -1;
    try {
      const arg = abi.MshvCreatePartition.encodeNew({
        ptFlags: (1n << BigInt(abi.MSHV_PT_BIT_LAPIC)) | (1n << BigInt(abi.MSHV_PT_BIT_X2APIC)),
        ptIsolation: abi.MSHV_PT_ISOLATION_NONE,
      });
      ptFd = s.ioctl(devFd, abi.MSHV_CREATE_PARTITION, arg);
      return new MshvPartition(s, devFd, ptFd, opts);
    } catch (e) {
      if (ptFd >= 0) s.close(ptFd);
      s.close(devFd);
      throw e;
    }
  }

  // --- setup ----------------------------------------------------------------------------

  private createVp(index: number): MshvVcpu {
    const fd = this.sys.ioctl(this.ptFd, abi.MSHV_CREATE_VP, abi.MshvCreateVp.encodeNew({ vpIndex: index }));
    try {
      return new MshvVcpu(index, fd, this.sys.alloc(PAGE), this);
    } catch (e) {
      this.sys.close(fd);
      throw e;
    }
  }

  private mapMemory(regions: readonly { gpa: number; size: number }[]): GuestMemory {
    const specs = regions.map((r, i) => {
      if (r.gpa % PAGE !== 0 || r.size % PAGE !== 0 || r.size <= 0) {
        throw new MemoryMapError(`RAM region ${i} (gpa 0x${r.gpa.toString(16)}, size 0x${r.size.toString(16)}) is not page-aligned`);
      }
      return ramChunks(r).map(({ offset, size }) => {
        const buf = this.sys.mapRam(size, offset === 0 ? `hvemu-ram-${i}` : `hvemu-ram-${i}+${offset.toString(16)}`);
        this.ram.push(buf);
        const region = abi.MshvUserMemRegion.encodeNew({
          size: BigInt(size),
          guestPfn: BigInt((r.gpa + offset) / PAGE),
          userspaceAddr: buf.address,
          flags: (1 << abi.MSHV_SET_MEM_BIT_WRITABLE) | (1 << abi.MSHV_SET_MEM_BIT_EXECUTABLE),
        });
        this.sys.ioctl(this.ptFd, abi.MSHV_SET_GUEST_MEMORY, region);
        return { gpa: r.gpa + offset, size, buffer: buf.bytes.buffer, byteOffset: buf.bytes.byteOffset };
      });
    }).flat();
    try {
      return new GuestMemory(specs);
    } catch (e) {
      throw new MemoryMapError(`bad guest memory map: ${(e as Error).message}`, { cause: e });
    }
  }

  private installIntercepts(opts: MshvPartitionOptions): void {
    // Guest HvPostMessage / HvSignalEvent to connections the hypervisor does not know.
    this.installIntercept(abi.HV_INTERCEPT_TYPE_HYPERCALL, abi.HV_INTERCEPT_ACCESS_MASK_EXECUTE, 0n, true);
    this.installIntercept(abi.HV_INTERCEPT_TYPE_UNKNOWN_SYNIC_CONNECTION, abi.HV_INTERCEPT_ACCESS_MASK_EXECUTE, 0n, false);
    for (const msr of opts.userMsrs ?? []) this.interceptMsr(msr);
    for (const leaf of opts.cpuidLeaves ?? []) {
      this.installIntercept(abi.HV_INTERCEPT_TYPE_X64_CPUID, abi.HV_INTERCEPT_ACCESS_MASK_EXECUTE, BigInt(leaf >>> 0), true);
    }
  }

  private interceptMsr(msr: number): void {
    const rw = abi.HV_INTERCEPT_ACCESS_MASK_READ | abi.HV_INTERCEPT_ACCESS_MASK_WRITE;
    this.installIntercept(abi.HV_INTERCEPT_TYPE_X64_MSR_INDEX, rw, BigInt(msr >>> 0), true);
  }

  /** Installs one intercept; an optional one the hypervisor or kernel refuses is logged, not fatal. */
  private installIntercept(type: number, access: number, parameter: bigint, required: boolean): void {
    const input = abi.HvInputInstallIntercept.encodeNew({ accessType: access, interceptType: type, interceptParameter: parameter });
    const r = this.tryHvcall(this.ptFd, abi.HVCALL_INSTALL_INTERCEPT, input, 0, 0);
    if (r.status === abi.HV_STATUS_SUCCESS && r.errno === undefined) return;
    const what = `HvCallInstallIntercept(type 0x${type.toString(16)}, parameter 0x${parameter.toString(16)}): status 0x${r.status.toString(16)}`;
    if (required) throw new HostSystemError(`${what} failed`, r.errno);
    this.logger.warn(`${what}: not supported, continuing without it`);
  }

  private setProperty(code: number, value: bigint): void {
    const input = abi.HvInputSetPartitionProperty.encodeNew({ propertyCode: code, propertyValue: value });
    this.hvcall(this.ptFd, abi.HVCALL_SET_PARTITION_PROPERTY, input, 0, 0);
  }

  private synicOps(): OffloadedSynicOps {
    return {
      post: (vp, sint, message) => this.postMessage(vp, sint, message),
      signal: (vp, sint, flag) => this.signalEvent(vp, sint, flag),
      requestDeliverable: (vp, mask) => {
        this.vcpus[vp].sintMask = mask;
        this.writeDeliverability(vp, this.stopping);
      },
    };
  }

  // --- hypercalls -----------------------------------------------------------------------

  /** MSHV_ROOT_HVCALL that reports the hypervisor status instead of throwing on it. */
  private tryHvcall(fd: number, code: number, input: Uint8Array, outSize: number, reps: number): HvcallResult & { errno?: number } {
    // After close() the hypercall pages may be unmapped: writing them would crash the process.
    if (this.closed) throw new AccelUsageError(`hypercall 0x${code.toString(16)}: the partition is closed`);
    if (input.length > PAGE || outSize > PAGE) throw new AccelUsageError(`hypercall 0x${code.toString(16)} buffers exceed a page`);
    for (let attempt = 0; ; attempt++) {
      this.hvIn.bytes.set(input);
      const arg = abi.MshvRootHvcall.encodeNew({
        code,
        reps,
        inSz: input.length,
        outSz: outSize,
        inPtr: this.hvIn.address,
        outPtr: outSize > 0 ? this.hvOut.address : 0n,
      });
      let errno: number | undefined;
      try {
        this.sys.ioctl(fd, abi.MSHV_ROOT_HVCALL, arg);
      } catch (e) {
        if (!(e instanceof MshvSysError)) throw e;
        errno = e.errno ?? -1;
      }
      // The kernel deposited a page after HV_STATUS_INSUFFICIENT_MEMORY: retry the call.
      if (errno === abi.Errno.EAGAIN && attempt < MAX_EAGAIN_RETRIES) continue;
      const out = abi.MshvRootHvcall.decode(arg);
      return { status: out.status, reps: out.reps, output: this.hvOut.bytes.slice(0, outSize), errno };
    }
  }

  private hvcall(fd: number, code: number, input: Uint8Array, outSize: number, reps: number): HvcallResult {
    const r = this.tryHvcall(fd, code, input, outSize, reps);
    if (r.errno !== undefined || r.status !== abi.HV_STATUS_SUCCESS) {
      throw new HostSystemError(`MSHV_ROOT_HVCALL 0x${code.toString(16)}: hypervisor status 0x${r.status.toString(16)}`, r.errno);
    }
    return r;
  }

  private vpHeader(vp: number, extra: number): Uint8Array {
    const input = new Uint8Array(abi.HvInputVpRegistersHeader.size + extra);
    abi.HvInputVpRegistersHeader.encode({ vpIndex: vp }, input);
    return input;
  }

  /** HvCallGetVpRegisters: the low 64 bits of each value, or the full 16 bytes. */
  readRegisterValues(vp: number, names: readonly number[]): Uint8Array {
    const input = this.vpHeader(vp, names.length * 4);
    const view = new DataView(input.buffer);
    names.forEach((n, i) => view.setUint32(abi.HvInputVpRegistersHeader.size + i * 4, n >>> 0, true));
    const r = this.hvcall(this.ptFd, abi.HVCALL_GET_VP_REGISTERS, input, names.length * VP_REGISTER_VALUE, names.length);
    return r.output;
  }

  readRegisters64(vp: number, names: readonly number[]): bigint[] {
    const out = this.readRegisterValues(vp, names);
    const view = new DataView(out.buffer, out.byteOffset);
    return names.map((_, i) => view.getBigUint64(i * VP_REGISTER_VALUE, true));
  }

  /** HvCallSetVpRegisters for 64-bit values (one rep hypercall). */
  writeRegisters(vp: number, writes: readonly RegisterWrite[]): void {
    if (writes.length === 0) return;
    this.writeRawRegisters(vp, writes.map((w) => ({ name: w.name, low: w.value, high: 0n })));
  }

  private writeRawRegisters(vp: number, assocs: readonly { name: number; low: bigint; high: bigint }[]): void {
    const size = abi.HvRegisterAssoc.size;
    const input = this.vpHeader(vp, assocs.length * size);
    assocs.forEach((a, i) =>
      abi.HvRegisterAssoc.encode({ name: a.name, valueLow: BigInt.asUintN(64, a.low), valueHigh: BigInt.asUintN(64, a.high) }, input, 16 + i * size),
    );
    this.hvcall(this.ptFd, abi.HVCALL_SET_VP_REGISTERS, input, 0, assocs.length);
  }

  readGeneralRegisters(vp: number): Registers {
    const values = this.readRegisters64(vp, REG_NAMES.map((n) => abi.HvX64Register[n]));
    const r = {} as Record<keyof Registers, bigint>;
    REG_NAMES.forEach((n, i) => (r[n] = values[i]));
    return r;
  }

  readSpecialRegisters(vp: number): SpecialRegisters {
    const segs = Object.entries(abi.HvX64SegmentRegister);
    const controls = [abi.HV_X64_REGISTER_CR0, abi.HV_X64_REGISTER_CR2, abi.HV_X64_REGISTER_CR3, abi.HV_X64_REGISTER_CR4, abi.HV_X64_REGISTER_CR8, abi.HV_X64_REGISTER_EFER, abi.HV_X64_REGISTER_APIC_BASE];
    const names = [...segs.map(([, n]) => n), abi.HV_X64_REGISTER_GDTR, abi.HV_X64_REGISTER_IDTR, ...controls];
    const out = this.readRegisterValues(vp, names);
    const at = (i: number): Uint8Array => out.subarray(i * VP_REGISTER_VALUE, (i + 1) * VP_REGISTER_VALUE);
    const view = new DataView(out.buffer, out.byteOffset);
    const result: Record<string, unknown> = {};
    segs.forEach(([name], i) => (result[name] = segmentFromHv(at(i))));
    result['gdt'] = tableFromHv(at(segs.length));
    result['idt'] = tableFromHv(at(segs.length + 1));
    ['cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer', 'apicBase'].forEach((n, i) => (result[n] = view.getBigUint64((segs.length + 2 + i) * VP_REGISTER_VALUE, true)));
    return result as unknown as SpecialRegisters;
  }

  writeSpecialRegisters(vp: number, s: SpecialRegisters): void {
    const assocs: { name: number; low: bigint; high: bigint }[] = [];
    for (const [name, reg] of Object.entries(abi.HvX64SegmentRegister)) assocs.push({ name: reg, ...segmentToHv(s[name as keyof typeof abi.HvX64SegmentRegister]) });
    assocs.push({ name: abi.HV_X64_REGISTER_GDTR, ...tableToHv(s.gdt) }, { name: abi.HV_X64_REGISTER_IDTR, ...tableToHv(s.idt) });
    const controls: [number, bigint][] = [
      [abi.HV_X64_REGISTER_CR0, s.cr0], [abi.HV_X64_REGISTER_CR2, s.cr2], [abi.HV_X64_REGISTER_CR3, s.cr3], [abi.HV_X64_REGISTER_CR4, s.cr4],
      [abi.HV_X64_REGISTER_CR8, s.cr8], [abi.HV_X64_REGISTER_EFER, s.efer], [abi.HV_X64_REGISTER_APIC_BASE, s.apicBase],
    ];
    for (const [name, v] of controls) assocs.push({ name, low: v, high: 0n });
    this.writeRawRegisters(vp, assocs);
  }

  private postMessage(vp: number, sint: number, message: Uint8Array): 'ok' | 'busy' {
    const input = abi.HvInputPostMessageDirect.encodeNew({ vpIndex: vp, sintIndex: sint, message });
    const r = this.tryHvcall(this.ptFd, abi.HVCALL_POST_MESSAGE_DIRECT, input, 0, 0);
    if (r.status === abi.HV_STATUS_SUCCESS && r.errno === undefined) return 'ok';
    if (r.status !== abi.HV_STATUS_INSUFFICIENT_BUFFERS) {
      // Kept queued rather than lost: a SINT the guest has not enabled yet fails the same way.
      this.logger.warn('HvCallPostMessageDirect failed; message kept for retry', { vp, sint, status: r.status, errno: r.errno });
    }
    return 'busy';
  }

  private signalEvent(vp: number, sint: number, flag: number): boolean {
    const input = abi.HvInputSignalEventDirect.encodeNew({ targetVp: vp, targetSint: sint, flagNumber: flag });
    const r = this.hvcall(this.ptFd, abi.HVCALL_SIGNAL_EVENT_DIRECT, input, abi.HvOutputSignalEventDirect.size, 0);
    return abi.HvOutputSignalEventDirect.decode(r.output).newlySignaled !== 0;
  }

  /** SINT notifications for `vp`, plus the NMI/interrupt bits while a stop kick is pending. */
  private writeDeliverability(vp: number, kick: boolean): void {
    const value = (BigInt(this.vcpus[vp].sintMask & 0xffff) << abi.DELIVERABILITY_SINT_SHIFT) | (kick ? abi.DELIVERABILITY_NMI | abi.DELIVERABILITY_INTERRUPT : 0n);
    this.writeRegisters(vp, [{ name: abi.HV_X64_REGISTER_DELIVERABILITY_NOTIFICATIONS, value }]);
  }

  // --- AccelPartition --------------------------------------------------------------------

  private checkOpen(call: string): void {
    if (this.closed) throw new AccelUsageError(`${call}: the partition is closed`);
  }

  addIoDevice(device: IoDevice): void {
    this.checkOpen('addIoDevice');
    this.router.addIoDevice(device);
  }

  addMmioDevice(device: MmioDevice): void {
    this.checkOpen('addMmioDevice');
    this.router.addMmioDevice(device);
  }

  /** MSRs in 0x40000000-0x400000FF belong to the hypervisor on MSHV; the others get an intercept. */
  addMsrDevice(device: MsrDevice): void {
    this.checkOpen('addMsrDevice');
    // One intercept hypercall per MSR: a device may bring at most MAX_MSR_INTERCEPTS of them.
    this.router.addMsrDevice(device, { maxExtra: MAX_MSR_INTERCEPTS, add: (extra) => extra.forEach((msr) => this.interceptMsr(msr)) });
  }

  onHypercall(handler: ExitHandler<HypercallExit>): void {
    this.checkOpen('onHypercall');
    this.router.onHypercall(handler);
  }

  onExit(handler: ExitHandler): void {
    this.checkOpen('onExit');
    this.router.onExit(handler);
  }

  interrupt(vp: number, vector: number): boolean {
    this.checkOpen('interrupt');
    if (!Number.isInteger(vp) || vp < 0 || vp >= this.vcpus.length) throw new AccelUsageError(`no vCPU ${vp}`);
    if (!Number.isInteger(vector) || vector < 16 || vector > 255) throw new AccelUsageError(`vector ${vector} is not 16..255`);
    const input = abi.HvInputAssertVirtualInterrupt.encodeNew({ interruptType: abi.HV_X64_INTERRUPT_TYPE_FIXED, destAddr: BigInt(vp), vector });
    const r = this.tryHvcall(this.ptFd, abi.HVCALL_ASSERT_VIRTUAL_INTERRUPT, input, 0, 0);
    return r.status === abi.HV_STATUS_SUCCESS && r.errno === undefined;
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
        this.writeDeliverability(v.index, true);
      } catch (e) {
        this.logger.warn('stop kick failed', { vp: v.index, error: (e as Error).message });
      }
    }
  }

  /**
   * Stops the vCPUs and releases the fds and hypercall pages. While RUN_VP calls are still
   * blocked on the threadpool (they hold the VP files and write into their run buffers), the
   * release waits until they have returned after the stop kick.
   */
  close(): void {
    if (this.closed) return;
    this.stop();
    this.closed = true;
    const release = (): void => {
      for (const v of this.vcpus) this.sys.close(v.fd);
      this.sys.close(this.ptFd);
      this.sys.close(this.devFd);
      for (const b of [this.hvIn, this.hvOut, ...this.vcpus.map((v) => v.runBuffer)]) this.sys.free(b);
    };
    if (this.running) void this.running.then(release, release);
    else release();
    // Guest RAM stays mapped: GuestMemory views handed out must stay valid (as on KVM).
  }

  // --- run loop ----------------------------------------------------------------------------

  private async runVcpu(v: MshvVcpu): Promise<VcpuOutcome> {
    v.status = 'running';
    let failures = 0;
    const done = (cause: VcpuOutcome['cause'], error?: Error): VcpuOutcome => {
      v.status = 'stopped';
      return { vp: v.index, cause, error, exits: v.exits };
    };
    while (!this.stopping) {
      try {
        await this.sys.ioctlAsync(v.fd, abi.MSHV_RUN_VP, v.runBuffer);
        failures = 0;
      } catch (e) {
        if (this.stopping) break;
        // EINTR (a signal), or an errno koffi could not bring back from the threadpool: retry a few times.
        if (++failures <= MAX_RUN_FAILURES && (!(e instanceof MshvSysError) || e.errno === undefined || e.errno === abi.Errno.EINTR)) continue;
        return done('host-error', e instanceof Error ? e : new HostSystemError(String(e), undefined));
      }
      v.exits++;
      try {
        const stop = await this.handleEvent(v, decodeRunMessage(v.index, v.runBuffer.bytes));
        if (stop) return done('handler-stop');
      } catch (e) {
        return done('host-error', e as Error);
      }
    }
    return done('stop-requested');
  }

  /** Handles one decoded message; true when the vCPU must stop. */
  private async handleEvent(v: MshvVcpu, ev: MshvEvent): Promise<boolean> {
    switch (ev.kind) {
      case 'ignored':
      case 'interruption-deliverable':
        return false;
      case 'sint-deliverable':
        // The hypervisor clears the bits it reported (one-shot); mirror that before the retry
        // re-requests whatever still has a backlog.
        v.sintMask &= ~ev.sints;
        this.synic.onSintDeliverable(v.index, ev.sints);
        return false;
      case 'mmio':
        return this.handleMmio(v, ev);
      case 'exit': {
        const response = await this.dispatch(v, ev.exit);
        if (ev.exit.kind === 'shutdown' || ev.exit.kind === 'unrecoverable') {
          if (response?.stop === false) return false;
          throw fatalError(ev.exit);
        }
        this.writeRegisters(v.index, completeIntercept(ev, response));
        return response?.stop === true;
      }
    }
  }

  private async handleMmio(v: MshvVcpu, ev: Extract<MshvEvent, { kind: 'mmio' }>): Promise<boolean> {
    // The intercept header's RIP is authoritative for the faulting instruction.
    const regs = { ...this.readGeneralRegisters(v.index), rip: ev.context.rip };
    const { instruction } = ev;
    const exit: MmioExit = {
      kind: 'mmio',
      vp: v.index,
      gpa: ev.gpa,
      size: instruction.size,
      isWrite: instruction.isWrite,
      data: instruction.isWrite ? mmioStoreValue(instruction, regs) : 0n,
    };
    const response = await this.dispatch(v, exit);
    this.writeRegisters(v.index, completeMmio(instruction, regs, response));
    return response?.stop === true;
  }

  /** Routes an exit with register access open for the handler; a throwing handler becomes ExitHandlerError. */
  private async dispatch(v: MshvVcpu, exit: Exit): Promise<ExitResponse | void> {
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

function loadSys(): MshvSys {
  try {
    return new KoffiMshvSys();
  } catch (e) {
    throw new HypervisorUnavailableError(`MSHV backend: cannot load koffi/libc to reach /dev/mshv: ${(e as Error).message}`, { cause: e });
  }
}

function openDevice(sys: MshvSys): number {
  try {
    return sys.open(abi.MSHV_DEVICE_PATH);
  } catch (e) {
    const errno = e instanceof MshvSysError ? e.errno : undefined;
    if (errno === abi.Errno.EACCES || errno === abi.Errno.EPERM) {
      throw new HypervisorUnavailableError(
        `${abi.MSHV_DEVICE_PATH}: permission denied (the device is mode 0600): run as root or grant this user access`,
        { cause: e },
      );
    }
    throw new HypervisorUnavailableError(
      `${abi.MSHV_DEVICE_PATH} is not available (${(e as Error).message}): the MSHV backend needs Linux 6.15+ running as the ` +
        'Hyper-V root partition (or as an L1VH nested host, 6.19+) with CONFIG_MSHV_ROOT',
      { cause: e },
    );
  }
}

/** hv_x64_segment_register -> Segment (attributes: type 0-3, S 4, DPL 5-6, P 7, AVL 12, L 13, D/B 14, G 15). */
function segmentFromHv(b: Uint8Array): Segment {
  const s = abi.HvX64Segment.decode(b);
  const a = s.attributes;
  const bit = (n: number): boolean => ((a >>> n) & 1) === 1;
  return {
    base: s.base, limit: s.limit, selector: s.selector, type: a & 0xf, s: bit(4), dpl: (a >>> 5) & 3, present: bit(7),
    avl: bit(12), l: bit(13), db: bit(14), g: bit(15), unusable: !bit(7),
  };
}

function segmentToHv(s: Segment): { low: bigint; high: bigint } {
  const b = (v: boolean, n: number): number => (v ? 1 << n : 0);
  const attributes = (s.type & 0xf) | b(s.s, 4) | ((s.dpl & 3) << 5) | b(s.present && !s.unusable, 7) | b(s.avl, 12) | b(s.l, 13) | b(s.db, 14) | b(s.g, 15);
  const high = BigInt(s.limit >>> 0) | (BigInt(s.selector & 0xffff) << 32n) | (BigInt(attributes) << 48n);
  return { low: BigInt.asUintN(64, s.base), high };
}

/** hv_x64_table_register: pad[3] u16, limit u16 @6, base u64 @8. */
function tableFromHv(b: Uint8Array): DescriptorTable {
  const view = new DataView(b.buffer, b.byteOffset, 16);
  return { limit: view.getUint16(6, true), base: view.getBigUint64(8, true) };
}

function tableToHv(t: DescriptorTable): { low: bigint; high: bigint } {
  return { low: BigInt(t.limit & 0xffff) << 48n, high: BigInt.asUintN(64, t.base) };
}
