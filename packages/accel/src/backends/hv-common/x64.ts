/**
 * What MSHV and WHPX share on x64, written once: both are the Hyper-V hypervisor, so their
 * intercepts carry the same facts (the TLFS hv_x64_intercept_message_header and WHP's
 * WHV_VP_EXIT_CONTEXT both give RIP, RFLAGS, CS and the instruction length), their register
 * values are the same 16-byte HV_REGISTER_VALUE, and neither completes an intercepted
 * instruction: the VMM writes the results and moves RIP, or injects #GP and leaves RIP alone.
 * Only the register *names* differ (hv_register_name vs WHV_REGISTER_NAME): each backend
 * hands in its table (X64RegisterNames).
 *
 * The rules the two copies used to disagree on, and what settled them (README, "Settled"):
 * - hypercall results: the TLFS calling convention of the caller's mode (RAX in 64-bit mode,
 *   EDX:EAX otherwise), and the inputs read the same way (hypercallExit);
 * - RIP after a hypercall: the instruction length the hypervisor reports, as for every other
 *   intercept; 3 (VMCALL/VMMCALL) when it reports none;
 * - HLT: no writes at all (the report comes after the HLT, not instead of it);
 * - every RIP advance wraps at the code's instruction-pointer width (IP, EIP, RIP).
 *
 * Pure functions: they return register writes; the backend applies each list in one call.
 */
import { HV_REGISTER_VALUE_SIZE } from '@hvemu/hvdef';
import type { Exit, ExitResponse, HypercallExit, UnrecoverableExit } from '../../exits.js';
import { REG_NAMES, type DescriptorTable, type Registers, type Segment, type SpecialRegisters } from '../../registers.js';
import { completeMmioRead, completeMmioWrite, instructionPointerBits, type MmioInstruction } from '../x86-mmio.js';

/** One 16-byte register value to write: `value` the low 64 bits, `high` the upper 64 (segments, tables). */
export interface RegisterWrite {
  readonly name: number;
  readonly value: bigint;
  readonly high?: bigint;
}

/** The intercept facts the completion needs (TLFS intercept header / WHP VpContext). */
export interface X64InterceptContext {
  readonly rip: bigint;
  readonly rflags: bigint;
  /** Bits 0-3 of the header's length byte; 0 when the hypervisor did not give it. */
  readonly instructionLength: number;
  readonly executionState: number;
  /** 64-bit code: CR0.PE, EFER.LMA and CS.L. */
  readonly longMode: boolean;
  /** CS.D: default operand (and instruction pointer) size 32 outside 64-bit mode. */
  readonly defaultOperand32: boolean;
}

/** What finishes a non-MMIO x64 intercept besides the exit itself. */
export interface X64Completion {
  readonly context: X64InterceptContext;
  /** RAX as the intercept reports it (port IN of 1 or 2 bytes merges into it). */
  readonly rax?: bigint;
  /** The hypervisor's own CPUID result, used when no handler answers. */
  readonly cpuidDefault?: readonly [number, number, number, number];
}

export type SegmentName = 'cs' | 'ds' | 'es' | 'fs' | 'gs' | 'ss' | 'tr' | 'ldt';
export type ControlName = 'cr0' | 'cr2' | 'cr3' | 'cr4' | 'cr8' | 'efer' | 'apicBase';

/** A backend's names for the x64 registers hvemu reads and writes. */
export interface X64RegisterNames {
  readonly general: Readonly<Record<keyof Registers, number>>;
  readonly segments: Readonly<Record<SegmentName, number>>;
  readonly gdtr: number;
  readonly idtr: number;
  readonly control: Readonly<Record<ControlName, number>>;
  /** The pending-event write that raises #GP(0) without moving RIP. */
  readonly injectGp: RegisterWrite;
}

export { HV_REGISTER_VALUE_SIZE } from '@hvemu/hvdef';
/** VMCALL (0F 01 C1) and VMMCALL (0F 01 D9): the only instructions a TLFS hypercall page holds. */
export const HYPERCALL_INSTRUCTION_LENGTH = 3;
const SEGMENT_NAMES: readonly SegmentName[] = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'];
const CONTROL_NAMES: readonly ControlName[] = ['cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer', 'apicBase'];
const U32 = 0xffff_ffffn;
const U64 = (v: bigint): bigint => BigInt.asUintN(64, v);

/** An exit hvemu cannot continue from (a hostile or unknown intercept), reported with what is known. */
export function unrecoverableExit(
  vp: number,
  reason: UnrecoverableExit['reason'],
  backendCode: number,
  detail: bigint,
  instructionBytes?: Uint8Array,
): UnrecoverableExit {
  return { kind: 'unrecoverable', vp, reason, backendCode, detail, registers: undefined, instructionBytes };
}

export function toBigInt(v: number | bigint | undefined): bigint {
  if (v === undefined) return 0n;
  return typeof v === 'bigint' ? v : BigInt(Math.trunc(v));
}

