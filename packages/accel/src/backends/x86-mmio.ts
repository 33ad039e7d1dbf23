/**
 * The x86-64 instructions guests use to touch MMIO, decoded from the bytes an intercept
 * carries, and completed in software. MSHV and WHPX report an access to unmapped GPA with
 * the instruction bytes but do not emulate it: the VMM decodes the instruction, performs the
 * access through a device, writes the destination register and advances RIP.
 *
 * Supported (what Linux readb..readq / writeb..writeq and compilers emit): MOV r/m,r (88/89),
 * MOV r,r/m (8A/8B), MOV r/m,imm (C6 /0, C7 /0), MOV moffs (A0-A3), MOVZX (0F B6/B7),
 * MOVSX (0F BE/BF), MOVSXD (63). Prefixes: 66, 67, segment overrides, REX. Anything else
 * (LOCK, string instructions, register-form ModRM, truncated or over-long bytes) is an
 * MmioDecodeError: the backend reports an unrecoverable emulation failure for that vCPU.
 * Every byte array of any length and content either decodes or throws MmioDecodeError.
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
  readonly isWrite: boolean;
  /** For writes: where the stored value comes from. */
  readonly source?: { kind: 'register'; reg: GprIndex; highByte: boolean } | { kind: 'immediate'; value: bigint };
  /** For reads: the destination register and how the value is extended into it. */
  readonly destination?: { reg: GprIndex; highByte: boolean; extend: 'zero' | 'sign' | 'none'; destSize: 1 | 2 | 4 | 8 };
  /** For logs. */
  readonly mnemonic: string;
}

/** An instruction the MMIO emulator does not handle; the vCPU stops with an emulation failure. */
export class MmioDecodeError extends HvemuError {
  readonly outcome = 'host-error' as const;
}

