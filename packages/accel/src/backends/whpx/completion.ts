/**
 * What the VMM owes WHP after an exit. WHP completes nothing: the instruction that exited has
 * not retired, so the VMM writes its results and moves RIP/PC past it, or injects #GP and
 * leaves RIP alone (OpenVMM virt_whp and QEMU's WHPX loops both do this, hypercall exits
 * included). x64: the rules MSHV shares (../hv-common/x64.ts) in WHP's register names.
 * arm64: PC += 4 after a data abort or HVC, X0 = hypercall status.
 *
 * Pure functions returning register writes; the partition applies each list with one
 * WHvSetVirtualProcessorRegisters call.
 */
import type { Exit, ExitResponse } from '../../exits.js';
import type { Registers } from '../../registers.js';
import {
  completeX64Intercept,
  completeX64Mmio as completeMmio,
  toBigInt,
  type RegisterWrite,
  type X64RegisterNames,
} from '../hv-common/x64.js';
import type { MmioInstruction } from '../x86-mmio.js';
import {
  arm64X,
  pendingExceptionEvent,
  WHvArm64RegisterPc,
  WHvRegisterPendingEvent,
  WHvX64Register,
  WHvX64RegisterApicBase,
  WHvX64RegisterCr0,
  WHvX64RegisterCr2,
  WHvX64RegisterCr3,
  WHvX64RegisterCr4,
  WHvX64RegisterCr8,
  WHvX64RegisterEfer,
  WHvX64RegisterGdtr,
  WHvX64RegisterIdtr,
  WHvX64SegmentRegister,
  X86_VECTOR_GP,
} from './abi.js';
import type { Arm64Completion, Arm64DataAccess, X64Completion } from './events.js';

export { mergeIn, toBigInt } from '../hv-common/x64.js';
export type { RegisterWrite };

const U64 = (v: bigint): bigint => BigInt.asUintN(64, v);
const A64_INSTRUCTION_LENGTH = 4n;

/** #GP(0) through WHvRegisterPendingEvent, as OpenVMM does after an MSR it does not handle. */
export const injectGp: RegisterWrite = { name: WHvRegisterPendingEvent, value: pendingExceptionEvent(X86_VECTOR_GP, 0), high: 0n };

/** WHP's WHV_REGISTER_NAME for each x64 register hvemu reads and writes. */
export const WHPX_X64_NAMES: X64RegisterNames = {
  general: WHvX64Register,
  segments: WHvX64SegmentRegister,
  gdtr: WHvX64RegisterGdtr,
  idtr: WHvX64RegisterIdtr,
  control: {
    cr0: WHvX64RegisterCr0,
    cr2: WHvX64RegisterCr2,
    cr3: WHvX64RegisterCr3,
    cr4: WHvX64RegisterCr4,
    cr8: WHvX64RegisterCr8,
    efer: WHvX64RegisterEfer,
    apicBase: WHvX64RegisterApicBase,
  },
  injectGp,
};

/** The register writes that finish an x64 `exit` given the handler's answer (none for fatal exits and HLT). */
export function completeX64(exit: Exit, completion: X64Completion, response: ExitResponse | void): RegisterWrite[] {
  return completeX64Intercept(WHPX_X64_NAMES, exit, completion, response);
}

/** Register writes for an x64 MMIO exit: the emulator's new register file as a diff, RIP moved past the access. */
export function completeX64Mmio(instruction: MmioInstruction, regs: Registers, response: ExitResponse | void): RegisterWrite[] {
  return completeMmio(WHPX_X64_NAMES, instruction, regs, response);
}

/** The value a load of `access.size` bytes leaves in its destination register (SSE / SF rules). */
export function arm64LoadValue(access: Arm64DataAccess, raw: bigint): bigint {
  const bits = BigInt(access.size * 8);
  let v = raw & ((1n << bits) - 1n);
  if (access.signExtend) v = BigInt.asUintN(64, BigInt.asIntN(Number(bits), v));
  // A W destination is 32 bits wide, and writing it zeroes the upper half of the X register.
  return access.sixtyFour ? v : v & 0xffffffffn;
}

/** arm64 MMIO: a load writes X[SRT] (nothing for XZR), then PC += 4. */
export function completeArm64Mmio(access: Arm64DataAccess, pc: bigint, response: ExitResponse | void): RegisterWrite[] {
  const next: RegisterWrite = { name: WHvArm64RegisterPc, value: U64(pc + A64_INSTRUCTION_LENGTH) };
  if (access.isWrite || access.srt === 31) return [next];
  return [{ name: arm64X(access.srt), value: arm64LoadValue(access, toBigInt(response?.value)) }, next];
}

/** arm64 exits with a completion: hypercall -> X0 = status, PC += 4. */
export function completeArm64(exit: Exit, completion: Arm64Completion, response: ExitResponse | void): RegisterWrite[] {
  if (exit.kind !== 'hypercall') return [];
  return [
    { name: arm64X(0), value: U64(toBigInt(response?.value)) },
    { name: WHvArm64RegisterPc, value: U64(completion.pc + A64_INSTRUCTION_LENGTH) },
  ];
}

/** The value an arm64 store writes: X[SRT] truncated to the access size (XZR stores 0). */
export function arm64StoreValue(access: Arm64DataAccess, registerValue: bigint): bigint {
  if (access.srt === 31) return 0n;
  return registerValue & ((1n << BigInt(access.size * 8)) - 1n);
}
