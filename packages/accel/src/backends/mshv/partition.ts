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
import type { GuestMemory, RamRegionSpec } from '@hvemu/memory';
import { checkCommonOptions, optNames, optU32List } from '../../validate.js';
import type { MsrDevice } from '../../devices.js';
import { AccelUsageError, HostSystemError, HypervisorUnavailableError } from '../../errors.js';
import { ExitRouter } from '../../exit-router.js';
import { HvPartition, HvVcpu, type RunOnceResult } from '../hv-common/partition.js';
import { completeX64Intercept, type RegisterWrite } from '../hv-common/x64.js';
import { OffloadedSynicPort, type OffloadedSynicOps } from '../offloaded-synic.js';
import * as abi from './abi.js';
import { MSHV_X64_NAMES } from './completion.js';
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
const MAX_MSR_INTERCEPTS = 1024;
const VP_REGISTER_VALUE = abi.HV_REGISTER_VALUE_SIZE;

class MshvVcpu extends HvVcpu {
  constructor(
    index: number,
    owner: MshvPartition,
    readonly fd: number,
    readonly runBuffer: HostBuffer,
  ) {
    super(index, owner);
  }
}

export class MshvPartition extends HvPartition<MshvVcpu> {
  readonly backend = 'mshv' as const;
  readonly x64Names = MSHV_X64_NAMES;
  readonly memory: GuestMemory;
  readonly vcpus: readonly MshvVcpu[];
  /** How vmbus reaches the guest: the hypervisor's SynIC through PostMessageDirect / SignalEventDirect. */
  readonly synic: OffloadedSynicPort;
  protected readonly router: ExitRouter;
  private readonly ram: HostBuffer[] = [];
  /** Guest-mapped RAM chunks by GPA. */
  private readonly ramAt = new Map<number, HostBuffer>();
  private readonly hvIn: HostBuffer;
  private readonly hvOut: HostBuffer;

