/**
 * What a decoded WHV_RUN_VP_EXIT_CONTEXT becomes: an Exit for the router together with what
 * the completion needs, an MMIO access that still needs registers before it is an Exit, or a
 * notification the backend consumes itself (SINT deliverable, canceled, ignored).
 */
import type { Exit, UnrecoverableExit } from '../../exits.js';
import type { MmioInstruction } from '../x86-mmio.js';
import { unrecoverableExit, type X64Completion as SharedX64Completion, type X64InterceptContext } from '../hv-common/x64.js';

/** The x64 VpContext fields the completion needs (the same facts as MSHV's intercept header). */
export type X64Context = X64InterceptContext;

/** What finishes an x64 exit besides the exit itself (hypercalls: the mode in the context picks RAX or EDX:EAX). */
export interface X64Completion extends SharedX64Completion {
  readonly arch: 'x64';
}

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
  return { kind: 'exit', exit: unrecoverableExit(vp, reason, backendCode, detail, instructionBytes), completion: undefined };
}

/** A 64-bit guest address as a JS number, or undefined beyond 2^53 (no RAM or device lives there). */
export function safeGpa(gpa: bigint): number | undefined {
  return gpa <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(gpa) : undefined;
}
