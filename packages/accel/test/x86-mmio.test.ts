/**
 * The MMIO instruction emulator MSHV and WHPX exits need: byte-exact encodings (Intel SDM
 * opcode and ModRM/SIB tables, written out by hand) with their lengths, sizes and operands in
 * 64-, 32- and 16-bit code; x86 destination-register semantics; store values; and the
 * hostile-input properties: any bytes decode or throw MmioDecodeError, and a decoded length
 * is exactly the bytes the decoder needed.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  completeMmioRead,
  completeMmioWrite,
  decodeMmioInstruction,
  instructionPointerBits,
  MAX_INSTRUCTION_LENGTH,
  MmioDecodeError,
  mmioStoreValue,
  type MmioInstruction,
} from '../src/backends/x86-mmio.js';
import { REG_NAMES, registersWith, type Registers } from '../src/registers.js';
import { fuzzRuns } from '../../../test/helpers.js';

const LONG = { longMode: true, defaultOperand32: false };
const PROT32 = { longMode: false, defaultOperand32: true };
const REAL16 = { longMode: false, defaultOperand32: false };
// The operand tables below compare the decoded operands; the instruction pointer width
// (ipBits, from the mode alone) has its own tests under "RIP wrap".
const operands = ({ ipBits: _, ...rest }: MmioInstruction): MmioInstruction => rest;
const d = (...bytes: number[]) => operands(decodeMmioInstruction(Uint8Array.from(bytes), LONG));
const d32 = (...bytes: number[]) => operands(decodeMmioInstruction(Uint8Array.from(bytes), PROT32));
const d16 = (...bytes: number[]) => operands(decodeMmioInstruction(Uint8Array.from(bytes), REAL16));
const DISP32 = [0x00, 0x00, 0xe0, 0xfe];
const MOFFS64 = [1, 2, 3, 4, 5, 6, 7, 8];

function regs(over: Partial<Registers> = {}): Registers {
  return registersWith({ rip: 0x1000n, ...over });
}

describe('x86 MMIO decode: 64-bit code', () => {
  it('MOV r,r/m loads (8A/8B)', () => {
    expect(d(0x8b, 0x07)).toEqual({
      length: 2,
      size: 4,
      isWrite: false,
      destination: { reg: 0, highByte: false, extend: 'none', destSize: 4 },
      mnemonic: 'mov',
    }); // mov eax,[rdi]
    expect(d(0x48, 0x8b, 0x47, 0x08)).toMatchObject({ length: 4, size: 8, destination: { reg: 0, destSize: 8 } }); // mov rax,[rdi+8]
    expect(d(0x44, 0x8b, 0x8e, 0x00, 0x01, 0x00, 0x00)).toMatchObject({ length: 7, size: 4, destination: { reg: 9 } }); // mov r9d,[rsi+0x100]
    expect(d(0x66, 0x8b, 0x07)).toMatchObject({ length: 3, size: 2, destination: { destSize: 2 } }); // mov ax,[rdi]
    expect(d(0x8a, 0x07)).toMatchObject({ length: 2, size: 1, destination: { reg: 0, highByte: false } }); // mov al,[rdi]
    expect(d(0x8a, 0x27)).toMatchObject({ length: 2, size: 1, destination: { reg: 0, highByte: true } }); // mov ah,[rdi]
    expect(d(0x8a, 0x3f)).toMatchObject({ destination: { reg: 3, highByte: true } }); // mov bh,[rdi]
    expect(d(0x40, 0x8a, 0x37)).toMatchObject({ length: 3, size: 1, destination: { reg: 6, highByte: false } }); // mov sil,[rdi]
    expect(d(0x44, 0x8a, 0x27)).toMatchObject({ destination: { reg: 12, highByte: false } }); // mov r12b,[rdi]
  });

  it('addressing forms: RIP-relative, SIB, no-base SIB, rbp/r13 and rsp/r12 special cases', () => {
    expect(d(0x8b, 0x05, 0x10, 0x20, 0x30, 0x40)).toMatchObject({ length: 6, size: 4 }); // mov eax,[rip+0x40302010]
    expect(d(0x41, 0x8b, 0x05, ...DISP32)).toMatchObject({ length: 7 }); // REX.B does not turn RIP-relative into r13
    expect(d(0x8b, 0x04, 0x25, ...DISP32)).toMatchObject({ length: 7 }); // mov eax,[0xfee00000] (SIB, no base, no index)
    expect(d(0x8b, 0x04, 0x2d, ...DISP32)).toMatchObject({ length: 7 }); // mov eax,[rbp*1+0xfee00000] (SIB base=rbp mod=0: disp32)
    expect(d(0x8b, 0x04, 0x88)).toMatchObject({ length: 3 }); // mov eax,[rax+rcx*4]
    expect(d(0x8b, 0x44, 0x25, 0x08)).toMatchObject({ length: 4 }); // mov eax,[rbp+8] via SIB (mod=1: disp8, base is rbp)
    expect(d(0x8b, 0x84, 0x88, 0x00, 0x10, 0x00, 0x00)).toMatchObject({ length: 7 }); // mov eax,[rax+rcx*4+0x1000]
    expect(d(0x8b, 0x44, 0x24, 0x08)).toMatchObject({ length: 4 }); // mov eax,[rsp+8]
    expect(d(0x41, 0x8b, 0x04, 0x24)).toMatchObject({ length: 4 }); // mov eax,[r12]
    expect(d(0x8b, 0x45, 0x00)).toMatchObject({ length: 3 }); // mov eax,[rbp+0]
    expect(d(0x41, 0x8b, 0x45, 0x00)).toMatchObject({ length: 4 }); // mov eax,[r13+0]
    expect(d(0x43, 0x8b, 0x04, 0x2c)).toMatchObject({ length: 4, destination: { reg: 0 } }); // mov eax,[r12+r13*1]
  });

  it('MOV r/m,r stores (88/89), byte registers with and without REX', () => {
    expect(d(0x89, 0x10)).toEqual({
      length: 2,
      size: 4,
      isWrite: true,
      source: { kind: 'register', reg: 2, highByte: false },
      mnemonic: 'mov',
    }); // mov [rax],edx
    expect(d(0x66, 0x89, 0x10)).toMatchObject({ length: 3, size: 2, source: { reg: 2 } }); // mov [rax],dx
    expect(d(0x48, 0x89, 0x10)).toMatchObject({ length: 3, size: 8 }); // mov [rax],rdx
    expect(d(0x4c, 0x89, 0x00)).toMatchObject({ size: 8, source: { reg: 8 } }); // mov [rax],r8
    expect(d(0x88, 0x20)).toMatchObject({ length: 2, size: 1, source: { reg: 0, highByte: true } }); // mov [rax],ah
    expect(d(0x40, 0x88, 0x20)).toMatchObject({ length: 3, size: 1, source: { reg: 4, highByte: false } }); // mov [rax],spl
    expect(d(0x88, 0x28)).toMatchObject({ source: { reg: 1, highByte: true } }); // mov [rax],ch
    expect(d(0x40, 0x88, 0x28)).toMatchObject({ source: { reg: 5, highByte: false } }); // mov [rax],bpl
    expect(d(0x41, 0x88, 0x20)).toMatchObject({ source: { reg: 4, highByte: false } }); // mov [r8],spl: any REX, even one without R, selects SPL
    expect(d(0x88, 0x18)).toMatchObject({ source: { reg: 3, highByte: false } }); // mov [rax],bl
  });

  it('MOV r/m,imm (C6 /0, C7 /0): the immediate follows every addressing byte', () => {
    expect(d(0xc7, 0x00, 0x78, 0x56, 0x34, 0x12)).toEqual({
      length: 6,
      size: 4,
      isWrite: true,
      source: { kind: 'immediate', value: 0x12345678n },
      mnemonic: 'mov',
    });
    expect(d(0x48, 0xc7, 0x00, 0xff, 0xff, 0xff, 0xff)).toMatchObject({ length: 7, size: 8, source: { value: 0xffff_ffff_ffff_ffffn } }); // imm32 sign-extended
    expect(d(0x48, 0xc7, 0x00, 0x78, 0x56, 0x34, 0x12)).toMatchObject({ length: 7, size: 8, source: { value: 0x12345678n } });
    expect(d(0x66, 0xc7, 0x00, 0x34, 0x12)).toMatchObject({ length: 5, size: 2, source: { value: 0x1234n } });
    expect(d(0xc6, 0x00, 0x99)).toMatchObject({ length: 3, size: 1, source: { value: 0x99n } });
    expect(d(0x66, 0xc6, 0x00, 0x7f)).toMatchObject({ length: 4, size: 1 }); // 66 does not widen a byte store
    expect(d(0xc6, 0x05, 0x01, 0x02, 0x03, 0x04, 0x7f)).toMatchObject({ length: 7, size: 1, source: { value: 0x7fn } }); // mov byte [rip+disp32],0x7f
    expect(d(0xc7, 0x44, 0x24, 0x10, 1, 0, 0, 0)).toMatchObject({ length: 8, source: { value: 1n } }); // mov dword [rsp+0x10],1
    expect(d(0xc7, 0x84, 0x88, 0x00, 0x10, 0x00, 0x00, 0xef, 0xbe, 0xad, 0xde)).toMatchObject({
      length: 11,
      source: { value: 0xdeadbeefn },
    }); // [rax+rcx*4+0x1000]
    expect(d(0xc7, 0x04, 0x25, ...DISP32, 1, 0, 0, 0)).toMatchObject({ length: 11 }); // mov dword [0xfee00000],1
  });

  it('MOVZX, MOVSX, MOVSXD', () => {
    expect(d(0x0f, 0xb6, 0x07)).toEqual({
      length: 3,
      size: 1,
      isWrite: false,
      destination: { reg: 0, highByte: false, extend: 'zero', destSize: 4 },
      mnemonic: 'movzx',
    });
    expect(d(0x0f, 0xb7, 0x07)).toMatchObject({ length: 3, size: 2, destination: { extend: 'zero', destSize: 4 } });
    expect(d(0x48, 0x0f, 0xb7, 0x07)).toMatchObject({ length: 4, size: 2, destination: { extend: 'zero', destSize: 8 } });
    expect(d(0x66, 0x0f, 0xb6, 0x07)).toMatchObject({ length: 4, size: 1, destination: { destSize: 2 } }); // movzx ax,byte
    expect(d(0x48, 0x0f, 0xbe, 0x07)).toMatchObject({
      length: 4,
      size: 1,
      mnemonic: 'movsx',
      destination: { extend: 'sign', destSize: 8 },
    });
    expect(d(0x0f, 0xbf, 0x07)).toMatchObject({ size: 2, mnemonic: 'movsx', destination: { destSize: 4 } });
    expect(d(0x0f, 0xb6, 0x27)).toMatchObject({ destination: { reg: 4, highByte: false } }); // movzx esp,byte: never AH
    expect(d(0x4c, 0x0f, 0xb6, 0x47, 0x10)).toMatchObject({ length: 5, destination: { reg: 8, destSize: 8 } }); // movzx r8,byte [rdi+0x10]
    expect(d(0x48, 0x63, 0x07)).toEqual({
      length: 3,
      size: 4,
      isWrite: false,
      destination: { reg: 0, highByte: false, extend: 'sign', destSize: 8 },
      mnemonic: 'movsxd',
    });
    expect(d(0x4c, 0x63, 0x4f, 0x04)).toMatchObject({ length: 4, destination: { reg: 9 } }); // movsxd r9,[rdi+4]
  });

  it('MOV moffs (A0-A3): 8-byte offset, 4 with 67, always AL/rAX', () => {
    expect(d(0xa1, ...MOFFS64)).toEqual({
      length: 9,
      size: 4,
      isWrite: false,
      destination: { reg: 0, highByte: false, extend: 'none', destSize: 4 },
      mnemonic: 'mov',
    });
    expect(d(0x48, 0xa1, ...MOFFS64)).toMatchObject({ length: 10, size: 8 }); // movabs rax,[moffs64]
    expect(d(0xa0, ...MOFFS64)).toMatchObject({ length: 9, size: 1, destination: { reg: 0, highByte: false } });
    expect(d(0x41, 0xa0, ...MOFFS64)).toMatchObject({ destination: { reg: 0 } }); // REX.B does not select r8b
    expect(d(0xa2, ...MOFFS64)).toMatchObject({ length: 9, size: 1, isWrite: true, source: { kind: 'register', reg: 0, highByte: false } });
    expect(d(0x66, 0xa3, ...MOFFS64)).toMatchObject({ length: 10, size: 2, isWrite: true });
    expect(d(0x67, 0xa1, 1, 2, 3, 4)).toMatchObject({ length: 6, size: 4 }); // 67: 32-bit moffs
  });

  it('prefixes: stacked, segment overrides, 67, REX placement, REX.W over 66', () => {
    expect(d(0x3e, 0x65, 0x8b, 0x07)).toMatchObject({ length: 4 }); // mov eax,gs:[rdi]
    expect(d(0x67, 0x8b, 0x07)).toMatchObject({ length: 3, size: 4 }); // mov eax,[edi]
    expect(d(0x67, 0x8b, 0x05, ...DISP32)).toMatchObject({ length: 7 }); // mov eax,[eip+disp32]
    expect(d(0x64, 0x66, 0x67, 0x41, 0x89, 0x10)).toMatchObject({ length: 6, size: 2, source: { reg: 2 } }); // mov fs:[r8d],dx
    expect(d(0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65, 0x89, 0x10)).toMatchObject({ length: 8 });
    expect(d(0x66, 0x48, 0x89, 0x10)).toMatchObject({ size: 8 }); // REX.W wins over 66
    expect(d(0x48, 0x66, 0x89, 0x10)).toMatchObject({ length: 4, size: 2 }); // a REX followed by a prefix is ignored
    expect(d(0x40, 0x3e, 0x88, 0x20)).toMatchObject({ length: 4, source: { reg: 0, highByte: true } }); // ... so this is AH, not SPL
    expect(d(0x48, 0x40, 0x89, 0x10)).toMatchObject({ length: 4, size: 4 }); // of two REX bytes only the last counts
    expect(d(0x40, 0x48, 0x89, 0x10)).toMatchObject({ length: 4, size: 8 });
    expect(d(0x4c, 0x0f, 0xb7, 0x07)).toMatchObject({ destination: { reg: 8 } }); // REX before the 0F escape
    // 15 bytes exactly: 8 prefixes + mov eax,[rsp+disp32]
    expect(d(...new Array<number>(8).fill(0x3e), 0x8b, 0x84, 0x24, 1, 2, 3, 4)).toMatchObject({ length: MAX_INSTRUCTION_LENGTH });
  });
});

describe('x86 MMIO decode: 32- and 16-bit code', () => {
  it('32-bit code: disp32 is absolute, 66 gives 16-bit operands, 67 16-bit addressing, 40-4F are not REX', () => {
    expect(d32(0x8b, 0x05, ...DISP32)).toMatchObject({ length: 6, size: 4 }); // mov eax,[0xfee00000]
    expect(d32(0x66, 0x89, 0x10)).toMatchObject({ length: 3, size: 2 });
    expect(d32(0xa1, 1, 2, 3, 4)).toMatchObject({ length: 5, size: 4 });
    expect(d32(0x67, 0xa1, 1, 2)).toMatchObject({ length: 4, size: 4 });
    expect(d32(0x67, 0x8b, 0x06, 0x34, 0x12)).toMatchObject({ length: 5 }); // mov eax,[0x1234] (16-bit addressing)
    expect(d32(0x67, 0x8b, 0x87, 0x34, 0x12)).toMatchObject({ length: 5 }); // mov eax,[bx+0x1234]
    expect(d32(0x88, 0x20)).toMatchObject({ source: { reg: 0, highByte: true } });
    expect(() => d32(0x48, 0x8b, 0x07)).toThrow(/opcode 48/); // DEC EAX
    expect(() => d32(0x63, 0x07)).toThrow(/MOVSXD/); // ARPL
  });

  it('16-bit code (CS.D = 0): 16-bit operands and addressing by default, 66/67 switch to 32', () => {
    expect(d16(0x8b, 0x07)).toMatchObject({ length: 2, size: 2, destination: { destSize: 2 } }); // mov ax,[bx]
    expect(d16(0x8b, 0x06, 0x34, 0x12)).toMatchObject({ length: 4 }); // mov ax,[0x1234]
    expect(d16(0x8b, 0x46, 0x08)).toMatchObject({ length: 3 }); // mov ax,[bp+8]
    expect(d16(0x8b, 0x84, 0x34, 0x12)).toMatchObject({ length: 4 }); // mov ax,[si+0x1234]
    expect(d16(0x8b, 0x04)).toMatchObject({ length: 2 }); // mov ax,[si]: rm 4 is no SIB here
    expect(d16(0x66, 0x8b, 0x47, 0x08)).toMatchObject({ length: 4, size: 4 }); // mov eax,[bx+8]
    expect(d16(0x67, 0x8b, 0x04, 0x24)).toMatchObject({ length: 4, size: 2 }); // mov ax,[esp]
    expect(d16(0x67, 0x8b, 0x05, ...DISP32)).toMatchObject({ length: 7 }); // mov ax,[0xfee00000]
    expect(d16(0xa1, 0x34, 0x12)).toMatchObject({ length: 3, size: 2 });
    expect(d16(0x67, 0xa1, 1, 2, 3, 4)).toMatchObject({ length: 6 });
    expect(d16(0xc7, 0x06, 0x34, 0x12, 0xcd, 0xab)).toMatchObject({ length: 6, size: 2, source: { value: 0xabcdn } }); // mov word [0x1234],0xabcd
    expect(d16(0x0f, 0xb6, 0x07)).toMatchObject({ length: 3, destination: { destSize: 2 } });
  });
});

describe('x86 MMIO decode: rejections', () => {
  const rejects = (bytes: number[], pattern: RegExp, mode = LONG) => {
    expect(() => decodeMmioInstruction(Uint8Array.from(bytes), mode)).toThrow(MmioDecodeError);
    expect(() => decodeMmioInstruction(Uint8Array.from(bytes), mode)).toThrow(pattern);
  };

  it('register-form ModRM, which touches no memory', () => {
    rejects([0x89, 0xc0], /register-form/); // mov eax,eax
    rejects([0x8b, 0xc1], /register-form/);
    rejects([0x0f, 0xb6, 0xc0], /register-form/);
    rejects([0x48, 0x63, 0xc0], /register-form/);
    rejects([0xc7, 0xc0, 1, 0, 0, 0], /register-form/);
  });

  it('prefixes and opcodes it does not emulate, naming the bytes', () => {
    rejects([0xf0, 0x89, 0x10], /LOCK/);
    rejects([0xf3, 0xa5], /string instruction/); // rep movsd
    rejects([0xf3, 0x89, 0x10], /REP/); // xrelease mov
    rejects([0x01, 0x10], /opcode 01 .*: 01 10/); // add [rax],edx
    rejects([0x87, 0x10], /opcode 87/); // xchg
    rejects([0xa5], /opcode a5/); // movsd
    rejects([0x0f, 0x0b], /opcode 0f 0b/); // ud2
    rejects([0x0f, 0xc3, 0x07], /opcode 0f c3/); // movnti
    rejects([0xc5, 0xf9, 0x6f, 0x07], /opcode c5/); // VEX vmovdqa
    rejects([0x63, 0x07], /MOVSXD/); // 63 without REX.W
    rejects([0xc7, 0x08, 0, 0, 0, 0], /c7 \/1 is not MOV/);
    rejects([0xc6, 0x38, 0], /c6 \/7 is not MOV/);
  });

  it('truncated bytes, including a missing immediate after a RIP-relative displacement', () => {
    rejects([], /truncated/);
    rejects([0x66], /truncated/);
    rejects([0x48], /truncated/);
    rejects([0x8b], /truncated/);
    rejects([0x0f], /truncated/);
    rejects([0x8b, 0x04], /truncated/); // SIB missing
    rejects([0x8b, 0x05, 1, 2, 3], /truncated/); // disp32 short
    rejects([0xc6, 0x05, 1, 2, 3, 4], /truncated/); // imm8 missing
    rejects([0xc7, 0x00, 0x78], /truncated/);
    rejects([0xa1, 1, 2, 3, 4, 5, 6, 7], /truncated/); // moffs64 short
  });

  it('instructions longer than 15 bytes', () => {
    rejects([...new Array<number>(9).fill(0x3e), 0x8b, 0x84, 0x24, 1, 2, 3, 4], /longer than 15/);
    rejects(new Array<number>(16).fill(0x66), /longer than 15/);
  });

  it('never reads past a view into a larger buffer', () => {
    const buffer = Uint8Array.of(0xff, 0x8b, 0x07, 0x00).buffer;
    expect(() => decodeMmioInstruction(new Uint8Array(buffer, 1, 1), LONG)).toThrow(/truncated/);
    expect(decodeMmioInstruction(new Uint8Array(buffer, 1, 2), LONG)).toMatchObject({ length: 2 });
  });
});

describe('x86 MMIO completion', () => {
  const all = regs({ rax: 0xffff_ffff_ffff_ffffn, rsp: 0x1111_2222_3333_4444n, r9: 0xffff_ffff_ffff_ffffn });

  it('writes destinations with x86 semantics and advances RIP', () => {
    expect(completeMmioRead(d(0x8b, 0x07), all, 0x1234n)).toEqual({ ...all, rax: 0x1234n, rip: 0x1002n }); // 32-bit: zero-extends
    expect(completeMmioRead(d(0x66, 0x8b, 0x07), all, 0xabcdn).rax).toBe(0xffff_ffff_ffff_abcdn); // 16-bit: merges
    expect(completeMmioRead(d(0x8a, 0x07), all, 0x11n).rax).toBe(0xffff_ffff_ffff_ff11n); // al
    expect(completeMmioRead(d(0x8a, 0x27), all, 0x22n).rax).toBe(0xffff_ffff_ffff_22ffn); // ah
    expect(completeMmioRead(d(0x40, 0x8a, 0x27), all, 0x55n).rsp).toBe(0x1111_2222_3333_4455n); // spl
    expect(completeMmioRead(d(0x8a, 0x27), { ...all, rsp: 0n }, 0x55n).rsp).toBe(0n); // ...while without REX it was AH
    expect(completeMmioRead(d(0x48, 0x8b, 0x47, 0x08), all, 0x0123_4567_89ab_cdefn).rax).toBe(0x0123_4567_89ab_cdefn);
    expect(completeMmioRead(d(0x44, 0x8b, 0x8e, 0, 1, 0, 0), all, 7n)).toEqual({ ...all, r9: 7n, rip: 0x1007n }); // r9d zero-extends
  });

  it('extends byte and word reads', () => {
    expect(completeMmioRead(d(0x48, 0x0f, 0xbe, 0x07), all, 0x80n).rax).toBe(0xffff_ffff_ffff_ff80n); // movsx rax,byte
    expect(completeMmioRead(d(0x0f, 0xbe, 0x07), all, 0x80n).rax).toBe(0xffff_ff80n); // movsx eax,byte: upper half cleared
    expect(completeMmioRead(d(0x66, 0x0f, 0xbe, 0x07), all, 0x80n).rax).toBe(0xffff_ffff_ffff_ff80n); // movsx ax,byte: merges
    expect(completeMmioRead(d(0x66, 0x0f, 0xbe, 0x07), regs(), 0x80n).rax).toBe(0xff80n);
    expect(completeMmioRead(d(0x0f, 0xbe, 0x07), all, 0x7fn).rax).toBe(0x7fn);
    expect(completeMmioRead(d(0x0f, 0xb7, 0x07), all, 0x8001n).rax).toBe(0x8001n); // movzx eax,word
    expect(completeMmioRead(d(0x48, 0x0f, 0xb6, 0x07), all, 0xffn).rax).toBe(0xffn);
    expect(completeMmioRead(d(0x48, 0x63, 0x07), all, 0x8000_0000n).rax).toBe(0xffff_ffff_8000_0000n); // movsxd
    expect(completeMmioRead(d(0x48, 0x63, 0x07), all, 0x7fff_ffffn).rax).toBe(0x7fff_ffffn);
  });

  it('masks a device value wider than the access, and wraps RIP', () => {
    expect(completeMmioRead(d(0x8a, 0x07), regs(), 0x1234n).rax).toBe(0x34n);
    expect(completeMmioRead(d(0x8b, 0x07), regs(), -1n).rax).toBe(0xffff_ffffn);
    expect(completeMmioRead(d(0x48, 0x8b, 0x07), regs(), 0x1_0000_0000_0000_0001n).rax).toBe(1n);
    expect(completeMmioRead(d(0x48, 0xa1, ...MOFFS64), regs({ rip: 0xffff_ffff_ffff_fffcn }), 5n)).toMatchObject({ rax: 5n, rip: 6n });
  });

  it('is pure', () => {
    const before = { ...all };
    const after = completeMmioRead(d(0x8b, 0x07), all, 1n);
    expect(all).toEqual(before);
    expect(after).not.toBe(all);
    expect(completeMmioWrite(d(0x89, 0x10), all)).not.toBe(all);
    expect(all).toEqual(before);
  });

  it('stores register and immediate values masked to the access size', () => {
    const r = regs({ rdx: 0x1122_3344_5566_7788n, rax: 0xaabbn, rsp: 0xccddn, r8: 0x99n });
    expect(mmioStoreValue(d(0x89, 0x10), r)).toBe(0x5566_7788n);
    expect(mmioStoreValue(d(0x66, 0x89, 0x10), r)).toBe(0x7788n);
    expect(mmioStoreValue(d(0x48, 0x89, 0x10), r)).toBe(0x1122_3344_5566_7788n);
    expect(mmioStoreValue(d(0x88, 0x20), r)).toBe(0xaan); // ah
    expect(mmioStoreValue(d(0x40, 0x88, 0x20), r)).toBe(0xddn); // spl
    expect(mmioStoreValue(d(0x44, 0x88, 0x00), r)).toBe(0x99n); // r8b
    expect(mmioStoreValue(d(0xa2, ...MOFFS64), r)).toBe(0xbbn); // al
    expect(mmioStoreValue(d(0xc6, 0x00, 0x99), r)).toBe(0x99n);
    expect(mmioStoreValue(d(0x48, 0xc7, 0x00, 0x00, 0x00, 0x00, 0x80), r)).toBe(0xffff_ffff_8000_0000n);
    expect(completeMmioWrite(d(0x89, 0x10), r)).toEqual({ ...r, rip: 0x1002n });
    expect(completeMmioWrite(d(0xc6, 0x05, 1, 2, 3, 4, 5), r).rip).toBe(0x1007n);
  });

  it('refuses to complete the wrong direction', () => {
    expect(() => mmioStoreValue(d(0x8b, 0x07), regs())).toThrow(MmioDecodeError);
    expect(() => completeMmioRead(d(0x89, 0x10), regs(), 0n)).toThrow(MmioDecodeError);
  });
});

describe('x86 MMIO decode: hostile input', () => {
  const modes = fc.record({ longMode: fc.boolean(), defaultOperand32: fc.boolean() });
  const supportedOpcode = fc.constantFrom(
    [0x88],
    [0x89],
    [0x8a],
    [0x8b],
    [0xc6],
    [0xc7],
    [0xa0],
    [0xa1],
    [0xa2],
    [0xa3],
    [0x63],
    [0x0f, 0xb6],
    [0x0f, 0xb7],
    [0x0f, 0xbe],
    [0x0f, 0xbf],
  );
  const prefix = fc.constantFrom(0x66, 0x67, 0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65, 0xf0, 0xf3, 0x40, 0x41, 0x44, 0x48, 0x4c, 0x4f);
  /** Mostly well-formed candidates, so the decode paths (not only the rejections) are fuzzed. */
  const candidate = fc
    .tuple(fc.array(prefix, { maxLength: 15 }), supportedOpcode, fc.uint8Array({ maxLength: 16 }))
    .map(([p, op, tail]) => Uint8Array.from([...p, ...op, ...tail]).subarray(0, 16))
    .chain((b) => fc.nat(b.length).map((n) => b.subarray(0, n)));
  const anyBytes = fc.oneof(fc.uint8Array({ maxLength: 16 }), candidate);

  /** Decodes, or returns the error; anything but MmioDecodeError fails the property. */
  function tryDecode(bytes: Uint8Array, mode: { longMode: boolean; defaultOperand32: boolean }): MmioInstruction | undefined {
    try {
      return decodeMmioInstruction(bytes, mode);
    } catch (e) {
      expect(e).toBeInstanceOf(MmioDecodeError);
      return undefined;
    }
  }

  it('any bytes decode to a well-formed instruction or throw MmioDecodeError', () => {
    fc.assert(
      fc.property(anyBytes, modes, (bytes, mode) => {
        const insn = tryDecode(bytes, mode);
        if (!insn) return;
        expect(insn.length).toBeGreaterThan(0);
        expect(insn.length).toBeLessThanOrEqual(Math.min(MAX_INSTRUCTION_LENGTH, bytes.length));
        expect([1, 2, 4, 8]).toContain(insn.size);
        expect(insn.isWrite ? insn.source : insn.destination).toBeDefined();
        expect(insn.isWrite ? insn.destination : insn.source).toBeUndefined();
        const reg = insn.destination?.reg ?? (insn.source?.kind === 'register' ? insn.source.reg : 0);
        expect(reg >= 0 && reg <= 15).toBe(true);
      }),
      { numRuns: fuzzRuns(5000) },
    );
  });

  it('the length is exactly the bytes needed: fewer are truncated, more change nothing', () => {
    fc.assert(
      fc.property(anyBytes, fc.uint8Array({ maxLength: 16 }), modes, (bytes, extra, mode) => {
        const insn = tryDecode(bytes, mode);
        if (!insn) return;
        expect(decodeMmioInstruction(bytes.subarray(0, insn.length), mode)).toEqual(insn);
        expect(() => decodeMmioInstruction(bytes.subarray(0, insn.length - 1), mode)).toThrow(/truncated/);
        expect(decodeMmioInstruction(Uint8Array.from([...bytes.subarray(0, insn.length), ...extra]), mode)).toEqual(insn);
      }),
      { numRuns: fuzzRuns(3000) },
    );
  });

  it('completion changes only the destination register and RIP, and store values fit the access', () => {
    const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
    const registers = fc
      .tuple(...REG_NAMES.map(() => u64))
      .map((values) => Object.fromEntries(REG_NAMES.map((n, i) => [n, values[i]])) as unknown as Registers);
    fc.assert(
      fc.property(candidate, modes, registers, fc.bigInt({ min: -(1n << 70n), max: 1n << 70n }), (bytes, mode, r, value) => {
        const insn = tryDecode(bytes, mode);
        if (!insn) return;
        const rip = BigInt.asUintN(instructionPointerBits(mode), r.rip + BigInt(insn.length)); // IP, EIP or RIP wrap
        if (insn.isWrite) {
          const stored = mmioStoreValue(insn, r);
          expect(stored >= 0n && stored < 1n << BigInt(insn.size * 8)).toBe(true);
          expect(completeMmioWrite(insn, r)).toEqual({ ...r, rip });
          return;
        }
        const after = completeMmioRead(insn, r, value);
        const changed = REG_NAMES.filter((n) => after[n] !== r[n] && n !== 'rip');
        expect(changed.length).toBeLessThanOrEqual(1);
        expect(after.rip).toBe(rip);
        for (const n of REG_NAMES) expect(after[n] >= 0n && after[n] < 1n << 64n).toBe(true);
      }),
      { numRuns: fuzzRuns(2000) },
    );
  });
});

