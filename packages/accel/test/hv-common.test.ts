/**
 * The rules MSHV and WHPX share (src/backends/hv-common), checked once per backend's register
 * names, and the four points on which the two copies used to disagree, each with the source
 * that settled it (README, "MSHV and WHPX: one module").
 */
import { describe, expect, it } from 'vitest';
import * as mshvAbi from '../src/backends/mshv/abi.js';
import { MSHV_X64_NAMES } from '../src/backends/mshv/completion.js';
import { decodeRunMessage } from '../src/backends/mshv/messages.js';
import { MshvPartition } from '../src/backends/mshv/partition.js';
import { WHPX_X64_NAMES } from '../src/backends/whpx/completion.js';
import { decodeX64Exit } from '../src/backends/whpx/exit-x64.js';
import {
  completeX64Intercept,
  decodeSegment,
  encodeSegment,
  decodeTable,
  encodeTable,
  hypercallExit,
  type X64InterceptContext,
} from '../src/backends/hv-common/x64.js';
import type { Exit } from '../src/exits.js';
import { FakeMshvSys, mshvExits, mshvMessage, whpxX64Exit } from '../src/testing/index.js';

const ctx = (over: Partial<X64InterceptContext> = {}): X64InterceptContext => ({
  rip: 0x1000n,
  rflags: 2n,
  instructionLength: 3,
  executionState: 0,
  longMode: true,
  defaultOperand32: false,
  ...over,
});
const hypercall: Exit = { kind: 'hypercall', vp: 0, control: 0x5cn, input: 0n, output: 0n, xmm: undefined };
const backends = [
  ['MSHV', MSHV_X64_NAMES],
  ['WHPX', WHPX_X64_NAMES],
] as const;

describe.each(backends)('shared x64 completion in %s register names', (_name, names) => {
  const g = names.general;

  it('(a) RIP after a hypercall: the reported instruction length; 3 (VMCALL/VMMCALL) when none is reported', () => {
    expect(completeX64Intercept(names, hypercall, { context: ctx({ instructionLength: 3 }) }, { value: 0 }).at(-1)).toEqual({
      name: g.rip,
      value: 0x1003n,
    });
    expect(completeX64Intercept(names, hypercall, { context: ctx({ instructionLength: 0 }) }, { value: 0 }).at(-1)).toEqual({
      name: g.rip,
      value: 0x1003n,
    });
  });

  it('(b) hypercall status: RAX in 64-bit code, EDX:EAX in 32-bit code (TLFS calling convention)', () => {
    expect(completeX64Intercept(names, hypercall, { context: ctx() }, { value: 0x1_0000_0002n })).toEqual([
      { name: g.rax, value: 0x1_0000_0002n },
      { name: g.rip, value: 0x1003n },
    ]);
    expect(
      completeX64Intercept(names, hypercall, { context: ctx({ longMode: false, defaultOperand32: true }) }, { value: 0x1_0000_0002n }),
    ).toEqual([
      { name: g.rax, value: 2n },
      { name: g.rdx, value: 1n },
      { name: g.rip, value: 0x1003n },
    ]);
  });

  it('(c) HLT: no register writes (the hypervisor reports a HLT it executed)', () => {
    expect(completeX64Intercept(names, { kind: 'halt', vp: 0 }, { context: ctx({ instructionLength: 1 }) }, undefined)).toEqual([]);
  });

  it('RIP advances wrap at the code width: IP in 16-bit code, EIP in 32-bit code', () => {
    const out: Exit = { kind: 'io', vp: 0, port: 0x80, size: 1, isWrite: true, data: 0 } as Exit;
    expect(
      completeX64Intercept(
        names,
        out,
        { context: ctx({ rip: 0xffffn, instructionLength: 2, longMode: false, defaultOperand32: false }) },
        undefined,
      ),
    ).toEqual([{ name: g.rip, value: 1n }]);
    expect(
      completeX64Intercept(
        names,
        out,
        { context: ctx({ rip: 0xffff_ffffn, instructionLength: 1, longMode: false, defaultOperand32: true }) },
        undefined,
      ),
    ).toEqual([{ name: g.rip, value: 0n }]);
    expect(completeX64Intercept(names, out, { context: ctx({ rip: 0xffff_ffffn, instructionLength: 1 }) }, undefined)).toEqual([
      { name: g.rip, value: 0x1_0000_0000n },
    ]);
  });

  it('MSR #GP is the backend pending-event write and leaves RIP alone', () => {
    expect(completeX64Intercept(names, { kind: 'msr-write', vp: 0, msr: 0x1a0, value: 0n }, { context: ctx() }, { gp: true })).toEqual([
      names.injectGp,
    ]);
  });
});

