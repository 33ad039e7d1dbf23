/**
 * What the fake layers' scripts are made of: the MSHV hv_message (256 bytes, RUN_VP) and the
 * x64 WHV_RUN_VP_EXIT_CONTEXT (224 bytes) that one guest action produces, with the offsets of
 * hvhdk.h and WinHvPlatformDefs.h. Defaults: 64-bit code (CR0.PE, EFER.LMA, CS.L).
 */
import type { WhpxArch } from '../backends/whpx/abi.js';

export interface InterceptSpec {
  readonly rip?: bigint;
  /** The reported instruction length (0: not reported). */
  readonly length?: number;
  /** false: 32-bit protected-mode code (CS.D, no EFER.LMA). */
  readonly longMode?: boolean;
}

const EXEC_PE = 0x04;
const EXEC_LMA = 0x10;
const CS_LONG = 0xa09b;
const CS_32 = 0xc09b;

// ---- MSHV: struct hv_message (header 16 bytes, payload from 16; intercept header 40 bytes) ----

/** A bare hv_message with an x64 intercept header: type, payload size, length @20, access @21, exec state @22, CS attributes @38, RIP @40. */
export function mshvMessage(type: number, payloadSize: number, access = 0, spec: InterceptSpec = {}): { buf: Uint8Array; v: DataView } {
  const buf = new Uint8Array(256);
  const v = new DataView(buf.buffer);
  const long = spec.longMode ?? true;
  v.setUint32(0, type, true);
  v.setUint8(4, payloadSize);
  v.setUint8(20, spec.length ?? 0);
  v.setUint8(21, access);
  v.setUint16(22, long ? EXEC_PE | EXEC_LMA : EXEC_PE, true);
  v.setUint16(38, long ? CS_LONG : CS_32, true);
  v.setBigUint64(40, spec.rip ?? 0x1000n, true);
  return { buf, v };
}

export const mshvExits = {
  /** HVMSG_X64_IO_PORT_INTERCEPT: port @56, access size @58, RAX @64. */
  io(port: number, write: boolean, rax: bigint, spec: InterceptSpec = {}): Uint8Array {
    const m = mshvMessage(0x80010000, 128, write ? 1 : 0, { length: 1, ...spec });
    m.v.setUint16(56, port, true);
    m.v.setUint8(58, 1);
    m.v.setBigUint64(64, rax, true);
    return m.buf;
  },
  /** HVMSG_UNMAPPED_GPA: instruction byte count @60, GPA @72, bytes @80. */
  mmio(gpa: bigint, write: boolean, bytes: readonly number[], spec: InterceptSpec = {}): Uint8Array {
    const m = mshvMessage(0x80000000, 80, write ? 1 : 0, spec);
    m.v.setUint8(60, bytes.length);
    m.v.setBigUint64(72, gpa, true);
    m.buf.set(bytes, 80);
    return m.buf;
  },
  /** HVMSG_X64_MSR_INTERCEPT: MSR @56, RDX @64, RAX @72. */
  msr(msr: number, write: boolean, value = 0n, spec: InterceptSpec = {}): Uint8Array {
    const m = mshvMessage(0x80010001, 64, write ? 1 : 0, { length: 2, ...spec });
    m.v.setUint32(56, msr, true);
    m.v.setBigUint64(64, value >> 32n, true);
    m.v.setBigUint64(72, value & 0xffff_ffffn, true);
    return m.buf;
  },
  /** HVMSG_X64_CPUID_INTERCEPT: RAX @56, RCX @64. */
  cpuid(leaf: number, subleaf = 0, spec: InterceptSpec = {}): Uint8Array {
    const m = mshvMessage(0x80010002, 104, 0, { length: 2, ...spec });
    m.v.setBigUint64(56, BigInt(leaf), true);
    m.v.setBigUint64(64, BigInt(subleaf), true);
    return m.buf;
  },
  /** HVMSG_HYPERCALL_INTERCEPT: RCX @72, RDX @80, R8 @88. */
  hypercall(control: bigint, input = 0n, output = 0n, spec: InterceptSpec = {}): Uint8Array {
    const m = mshvMessage(0x80000050, 196, 2, { length: 3, ...spec });
    m.v.setBigUint64(72, control, true);
    m.v.setBigUint64(80, input, true);
    m.v.setBigUint64(88, output, true);
    return m.buf;
  },
  /** HVMSG_X64_HALT. */
  halt(spec: InterceptSpec = {}): Uint8Array {
    return mshvMessage(0x80010007, 40, 0, { length: 1, ...spec }).buf;
  },
  /** HVMSG_SYNIC_SINT_DELIVERABLE: the SINT mask @56. */
  sintDeliverable(mask: number): Uint8Array {
    const m = mshvMessage(0x80000062, 48, 0, { rip: 0n });
    m.v.setUint16(56, mask, true);
    return m.buf;
  },
};

