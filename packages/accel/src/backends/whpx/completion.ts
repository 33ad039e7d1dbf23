/**
 * What the VMM owes WHP after an exit. WHP completes nothing: the instruction that exited has
 * not retired, so the VMM writes its results and moves RIP/PC past it, or injects #GP and
 * leaves RIP alone (OpenVMM virt_whp and QEMU's WHPX loops both do this, hypercall exits
 * included: OpenVMM's hypercall path sets RIP += 3 on x64 and PC += 4 on arm64, with
 * "pre_advanced = false").
 *
 * Pure functions returning register writes; the partition applies each list with one
 * WHvSetVirtualProcessorRegisters call.
 */
import type { Exit, ExitResponse } from '../../exits.js';
import { REG_NAMES, type Registers } from '../../registers.js';
import { completeMmioRead, completeMmioWrite, type MmioInstruction } from '../x86-mmio.js';
import { arm64X, pendingExceptionEvent, WHvArm64RegisterPc, WHvRegisterPendingEvent, WHvX64Register, X86_VECTOR_GP } from './abi.js';
import type { Arm64Completion, Arm64DataAccess, X64Completion, X64Context } from './events.js';

/** One WHV_REGISTER_VALUE to write: `value` is the low 64 bits, `high` the upper 64 (128-bit registers). */
export interface RegisterWrite {
  readonly name: number;
  readonly value: bigint;
  readonly high?: bigint;
}

const U64 = (v: bigint): bigint => BigInt.asUintN(64, v);
/** VMCALL (0F 01 C1) and VMMCALL (0F 01 D9) are 3 bytes; OpenVMM advances by this constant. */
const HYPERCALL_INSTRUCTION_LENGTH = 3n;
const A64_INSTRUCTION_LENGTH = 4n;

export function toBigInt(v: number | bigint | undefined): bigint {
  if (v === undefined) return 0n;
  return typeof v === 'bigint' ? v : BigInt(Math.trunc(v));
}

function advance(context: X64Context, by = BigInt(context.instructionLength)): RegisterWrite {
  return { name: WHvX64Register.rip, value: U64(context.rip + by) };
}

/** #GP(0) through WHvRegisterPendingEvent, as OpenVMM does after an MSR it does not handle. */
export const injectGp: RegisterWrite = { name: WHvRegisterPendingEvent, value: pendingExceptionEvent(X86_VECTOR_GP, 0), high: 0n };

/** RAX after an IN of `size` bytes: a 32-bit write zero-extends, 8/16-bit writes merge. */
export function mergeIn(rax: bigint, size: 1 | 2 | 4, value: bigint): bigint {
  if (size === 4) return value & 0xffffffffn;
  const mask = (1n << BigInt(size * 8)) - 1n;
  return (rax & ~mask & 0xffff_ffff_ffff_ffffn) | (value & mask);
}

/** The register writes that finish an x64 `exit` given the handler's answer (none for fatal exits). */
export function completeX64(exit: Exit, completion: X64Completion, response: ExitResponse | void): RegisterWrite[] {
  const r = response ?? {};
  const { context } = completion;
  switch (exit.kind) {
    case 'io':
      if (exit.isWrite) return [advance(context)];
      return [{ name: WHvX64Register.rax, value: mergeIn('rax' in completion ? (completion.rax ?? 0n) : 0n, exit.size, toBigInt(r.value)) }, advance(context)];
    case 'msr-read': {
      if (r.gp) return [injectGp];
      const v = U64(toBigInt(r.value));
      return [{ name: WHvX64Register.rax, value: v & 0xffffffffn }, { name: WHvX64Register.rdx, value: v >> 32n }, advance(context)];
    }
    case 'msr-write':
      return r.gp ? [injectGp] : [advance(context)];
    case 'cpuid': {
      const [a, b, c, d] = r.cpuid ?? ('cpuidDefault' in completion ? completion.cpuidDefault : undefined) ?? [0, 0, 0, 0];
      return [
        { name: WHvX64Register.rax, value: BigInt(a >>> 0) },
        { name: WHvX64Register.rbx, value: BigInt(b >>> 0) },
        { name: WHvX64Register.rcx, value: BigInt(c >>> 0) },
        { name: WHvX64Register.rdx, value: BigInt(d >>> 0) },
        advance(context),
      ];
    }
    case 'hypercall':
      return completeX64Hypercall(completion, U64(toBigInt(r.value)));
    default:
      return [];
  }
}

function completeX64Hypercall(completion: X64Completion, result: bigint): RegisterWrite[] {
  const is64 = 'hypercall64' in completion ? completion.hypercall64 : true;
  const next = advance(completion.context, HYPERCALL_INSTRUCTION_LENGTH);
  if (is64) return [{ name: WHvX64Register.rax, value: result }, next];
  // 32-bit callers get the 64-bit status in EDX:EAX.
  return [{ name: WHvX64Register.rax, value: result & 0xffffffffn }, { name: WHvX64Register.rdx, value: result >> 32n }, next];
}

/** Register writes for an x64 MMIO exit: the emulator's new register file as a diff, RIP moved past the access. */
export function completeX64Mmio(instruction: MmioInstruction, regs: Registers, response: ExitResponse | void): RegisterWrite[] {
  const after = instruction.isWrite ? completeMmioWrite(instruction, regs) : completeMmioRead(instruction, regs, toBigInt(response?.value));
  const done = after.rip === regs.rip ? { ...after, rip: regs.rip + BigInt(instruction.length) } : after;
  const out: RegisterWrite[] = [];
  for (const name of REG_NAMES) if (regs[name] !== done[name]) out.push({ name: WHvX64Register[name], value: U64(done[name]) });
  return out;
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
