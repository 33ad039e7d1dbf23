/**
 * x64 WHV_RUN_VP_EXIT_CONTEXT (224 bytes: ExitReason @0, VpContext @8, union @48) -> WhpxEvent.
 *
 * The buffer is filled by the hypervisor but treated as hostile: every read goes through
 * defineStruct (bounds-checked), and anything hvemu cannot continue from -- an unknown
 * reason, an instruction byte count above 16, a missing instruction length where RIP must
 * advance, an access size that is not 1/2/4, string I/O, an MMIO instruction the decoder
 * rejects -- becomes an `unrecoverable` exit rather than an exception or a guess.
 */
import { hypercallExit } from '../hv-common/x64.js';
import { decodeMmioInstruction, MmioDecodeError } from '../x86-mmio.js';
import {
  EXEC_STATE_CR0_PE,
  EXEC_STATE_EFER_LMA,
  RUN_VP_EXIT_CONTEXT_SIZE,
  SEGMENT_ATTR_DEFAULT,
  SEGMENT_ATTR_LONG,
  WhvMemoryAccessContextX64,
  WhvRunVpCanceledContext,
  WhvRunVpExitContextX64Head,
  WHvRunVpExitReasonX64 as R,
  WhvSynicSintDeliverableContextX64,
  WhvVpExceptionContext,
  WhvX64ApicEoiContext,
  WhvX64CpuidAccessContext,
  WhvX64HypercallContext,
  WhvX64InterruptionDeliverableContext,
  WhvX64IoPortAccessContext,
  WhvX64MsrAccessContext,
  WhvX64UnsupportedFeatureContext,
  X64_UNION_OFFSET,
} from './abi.js';
import { safeGpa, unrecoverable, type WhpxEvent, type X64Context } from './events.js';

const MAX_INSTRUCTION_BYTES = 16;
const HV_HYPERCALL_FAST_BIT = 1n << 16n;
const U32 = 0xffff_ffffn;
const MEMORY_ACCESS_EXECUTE = 2;
const MEMORY_ACCESS_WRITE = 1;

function contextOf(buf: Uint8Array): X64Context {
  const h = WhvRunVpExitContextX64Head.decode(buf);
  const pe = (h.executionState & EXEC_STATE_CR0_PE) !== 0;
  const lma = (h.executionState & EXEC_STATE_EFER_LMA) !== 0;
  return {
    rip: h.rip,
    rflags: h.rflags,
    instructionLength: h.instructionLengthCr8 & 0xf,
    executionState: h.executionState,
    longMode: pe && lma && (h.csAttributes & SEGMENT_ATTR_LONG) !== 0,
    defaultOperand32: (h.csAttributes & SEGMENT_ATTR_DEFAULT) !== 0,
  };
}

/** Decodes one exit context of vCPU `vp`. Never throws; never reads outside `buf`. */
export function decodeX64Exit(vp: number, buf: Uint8Array): WhpxEvent {
  if (buf.length < RUN_VP_EXIT_CONTEXT_SIZE.x64) return unrecoverable(vp, 'internal-error', 0, BigInt(buf.length));
  const reason = WhvRunVpExitContextX64Head.decode(buf).exitReason;
  const context = contextOf(buf);
  switch (reason) {
    case R.MemoryAccess:
      return memoryAccess(vp, buf, context, reason);
    case R.X64IoPortAccess:
      return ioPort(vp, buf, context, reason);
    case R.X64MsrAccess:
      return msr(vp, buf, context, reason);
    case R.X64Cpuid:
      return cpuid(vp, buf, context, reason);
    case R.Hypercall:
      return hypercall(vp, buf, context);
    case R.X64Halt:
      // The HLT has retired (QEMU's WHPX loop resumes without touching RIP): nothing to complete.
      return { kind: 'exit', exit: { kind: 'halt', vp }, completion: undefined };
    case R.SynicSintDeliverable:
      return { kind: 'sint-deliverable', sints: WhvSynicSintDeliverableContextX64.decode(buf, X64_UNION_OFFSET).deliverableSints };
    case R.Canceled:
      return { kind: 'canceled' };
    case R.X64ApicEoi:
      // Only level-triggered vectors EOI to the VMM; hvemu injects edge-triggered MSIs only.
      return { kind: 'ignored', reason, what: 'apic-eoi', detail: WhvX64ApicEoiContext.decode(buf, X64_UNION_OFFSET).interruptVector };
    case R.X64InterruptWindow:
      return {
        kind: 'ignored',
        reason,
        what: 'interrupt-window',
        detail: WhvX64InterruptionDeliverableContext.decode(buf, X64_UNION_OFFSET).deliverableType,
      };
    default:
      return fatal(vp, buf, context, reason);
  }
}

/** Exits that end the vCPU: triple fault, bad register state, unsupported feature, unexpected exception, unknown reason. */
function fatal(vp: number, buf: Uint8Array, context: X64Context, reason: number): WhpxEvent {
  switch (reason) {
    case R.UnrecoverableException:
      return {
        kind: 'exit',
        exit: { kind: 'shutdown', vp, reason: 'triple-fault', backendCode: reason, detail: context.rip, registers: undefined },
        completion: undefined,
      };
    case R.InvalidVpRegisterValue:
      return unrecoverable(vp, 'entry-failure', reason, 0n);
    case R.UnsupportedFeature: {
      const u = WhvX64UnsupportedFeatureContext.decode(buf, X64_UNION_OFFSET);
      return unrecoverable(vp, 'internal-error', reason, (BigInt(u.featureCode) << 32n) | (u.featureParameter & U32));
    }
    case R.Exception: {
      // hvemu does not enable exception exits; report one that arrives anyway with its bytes.
      const e = WhvVpExceptionContext.decode(buf, X64_UNION_OFFSET);
      return unrecoverable(
        vp,
        'internal-error',
        reason,
        BigInt(e.exceptionType),
        instructionBytes(e.instructionBytes, e.instructionByteCount),
      );
    }
    default:
      return unrecoverable(vp, 'unknown', reason, 0n);
  }
}

