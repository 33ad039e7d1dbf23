/**
 * The x86 instructions guests use to touch MMIO, decoded from the bytes an intercept carries,
 * and completed in software. MSHV and WHPX report an access to unmapped GPA with the
 * instruction bytes (the length not always) but do not emulate it: the VMM decodes the
 * instruction, performs the access through a device, writes the destination register and
 * advances RIP.
 *
 * Supported (what Linux readb..readq / writeb..writeq and compilers emit):
 *   MOV r/m8,r8 (88), MOV r/m,r (89), MOV r8,r/m8 (8A), MOV r,r/m (8B),
 *   MOV r/m8,imm8 (C6 /0), MOV r/m,imm16/32 (C7 /0; imm32 sign-extended under REX.W),
 *   MOV AL/rAX <-> moffs (A0-A3; 8-byte moffs in 64-bit mode, 4 with 67),
 *   MOVZX (0F B6/B7), MOVSX (0F BE/BF), MOVSXD (REX.W 63, 64-bit mode only).
 * Prefixes: 66 (operand size), 67 (address size: changes only how many address bytes follow),
 * segment overrides 26 2E 36 3E 64 65 (the hypervisor already resolved the GPA), REX 40-4F in
 * 64-bit mode. As on hardware, a REX prefix counts only when it immediately precedes the
 * opcode, and without any REX byte-register encodings 4-7 are AH CH DH BH (with one: SPL BPL
 * SIL DIL).
 *
 * Rejected with MmioDecodeError: LOCK (F0: MOV is not lockable, the CPU raises #UD before any
 * access, and a locked read-modify-write on device memory is not something we emulate),
 * REP/REPNE (F2/F3: string instructions, XACQUIRE/XRELEASE), any other opcode, register-form
 * ModRM (mod = 3 touches no memory), C6/C7 with reg != 0, 63 without REX.W or outside
 * 64-bit mode (ARPL there), bytes that end before the instruction does, and instructions
 * longer than 15 bytes.
 *
 * The error's outcome is 'host-error': like KVM's emulation failure, the backend stops the
 * vCPU and reports an unrecoverable exit (GuestFatalError, reason 'emulation-failure') with
 * the bytes, rather than injecting #UD/#GP. An instruction the CPU executed and that faulted
 * on MMIO is a real instruction, so an injected fault would make a correct guest misbehave
 * silently; stopping makes the missing emulation visible.
 *
 * Hostile input: every byte array (any length, any content) either decodes or throws
 * MmioDecodeError; all reads go through a bounds-checked cursor.
 */
import { HvemuError } from '@hvemu/common';
import type { Registers } from '../registers.js';

/** 0..15 in x86 encoding order: rax rcx rdx rbx rsp rbp rsi rdi r8..r15. */
export type GprIndex = number;

export interface MmioInstruction {
  /** Bytes consumed: prefixes, opcode, ModRM, SIB, displacement, immediate. */
  readonly length: number;
  /** Access width in bytes. */
  readonly size: 1 | 2 | 4 | 8;
  /** Memory is written. */
  readonly isWrite: boolean;
  /** For writes: where the stored value comes from. */
  readonly source?: { kind: 'register'; reg: GprIndex; highByte: boolean } | { kind: 'immediate'; value: bigint };
  /** For reads: the destination register and how the value is extended into it. */
  readonly destination?: { reg: GprIndex; highByte: boolean; extend: 'zero' | 'sign' | 'none'; destSize: 1 | 2 | 4 | 8 };
  /** For logs: 'mov', 'movzx', 'movsx', 'movsxd'. */
  readonly mnemonic: string;
  /**
   * Width of the instruction pointer the access advances: 64 in 64-bit code, else CS.D's 32
   * or 16 (an operand-size prefix does not change it). RIP + length wraps at this width, as
   * the CPU's does. Absent: 64.
   */
  readonly ipBits?: 16 | 32 | 64;
}

/**
 * An instruction the MMIO emulator does not handle (or bytes that are no instruction). The
 * backend stops the vCPU with an emulation failure; see the module comment for why not #UD.
 */
export class MmioDecodeError extends HvemuError {
  readonly outcome = 'host-error' as const;
}

/** The CPU's architectural limit; longer encodings raise #GP and never reach an intercept. */
export const MAX_INSTRUCTION_LENGTH = 15;

const GPR_NAMES = [
  'rax',
  'rcx',
  'rdx',
  'rbx',
  'rsp',
  'rbp',
  'rsi',
  'rdi',
  'r8',
  'r9',
  'r10',
  'r11',
  'r12',
  'r13',
  'r14',
  'r15',
] as const satisfies readonly (keyof Registers)[];
const SEGMENT_PREFIXES: ReadonlySet<number> = new Set([0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65]);