/** RIP + `length`, wrapped at the code's instruction-pointer width. */
export function advancedRip(context: X64InterceptContext, length: number): bigint {
  return BigInt.asUintN(instructionPointerBits(context), context.rip + BigInt(length));
}

/** RAX after an IN of `size` bytes: a 32-bit write zero-extends, 8/16-bit writes merge. */
export function mergeIn(rax: bigint, size: 1 | 2 | 4, value: bigint): bigint {
  if (size === 4) return value & U32;
  const mask = (1n << BigInt(size * 8)) - 1n;
  return (rax & ~mask & 0xffff_ffff_ffff_ffffn) | (value & mask);
}

/**
 * A hypercall exit from the caller's registers, by the TLFS x64 calling convention: in 64-bit
 * mode RCX control, RDX input, R8 output (XMM0-5 for XMM fast input); otherwise EDX:EAX
 * control, EBX:ECX input, EDI:ESI output (no XMM fast calls).
 */
export function hypercallExit(
  vp: number,
  longMode: boolean,
  r: { rax: bigint; rbx: bigint; rcx: bigint; rdx: bigint; r8: bigint; rsi: bigint; rdi: bigint },
  xmm: Uint8Array,
  fastBit: bigint,
): HypercallExit {
  const pair = (hi: bigint, lo: bigint): bigint => ((hi & U32) << 32n) | (lo & U32);
  const control = longMode ? r.rcx : pair(r.rdx, r.rax);
  return {
    kind: 'hypercall',
    vp,
    control,
    input: longMode ? r.rdx : pair(r.rbx, r.rcx),
    output: longMode ? r.r8 : pair(r.rdi, r.rsi),
    xmm: longMode && (control & fastBit) !== 0n ? xmm : undefined,
  };
}

/** The register writes that finish `exit` given the handler's answer (none for fatal exits and HLT). */
export function completeX64Intercept(
  names: X64RegisterNames,
  exit: Exit,
  completion: X64Completion,
  response: ExitResponse | void,
): RegisterWrite[] {
  const r = response ?? {};
  const { context } = completion;
  const g = names.general;
  const next = (length = context.instructionLength): RegisterWrite => ({ name: g.rip, value: advancedRip(context, length) });
  switch (exit.kind) {
    case 'io':
      if (exit.isWrite) return [next()];
      return [{ name: g.rax, value: mergeIn(completion.rax ?? 0n, exit.size, toBigInt(r.value)) }, next()];
    case 'msr-read': {
      if (r.gp) return [names.injectGp];
      const v = U64(toBigInt(r.value));
      return [{ name: g.rax, value: v & U32 }, { name: g.rdx, value: v >> 32n }, next()];
    }
    case 'msr-write':
      return r.gp ? [names.injectGp] : [next()];
    case 'cpuid': {
      const [a, b, c, d] = r.cpuid ?? completion.cpuidDefault ?? [0, 0, 0, 0];
      return [
        { name: g.rax, value: BigInt(a >>> 0) },
        { name: g.rbx, value: BigInt(b >>> 0) },
        { name: g.rcx, value: BigInt(c >>> 0) },
        { name: g.rdx, value: BigInt(d >>> 0) },
        next(),
      ];
    }
    case 'hypercall': {
      const result = U64(toBigInt(r.value));
      const rip = next(context.instructionLength || HYPERCALL_INSTRUCTION_LENGTH);
      if (context.longMode) return [{ name: g.rax, value: result }, rip];
      return [{ name: g.rax, value: result & U32 }, { name: g.rdx, value: result >> 32n }, rip];
    }
    default:
      // halt: the hypervisor reports a HLT it has already executed (README, "Settled").
      return [];
  }
}

/** Register writes for an x64 MMIO exit: the emulator's new register file as a diff, RIP past the access (wrapped). */
export function completeX64Mmio(
  names: X64RegisterNames,
  instruction: MmioInstruction,
  regs: Registers,
  response: ExitResponse | void,
): RegisterWrite[] {
  const after = instruction.isWrite ? completeMmioWrite(instruction, regs) : completeMmioRead(instruction, regs, toBigInt(response?.value));
  return diffRegisters(names, regs, after);
}

export function diffRegisters(names: X64RegisterNames, before: Registers, after: Registers): RegisterWrite[] {
  const out: RegisterWrite[] = [];
  for (const name of REG_NAMES) if (before[name] !== after[name]) out.push({ name: names.general[name], value: U64(after[name]) });
  return out;
}

// --- register files ------------------------------------------------------------------------

/** The names to read for getSpecialRegisters, in the order specialFromValues expects. */
export function specialRegisterNames(names: X64RegisterNames): number[] {
  return [...SEGMENT_NAMES.map((s) => names.segments[s]), names.gdtr, names.idtr, ...CONTROL_NAMES.map((c) => names.control[c])];
}

export function generalRegisterNames(names: X64RegisterNames): number[] {
  return REG_NAMES.map((n) => names.general[n]);
}

