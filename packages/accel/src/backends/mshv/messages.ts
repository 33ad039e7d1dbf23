/**
 * Decoding of the 256-byte hv_message that MSHV_RUN_VP returns into hvemu's Exit model.
 *
 * The buffer comes from the hypervisor, but it is treated as hostile all the same: every
 * read is bounds-checked by defineStruct, a payload_size above 240, an instruction byte
 * count above 16, a zero instruction length on an intercept that needs a RIP advance, or an
 * unknown message type becomes an `unrecoverable` exit (never an exception, never a read
 * outside the 256 bytes).
 */
import type { Exit, UnrecoverableExit } from '../../exits.js';
import {
  EXEC_STATE_EFER_LMA,
  HV_HYPERCALL_FAST_BIT,
  HV_MESSAGE_HEADER_SIZE,
  HV_MESSAGE_PAYLOAD_BYTE_COUNT,
  HV_MESSAGE_SIZE,
  hv_message_header,
  HvMessageType,
  HvX64CpuidInterceptMessage,
  HvX64ExceptionInterceptMessage,
  HvX64HypercallInterceptMessage,
  HvX64InterceptHeader,
  HvX64InterruptionDeliverableMessage,
  HvX64IoPortInterceptMessage,
  HvX64MemoryInterceptMessage,
  HvX64MsrInterceptMessage,
  HvX64Segment,
  HvX64SintDeliverableMessage,
  HvX64UnsupportedFeatureMessage,
  SEGMENT_ATTR_DEFAULT,
  SEGMENT_ATTR_LONG,
} from './abi.js';
import { decodeMmioInstruction, MmioDecodeError, type MmioInstruction } from '../x86-mmio.js';
import { hypercallExit, unrecoverableExit, type X64InterceptContext } from '../hv-common/x64.js';

/** What the VMM needs from the intercept header to finish the instruction (the shared x64 facts, plus MSHV's). */
export interface InterceptContext extends X64InterceptContext {
  readonly vp: number;
  readonly messageType: number;
  /** 0 read, 1 write, 2 execute. */
  readonly accessType: number;
}

/** A decoded RUN_VP message: an exit for the router, or a notification the backend consumes itself. */
export type MshvEvent =
  | {
      readonly kind: 'exit';
      readonly exit: Exit;
      readonly context: InterceptContext | undefined;
      /** RAX as the message reports it (port I/O: needed to merge an IN of 1 or 2 bytes). */
      readonly rax?: bigint;
      /** The hypervisor's own CPUID result [eax, ebx, ecx, edx], used when no handler answers. */
      readonly cpuidDefault?: readonly [number, number, number, number];
    }
  | {
      /** Memory intercept: the backend needs the registers (for a store's source) before the Exit exists. */
      readonly kind: 'mmio';
      readonly context: InterceptContext;
      readonly gpa: number;
      readonly instruction: MmioInstruction;
      readonly instructionBytes: Uint8Array;
    }
  | { readonly kind: 'sint-deliverable'; readonly vp: number; readonly sints: number }
  | { readonly kind: 'interruption-deliverable'; readonly vp: number; readonly deliverableType: number }
  | { readonly kind: 'ignored'; readonly vp: number; readonly messageType: number };

const MAX_INSTRUCTION_BYTES = 16;

function unrecoverable(
  vp: number,
  reason: UnrecoverableExit['reason'],
  backendCode: number,
  detail: bigint,
  instructionBytes?: Uint8Array,
): MshvEvent {
  return { kind: 'exit', exit: unrecoverableExit(vp, reason, backendCode, detail, instructionBytes), context: undefined };
}

function readContext(vp: number, messageType: number, payload: Uint8Array): InterceptContext {
  const h = HvX64InterceptHeader.decode(payload);
  const cs = HvX64Segment.decode(h.cs);
  return {
    vp,
    messageType,
    instructionLength: h.lengthAndCr8 & 0xf,
    rip: h.rip,
    rflags: h.rflags,
    accessType: h.interceptAccessType,
    executionState: h.executionState,
    longMode: (h.executionState & EXEC_STATE_EFER_LMA) !== 0 && (cs.attributes & SEGMENT_ATTR_LONG) !== 0,
    defaultOperand32: (cs.attributes & SEGMENT_ATTR_DEFAULT) !== 0,
  };
}

/**
 * Decodes one RUN_VP buffer for vCPU `vp`. The vp index inside the message is not trusted:
 * the buffer came back from `vp`'s own fd.
 */