/** `longMode`: 64-bit code (EFER.LMA and CS.L). `defaultOperand32`: CS.D, the default operand
 * and address size outside 64-bit mode (ignored in it). */
export interface MmioDecodeMode {
  readonly longMode: boolean;
  readonly defaultOperand32: boolean;
}

/** What the prefixes and the mode make of operand and address size. */
interface Context {
  readonly longMode: boolean;
  readonly rex: number; // 0 when absent (or not last before the opcode), else 0x40-0x4f
  readonly operandSize: 2 | 4 | 8;
  readonly addressSize: 2 | 4 | 8;
}

/** Reads bytes with bounds checks: running off the end is the only way past a byte array. */
class Cursor {
  at = 0;
  constructor(private readonly bytes: Uint8Array) {}
  next(): number {
    if (this.at >= MAX_INSTRUCTION_LENGTH)
      throw new MmioDecodeError(`instruction longer than ${MAX_INSTRUCTION_LENGTH} bytes: ${hex(this.bytes)}`);
    if (this.at >= this.bytes.length)
      throw new MmioDecodeError(`instruction truncated after ${this.bytes.length} bytes: ${hex(this.bytes)}`);
    return this.bytes[this.at++];
  }
  skip(n: number): void {
    for (let i = 0; i < n; i++) this.next();
  }
  /** A little-endian unsigned immediate of n bytes. */
  immediate(n: number): bigint {
    let v = 0n;
    for (let i = 0; i < n; i++) v |= BigInt(this.next()) << BigInt(8 * i);
    return v;
  }
}

/** Decodes the MMIO instruction at the start of `bytes`; throws MmioDecodeError for anything else. */
export function decodeMmioInstruction(bytes: Uint8Array, mode: MmioDecodeMode): MmioInstruction {
  if (!(bytes instanceof Uint8Array)) throw new MmioDecodeError('decodeMmioInstruction: bytes must be a Uint8Array');
  if (mode === null || typeof mode !== 'object') throw new MmioDecodeError('decodeMmioInstruction: mode must be an object');
  const c = new Cursor(bytes);
  const ctx = readPrefixes(c, mode);
  return { ...decodeOpcode(c, ctx, bytes), ipBits: instructionPointerBits(mode) };
}

/** 64 in 64-bit code; outside it CS.D says 32 or 16. */
export function instructionPointerBits(mode: MmioDecodeMode): 16 | 32 | 64 {
  return mode.longMode ? 64 : mode.defaultOperand32 ? 32 : 16;
}

function decodeOpcode(c: Cursor, ctx: Context, bytes: Uint8Array): MmioInstruction {
  const op = c.next();
  switch (op) {
    case 0x88:
    case 0x89:
    case 0x8a:
    case 0x8b:
      return decodeMov(c, ctx, op);
    case 0xc6:
    case 0xc7:
      return decodeMovImmediate(c, ctx, op, bytes);
    case 0xa0:
    case 0xa1:
    case 0xa2:
    case 0xa3:
      return decodeMovOffset(c, ctx, op);
    case 0x63:
      return decodeMovsxd(c, ctx, bytes);
    case 0x0f:
      return decodeExtend(c, ctx, bytes);
    default:
      throw new MmioDecodeError(`opcode ${hexByte(op)} is not an MMIO instruction hvemu emulates: ${hex(bytes)}`);
  }
}

/**
 * Legacy prefixes in any order and number, then (64-bit mode) REX. A REX followed by another
 * prefix is ignored by the CPU, and of several REX bytes only the last counts.
 */
function readPrefixes(c: Cursor, mode: MmioDecodeMode): Context {
  let operandOverride = false;
  let addressOverride = false;
  let rex = 0;
  for (;;) {
    const b = c.next();
    if (b === 0xf0)
      throw new MmioDecodeError('LOCK-prefixed MMIO access is not emulated (LOCK MOV is #UD; atomics on device memory are not supported)');
    if (b === 0xf2 || b === 0xf3)
      throw new MmioDecodeError('REP/REPNE-prefixed MMIO access (string instruction or XACQUIRE/XRELEASE) is not emulated');
    if (mode.longMode && b >= 0x40 && b <= 0x4f) {
      rex = b;
      continue;
    }
    if (b === 0x66) operandOverride = true;
    else if (b === 0x67) addressOverride = true;
    else if (!SEGMENT_PREFIXES.has(b)) {
      c.at--; // the opcode: leave it for the caller
      return sizes(mode, rex, operandOverride, addressOverride);
    }
    rex = 0; // a legacy prefix after REX: that REX is ignored
  }
}

/**
 * 64-bit mode: operand 32 (66: 16, REX.W: 64, W wins over 66), address 64 (67: 32).
 * Otherwise CS.D picks 32 or 16 for both, and 66 / 67 flip them.
 */
