/**
 * A scripted MshvSys for tests (there is no /dev/mshv on development machines). It records
 * every call in order (ioctl request number and argument bytes; for MSHV_ROOT_HVCALL also the
 * hypercall input read through the pointer), keeps a register file per VP that
 * Get/SetVpRegisters read and write, and answers MSHV_RUN_VP from a per-VP script of
 * hv_message buffers. When a VP's script is empty, RUN_VP blocks like the real one until the
 * VMM kicks it (NMI/interrupt bits in DELIVERABILITY_NOTIFICATIONS), then returns an
 * HVMSG_X64_INTERRUPTION_DELIVERABLE message.
 */
import * as abi from '../backends/mshv/abi.js';
import { MshvSysError, sysError, type HostBuffer, type MshvSys } from '../backends/mshv/sys.js';

export type FakeCall =
  | { readonly op: 'open'; readonly path: string }
  | { readonly op: 'close'; readonly fd: number }
  | { readonly op: 'ioctl'; readonly fd: number; readonly request: number; readonly arg: Uint8Array | null }
  | { readonly op: 'hvcall'; readonly fd: number; readonly code: number; readonly reps: number; readonly input: Uint8Array }
  | { readonly op: 'run'; readonly fd: number; readonly vp: number }
  | { readonly op: 'mapRam'; readonly size: number };

/** A scripted RUN_VP result: a message, an errno, or a hook that runs first (e.g. to post from the host). */
export type RunStep = Uint8Array | { readonly errno: number } | { readonly before: () => void; readonly message: Uint8Array };

export interface HvcallAnswer {
  readonly status: number;
  readonly output?: Uint8Array;
}

export class FakeMshvSys implements MshvSys {
  readonly calls: FakeCall[] = [];
  /** errno for open(); undefined = success. */
  openErrno: number | undefined;
  /** Per-call override for MSHV_ROOT_HVCALL; return undefined for the default behaviour. */
  hvcallHook: ((code: number, input: Uint8Array, reps: number) => HvcallAnswer | undefined) | undefined;
  /** (vp, sint) pairs whose message slot is occupied: PostMessageDirect answers INSUFFICIENT_BUFFERS. */
  readonly busySlots = new Set<string>();
  readonly posted: { vp: number; sint: number; message: Uint8Array }[] = [];
  /** Register file per VP index (name -> low 64 bits). */
  readonly registers = new Map<number, Map<number, bigint>>();
  private readonly scripts = new Map<number, RunStep[]>();
  private readonly buffers = new Map<bigint, Uint8Array>();
  private readonly vpOfFd = new Map<number, number>();
  private readonly parked = new Map<number, () => void>();
  private nextFd = 3;
  private nextAddress = 0x7f00_0000_0000n;

  script(vp: number, ...steps: RunStep[]): void {
    const list = this.scripts.get(vp) ?? [];
    list.push(...steps);
    this.scripts.set(vp, list);
  }

  regs(vp: number): Map<number, bigint> {
    let m = this.registers.get(vp);
    if (!m) this.registers.set(vp, (m = new Map()));
    return m;
  }

  /** The hvcall records only, for assertions. */
  hvcalls(code?: number): Extract<FakeCall, { op: 'hvcall' }>[] {
    return this.calls.filter((c): c is Extract<FakeCall, { op: 'hvcall' }> => c.op === 'hvcall' && (code === undefined || c.code === code));
  }

  open(path: string): number {
    this.calls.push({ op: 'open', path });
    if (this.openErrno !== undefined) throw sysError(`open(${path})`, this.openErrno);
    return this.nextFd++;
  }

  close(fd: number): void {
    this.calls.push({ op: 'close', fd });
  }

  ioctl(fd: number, request: number, arg: Uint8Array | null): number {
    this.calls.push({ op: 'ioctl', fd, request, arg: arg ? arg.slice() : null });
    switch (request) {
      case abi.MSHV_CREATE_PARTITION:
        return this.nextFd++;
      case abi.MSHV_CREATE_VP: {
        const vfd = this.nextFd++;
        this.vpOfFd.set(vfd, abi.MshvCreateVp.decode(arg!).vpIndex);
        return vfd;
      }
      case abi.MSHV_ROOT_HVCALL:
        return this.rootHvcall(fd, arg!);
      default:
        return 0;
    }
  }

  ioctlAsync(fd: number, request: number, arg: HostBuffer): Promise<number> {
    if (request !== abi.MSHV_RUN_VP) return Promise.resolve(this.ioctl(fd, request, arg.bytes));
    const vp = this.vpOfFd.get(fd) ?? -1;
    this.calls.push({ op: 'run', fd, vp });
    const step = this.scripts.get(vp)?.shift();
    if (step === undefined) {
      // Block like the hypervisor until a kick (see writeRegister).
      return new Promise((resolve) =>
        this.parked.set(vp, () => {
          arg.bytes.set(interruptionDeliverable(vp));
          resolve(0);
        }),
      );
    }
    if (step instanceof Uint8Array) {
      arg.bytes.set(step);
      return Promise.resolve(0);
    }
    if ('errno' in step) return Promise.reject(sysError('ioctl(MSHV_RUN_VP)', step.errno));
    step.before();
    arg.bytes.set(step.message);
    return Promise.resolve(0);
  }