export function decodeRunMessage(vp: number, buffer: Uint8Array): MshvEvent {
  if (buffer.length < HV_MESSAGE_SIZE) return unrecoverable(vp, 'internal-error', 0, BigInt(buffer.length));
  const header = hv_message_header.decode(buffer);
  const type = header.message_type;
  if (header.payload_size > HV_MESSAGE_PAYLOAD_BYTE_COUNT) {
    return unrecoverable(vp, 'internal-error', type, BigInt(header.payload_size));
  }
  const payload = buffer.subarray(HV_MESSAGE_HEADER_SIZE, HV_MESSAGE_SIZE);
  switch (type) {
    case HvMessageType.x64IoPortIntercept:
      return decodeIo(vp, type, payload);
    case HvMessageType.unmappedGpa:
    case HvMessageType.gpaIntercept:
      return decodeMemory(vp, type, payload);
    case HvMessageType.x64MsrIntercept:
      return decodeMsr(vp, type, payload);
    case HvMessageType.x64CpuidIntercept:
      return decodeCpuid(vp, type, payload);
    case HvMessageType.hypercallIntercept:
      return decodeHypercall(vp, type, payload);
    case HvMessageType.x64Halt:
      // A report of a HLT the hypervisor executed: nothing to complete (README, "Settled").
      return { kind: 'exit', exit: { kind: 'halt', vp }, context: undefined };
    case HvMessageType.x64ExceptionIntercept:
      return decodeException(vp, type, payload);
    case HvMessageType.synicSintDeliverable:
      return { kind: 'sint-deliverable', vp, sints: HvX64SintDeliverableMessage.decode(payload).deliverableSints };
    case HvMessageType.x64InterruptionDeliverable:
      return { kind: 'interruption-deliverable', vp, deliverableType: HvX64InterruptionDeliverableMessage.decode(payload).deliverableType };
    case HvMessageType.unrecoverableException: {
      const context = readContext(vp, type, payload);
      const exit: Exit = { kind: 'shutdown', vp, reason: 'triple-fault', backendCode: type, detail: context.rip, registers: undefined };
      return { kind: 'exit', exit, context };
    }
    case HvMessageType.invalidVpRegisterValue:
      return unrecoverable(vp, 'entry-failure', type, 0n);
    case HvMessageType.unsupportedFeature: {
      const m = HvX64UnsupportedFeatureMessage.decode(payload);
      return unrecoverable(vp, 'internal-error', type, (BigInt(m.featureCode) << 32n) | (m.featureParameter & 0xffffffffn));
    }
    case HvMessageType.none:
    case HvMessageType.timerExpired:
    case HvMessageType.x64ApicEoi:
      // Nothing for the VMM to finish: the hypervisor owns the timers and the LAPIC here.
      return { kind: 'ignored', vp, messageType: type };
    default:
      return unrecoverable(vp, 'unknown', type, 0n);
  }
}

/** Intercepts the VMM completes by advancing RIP need a real instruction length. */
function withLength(context: InterceptContext, build: (c: InterceptContext) => MshvEvent): MshvEvent {
  if (context.instructionLength === 0) return unrecoverable(context.vp, 'internal-error', context.messageType, 0n);
  return build(context);
}

function decodeIo(vp: number, type: number, payload: Uint8Array): MshvEvent {
  const m = HvX64IoPortInterceptMessage.decode(payload);
  const context = readContext(vp, type, payload);
  const size = m.accessInfo & 0x7;
  const string = (m.accessInfo & 0x18) !== 0;
  const bytes = instructionBytes(m.instructionBytes, m.instructionByteCount);
  if (size !== 1 && size !== 2 && size !== 4) return unrecoverable(vp, 'bad-io', type, BigInt(m.accessInfo), bytes);
  // String I/O (ins/outs, rep) needs guest-virtual memory at ES:RDI / DS:RSI, i.e. a GVA
  // translation per element; not implemented, so it is reported, not half-emulated.
  if (string) return unrecoverable(vp, 'bad-io', type, BigInt(m.accessInfo), bytes);
  const isWrite = context.accessType === 1;
  const mask = size === 4 ? 0xffffffffn : (1n << BigInt(size * 8)) - 1n;
  const data = isWrite ? Number(m.rax & mask) : 0;
  return withLength(context, (c) => ({
    kind: 'exit',
    exit: { kind: 'io', vp, port: m.portNumber, size, isWrite, data, count: 1, bytes: new Uint8Array(0) },
    context: c,
    rax: m.rax,
  }));
}