// ---- WHPX: WHV_RUN_VP_EXIT_CONTEXT (x64: VpContext @8, union @48) ---------------------------------

/** A bare x64 exit context: reason @0, execution state @8, length @10, CS attributes @30, RIP @32, RFLAGS @40. */
export function whpxX64Exit(reason: number, spec: InterceptSpec = {}): { buf: Uint8Array; v: DataView } {
  const buf = new Uint8Array(224);
  const v = new DataView(buf.buffer);
  const long = spec.longMode ?? true;
  v.setUint32(0, reason, true);
  v.setUint16(8, long ? EXEC_PE | EXEC_LMA : EXEC_PE, true);
  v.setUint8(10, spec.length ?? 0);
  v.setUint16(30, long ? CS_LONG : CS_32, true);
  v.setBigUint64(32, spec.rip ?? 0x1000n, true);
  v.setBigUint64(40, 2n, true);
  return { buf, v };
}

export const whpxExits = {
  /** IoPortAccess: AccessInfo @68 (IsWrite, size << 1), port @72, RAX @80. */
  io(port: number, write: boolean, rax: bigint, spec: InterceptSpec = {}): Uint8Array {
    const c = whpxX64Exit(2, { length: 1, ...spec });
    c.v.setUint32(68, (write ? 1 : 0) | (1 << 1), true);
    c.v.setUint16(72, port, true);
    c.v.setBigUint64(80, rax, true);
    return c.buf;
  },
  /** MemoryAccess: byte count @48, bytes @52, access @68, GPA @72. */
  mmio(gpa: bigint, write: boolean, bytes: readonly number[], spec: InterceptSpec = {}): Uint8Array {
    const c = whpxX64Exit(1, spec);
    c.v.setUint8(48, bytes.length);
    c.buf.set(bytes, 52);
    c.v.setUint32(68, write ? 1 : 0, true);
    c.v.setBigUint64(72, gpa, true);
    return c.buf;
  },
  /** X64MsrAccess: IsWrite @48, MSR @52, RAX @56, RDX @64. */
  msr(msr: number, write: boolean, value = 0n, spec: InterceptSpec = {}): Uint8Array {
    const c = whpxX64Exit(0x1000, { length: 2, ...spec });
    c.v.setUint32(48, write ? 1 : 0, true);
    c.v.setUint32(52, msr, true);
    c.v.setBigUint64(56, value & 0xffff_ffffn, true);
    c.v.setBigUint64(64, value >> 32n, true);
    return c.buf;
  },
  /** X64Cpuid: RAX @48, RCX @56. */
  cpuid(leaf: number, subleaf = 0, spec: InterceptSpec = {}): Uint8Array {
    const c = whpxX64Exit(0x1001, { length: 2, ...spec });
    c.v.setBigUint64(48, BigInt(leaf), true);
    c.v.setBigUint64(56, BigInt(subleaf), true);
    return c.buf;
  },
  /** Hypercall: RAX @48, RBX @56, RCX @64, RDX @72, R8 @80. */
  hypercall(control: bigint, input = 0n, output = 0n, spec: InterceptSpec = {}): Uint8Array {
    const c = whpxX64Exit(0x1005, { length: 3, ...spec });
    c.v.setBigUint64(64, control, true);
    c.v.setBigUint64(72, input, true);
    c.v.setBigUint64(80, output, true);
    return c.buf;
  },
  /** X64Halt. */
  halt(spec: InterceptSpec = {}): Uint8Array {
    return whpxX64Exit(8, { length: 1, ...spec }).buf;
  },
};

/**
 * The WHvGetCapability answers of a current host: hypervisor present, the architecture's
 * feature bit (x64 LocalApicEmulation, arm64 Arm64Support), every extended exit and every
 * synthetic feature; `over` changes one of them.
 */
export function whpxCapabilities(
  arch: WhpxArch,
  over: { present?: number; features?: bigint; synthetic?: bigint } = {},
): Map<number, Uint8Array> {
  const u64 = (v: bigint) => new Uint8Array(new BigUint64Array([v]).buffer);
  const banks = new Uint8Array(16);
  new DataView(banks.buffer).setUint32(0, 1, true);
  new DataView(banks.buffer).setBigUint64(8, over.synthetic ?? 0xffff_ffff_ffffn, true);
  return new Map([
    [0, new Uint8Array(new Uint32Array([over.present ?? 1]).buffer)],
    [1, u64(over.features ?? (arch === 'x64' ? 0x2n : 0x800n))],
    [2, u64(0x7fffn)],
    [0x1008, banks],
  ]);
}
