import { describe, expect, it } from 'vitest';
import { completeIntercept, completeMmio, diffRegisters, mergeIn } from '../src/backends/mshv/completion.js';
import type { InterceptContext } from '../src/backends/mshv/messages.js';
import { decodeMmioInstruction } from '../src/backends/x86-mmio.js';
import type { Exit } from '../src/exits.js';
import { registersWith, type Registers } from '../src/registers.js';

// Register names (hv_register_name): RAX 0x20000, RCX 0x20001, RDX 0x20002, RBX 0x20003, RIP 0x20010,
// pending interruption 0x10002.
const RAX = 0x20000,
  RCX = 0x20001,
  RDX = 0x20002,
  RBX = 0x20003,
  RIP = 0x20010,
  PENDING = 0x10002;

const ctx = (length: number, rip = 0x1000n): InterceptContext => ({
  vp: 0,
  messageType: 0,
  instructionLength: length,
  rip,
  rflags: 2n,
  accessType: 0,
  executionState: 0x14,
  longMode: true,
  defaultOperand32: false,
});

const regs = (over: Partial<Registers> = {}): Registers => registersWith({ rip: 0x2000n, ...over });

describe('MSHV completion', () => {
  it('IN merges RAX by size and advances RIP', () => {
    const exit: Exit = { kind: 'io', vp: 0, port: 0x60, size: 1, isWrite: false, data: 0, count: 1, bytes: new Uint8Array() };
    expect(completeIntercept({ exit, context: ctx(1), rax: 0xffff_ffff_1234_5678n }, { value: 0xab })).toEqual([
      { name: RAX, value: 0xffff_ffff_1234_56abn },
      { name: RIP, value: 0x1001n },
    ]);
    expect(mergeIn(0xffff_ffff_1234_5678n, 2, 0xbeefn)).toBe(0xffff_ffff_1234_beefn);
    expect(mergeIn(0xffff_ffff_1234_5678n, 4, 0xdead_beefn)).toBe(0xdead_beefn); // 32-bit write zero-extends
  });

  it('OUT only advances RIP', () => {
    const exit: Exit = { kind: 'io', vp: 0, port: 0x3f8, size: 1, isWrite: true, data: 0x41, count: 1, bytes: new Uint8Array() };
    expect(completeIntercept({ exit, context: ctx(2) }, undefined)).toEqual([{ name: RIP, value: 0x1002n }]);
  });

  it('RDMSR splits the value into EDX:EAX; #GP injects without advancing', () => {
    const exit: Exit = { kind: 'msr-read', vp: 0, msr: 0x1a0 };
    expect(completeIntercept({ exit, context: ctx(2) }, { value: 0x1122_3344_5566_7788n })).toEqual([
      { name: RAX, value: 0x5566_7788n },
      { name: RDX, value: 0x1122_3344n },
      { name: RIP, value: 0x1002n },
    ]);
    expect(completeIntercept({ exit, context: ctx(2) }, { gp: true })).toEqual([{ name: PENDING, value: 0xd0017n }]);
  });

  it('WRMSR advances, or #GP', () => {
    const exit: Exit = { kind: 'msr-write', vp: 0, msr: 0x1a0, value: 5n };
    expect(completeIntercept({ exit, context: ctx(2) }, undefined)).toEqual([{ name: RIP, value: 0x1002n }]);
    expect(completeIntercept({ exit, context: ctx(2) }, { gp: true })).toEqual([{ name: PENDING, value: 0xd0017n }]);
  });

  it('CPUID writes the four registers (the handler answer, else the hypervisor default)', () => {
    const exit: Exit = { kind: 'cpuid', vp: 0, leaf: 0x4000_0000, subleaf: 0 };
    const expected = (a: number, b: number, c: number, d: number) => [
      { name: RAX, value: BigInt(a) },
      { name: RBX, value: BigInt(b) },
      { name: RCX, value: BigInt(c) },
      { name: RDX, value: BigInt(d) },
      { name: RIP, value: 0x1002n },
    ];
    expect(completeIntercept({ exit, context: ctx(2), cpuidDefault: [1, 2, 3, 4] }, { cpuid: [0xffff_ffff, 6, 7, 8] })).toEqual(
      expected(0xffff_ffff, 6, 7, 8),
    );
    expect(completeIntercept({ exit, context: ctx(2), cpuidDefault: [1, 2, 3, 4] }, undefined)).toEqual(expected(1, 2, 3, 4));
  });

  it('hypercall: RAX = status, RIP past the VMCALL (the hypervisor does not advance it)', () => {
    const exit: Exit = { kind: 'hypercall', vp: 0, control: 0x5cn, input: 0n, output: 0n, xmm: undefined };
    expect(completeIntercept({ exit, context: ctx(3) }, { value: 0x12 })).toEqual([
      { name: RAX, value: 0x12n },
      { name: RIP, value: 0x1003n },
    ]);
  });

  it('fatal exits and exits without context need no writes', () => {
    const exit: Exit = { kind: 'shutdown', vp: 0, reason: 'triple-fault', backendCode: 0, detail: 0n, registers: undefined };
    expect(completeIntercept({ exit, context: ctx(0) }, undefined)).toEqual([]);
    expect(completeIntercept({ exit: { kind: 'halt', vp: 0 }, context: undefined }, undefined)).toEqual([]);
  });

  it('MMIO read `8b 07` writes EAX (zero-extended) and RIP; write `89 10` only RIP', () => {
    const read = decodeMmioInstruction(Uint8Array.of(0x8b, 0x07), { longMode: true, defaultOperand32: false });
    expect(completeMmio(read, regs({ rax: 0xffff_ffff_ffff_ffffn }), { value: 0x1122_3344n })).toEqual([
      { name: RAX, value: 0x1122_3344n },
      { name: RIP, value: 0x2002n },
    ]);
    const write = decodeMmioInstruction(Uint8Array.of(0x89, 0x10), { longMode: true, defaultOperand32: false });
    expect(completeMmio(write, regs(), undefined)).toEqual([{ name: RIP, value: 0x2002n }]);
  });

  it('diffRegisters lists only the changed registers', () => {
    expect(diffRegisters(regs(), regs({ r15: 1n }))).toEqual([{ name: 0x2000f, value: 1n }]);
  });
});
