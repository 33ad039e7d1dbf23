/**
 * The MMIO instruction emulator MSHV and WHPX exits need: byte-exact encodings (Intel SDM
 * opcode tables) with their lengths, sizes and operands; x86 destination-register semantics;
 * and the hostile-input property: any bytes decode or throw MmioDecodeError.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { completeMmioRead, completeMmioWrite, decodeMmioInstruction, MmioDecodeError, mmioStoreValue } from '../src/backends/x86-mmio.js';
import type { Registers } from '../src/registers.js';
import { fuzzRuns } from '../../../test/helpers.js';

const LONG = { longMode: true, defaultOperand32: true };
const d = (...bytes: number[]) => decodeMmioInstruction(Uint8Array.from(bytes), LONG);

function regs(over: Partial<Registers> = {}): Registers {
  const zero = { rax: 0n, rbx: 0n, rcx: 0n, rdx: 0n, rsi: 0n, rdi: 0n, rsp: 0n, rbp: 0n, r8: 0n, r9: 0n, r10: 0n, r11: 0n, r12: 0n, r13: 0n, r14: 0n, r15: 0n, rip: 0x1000n, rflags: 2n };
  return { ...zero, ...over };
}

describe('x86 MMIO instruction decode', () => {
  it('MOV loads: lengths, sizes and destinations', () => {
    expect(d(0x8b, 0x07)).toMatchObject({ length: 2, size: 4, isWrite: false, destination: { reg: 0, extend: 'none', destSize: 4 } }); // mov eax,[rdi]
    expect(d(0x48, 0x8b, 0x47, 0x08)).toMatchObject({ length: 4, size: 8, destination: { reg: 0, destSize: 8 } }); // mov rax,[rdi+8]
    expect(d(0x44, 0x8b, 0x8e, 0x00, 0x01, 0x00, 0x00)).toMatchObject({ length: 7, size: 4, destination: { reg: 9 } }); // mov r9d,[rsi+0x100]
    expect(d(0x8a, 0x27)).toMatchObject({ length: 2, size: 1, destination: { reg: 0, highByte: true } }); // mov ah,[rdi]
    expect(d(0x40, 0x8a, 0x37)).toMatchObject({ length: 3, size: 1, destination: { reg: 6, highByte: false } }); // mov sil,[rdi]
    expect(d(0x66, 0x8b, 0x07)).toMatchObject({ length: 3, size: 2 }); // mov ax,[rdi]
    expect(d(0x8b, 0x05, 0x10, 0x20, 0x30, 0x40)).toMatchObject({ length: 6, size: 4 }); // mov eax,[rip+disp32]
    expect(d(0x8b, 0x04, 0x25, 0x00, 0x00, 0xe0, 0xfe)).toMatchObject({ length: 7 }); // mov eax,[0xfee00000] (SIB, no base)
    expect(d(0x8b, 0x44, 0x24, 0x08)).toMatchObject({ length: 4 }); // mov eax,[rsp+8]
    expect(d(0x8b, 0x45, 0x00)).toMatchObject({ length: 3 }); // mov eax,[rbp+0]
    expect(d(0x3e, 0x65, 0x8b, 0x07)).toMatchObject({ length: 4 }); // segment prefixes
    expect(d(0x67, 0x8b, 0x07)).toMatchObject({ length: 3, size: 4 }); // mov eax,[edi]
  });

  it('MOV stores from registers and immediates', () => {
    expect(d(0x89, 0x10)).toMatchObject({ length: 2, size: 4, isWrite: true, source: { kind: 'register', reg: 2, highByte: false } }); // mov [rax],edx
    expect(d(0x66, 0x89, 0x10)).toMatchObject({ length: 3, size: 2 });
    expect(d(0x88, 0x20)).toMatchObject({ size: 1, source: { reg: 0, highByte: true } }); // mov [rax],ah
    expect(d(0x40, 0x88, 0x20)).toMatchObject({ size: 1, source: { reg: 4, highByte: false } }); // mov [rax],spl
    expect(d(0x4c, 0x89, 0x00)).toMatchObject({ size: 8, source: { reg: 8 } }); // mov [rax],r8
    expect(d(0xc7, 0x00, 0x78, 0x56, 0x34, 0x12)).toMatchObject({ length: 6, size: 4, source: { kind: 'immediate', value: 0x12345678n } });
    expect(d(0x48, 0xc7, 0x00, 0xff, 0xff, 0xff, 0xff)).toMatchObject({ length: 7, size: 8, source: { kind: 'immediate', value: 0xffff_ffff_ffff_ffffn } }); // imm32 sign-extended
    expect(d(0x66, 0xc7, 0x00, 0x34, 0x12)).toMatchObject({ length: 5, size: 2, source: { value: 0x1234n } });
    expect(d(0xc6, 0x05, 0x01, 0x02, 0x03, 0x04, 0x7f)).toMatchObject({ length: 7, size: 1, source: { value: 0x7fn } }); // mov byte [rip+d32],0x7f
    expect(d(0xc7, 0x44, 0x24, 0x10, 1, 0, 0, 0)).toMatchObject({ length: 8 }); // mov dword [rsp+0x10],1
  });

  it('MOVZX, MOVSX, MOVSXD and moffs forms', () => {
    expect(d(0x0f, 0xb6, 0x07)).toMatchObject({ length: 3, size: 1, mnemonic: 'movzx', destination: { extend: 'zero', destSize: 4 } });
    expect(d(0x0f, 0xb7, 0x07)).toMatchObject({ size: 2, destination: { extend: 'zero' } });
    expect(d(0x48, 0x0f, 0xbe, 0x07)).toMatchObject({ length: 4, size: 1, mnemonic: 'movsx', destination: { extend: 'sign', destSize: 8 } });
    expect(d(0x48, 0x63, 0x07)).toMatchObject({ length: 3, size: 4, mnemonic: 'movsxd', destination: { extend: 'sign', destSize: 8 } });
    expect(d(0xa1, 1, 2, 3, 4, 5, 6, 7, 8)).toMatchObject({ length: 9, size: 4, isWrite: false, destination: { reg: 0 } });
    expect(d(0xa2, 1, 2, 3, 4, 5, 6, 7, 8)).toMatchObject({ length: 9, size: 1, isWrite: true });
    expect(decodeMmioInstruction(Uint8Array.of(0xa1, 1, 2, 3, 4), { longMode: false, defaultOperand32: true })).toMatchObject({ length: 5 });
  });

  it('refuses what it does not emulate, naming it', () => {
    expect(() => d(0x89, 0xc0)).toThrow(/register-form/);
    expect(() => d(0xf0, 0x89, 0x10)).toThrow(/LOCK/);
    expect(() => d(0xf3, 0xa5)).toThrow(/string instruction/);
    expect(() => d(0x01, 0x10)).toThrow(/opcode 01/);
    expect(() => d(0x8b)).toThrow(/truncated/);
    expect(() => d(0xc7, 0x00, 0x78)).toThrow(/truncated/);
    expect(() => d(0x63, 0x07)).toThrow(/MOVSXD/);
    expect(() => d(...new Array(16).fill(0x66))).toThrow(MmioDecodeError);
    expect(() => d(0xc7, 0x08, 0, 0, 0, 0)).toThrow(/\/1 is not MOV/);
  });

  it('any bytes decode or throw MmioDecodeError, never read past what they were given', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 16 }), fc.boolean(), fc.boolean(), (bytes, longMode, defaultOperand32) => {
        try {
          const insn = decodeMmioInstruction(bytes, { longMode, defaultOperand32 });
          expect(insn.length).toBeLessThanOrEqual(Math.min(15, bytes.length));
          expect([1, 2, 4, 8]).toContain(insn.size);
        } catch (e) {
          expect(e).toBeInstanceOf(MmioDecodeError);
        }
      }),
      { numRuns: fuzzRuns(5000) },
    );
  });
});

describe('x86 MMIO completion', () => {
  it('writes destinations with x86 semantics and advances RIP', () => {
    const r = regs({ rax: 0xffff_ffff_ffff_ffffn });
    expect(completeMmioRead(d(0x8b, 0x07), r, 0x1234n)).toMatchObject({ rax: 0x1234n, rip: 0x1002n }); // 32-bit: zero-extends
    expect(completeMmioRead(d(0x66, 0x8b, 0x07), r, 0xabcdn).rax).toBe(0xffff_ffff_ffff_abcdn); // 16-bit: merges
    expect(completeMmioRead(d(0x8a, 0x07), r, 0x11n).rax).toBe(0xffff_ffff_ffff_ff11n); // al
    expect(completeMmioRead(d(0x8a, 0x27), r, 0x22n).rax).toBe(0xffff_ffff_ffff_22ffn); // ah
    expect(completeMmioRead(d(0x48, 0x0f, 0xbe, 0x07), r, 0x80n).rax).toBe(0xffff_ffff_ffff_ff80n); // movsx rax, byte
    expect(completeMmioRead(d(0x0f, 0xb7, 0x07), r, 0x8001n).rax).toBe(0x8001n); // movzx eax, word
    expect(completeMmioRead(d(0x48, 0x63, 0x07), r, 0x8000_0000n).rax).toBe(0xffff_ffff_8000_0000n);
    expect(completeMmioRead(d(0x48, 0x8b, 0x47, 0x08), r, 0x1_0000_0000_0000_0001n).rax).toBe(1n); // masked to 64 bits
    expect(completeMmioRead(d(0x44, 0x8b, 0x8e, 0, 1, 0, 0), r, 7n)).toMatchObject({ r9: 7n, rax: r.rax, rip: 0x1007n });
  });

  it('stores register and immediate values masked to the access size', () => {
    const r = regs({ rdx: 0x1122_3344_5566_7788n, rax: 0xaabbn });
    expect(mmioStoreValue(d(0x89, 0x10), r)).toBe(0x5566_7788n);
    expect(mmioStoreValue(d(0x48, 0x89, 0x10), r)).toBe(0x1122_3344_5566_7788n);
    expect(mmioStoreValue(d(0x88, 0x20), r)).toBe(0xaan); // ah
    expect(mmioStoreValue(d(0xc6, 0x00, 0x99), r)).toBe(0x99n);
    expect(completeMmioWrite(d(0x89, 0x10), r)).toEqual({ ...r, rip: 0x1002n });
    expect(() => mmioStoreValue(d(0x8b, 0x07), r)).toThrow(MmioDecodeError);
  });
});
