/**
 * What a decoded WHV_RUN_VP_EXIT_CONTEXT becomes: an Exit for the router together with what
 * the completion needs, an MMIO access that still needs registers before it is an Exit, or a
 * notification the backend consumes itself (SINT deliverable, canceled, ignored).
 */
import type { Exit, UnrecoverableExit } from '../../exits.js';
import type { MmioInstruction } from '../x86-mmio.js';

/** The x64 VpContext fields the completion needs. */
export interface X64Context {
  readonly rip: bigint;
  readonly rflags: bigint;
  /** VpContext.InstructionLength (bits 0-3 of byte @2); 0 when the hypervisor did not give it. */
  readonly instructionLength: number;
  readonly executionState: number;
  /** 64-bit code: CR0.PE, EFER.LMA and CS.L. */
  readonly longMode: boolean;
  /** CS.D: default operand size 32 outside 64-bit mode. */
  readonly defaultOperand32: boolean;
}

export type X64Completion =
  | { readonly arch: 'x64'; readonly context: X64Context; readonly rax?: bigint; readonly cpuidDefault?: readonly [number, number, number, number] }
  /** Hypercall: where the result goes depends on the mode (RAX, or EDX:EAX for 32-bit callers). */
  | { readonly arch: 'x64'; readonly context: X64Context; readonly hypercall64: boolean };

export interface Arm64Completion {
  readonly arch: 'arm64';
  readonly pc: bigint;
}

/** An arm64 data abort described by the ESR syndrome (ISV = 1). */
export interface Arm64DataAccess {
  readonly size: 1 | 2 | 4 | 8;
  readonly isWrite: boolean;
  /** Transfer register 0..30; 31 is XZR/WZR (reads discard, writes store 0). */
  readonly srt: number;
  /** SSE: sign-extend a load. */
  readonly signExtend: boolean;
  /** SF: the register is 64-bit (X), else 32-bit (W). */
  readonly sixtyFour: boolean;
}

export type WhpxEvent =
  | { readonly kind: 'exit'; readonly exit: Exit; readonly completion: X64Completion | Arm64Completion | undefined }
  | {
      readonly kind: 'mmio-x64';
      readonly context: X64Context;
      readonly gpa: number;
      readonly instruction: MmioInstruction;
    }
  | { readonly kind: 'mmio-arm64'; readonly gpa: number; readonly access: Arm64DataAccess; readonly pc: bigint }
  | { readonly kind: 'sint-deliverable'; readonly sints: number }
  | { readonly kind: 'canceled' }
  | { readonly kind: 'ignored'; readonly reason: number; readonly what: string; readonly detail: number };

export function unrecoverable(
  vp: number,
  reason: UnrecoverableExit['reason'],
  backendCode: number,
  detail: bigint,
  instructionBytes?: Uint8Array,
): WhpxEvent {
  const exit: UnrecoverableExit = { kind: 'unrecoverable', vp, reason, backendCode, detail, registers: undefined, instructionBytes };
  return { kind: 'exit', exit, completion: undefined };
}

/** A 64-bit guest address as a JS number, or undefined beyond 2^53 (no RAM or device lives there). */
export function safeGpa(gpa: bigint): number | undefined {
  return gpa <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(gpa) : undefined;
}