describe('(b) 32-bit hypercall inputs by the TLFS convention, on both decoders', () => {
  const regs = { rax: 0x5cn, rbx: 1n, rcx: 0x2000n, rdx: 0n, r8: 0x9999n, rsi: 0x3000n, rdi: 0n };
  const xmm = new Uint8Array(96);

  it('hypercallExit: EDX:EAX control, EBX:ECX input, EDI:ESI output; no XMM fast input outside 64-bit mode', () => {
    expect(hypercallExit(0, false, { ...regs, rax: 0x1_005cn }, xmm, 1n << 16n)).toEqual({
      kind: 'hypercall',
      vp: 0,
      control: 0x1_005cn,
      input: 0x1_0000_2000n,
      output: 0x3000n,
      xmm: undefined,
    });
    expect(hypercallExit(0, true, { ...regs, rcx: 0x1_005cn }, xmm, 1n << 16n)).toMatchObject({
      control: 0x1_005cn,
      input: 0n,
      output: 0x9999n,
      xmm,
    });
  });

  it('MSHV hv_x64_hypercall_intercept_message from 32-bit code (it used to read RCX/RDX/R8 whatever the mode)', () => {
    const { buf, v } = mshvMessage(0x80000050, 196, 2, { rip: 0x5000n, length: 3, longMode: false });
    [regs.rax, regs.rbx, regs.rcx, regs.rdx, regs.r8, regs.rsi, regs.rdi].forEach((r, i) => v.setBigUint64(16 + 40 + i * 8, r, true));
    expect(decodeRunMessage(0, buf)).toMatchObject({
      kind: 'exit',
      exit: { kind: 'hypercall', control: 0x5cn, input: 0x1_0000_2000n, output: 0x3000n, xmm: undefined },
    });
  });

  it('WHPX WHV_X64_HYPERCALL_CONTEXT from 32-bit code', () => {
    const { buf, v } = whpxX64Exit(0x1005, { rip: 0x5000n, length: 3, longMode: false });
    [regs.rax, regs.rbx, regs.rcx, regs.rdx, regs.r8, regs.rsi, regs.rdi].forEach((r, i) => v.setBigUint64(48 + i * 8, r, true));
    expect(decodeX64Exit(0, buf)).toMatchObject({
      kind: 'exit',
      exit: { kind: 'hypercall', control: 0x5cn, input: 0x1_0000_2000n, output: 0x3000n },
    });
  });
});

describe('(c) HLT on MSHV end to end: the halt handler runs, no register is written', () => {
  it('HVMSG_X64_HALT reaches onExit and the VP resumes without a SetVpRegisters', async () => {
    const sys = new FakeMshvSys();
    const p = MshvPartition.create({ memory: [{ gpa: 0, size: 0x1000 }] }, sys);
    const halt = mshvExits.halt();
    const seen: string[] = [];
    p.onExit((e) => (seen.push(e.kind), { stop: true }));
    sys.script(0, halt);
    const before = sys.hvcalls(mshvAbi.HVCALL_SET_VP_REGISTERS).length;
    expect(await p.run()).toMatchObject([{ cause: 'handler-stop' }]);
    expect(seen).toEqual(['halt']);
    expect(sys.hvcalls(mshvAbi.HVCALL_SET_VP_REGISTERS).length).toBe(before);
    p.close();
  });
});

describe('(d) run interruptions', () => {
  it('MSHV: EINTR and EAGAIN from RUN_VP are retried however often they come; an errno lost by koffi at most 8 times in a row', async () => {
    const sys = new FakeMshvSys();
    const p = MshvPartition.create({ memory: [{ gpa: 0, size: 0x1000 }] }, sys);
    p.addIoDevice({ port: 0xf4, count: 1, write: () => ({ stop: true }) });
    const out = mshvExits.io(0xf4, true, 0n);
    const interruptions = Array.from({ length: 20 }, (_, i) => ({ errno: i % 2 ? mshvAbi.Errno.EINTR : mshvAbi.Errno.EAGAIN }));
    sys.script(0, ...interruptions, out);
    expect(await p.run()).toMatchObject([{ cause: 'handler-stop', exits: 1 }]);
    sys.script(0, ...Array.from({ length: 9 }, () => ({ errno: undefined as unknown as number })));
    await expect(p.run()).rejects.toThrow();
    sys.script(0, { errno: mshvAbi.Errno.EINVAL });
    await expect(p.run()).rejects.toThrow(/MSHV_RUN_VP/);
    p.close();
  });
});

describe('segment and table codecs (hv_x64_segment_register = WHV_X64_SEGMENT_REGISTER)', () => {
  it('round-trip through the 16-byte value', () => {
    const seg = {
      base: 0x1234_5678_9abc_def0n,
      limit: 0xfffff,
      selector: 0x10,
      type: 0xb,
      s: true,
      dpl: 3,
      present: true,
      avl: true,
      l: true,
      db: false,
      g: true,
      unusable: false,
    };
    const w = encodeSegment(seg);
    const b = new Uint8Array(16);
    const v = new DataView(b.buffer);
    v.setBigUint64(0, w.value, true);
    v.setBigUint64(8, w.high, true);
    expect(decodeSegment(b)).toEqual(seg);
    const t = encodeTable({ base: 0xffff_8000_0000_1000n, limit: 0xfff });
    v.setBigUint64(0, t.value, true);
    v.setBigUint64(8, t.high, true);
    expect(decodeTable(b)).toEqual({ base: 0xffff_8000_0000_1000n, limit: 0xfff });
  });
});