function instructionBytes(bytes: Uint8Array, count: number): Uint8Array {
  return bytes.subarray(0, Math.min(count, MAX_INSTRUCTION_BYTES));
}

function decodeMemory(vp: number, type: number, payload: Uint8Array): MshvEvent {
  const m = HvX64MemoryInterceptMessage.decode(payload);
  const context = readContext(vp, type, payload);
  if (m.instructionByteCount === 0 || m.instructionByteCount > MAX_INSTRUCTION_BYTES) {
    return unrecoverable(vp, 'emulation-failure', type, BigInt(m.instructionByteCount));
  }
  const bytes = m.instructionBytes.subarray(0, m.instructionByteCount);
  const gpa = m.guestPhysicalAddress;
  if (gpa > BigInt(Number.MAX_SAFE_INTEGER)) return unrecoverable(vp, 'internal-error', type, gpa, bytes);
  // An instruction fetch from an MMIO hole is not a data access: nothing to emulate.
  if (context.accessType === 2) return unrecoverable(vp, 'emulation-failure', type, gpa, bytes);
  let instruction: MmioInstruction;
  try {
    instruction = decodeMmioInstruction(bytes, { longMode: context.longMode, defaultOperand32: context.defaultOperand32 });
  } catch (e) {
    if (e instanceof MmioDecodeError) return unrecoverable(vp, 'emulation-failure', type, gpa, bytes);
    throw e;
  }
  // The decoder and the hypervisor must agree on the direction; a mismatch means the bytes
  // are not the instruction that faulted.
  if (instruction.isWrite !== (context.accessType === 1)) {
    return unrecoverable(vp, 'emulation-failure', type, gpa, bytes);
  }
  return { kind: 'mmio', context, gpa: Number(gpa), instruction, instructionBytes: bytes };
}

function decodeMsr(vp: number, type: number, payload: Uint8Array): MshvEvent {
  const m = HvX64MsrInterceptMessage.decode(payload);
  const context = readContext(vp, type, payload);
  const exit: Exit =
    context.accessType === 1
      ? { kind: 'msr-write', vp, msr: m.msrNumber, value: ((m.rdx & 0xffffffffn) << 32n) | (m.rax & 0xffffffffn) }
      : { kind: 'msr-read', vp, msr: m.msrNumber };
  return withLength(context, (c) => ({ kind: 'exit', exit, context: c }));
}

function decodeCpuid(vp: number, type: number, payload: Uint8Array): MshvEvent {
  const m = HvX64CpuidInterceptMessage.decode(payload);
  const context = readContext(vp, type, payload);
  const low = (v: bigint): number => Number(v & 0xffffffffn);
  const cpuidDefault = [low(m.defaultResultRax), low(m.defaultResultRbx), low(m.defaultResultRcx), low(m.defaultResultRdx)] as const;
  return withLength(context, (c) => ({
    kind: 'exit',
    exit: { kind: 'cpuid', vp, leaf: low(m.rax), subleaf: low(m.rcx) },
    context: c,
    cpuidDefault,
  }));
}

/**
 * The TLFS calling convention of the caller's mode (64-bit: RCX/RDX/R8 and XMM0-5; 32-bit:
 * EDX:EAX, EBX:ECX, EDI:ESI); the message carries all seven registers. A zero instruction
 * length is no obstacle here: the completion advances by VMCALL's 3 bytes then.
 */
function decodeHypercall(vp: number, type: number, payload: Uint8Array): MshvEvent {
  const m = HvX64HypercallInterceptMessage.decode(payload);
  const context = readContext(vp, type, payload);
  return { kind: 'exit', exit: hypercallExit(vp, context.longMode, m, m.xmmRegisters, HV_HYPERCALL_FAST_BIT), context };
}

/** hvemu installs no exception intercepts; one that arrives anyway cannot be finished here. */
function decodeException(vp: number, type: number, payload: Uint8Array): MshvEvent {
  const m = HvX64ExceptionInterceptMessage.decode(payload);
  const bytes = instructionBytes(m.instructionBytes, m.instructionByteCount);
  return unrecoverable(vp, 'internal-error', type, (BigInt(m.exceptionVector) << 32n) | BigInt(m.errorCode), bytes);
}