describe('x86 MMIO completion: RIP wrap in 16- and 32-bit code', () => {
  const at = (mode: typeof LONG, ...bytes: number[]) => decodeMmioInstruction(Uint8Array.from(bytes), mode);

  it('the instruction pointer is as wide as the code: 64, CS.D 32, else 16 (a 66 prefix does not change it)', () => {
    expect(at(LONG, 0x8b, 0x07).ipBits).toBe(64);
    expect(at(PROT32, 0x8b, 0x07).ipBits).toBe(32);
    expect(at(PROT32, 0x66, 0x8b, 0x07).ipBits).toBe(32);
    expect(at(REAL16, 0x8b, 0x07).ipBits).toBe(16);
    expect(at(REAL16, 0x66, 0x8b, 0x07).ipBits).toBe(16);
  });

  it('EIP wraps at 2^32 in 32-bit code, on reads and writes', () => {
    const read = at(PROT32, 0x8b, 0x07); // mov eax,[edi]: 2 bytes
    expect(completeMmioRead(read, regs({ rip: 0xffff_ffffn }), 5n)).toMatchObject({ rax: 5n, rip: 1n });
    expect(completeMmioWrite(at(PROT32, 0xc7, 0x00, 1, 0, 0, 0), regs({ rip: 0xffff_fffen })).rip).toBe(4n); // 6 bytes
    expect(completeMmioWrite(read, regs({ rip: 0xffff_fffdn })).rip).toBe(0xffff_ffffn); // no wrap: unchanged
  });

  it('IP wraps at 2^16 in 16-bit code', () => {
    expect(completeMmioRead(at(REAL16, 0x8b, 0x07), regs({ rip: 0xffffn }), 0x1234n)).toMatchObject({ rax: 0x1234n, rip: 1n }); // mov ax,[bx]
    expect(completeMmioWrite(at(REAL16, 0x89, 0x07), regs({ rip: 0xfffen })).rip).toBe(0n);
    expect(completeMmioWrite(at(REAL16, 0x89, 0x07), regs({ rip: 0x1000n })).rip).toBe(0x1002n);
  });

  it('64-bit code wraps only at 2^64', () => {
    expect(completeMmioWrite(at(LONG, 0x89, 0x10), regs({ rip: 0xffff_ffffn })).rip).toBe(0x1_0000_0001n);
    expect(completeMmioWrite(at(LONG, 0x89, 0x10), regs({ rip: 0xffff_ffff_ffff_ffffn })).rip).toBe(1n);
  });
});