function sizes(mode: MmioDecodeMode, rex: number, operandOverride: boolean, addressOverride: boolean): Context {
  if (mode.longMode) {
    const operandSize = rex & 8 ? 8 : operandOverride ? 2 : 4;
    return { longMode: true, rex, operandSize, addressSize: addressOverride ? 4 : 8 };
  }
  const flip = (override: boolean): 2 | 4 => (mode.defaultOperand32 !== override ? 4 : 2);
  return { longMode: false, rex: 0, operandSize: flip(operandOverride), addressSize: flip(addressOverride) };
}

/** 88/89 store a register, 8A/8B load one. */
function decodeMov(c: Cursor, ctx: Context, op: number): MmioInstruction {
  const reg = readModRm(c, ctx).reg;
  const size = op === 0x88 || op === 0x8a ? 1 : ctx.operandSize;
  const r = register(reg, size, ctx.rex);
  if (op <= 0x89) return { length: c.at, size, isWrite: true, source: { kind: 'register', ...r }, mnemonic: 'mov' };
  return { length: c.at, size, isWrite: false, destination: { ...r, extend: 'none', destSize: size }, mnemonic: 'mov' };
}

/** C6 /0 ib and C7 /0 iw/id: the immediate comes after ModRM, SIB and displacement. */
function decodeMovImmediate(c: Cursor, ctx: Context, op: number, bytes: Uint8Array): MmioInstruction {
  const m = readModRm(c, ctx);
  if (m.regField !== 0) throw new MmioDecodeError(`opcode ${hexByte(op)} /${m.regField} is not MOV: ${hex(bytes)}`);
  const size = op === 0xc6 ? 1 : ctx.operandSize;
  let value = c.immediate(size === 8 ? 4 : size);
  if (size === 8) value = BigInt.asUintN(64, BigInt.asIntN(32, value)); // REX.W: imm32 sign-extended to 64
  return { length: c.at, size, isWrite: true, source: { kind: 'immediate', value }, mnemonic: 'mov' };
}

/** A0/A1 load AL/rAX, A2/A3 store it; the absolute offset is address-size wide. No ModRM, REX.B ignored. */
function decodeMovOffset(c: Cursor, ctx: Context, op: number): MmioInstruction {
  c.skip(ctx.addressSize);
  const size = op === 0xa0 || op === 0xa2 ? 1 : ctx.operandSize;
  const rax = { reg: 0, highByte: false };
  if (op <= 0xa1) return { length: c.at, size, isWrite: false, destination: { ...rax, extend: 'none', destSize: size }, mnemonic: 'mov' };
  return { length: c.at, size, isWrite: true, source: { kind: 'register', ...rax }, mnemonic: 'mov' };
}

/** REX.W 63: MOVSXD r64, r/m32. Without W it is a plain 32-bit move nobody emits; outside 64-bit mode it is ARPL. */
function decodeMovsxd(c: Cursor, ctx: Context, bytes: Uint8Array): MmioInstruction {
  if (!ctx.longMode || !(ctx.rex & 8))
    throw new MmioDecodeError(`opcode 63 is emulated only as MOVSXD with REX.W in 64-bit mode: ${hex(bytes)}`);
  const reg = readModRm(c, ctx).reg;
  return { length: c.at, size: 4, isWrite: false, destination: { reg, highByte: false, extend: 'sign', destSize: 8 }, mnemonic: 'movsxd' };
}

/** 0F B6/B7 MOVZX and 0F BE/BF MOVSX: a byte or word read extended to the operand size. */
function decodeExtend(c: Cursor, ctx: Context, bytes: Uint8Array): MmioInstruction {
  const op2 = c.next();
  if (op2 !== 0xb6 && op2 !== 0xb7 && op2 !== 0xbe && op2 !== 0xbf) {
    throw new MmioDecodeError(`opcode 0f ${hexByte(op2)} is not an MMIO instruction hvemu emulates: ${hex(bytes)}`);
  }
  const reg = readModRm(c, ctx).reg;
  const size = op2 === 0xb6 || op2 === 0xbe ? 1 : 2;
  const extend = op2 === 0xb6 || op2 === 0xb7 ? 'zero' : 'sign';
  const destSize = ctx.operandSize; // never 1, so never AH..BH
  return {
    length: c.at,
    size,
    isWrite: false,
    destination: { reg, highByte: false, extend, destSize },
    mnemonic: extend === 'zero' ? 'movzx' : 'movsx',
  };
}

/**
 * Consumes ModRM and whatever addressing bytes it implies (SIB, displacement), so that the
 * length, and the position of any immediate, is right. The address itself is not needed:
 * the hypervisor reports the GPA. The register form (mod = 3) is not a memory access.
 */