const MAX_INSTRUCTION_LENGTH = 15;
const GPR_NAMES = ['rax', 'rcx', 'rdx', 'rbx', 'rsp', 'rbp', 'rsi', 'rdi', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15'] as const satisfies readonly (keyof Registers)[];
const SEGMENT_PREFIXES = new Set([0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65]);

interface Prefixes {
  operand16: boolean;
  address32: boolean;
  rex: number; // 0 when absent, else 0x40-0x4f
}

/** Reads bytes with bounds checks; running off the end is a truncated instruction. */
class Cursor {
  at = 0;
  constructor(private readonly bytes: Uint8Array) {}
  next(): number {
    if (this.at >= this.bytes.length || this.at >= MAX_INSTRUCTION_LENGTH) throw new MmioDecodeError(`instruction truncated or longer than 15 bytes: ${hex(this.bytes)}`);
    return this.bytes[this.at++];
  }
  skip(n: number): void {
    for (let i = 0; i < n; i++) this.next();
  }
  immediate(n: number): bigint {
    let v = 0n;
    for (let i = 0; i < n; i++) v |= BigInt(this.next()) << BigInt(8 * i);
    return v;
  }
}

/**
 * `longMode`: the vCPU runs 64-bit code (EFER.LMA and CS.L). `defaultOperand32`: CS.D, the
 * default operand size outside 64-bit mode (ignored in it).
 */
export function decodeMmioInstruction(bytes: Uint8Array, mode: { longMode: boolean; defaultOperand32: boolean }): MmioInstruction {
  const c = new Cursor(bytes);
  const p = readPrefixes(c, mode.longMode);
  const rexW = (p.rex & 8) !== 0;
  // REX.W: 64; else the 66 prefix flips the default: 32 in 64-bit mode (whatever CS.D says:
  // it must be 0 there) and in 32-bit code (CS.D = 1), 16 in 16-bit code.
  const default32 = mode.longMode || mode.defaultOperand32;
  const operandSize: 2 | 4 | 8 = rexW ? 8 : default32 !== p.operand16 ? 4 : 2;
  const op = c.next();
  switch (op) {
    case 0x88:
    case 0x89: {
      const m = readModRm(c, p, mode.longMode);
      const size = op === 0x88 ? 1 : operandSize;
      return { length: c.at, size, isWrite: true, source: { kind: 'register', ...register(m.reg, size, p.rex) }, mnemonic: 'mov' };
    }
    case 0x8a:
    case 0x8b: {
      const m = readModRm(c, p, mode.longMode);
      const size = op === 0x8a ? 1 : operandSize;
      return { length: c.at, size, isWrite: false, destination: { ...register(m.reg, size, p.rex), extend: 'none', destSize: size }, mnemonic: 'mov' };
    }
    case 0xc6:
    case 0xc7: {
      const m = readModRm(c, p, mode.longMode);
      if (m.regField !== 0) throw new MmioDecodeError(`opcode ${hexByte(op)} /${m.regField} is not MOV: ${hex(bytes)}`);
      const size = op === 0xc6 ? 1 : operandSize;
      const immBytes = size === 8 ? 4 : size;
      let value = c.immediate(immBytes);
      if (size === 8 && value & 0x8000_0000n) value |= 0xffff_ffff_0000_0000n; // imm32 sign-extended to 64
      return { length: c.at, size, isWrite: true, source: { kind: 'immediate', value }, mnemonic: 'mov' };
    }
    case 0xa0:
    case 0xa1:
    case 0xa2:
    case 0xa3: {
      // moffs: 8 bytes in long mode (4 with 67), 4 (2 with 67) otherwise.
      const offsetBytes = mode.longMode ? (p.address32 ? 4 : 8) : p.address32 ? 2 : 4;
      c.skip(offsetBytes);
      const size = op === 0xa0 || op === 0xa2 ? 1 : operandSize;
      const reg = { reg: 0, highByte: false };
      return op <= 0xa1
        ? { length: c.at, size, isWrite: false, destination: { ...reg, extend: 'none', destSize: size }, mnemonic: 'mov' }
        : { length: c.at, size, isWrite: true, source: { kind: 'register', ...reg }, mnemonic: 'mov' };
    }
    case 0x63: {
      if (!mode.longMode || !rexW) throw new MmioDecodeError(`opcode 63 is MOVSXD only with REX.W in long mode: ${hex(bytes)}`);
      const m = readModRm(c, p, mode.longMode);
      return { length: c.at, size: 4, isWrite: false, destination: { ...register(m.reg, 8, p.rex), extend: 'sign', destSize: 8 }, mnemonic: 'movsxd' };
    }
    case 0x0f: {
      const op2 = c.next();
      if (op2 !== 0xb6 && op2 !== 0xb7 && op2 !== 0xbe && op2 !== 0xbf) throw new MmioDecodeError(`opcode 0f ${hexByte(op2)} is not an MMIO instruction hvemu emulates: ${hex(bytes)}`);
      const m = readModRm(c, p, mode.longMode);
      const size = op2 === 0xb6 || op2 === 0xbe ? 1 : 2;
      const extend = op2 === 0xb6 || op2 === 0xb7 ? 'zero' : 'sign';
      return { length: c.at, size, isWrite: false, destination: { ...register(m.reg, operandSize, p.rex), extend, destSize: operandSize }, mnemonic: extend === 'zero' ? 'movzx' : 'movsx' };
    }
    default:
      throw new MmioDecodeError(`opcode ${hexByte(op)} is not an MMIO instruction hvemu emulates: ${hex(bytes)}`);
  }
}

function readPrefixes(c: Cursor, longMode: boolean): Prefixes {
  const p: Prefixes = { operand16: false, address32: false, rex: 0 };
  for (;;) {
    const b = c.next();
    if (b === 0x66) p.operand16 = true;
    else if (b === 0x67) p.address32 = true;
    else if (SEGMENT_PREFIXES.has(b)) continue;
    else if (b === 0xf0) throw new MmioDecodeError('LOCK-prefixed MMIO access (an atomic on device memory) is not emulated');
    else if (b === 0xf2 || b === 0xf3) throw new MmioDecodeError('REP/REPNE-prefixed MMIO access (string instruction) is not emulated');
    else if (longMode && b >= 0x40 && b <= 0x4f) {
      p.rex = b; // a REX prefix must come last: the opcode follows
      return p;
    } else {
      c.at--;
      return p;
    }
  }
}

/** Parses ModRM (+ SIB + displacement); the register form (mod = 3) is not a memory access. */
function readModRm(c: Cursor, p: Prefixes, longMode: boolean): { reg: number; regField: number } {
  const modrm = c.next();
  const mod = modrm >> 6;
  const regField = (modrm >> 3) & 7;
  const rm = modrm & 7;
  if (mod === 3) throw new MmioDecodeError('register-form ModRM: the instruction does not access memory');
  const addr16 = !longMode && p.address32; // 16-bit addressing only outside long mode with 67
  if (addr16) {
    if (mod === 1) c.skip(1);
    else if (mod === 2 || (mod === 0 && rm === 6)) c.skip(2);
  } else {
    let base = rm;
    if (rm === 4) base = c.next() & 7; // SIB: base in its low 3 bits
    if (mod === 1) c.skip(1);
    else if (mod === 2 || (mod === 0 && (rm === 5 || (rm === 4 && base === 5)))) c.skip(4); // disp32 (RIP-relative when rm = 5 in long mode)
  }
  return { reg: regField | ((p.rex & 4) << 1), regField };
}

/** A ModRM reg operand: with no REX, byte registers 4-7 are AH, CH, DH, BH. */
function register(reg: number, size: number, rex: number): { reg: GprIndex; highByte: boolean } {
  if (size === 1 && rex === 0 && reg >= 4 && reg <= 7) return { reg: reg - 4, highByte: true };
  return { reg, highByte: false };
}

const mask = (size: number): bigint => (1n << BigInt(size * 8)) - 1n;

function readGpr(regs: Registers, reg: GprIndex, highByte: boolean, size: number): bigint {
  const v = regs[GPR_NAMES[reg]];
  return highByte ? (v >> 8n) & 0xffn : v & mask(size);
}

/** The value a write instruction stores, masked to its size. */
export function mmioStoreValue(insn: MmioInstruction, regs: Registers): bigint {
  const s = insn.source;
  if (!s) throw new MmioDecodeError(`${insn.mnemonic} is a read, it stores nothing`);
  return s.kind === 'immediate' ? s.value & mask(insn.size) : readGpr(regs, s.reg, s.highByte, insn.size);
}

/** Registers after a read completed with `value` (x86 destination semantics), RIP advanced. */
export function completeMmioRead(insn: MmioInstruction, regs: Registers, value: bigint): Registers {
  const d = insn.destination;
  if (!d) throw new MmioDecodeError(`${insn.mnemonic} is a write, it has no destination`);
  let v = BigInt.asUintN(insn.size * 8, value);
  if (d.extend === 'sign' && v & (1n << BigInt(insn.size * 8 - 1))) v |= mask(8) ^ mask(insn.size);
  v &= mask(d.destSize);
  const name = GPR_NAMES[d.reg];
  const old = regs[name];
  let next: bigint;
  if (d.highByte) next = (old & ~0xff00n) | (v << 8n);
  else if (d.destSize === 4) next = v; // a 32-bit destination zero-extends into the whole register
  else if (d.destSize === 8) next = v;
  else next = (old & ~mask(d.destSize)) | v; // 8/16-bit destinations keep the upper bits
  return { ...regs, [name]: BigInt.asUintN(64, next), rip: BigInt.asUintN(64, regs.rip + BigInt(insn.length)) };
}

/** Registers after a write: RIP advanced. */
export function completeMmioWrite(insn: MmioInstruction, regs: Registers): Registers {
  return { ...regs, rip: BigInt.asUintN(64, regs.rip + BigInt(insn.length)) };
}

function hexByte(b: number): string {
  return b.toString(16).padStart(2, '0');
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes.subarray(0, 16), hexByte).join(' ');
}
