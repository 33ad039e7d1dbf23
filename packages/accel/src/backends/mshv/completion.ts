/**
 * What the VMM owes MSHV after an intercept, in MSHV's register names: the shared x64 rules
 * (../hv-common/x64.ts, where MSHV and WHPX meet) with hv_register_name values. MSHV
 * completes nothing itself: the intercepted instruction has not retired, so the VMM writes
 * its results and moves RIP past it, or injects #GP through HV_REGISTER_PENDING_INTERRUPTION
 * and leaves RIP alone (OpenVMM's virt_mshv and cloud-hypervisor do the same).
 */
import type { Exit, ExitResponse } from '../../exits.js';
import type { Registers } from '../../registers.js';
import {
  completeX64Intercept,
  completeX64Mmio,
  diffRegisters as diff,
  type RegisterWrite,
  type X64Completion,
  type X64RegisterNames,
} from '../hv-common/x64.js';
import type { MmioInstruction } from '../x86-mmio.js';
import {
  HV_REGISTER_PENDING_INTERRUPTION,
  HV_X64_REGISTER_APIC_BASE,
  HV_X64_REGISTER_CR0,
  HV_X64_REGISTER_CR2,
  HV_X64_REGISTER_CR3,
  HV_X64_REGISTER_CR4,
  HV_X64_REGISTER_CR8,
  HV_X64_REGISTER_EFER,
  HV_X64_REGISTER_GDTR,
  HV_X64_REGISTER_IDTR,
  HvX64Register,
  HvX64SegmentRegister,
  pendingException,
  X86_VECTOR_GP,
} from './abi.js';
import type { InterceptContext } from './messages.js';

export { mergeIn } from '../hv-common/x64.js';
export type { RegisterWrite };

/** MSHV's hv_register_name for each register hvemu reads and writes. */
export const MSHV_X64_NAMES: X64RegisterNames = {
  general: HvX64Register,
  segments: HvX64SegmentRegister,
  gdtr: HV_X64_REGISTER_GDTR,
  idtr: HV_X64_REGISTER_IDTR,
  control: {
    cr0: HV_X64_REGISTER_CR0,
    cr2: HV_X64_REGISTER_CR2,
    cr3: HV_X64_REGISTER_CR3,
    cr4: HV_X64_REGISTER_CR4,
    cr8: HV_X64_REGISTER_CR8,
    efer: HV_X64_REGISTER_EFER,
    apicBase: HV_X64_REGISTER_APIC_BASE,
  },
  injectGp: { name: HV_REGISTER_PENDING_INTERRUPTION, value: pendingException(X86_VECTOR_GP, 0) },
};

export interface CompletionInput extends Omit<X64Completion, 'context'> {
  readonly exit: Exit;
  readonly context: InterceptContext | undefined;
}

/** The register writes that finish `exit` given the handler's answer (none for fatal exits, HLT, or no context). */
export function completeIntercept(input: CompletionInput, response: ExitResponse | void): RegisterWrite[] {
  const { context } = input;
  return context ? completeX64Intercept(MSHV_X64_NAMES, input.exit, { ...input, context }, response) : [];
}

/** Register writes for a memory intercept: the emulator's new register file, as a diff. */
export function completeMmio(instruction: MmioInstruction, regs: Registers, response: ExitResponse | void): RegisterWrite[] {
  return completeX64Mmio(MSHV_X64_NAMES, instruction, regs, response);
}

export function diffRegisters(before: Registers, after: Registers): RegisterWrite[] {
  return diff(MSHV_X64_NAMES, before, after);
}