function readModRm(c: Cursor, ctx: Context): { reg: GprIndex; regField: number } {
  const modrm = c.next();
  const mod = modrm >> 6;
  const regField = (modrm >> 3) & 7;
  const rm = modrm & 7;
  if (mod === 3) throw new MmioDecodeError(`register-form ModRM ${hexByte(modrm)}: the instruction does not access memory`);
  if (ctx.addressSize === 2) skipDisplacement16(c, mod, rm);
  else skipDisplacement32(c, mod, rm);
  return { reg: regField | ((ctx.rex & 4) << 1), regField };
}

/** 16-bit addressing: no SIB; mod 0 rm 6 is a bare disp16. */
function skipDisplacement16(c: Cursor, mod: number, rm: number): void {
  if (mod === 1) c.skip(1);
  else if (mod === 2 || (mod === 0 && rm === 6)) c.skip(2);
}

/**
 * 32/64-bit addressing: rm 4 brings a SIB byte; mod 0 with rm 5 (RIP-relative in 64-bit mode,
 * absolute otherwise) or with SIB base 5 (no base) is a bare disp32. REX.B does not change
 * these rules (r12 needs a SIB like rsp, r13 a displacement like rbp).
 */
function skipDisplacement32(c: Cursor, mod: number, rm: number): void {
  const base = rm === 4 ? c.next() & 7 : rm;
  if (mod === 1) c.skip(1);
  else if (mod === 2 || (mod === 0 && base === 5)) c.skip(4);
}

/** A ModRM reg operand. Without any REX, byte registers 4-7 are AH, CH, DH, BH. */
function register(reg: GprIndex, size: number, rex: number): { reg: GprIndex; highByte: boolean } {
  if (size === 1 && rex === 0 && reg >= 4) return { reg: reg - 4, highByte: true };
  return { reg, highByte: false };
}

const mask = (size: number): bigint => (1n << BigInt(size * 8)) - 1n;

function readGpr(regs: Registers, reg: GprIndex, highByte: boolean, size: number): bigint {
  const v = BigInt.asUintN(64, regs[GPR_NAMES[reg]]);
  return highByte ? (v >> 8n) & 0xffn : v & mask(size);
}

/** The value a write instruction stores (from a register or the immediate), masked to its size. */
export function mmioStoreValue(insn: MmioInstruction, regs: Registers): bigint {
  const s = insn.source;
  if (!s) throw new MmioDecodeError(`${insn.mnemonic} is a read, it stores nothing`);
  return s.kind === 'immediate' ? s.value & mask(insn.size) : readGpr(regs, s.reg, s.highByte, insn.size);
}

/** `value` (the `size` bytes read) extended as the instruction says, masked to the destination. */
function extendedValue(insn: MmioInstruction, extend: 'zero' | 'sign' | 'none', destSize: number, value: bigint): bigint {
  const bits = insn.size * 8;
  const v = extend === 'sign' ? BigInt.asIntN(bits, value) : BigInt.asUintN(bits, value);
  return BigInt.asUintN(destSize * 8, v);
}

/**
 * Registers after a read completed with `value`: the destination written with x86 semantics
 * (a 32-bit destination zero-extends into all 64 bits; 8/16-bit ones keep the rest; AH..BH
 * replace bits 8-15) and RIP advanced past the instruction. Pure: returns a new Registers.
 */
export function completeMmioRead(insn: MmioInstruction, regs: Registers, value: bigint): Registers {
  const d = insn.destination;
  if (!d) throw new MmioDecodeError(`${insn.mnemonic} is a write, it has no destination`);
  const v = extendedValue(insn, d.extend, d.destSize, value);
  const name = GPR_NAMES[d.reg];
  const old = BigInt.asUintN(64, regs[name]);
  let next: bigint;
  if (d.highByte) next = (old & ~0xff00n) | ((v & 0xffn) << 8n);
  else if (d.destSize >= 4) next = v;
  else next = (old & ~mask(d.destSize)) | v;
  return { ...regs, [name]: BigInt.asUintN(64, next), rip: advance(regs, insn) };
}

/** Registers after a write completed: RIP advanced. Pure. */
export function completeMmioWrite(insn: MmioInstruction, regs: Registers): Registers {
  return { ...regs, rip: advance(regs, insn) };
}

/** RIP past the instruction, wrapped at the instruction pointer's width (IP/EIP/RIP). */
function advance(regs: Registers, insn: MmioInstruction): bigint {
  return BigInt.asUintN(insn.ipBits ?? 64, regs.rip + BigInt(insn.length));
}

function hexByte(b: number): string {
  return b.toString(16).padStart(2, '0');
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes.subarray(0, 16), hexByte).join(' ');
}