  private constructor(
    private readonly sys: MshvSys,
    private readonly devFd: number,
    private readonly ptFd: number,
    opts: MshvPartitionOptions,
  ) {
    super(opts.logger ?? silentLogger);
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
      this.setProperty(
        abi.HV_PARTITION_PROPERTY_SYNTHETIC_PROC_FEATURES,
        abi.syntheticFeatureMask(opts.syntheticFeatures ?? abi.DEFAULT_SYNTHETIC_FEATURES),
      );
      sys.ioctl(ptFd, abi.MSHV_INITIALIZE_PARTITION, null);
      const pool = Number(process.env['UV_THREADPOOL_SIZE'] ?? 4);
      if (count >= pool) {
        // Each running vCPU holds one libuv threadpool worker for the whole RUN_VP.
        this.logger.warn(`MSHV: ${count} vCPUs need more than UV_THREADPOOL_SIZE=${pool} threadpool workers (set it before Node starts)`);
      }
      for (let i = 0; i < count; i++) vcpus.push(this.createVp(i));
      this.memory = this.mapInitialRam(opts.memory);
      this.router = new ExitRouter(this.memory, this.logger);
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
      return new MshvVcpu(index, this, fd, this.sys.alloc(PAGE));
    } catch (e) {
      this.sys.close(fd);
      throw e;
    }
  }

  protected mapChunk(gpa: number, size: number, label: string): RamRegionSpec {
    const buf = this.sys.mapRam(size, label);
    this.ram.push(buf);
    this.setGuestMemory(gpa, buf, (1 << abi.MSHV_SET_MEM_BIT_WRITABLE) | (1 << abi.MSHV_SET_MEM_BIT_EXECUTABLE));
    return { gpa, size, buffer: buf.bytes.buffer, byteOffset: buf.bytes.byteOffset };
  }

  protected unmapChunk(gpa: number, size: number): void {
    const buf = this.ramAt.get(gpa);
    if (!buf || buf.bytes.byteLength !== size) throw new AccelUsageError(`no RAM chunk at 0x${gpa.toString(16)}`);
    this.setGuestMemory(gpa, buf, 1 << abi.MSHV_SET_MEM_BIT_UNMAP);
    this.ramAt.delete(gpa);
  }

  private setGuestMemory(gpa: number, buf: HostBuffer, flags: number): void {
    const region = abi.MshvUserMemRegion.encodeNew({
      size: BigInt(buf.bytes.byteLength),
      guestPfn: BigInt(gpa / PAGE),
      userspaceAddr: buf.address,
      flags,
    });
    this.sys.ioctl(this.ptFd, abi.MSHV_SET_GUEST_MEMORY, region);
    if ((flags & (1 << abi.MSHV_SET_MEM_BIT_UNMAP)) === 0) this.ramAt.set(gpa, buf);
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

  /** HvCallGetVpRegisters: 16 bytes per register. */
  readRegisterValues(vp: number, names: readonly number[]): Uint8Array {
    const input = this.vpHeader(vp, names.length * 4);
    const view = new DataView(input.buffer);
    names.forEach((n, i) => view.setUint32(abi.HvInputVpRegistersHeader.size + i * 4, n >>> 0, true));
    const r = this.hvcall(this.ptFd, abi.HVCALL_GET_VP_REGISTERS, input, names.length * VP_REGISTER_VALUE, names.length);
    return r.output;
  }

  /** HvCallSetVpRegisters (one rep hypercall). */
  writeRegisters(vp: number, writes: readonly RegisterWrite[]): void {
    if (writes.length === 0) return;
    const size = abi.HvRegisterAssoc.size;
    const input = this.vpHeader(vp, writes.length * size);
    writes.forEach((w, i) =>
      abi.HvRegisterAssoc.encode(
        { name: w.name, valueLow: BigInt.asUintN(64, w.value), valueHigh: BigInt.asUintN(64, w.high ?? 0n) },
        input,
        16 + i * size,
      ),
    );
    this.hvcall(this.ptFd, abi.HVCALL_SET_VP_REGISTERS, input, 0, writes.length);
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
    const value =
      (BigInt(this.vcpus[vp].sintMask & 0xffff) << abi.DELIVERABILITY_SINT_SHIFT) |
      (kick ? abi.DELIVERABILITY_NMI | abi.DELIVERABILITY_INTERRUPT : 0n);
    this.writeRegisters(vp, [{ name: abi.HV_X64_REGISTER_DELIVERABILITY_NOTIFICATIONS, value }]);
  }

  // --- AccelPartition --------------------------------------------------------------------

  /** MSRs in 0x40000000-0x400000FF belong to the hypervisor on MSHV; the others get an intercept. */
  override addMsrDevice(device: MsrDevice): void {
    this.checkOpen('addMsrDevice');
    // One intercept hypercall per MSR: a device may bring at most MAX_MSR_INTERCEPTS of them.
    this.router.addMsrDevice(device, { maxExtra: MAX_MSR_INTERCEPTS, add: (extra) => extra.forEach((msr) => this.interceptMsr(msr)) });
  }

  interrupt(vp: number, vector: number): boolean {
    this.checkOpen('interrupt');
    this.checkVp(vp);
    if (!Number.isInteger(vector) || vector < 16 || vector > 255) throw new AccelUsageError(`vector ${vector} is not 16..255`);
    const input = abi.HvInputAssertVirtualInterrupt.encodeNew({
      interruptType: abi.HV_X64_INTERRUPT_TYPE_FIXED,
      destAddr: BigInt(vp),
      vector,
    });
    const r = this.tryHvcall(this.ptFd, abi.HVCALL_ASSERT_VIRTUAL_INTERRUPT, input, 0, 0);
    return r.status === abi.HV_STATUS_SUCCESS && r.errno === undefined;
  }

  protected kick(v: MshvVcpu): void {
    this.writeDeliverability(v.index, true);
  }

  /** The fds and the hypercall and run pages (guest RAM stays mapped). */
  protected release(): void {
    for (const v of this.vcpus) this.sys.close(v.fd);
    this.sys.close(this.ptFd);
    this.sys.close(this.devFd);
    for (const b of [this.hvIn, this.hvOut, ...this.vcpus.map((v) => v.runBuffer)]) this.sys.free(b);
  }

  // --- run loop ----------------------------------------------------------------------------

  /**
   * One MSHV_RUN_VP. EINTR (a signal reached the thread) and EAGAIN are the kernel saying
   * "call again" (the Linux ioctl contract; cloud-hypervisor's MSHV loop does the same); an
   * errno koffi could not bring back from the threadpool gets a few retries.
   */
  protected async runOnce(v: MshvVcpu): Promise<RunOnceResult> {
    try {
      await this.sys.ioctlAsync(v.fd, abi.MSHV_RUN_VP, v.runBuffer);
      return 'exit';
    } catch (e) {
      if (!(e instanceof MshvSysError)) throw e;
      if (e.errno === abi.Errno.EINTR || e.errno === abi.Errno.EAGAIN) return 'interrupted';
      if (e.errno === undefined) return { transient: e };
      throw e;
    }
  }

  protected handleRun(v: MshvVcpu): Promise<boolean> {
    return this.handleEvent(v, decodeRunMessage(v.index, v.runBuffer.bytes));
  }

  private async handleEvent(v: MshvVcpu, ev: MshvEvent): Promise<boolean> {
    switch (ev.kind) {
      case 'ignored':
      case 'interruption-deliverable':
        return false;
      case 'sint-deliverable':
        this.sintDeliverable(v, ev.sints);
        return false;
      case 'mmio':
        return this.finishX64Mmio(v, ev.context, ev.gpa, ev.instruction);
      case 'exit': {
        const { context } = ev;
        return this.finishExit(v, ev.exit, (response) =>
          context ? completeX64Intercept(this.x64Names, ev.exit, { context, rax: ev.rax, cpuidDefault: ev.cpuidDefault }, response) : [],
        );
      }
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
