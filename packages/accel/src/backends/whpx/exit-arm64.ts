/**
 * arm64 WHV_RUN_VP_EXIT_CONTEXT (272 bytes: ExitReason @0, reserved to @16, union @16) ->
 * WhpxEvent. On arm64 the exit reason is the hypervisor message type and the union is the raw
 * intercept message payload, starting with the 24-byte WHV_INTERCEPT_MESSAGE_HEADER.
 *
 * Hostile input rules as on x64: bounds-checked reads; an unknown reason, an MMIO abort whose
 * syndrome does not describe the access (ISV = 0, e.g. LDP/STP or writeback forms), a cache
 * maintenance (CM) or stage-1 walk (S1PTW) abort, or an HVC immediate that is neither the
 * Hyper-V (#1) nor the SMCCC (#0) convention becomes an `unrecoverable` exit.
 */
import type { HypercallExit } from '../../exits.js';
import {
  ARM64_UNION_OFFSET,
  RUN_VP_EXIT_CONTEXT_SIZE,
  WhvArm64HypercallContext,
  WhvArm64ResetContext,
  WhvInterceptMessageHeaderArm64,
  WhvMemoryAccessContextArm64,
  WhvRunVpExitContextArm64Head,
  WHvRunVpExitReasonArm64 as R,
  WhvSynicSintDeliverableContextArm64,
} from './abi.js';
import { safeGpa, unrecoverable, type Arm64DataAccess, type WhpxEvent } from './events.js';

/** ESR_ELx ISS fields of a data abort (Arm ARM D17.2.40). */
export const ESR_ISV = 1n << 24n;
export const ESR_SAS_SHIFT = 22n;
export const ESR_SSE = 1n << 21n;
export const ESR_SRT_SHIFT = 16n;
export const ESR_SF = 1n << 15n;
export const ESR_CM = 1n << 8n;
export const ESR_S1PTW = 1n << 7n;
export const ESR_WNR = 1n << 6n;

const HV_HYPERCALL_FAST_BIT = 1n << 16n;
const HVC_SMCCC = 0;
const HVC_HYPERV = 1;
const MEMORY_ACCESS_EXECUTE = 2;

/** Decodes one exit context of vCPU `vp`. Never throws; never reads outside `buf`. */
export function decodeArm64Exit(vp: number, buf: Uint8Array): WhpxEvent {
  if (buf.length < RUN_VP_EXIT_CONTEXT_SIZE.arm64) return unrecoverable(vp, 'internal-error', 0, BigInt(buf.length));
  const reason = WhvRunVpExitContextArm64Head.decode(buf).exitReason;
  const pc = WhvInterceptMessageHeaderArm64.decode(buf, ARM64_UNION_OFFSET).pc;
  switch (reason) {
    case R.UnmappedGpa:
    case R.GpaIntercept:
      return memoryAccess(vp, buf, reason);
    case R.Hypercall:
      return hypercall(vp, buf, reason);
    case R.SynicSintDeliverable:
      return { kind: 'sint-deliverable', sints: WhvSynicSintDeliverableContextArm64.decode(buf, ARM64_UNION_OFFSET).deliverableSints };
    case R.Canceled:
      return { kind: 'canceled' };
    case R.Arm64Reset: {
      // PSCI SYSTEM_OFF / SYSTEM_RESET: the guest asked to power off (0) or reboot (1).
      const r = WhvArm64ResetContext.decode(buf, ARM64_UNION_OFFSET);
      return {
        kind: 'exit',
        exit: { kind: 'shutdown', vp, reason: 'system-event', backendCode: reason, detail: BigInt(r.resetType), registers: undefined },
        completion: undefined,
      };
    }
    case R.UnrecoverableException:
      return unrecoverable(vp, 'internal-error', reason, pc);
    case R.InvalidVpRegisterValue:
      return unrecoverable(vp, 'entry-failure', reason, 0n);
    case R.UnsupportedFeature:
      return unrecoverable(vp, 'internal-error', reason, pc);
    default:
      // Includes RegisterIntercept (0x80010006): hvemu registers no register intercepts.
      return unrecoverable(vp, 'unknown', reason, pc);
  }
}

/** The access an ISV=1 data-abort syndrome describes. */
export function decodeDataAbort(syndrome: bigint): Arm64DataAccess | undefined {
  if ((syndrome & ESR_ISV) === 0n) return undefined;
  return {
    size: (1 << Number((syndrome >> ESR_SAS_SHIFT) & 3n)) as 1 | 2 | 4 | 8,
    isWrite: (syndrome & ESR_WNR) !== 0n,
    srt: Number((syndrome >> ESR_SRT_SHIFT) & 31n),
    signExtend: (syndrome & ESR_SSE) !== 0n,
    sixtyFour: (syndrome & ESR_SF) !== 0n,
  };
}

function memoryAccess(vp: number, buf: Uint8Array, reason: number): WhpxEvent {
  const m = WhvMemoryAccessContextArm64.decode(buf, ARM64_UNION_OFFSET);
  const bytes = m.instructionByteCount === 4 ? m.instructionBytes : undefined;
  const gpa = safeGpa(m.gpa);
  if (gpa === undefined || m.interceptAccessType === MEMORY_ACCESS_EXECUTE)
    return unrecoverable(vp, 'emulation-failure', reason, m.gpa, bytes);
  // CM: a cache maintenance instruction on MMIO (QEMU refuses it too); S1PTW: the guest's own
  // page-table walk hit MMIO. Neither is a load or store a device can answer.
  if ((m.syndrome & (ESR_CM | ESR_S1PTW)) !== 0n) return unrecoverable(vp, 'emulation-failure', reason, m.syndrome, bytes);
  const access = decodeDataAbort(m.syndrome);
  // ISV = 0: the syndrome does not say which register or width (LDP/STP, writeback, SIMD);
  // emulating those needs an A64 instruction decoder, which hvemu does not have.
  if (!access) return unrecoverable(vp, 'emulation-failure', reason, m.syndrome, bytes);
  return { kind: 'mmio-arm64', gpa, access, pc: m.pc };
}

/**
 * HVC. Hyper-V convention (HVC #1): X0 control, X1 input GPA, X2 output GPA, fast input in
 * X1..X16; SMCCC (HVC #0, the Hyper-V vendor call): everything one register later. The result
 * goes to X0 in both (OpenVMM hv1_hypercall aarch64.rs). Fast input beyond the first pair is
 * handed on as the 96 bytes `xmm` carries on x64 (X3..X14, or X4..X15 for SMCCC).
 */
function hypercall(vp: number, buf: Uint8Array, reason: number): WhpxEvent {
  const h = WhvArm64HypercallContext.decode(buf, ARM64_UNION_OFFSET);
  if (h.immediate !== HVC_HYPERV && h.immediate !== HVC_SMCCC) return unrecoverable(vp, 'unknown', reason, BigInt(h.immediate));
  const view = new DataView(h.x.buffer, h.x.byteOffset, h.x.byteLength);
  const x = (n: number): bigint => view.getBigUint64(n * 8, true);
  const base = h.immediate === HVC_SMCCC ? 1 : 0;
  const control = x(base);
  const exit: HypercallExit = {
    kind: 'hypercall',
    vp,
    control,
    input: x(base + 1),
    output: x(base + 2),
    xmm: (control & HV_HYPERCALL_FAST_BIT) !== 0n ? h.x.slice((base + 3) * 8, (base + 15) * 8) : undefined,
  };
  return { kind: 'exit', exit, completion: { arch: 'arm64', pc: h.pc } };
}