/** Registers from 16-byte values read in generalRegisterNames order. */
export function generalFromValues(values: Uint8Array): Registers {
  const view = new DataView(values.buffer, values.byteOffset, values.byteLength);
  const r = {} as Record<keyof Registers, bigint>;
  REG_NAMES.forEach((n, i) => (r[n] = view.getBigUint64(i * HV_REGISTER_VALUE_SIZE, true)));
  return r;
}

export function generalWrites(names: X64RegisterNames, regs: Registers): RegisterWrite[] {
  return REG_NAMES.map((n) => ({ name: names.general[n], value: U64(regs[n]) }));
}

/** SpecialRegisters from 16-byte values read in specialRegisterNames order. */
export function specialFromValues(values: Uint8Array): SpecialRegisters {
  const at = (i: number): Uint8Array => values.subarray(i * HV_REGISTER_VALUE_SIZE, (i + 1) * HV_REGISTER_VALUE_SIZE);
  const view = new DataView(values.buffer, values.byteOffset, values.byteLength);
  const result: Record<string, unknown> = {};
  SEGMENT_NAMES.forEach((name, i) => (result[name] = decodeSegment(at(i))));
  result['gdt'] = decodeTable(at(SEGMENT_NAMES.length));
  result['idt'] = decodeTable(at(SEGMENT_NAMES.length + 1));
  CONTROL_NAMES.forEach((n, i) => (result[n] = view.getBigUint64((SEGMENT_NAMES.length + 2 + i) * HV_REGISTER_VALUE_SIZE, true)));
  return result as unknown as SpecialRegisters;
}

export function specialWrites(names: X64RegisterNames, s: SpecialRegisters): RegisterWrite[] {
  return [
    ...SEGMENT_NAMES.map((seg) => ({ name: names.segments[seg], ...encodeSegment(s[seg]) })),
    { name: names.gdtr, ...encodeTable(s.gdt) },
    { name: names.idtr, ...encodeTable(s.idt) },
    ...CONTROL_NAMES.map((c) => ({ name: names.control[c], value: U64(s[c]) })),
  ];
}

/** 16-byte values for `writes` (low 64 bits, then high 64), in order. */
export function encodeRegisterValues(writes: readonly RegisterWrite[]): Uint8Array {
  const values = new Uint8Array(writes.length * HV_REGISTER_VALUE_SIZE);
  const view = new DataView(values.buffer);
  writes.forEach((w, i) => {
    view.setBigUint64(i * HV_REGISTER_VALUE_SIZE, U64(w.value), true);
    view.setBigUint64(i * HV_REGISTER_VALUE_SIZE + 8, U64(w.high ?? 0n), true);
  });
  return values;
}

// --- segment codecs --------------------------------------------------------------------------
// hv_x64_segment_register (TLFS) = WHV_X64_SEGMENT_REGISTER (WinHvPlatformDefs.h): base u64 @0,
// limit u32 @8, selector u16 @12, attributes u16 @14 (type 0-3, S 4, DPL 5-6, P 7, AVL 12,
// L 13, D/B 14, G 15). hv_x64_table_register = WHV_X64_TABLE_REGISTER: pad u16[3], limit u16 @6,
// base u64 @8.

export function decodeSegment(b: Uint8Array): Segment {
  const view = new DataView(b.buffer, b.byteOffset, HV_REGISTER_VALUE_SIZE);
  const a = view.getUint16(14, true);
  const bit = (n: number): boolean => ((a >>> n) & 1) === 1;
  return {
    base: view.getBigUint64(0, true),
    limit: view.getUint32(8, true),
    selector: view.getUint16(12, true),
    type: a & 0xf,
    s: bit(4),
    dpl: (a >>> 5) & 3,
    present: bit(7),
    avl: bit(12),
    l: bit(13),
    db: bit(14),
    g: bit(15),
    unusable: !bit(7),
  };
}

export function encodeSegment(s: Segment): { value: bigint; high: bigint } {
  const b = (v: boolean, n: number): number => (v ? 1 << n : 0);
  const attributes =
    (s.type & 0xf) | b(s.s, 4) | ((s.dpl & 3) << 5) | b(s.present && !s.unusable, 7) | b(s.avl, 12) | b(s.l, 13) | b(s.db, 14) | b(s.g, 15);
  const high = BigInt(s.limit >>> 0) | (BigInt(s.selector & 0xffff) << 32n) | (BigInt(attributes) << 48n);
  return { value: U64(s.base), high };
}

export function decodeTable(b: Uint8Array): DescriptorTable {
  const view = new DataView(b.buffer, b.byteOffset, HV_REGISTER_VALUE_SIZE);
  return { limit: view.getUint16(6, true), base: view.getBigUint64(8, true) };
}

export function encodeTable(t: DescriptorTable): { value: bigint; high: bigint } {
  return { value: BigInt(t.limit & 0xffff) << 48n, high: U64(t.base) };
}
