/**
 * What the VMM owes the hypervisor after an intercept. Unlike KVM, MSHV completes nothing:
 * the intercepted instruction has not retired, so the VMM writes its results (RAX, RDX...)
 * and moves RIP past it, or injects #GP and leaves RIP alone. Both OpenVMM's virt_mshv and
 * cloud-hypervisor do exactly this, including for hypercall intercepts (the hypervisor does
 * not advance RIP over the VMCALL it intercepted).
 *
 * Pure functions: they return the register writes; the partition applies them with one
 * HvCallSetVpRegisters.
 */
import type { Exit, ExitResponse } from '../../exits.js';
import { REG_NAMES, type Registers } from '../../registers.js';
import { completeMmioRead, completeMmioWrite, type MmioInstruction } from '../x86-mmio.js';
import { HV_REGISTER_PENDING_INTERRUPTION, HvX64Register, pendingException, X86_VECTOR_GP } from './abi.js';
import type { InterceptContext } from './messages.js';

export interface RegisterWrite {
  readonly name: number;
  readonly value: bigint;
}

const U64 = (v: bigint): bigint => BigInt.asUintN(64, v);

function advance(context: InterceptContext): RegisterWrite {
  return { name: HvX64Register.rip, value: U64(context.rip + BigInt(context.instructionLength)) };
}

const injectGp: RegisterWrite = { name: HV_REGISTER_PENDING_INTERRUPTION, value: pendingException(X86_VECTOR_GP, 0) };

function toBigInt(v: number | bigint | undefined): bigint {
  if (v === undefined) return 0n;
  return typeof v === 'bigint' ? v : BigInt(Math.trunc(v));
}

/** RAX after an IN of `size` bytes: a 32-bit write zero-extends, 8/16-bit writes merge. */
export function mergeIn(rax: bigint, size: 1 | 2 | 4, value: bigint): bigint {
  if (size === 4) return value & 0xffffffffn;
  const mask = (1n << BigInt(size * 8)) - 1n;
  return (rax & ~mask & 0xffff_ffff_ffff_ffffn) | (value & mask);
}

export interface CompletionInput {
  readonly exit: Exit;
  readonly context: InterceptContext | undefined;
  /** RAX from the message (port I/O). */
  readonly rax?: bigint;
  readonly cpuidDefault?: readonly [number, number, number, number];
}

/** The register writes that finish `exit` given the handler's answer (no writes for fatal exits). */
export function completeIntercept(input: CompletionInput, response: ExitResponse | void): RegisterWrite[] {
  const { exit, context } = input;
  const r = response ?? {};
  if (!context) return [];
  switch (exit.kind) {
    case 'io':
      if (exit.isWrite) return [advance(context)];
      return [{ name: HvX64Register.rax, value: mergeIn(input.rax ?? 0n, exit.size, toBigInt(r.value)) }, advance(context)];
    case 'msr-read': {
      if (r.gp) return [injectGp];
      const v = U64(toBigInt(r.value));
      return [
        { name: HvX64Register.rax, value: v & 0xffffffffn },
        { name: HvX64Register.rdx, value: v >> 32n },
        advance(context),
      ];
    }
    case 'msr-write':
      return r.gp ? [injectGp] : [advance(context)];
    case 'cpuid': {
      const [a, b, c, d] = r.cpuid ?? input.cpuidDefault ?? [0, 0, 0, 0];
      return [
        { name: HvX64Register.rax, value: BigInt(a >>> 0) },
        { name: HvX64Register.rbx, value: BigInt(b >>> 0) },
        { name: HvX64Register.rcx, value: BigInt(c >>> 0) },
        { name: HvX64Register.rdx, value: BigInt(d >>> 0) },
        advance(context),
      ];
    }
    case 'hypercall':
      return [{ name: HvX64Register.rax, value: U64(toBigInt(r.value)) }, advance(context)];
    case 'halt':
      // The intercept reports the HLT itself; resume after it (inference: same rule as the other intercepts).
      return [advance(context)];
    default:
      return [];
  }
}

/** Register writes for a memory intercept: the emulator's new register file, as a diff. */
export function completeMmio(instruction: MmioInstruction, regs: Registers, response: ExitResponse | void): RegisterWrite[] {
  const after = instruction.isWrite ? completeMmioWrite(instruction, regs) : completeMmioRead(instruction, regs, toBigInt(response?.value));
  // The access retired: RIP must move past it whether or not the emulator did that itself.
  const done = after.rip === regs.rip ? { ...after, rip: regs.rip + BigInt(instruction.length) } : after;
  return diffRegisters(regs, done);
}

export function diffRegisters(before: Registers, after: Registers): RegisterWrite[] {
  const out: RegisterWrite[] = [];
  for (const name of REG_NAMES) {
    if (before[name] !== after[name]) out.push({ name: HvX64Register[name], value: U64(after[name]) });
  }
  return out;
}