  alloc(size: number): HostBuffer {
    return this.newBuffer(size);
  }

  mapRam(size: number): HostBuffer {
    this.calls.push({ op: 'mapRam', size });
    return this.newBuffer(size);
  }

  free(buffer: HostBuffer): void {
    if (!this.buffers.delete(buffer.address))
      throw new Error(`FakeMshvSys.free: 0x${buffer.address.toString(16)} is not a live buffer (double free?)`);
  }

  /** Buffers from alloc() or mapRam() not freed yet (a leak check after a failed create()). */
  liveBuffers(): number {
    return this.buffers.size;
  }

  private newBuffer(size: number): HostBuffer {
    const address = this.nextAddress;
    this.nextAddress += BigInt(Math.ceil(size / 4096) * 4096 + 4096);
    const bytes = new Uint8Array(size);
    this.buffers.set(address, bytes);
    return { address, bytes };
  }

  private rootHvcall(fd: number, arg: Uint8Array): number {
    const call = abi.MshvRootHvcall.decode(arg);
    const input = this.buffers.get(call.inPtr)!.slice(0, call.inSz);
    this.calls.push({ op: 'hvcall', fd, code: call.code, reps: call.reps, input });
    const answer = this.hvcallHook?.(call.code, input, call.reps) ?? this.defaultHvcall(call.code, input, call.reps);
    if (answer.output && call.outPtr !== 0n) this.buffers.get(call.outPtr)!.set(answer.output.subarray(0, call.outSz));
    abi.MshvRootHvcall.encode({ ...call, status: answer.status, reps: answer.status === 0 ? call.reps : 0 }, arg);
    if (answer.status !== abi.HV_STATUS_SUCCESS) throw new MshvSysError(`hypervisor status 0x${answer.status.toString(16)}`, 5);
    return 0;
  }

  private defaultHvcall(code: number, input: Uint8Array, reps: number): HvcallAnswer {
    const view = new DataView(input.buffer, input.byteOffset, input.byteLength);
    switch (code) {
      case abi.HVCALL_GET_VP_REGISTERS: {
        const regs = this.regs(view.getUint32(8, true));
        const out = new Uint8Array(reps * 16);
        const ov = new DataView(out.buffer);
        for (let i = 0; i < reps; i++) ov.setBigUint64(i * 16, regs.get(view.getUint32(16 + i * 4, true)) ?? 0n, true);
        return { status: 0, output: out };
      }
      case abi.HVCALL_SET_VP_REGISTERS: {
        const vp = view.getUint32(8, true);
        for (let i = 0; i < reps; i++) {
          const a = abi.HvRegisterAssoc.decode(input, 16 + i * 32);
          this.writeRegister(vp, a.name, a.valueLow);
        }
        return { status: 0 };
      }
      case abi.HVCALL_POST_MESSAGE_DIRECT: {
        const m = abi.HvInputPostMessageDirect.decode(input);
        if (this.busySlots.has(`${m.vpIndex}:${m.sintIndex}`)) return { status: abi.HV_STATUS_INSUFFICIENT_BUFFERS };
        this.posted.push({ vp: m.vpIndex, sint: m.sintIndex, message: m.message });
        return { status: 0 };
      }
      case abi.HVCALL_SIGNAL_EVENT_DIRECT:
        return { status: 0, output: Uint8Array.of(1, 0, 0, 0, 0, 0, 0, 0) };
      default:
        return { status: 0 };
    }
  }

  private writeRegister(vp: number, name: number, value: bigint): void {
    this.regs(vp).set(name, value);
    const kick = abi.DELIVERABILITY_NMI | abi.DELIVERABILITY_INTERRUPT;
    if (name === abi.HV_X64_REGISTER_DELIVERABILITY_NOTIFICATIONS && (value & kick) !== 0n) {
      const wake = this.parked.get(vp);
      this.parked.delete(vp);
      wake?.();
    }
  }
}

/** An HVMSG_X64_INTERRUPTION_DELIVERABLE message (type 0 = interrupt). */
function interruptionDeliverable(vp: number): Uint8Array {
  const m = new Uint8Array(abi.HV_MESSAGE_SIZE);
  const v = new DataView(m.buffer);
  v.setUint32(0, abi.HvMessageType.x64InterruptionDeliverable, true);
  v.setUint8(4, abi.HvX64InterruptionDeliverableMessage.size);
  v.setUint32(16, vp, true);
  return m;
}