function instructionBytes(bytes: Uint8Array, count: number): Uint8Array | undefined {
  return count > 0 && count <= MAX_INSTRUCTION_BYTES ? bytes.slice(0, count) : undefined;
}

function memoryAccess(vp: number, buf: Uint8Array, context: X64Context, reason: number): WhpxEvent {
  const m = WhvMemoryAccessContextX64.decode(buf, X64_UNION_OFFSET);
  const count = m.instructionByteCount;
  if (count === 0 || count > MAX_INSTRUCTION_BYTES) return unrecoverable(vp, 'emulation-failure', reason, BigInt(count));
  const bytes = m.instructionBytes.slice(0, count);
  const accessType = m.accessInfo & 3;
  const gpa = safeGpa(m.gpa);
  if (accessType === MEMORY_ACCESS_EXECUTE || gpa === undefined) return unrecoverable(vp, 'emulation-failure', reason, m.gpa, bytes);
  let instruction;
  try {
    instruction = decodeMmioInstruction(bytes, { longMode: context.longMode, defaultOperand32: context.defaultOperand32 });
  } catch (e) {
    if (e instanceof MmioDecodeError) return unrecoverable(vp, 'emulation-failure', reason, m.gpa, bytes);
    throw e;
  }
  // The decoded direction must agree with the access the hypervisor saw.
  if (instruction.isWrite !== (accessType === MEMORY_ACCESS_WRITE)) return unrecoverable(vp, 'emulation-failure', reason, m.gpa, bytes);
  return { kind: 'mmio-x64', context, gpa, instruction };
}

function ioPort(vp: number, buf: Uint8Array, context: X64Context, reason: number): WhpxEvent {
  const io = WhvX64IoPortAccessContext.decode(buf, X64_UNION_OFFSET);
  const isWrite = (io.accessInfo & 1) !== 0;
  const size = (io.accessInfo >>> 1) & 7;
  const string = (io.accessInfo & (1 << 4)) !== 0;
  const bytes = instructionBytes(io.instructionBytes, io.instructionByteCount);
  if (size !== 1 && size !== 2 && size !== 4) return unrecoverable(vp, 'bad-io', reason, BigInt(size), bytes);
  // INS/OUTS need the segment, RSI/RDI/RCX and a memory walk; not emulated (stops the vCPU visibly).
  if (string) return unrecoverable(vp, 'bad-io', reason, BigInt(io.portNumber), bytes);
  if (context.instructionLength === 0) return unrecoverable(vp, 'internal-error', reason, 0n, bytes);
  const data = isWrite ? Number(io.rax & ((1n << BigInt(size * 8)) - 1n)) : 0;
  return {
    kind: 'exit',
    exit: { kind: 'io', vp, port: io.portNumber, size, isWrite, data, count: 1, bytes: new Uint8Array(0) },
    completion: { arch: 'x64', context, rax: io.rax },
  };
}

function msr(vp: number, buf: Uint8Array, context: X64Context, reason: number): WhpxEvent {
  const m = WhvX64MsrAccessContext.decode(buf, X64_UNION_OFFSET);
  if (context.instructionLength === 0) return unrecoverable(vp, 'internal-error', reason, BigInt(m.msrNumber));
  const completion = { arch: 'x64' as const, context };
  if ((m.accessInfo & 1) === 0) return { kind: 'exit', exit: { kind: 'msr-read', vp, msr: m.msrNumber }, completion };
  const value = ((m.rdx & U32) << 32n) | (m.rax & U32);
  return { kind: 'exit', exit: { kind: 'msr-write', vp, msr: m.msrNumber, value }, completion };
}

function cpuid(vp: number, buf: Uint8Array, context: X64Context, reason: number): WhpxEvent {
  const c = WhvX64CpuidAccessContext.decode(buf, X64_UNION_OFFSET);
  if (context.instructionLength === 0) return unrecoverable(vp, 'internal-error', reason, c.rax & U32);
  const n = (v: bigint): number => Number(v & U32);
  const cpuidDefault = [n(c.defaultResultRax), n(c.defaultResultRbx), n(c.defaultResultRcx), n(c.defaultResultRdx)] as const;
  return {
    kind: 'exit',
    exit: { kind: 'cpuid', vp, leaf: n(c.rax), subleaf: n(c.rcx) },
    completion: { arch: 'x64', context, cpuidDefault },
  };
}

/** Hyper-V hypercall (VMCALL/VMMCALL): the TLFS convention of the caller's mode (hv-common/x64.ts). */
function hypercall(vp: number, buf: Uint8Array, context: X64Context): WhpxEvent {
  const h = WhvX64HypercallContext.decode(buf, X64_UNION_OFFSET);
  return {
    kind: 'exit',
    exit: hypercallExit(vp, context.longMode, h, h.xmmRegisters, HV_HYPERCALL_FAST_BIT),
    completion: { arch: 'x64', context },
  };
}

/** Exported for tests: the canceled context's reason (0 = WHvRunVpCancelReasonUser). */
export function cancelReason(buf: Uint8Array): number {
  return WhvRunVpCanceledContext.decode(buf, X64_UNION_OFFSET).cancelReason;
}
