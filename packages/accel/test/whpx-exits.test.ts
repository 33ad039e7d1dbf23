import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  completeArm64,
  completeArm64Mmio,
  completeX64,
  completeX64Mmio,
  arm64LoadValue,
  mergeIn,
} from '../src/backends/whpx/completion.js';
import type { WhpxEvent } from '../src/backends/whpx/events.js';
import { decodeArm64Exit, decodeDataAbort } from '../src/backends/whpx/exit-arm64.js';
import { decodeX64Exit } from '../src/backends/whpx/exit-x64.js';
import { registersWith, type Registers } from '../src/registers.js';

// Exit contexts are built byte by byte at absolute offsets (x64: VpContext @8, union @48;
// arm64: union @16 with the 24-byte intercept header first), written out here rather than
// taken from the structure tables under test.

function x64Ctx(reason: number, rip: bigint, length: number, longMode = true): { buf: Uint8Array; v: DataView } {
  const buf = new Uint8Array(224);
  const v = new DataView(buf.buffer);
  v.setUint32(0, reason, true);
  v.setUint16(8, longMode ? 0x14 : 0x04, true); // CR0.PE | EFER.LMA
  v.setUint8(10, length | (0x2 << 4)); // InstructionLength, CR8 = 2
  v.setUint16(30, longMode ? 0xa09b : 0xc09b, true); // CS: L (long) or D (32-bit)
  v.setBigUint64(32, rip, true);
  v.setBigUint64(40, 0x202n, true);
  return { buf, v };
}

function arm64Ctx(reason: number, pc: bigint): { buf: Uint8Array; v: DataView } {
  const buf = new Uint8Array(272);
  const v = new DataView(buf.buffer);
  v.setUint32(0, reason, true);
  v.setUint32(16, 0, true); // header.VpIndex
  v.setUint8(20, 4); // InstructionLength
  v.setBigUint64(24, pc, true); // header.Pc @16+8
  v.setBigUint64(32, 0x3c5n, true); // Cpsr
  return { buf, v };
}

const exitOf = (ev: WhpxEvent) => {
  if (ev.kind !== 'exit') throw new Error(`expected an exit, got ${ev.kind}`);
  return ev;
};

const regs = (over: Partial<Registers> = {}): Registers => registersWith(over);

describe('x64 exit decoding', () => {
  it('I/O OUT and IN: port, size, data; IN completion merges AL into RAX and advances RIP', () => {
    const out = x64Ctx(2, 0x1000n, 1);
    out.v.setUint8(48, 1); // InstructionByteCount
    out.buf[52] = 0xee; // out dx, al
    out.v.setUint32(68, 1 | (1 << 1), true); // IsWrite, size 1
    out.v.setUint16(72, 0x3f8, true);
    out.v.setBigUint64(80, 0x1234_5641n, true); // rax
    const ev = exitOf(decodeX64Exit(0, out.buf));
    expect(ev.exit).toEqual({ kind: 'io', vp: 0, port: 0x3f8, size: 1, isWrite: true, data: 0x41, count: 1, bytes: new Uint8Array(0) });
    expect(completeX64(ev.exit, ev.completion as never, undefined)).toEqual([{ name: 0x10, value: 0x1001n }]);

    const inw = x64Ctx(2, 0x2000n, 2);
    inw.v.setUint32(68, 2 << 1, true); // read, size 2
    inw.v.setUint16(72, 0x60, true);
    inw.v.setBigUint64(80, 0xffff_ffff_1234_5678n, true);
    const ev2 = exitOf(decodeX64Exit(3, inw.buf));
    expect(ev2.exit).toMatchObject({ kind: 'io', vp: 3, port: 0x60, size: 2, isWrite: false, data: 0 });
    expect(completeX64(ev2.exit, ev2.completion as never, { value: 0xabcd })).toEqual([
      { name: 0, value: 0xffff_ffff_1234_abcdn },
      { name: 0x10, value: 0x2002n },
    ]);
  });

  it('string I/O and a bad access size are clear unrecoverable exits', () => {
    const s = x64Ctx(2, 0x1000n, 2);
    s.v.setUint32(68, 1 | (1 << 1) | (1 << 4) | (1 << 5), true); // rep outsb
    s.v.setUint16(72, 0x80, true);
    expect(exitOf(decodeX64Exit(0, s.buf)).exit).toMatchObject({ kind: 'unrecoverable', reason: 'bad-io', backendCode: 2, detail: 0x80n });
    const b = x64Ctx(2, 0x1000n, 1);
    b.v.setUint32(68, 3 << 1, true);
    expect(exitOf(decodeX64Exit(0, b.buf)).exit).toMatchObject({ kind: 'unrecoverable', reason: 'bad-io', detail: 3n });
  });

  it('MSR read and write; RDMSR completion splits RDX:RAX, #GP goes through PendingEvent without a RIP advance', () => {
    const rd = x64Ctx(0x1000, 0x3000n, 2);
    rd.v.setUint32(52, 0x1a0, true);
    const ev = exitOf(decodeX64Exit(1, rd.buf));
    expect(ev.exit).toEqual({ kind: 'msr-read', vp: 1, msr: 0x1a0 });
    expect(completeX64(ev.exit, ev.completion as never, { value: 0x1_2345_6789n })).toEqual([
      { name: 0, value: 0x2345_6789n },
      { name: 2, value: 1n },
      { name: 0x10, value: 0x3002n },
    ]);
    expect(completeX64(ev.exit, ev.completion as never, { gp: true })).toEqual([{ name: 0x80000002, value: 0xd0101n, high: 0n }]);

    const wr = x64Ctx(0x1000, 0x3000n, 2);
    wr.v.setUint32(48, 1, true); // IsWrite
    wr.v.setUint32(52, 0x4000_0001, true);
    wr.v.setBigUint64(56, 0xffff_ffff_8000_0001n, true); // rax (upper half ignored)
    wr.v.setBigUint64(64, 0x0000_0000_0000_0002n, true); // rdx
    const ev2 = exitOf(decodeX64Exit(0, wr.buf));
    expect(ev2.exit).toEqual({ kind: 'msr-write', vp: 0, msr: 0x4000_0001, value: 0x2_8000_0001n });
    expect(completeX64(ev2.exit, ev2.completion as never, {})).toEqual([{ name: 0x10, value: 0x3002n }]);
  });

  it('CPUID: leaf/subleaf; the hypervisor default answers when the handler gives none', () => {
    const c = x64Ctx(0x1001, 0x100n, 2);
    c.v.setBigUint64(48, 0x4000_0000n, true); // rax
    c.v.setBigUint64(56, 7n, true); // rcx
    c.v.setBigUint64(80, 0x4000_000an, true); // default rax
    c.v.setBigUint64(88, 0x7263_694dn, true); // default rcx
    c.v.setBigUint64(96, 0x0076_4820n, true); // default rdx
    c.v.setBigUint64(104, 0x666f_736fn, true); // default rbx
    const ev = exitOf(decodeX64Exit(0, c.buf));
    expect(ev.exit).toEqual({ kind: 'cpuid', vp: 0, leaf: 0x4000_0000, subleaf: 7 });
    expect(completeX64(ev.exit, ev.completion as never, undefined)).toEqual([
      { name: 0, value: 0x4000_000an },
      { name: 3, value: 0x666f_736fn },
      { name: 1, value: 0x7263_694dn },
      { name: 2, value: 0x0076_4820n },
      { name: 0x10, value: 0x102n },
    ]);
    expect(completeX64(ev.exit, ev.completion as never, { cpuid: [1, 2, 3, 4] }).map((w) => w.value)).toEqual([1n, 2n, 3n, 4n, 0x102n]);
  });

  it('hypercall: RCX/RDX/R8 and XMM0-5 for fast calls; RAX = status, RIP += 3', () => {
    const h = x64Ctx(0x1005, 0x5000n, 0);
    h.v.setBigUint64(48 + 16, 0x1_005cn, true); // rcx: fast (bit 16), code 0x5c
    h.v.setBigUint64(48 + 24, 0x2000n, true); // rdx
    h.v.setBigUint64(48 + 32, 0x3000n, true); // r8
    for (let i = 0; i < 96; i++) h.buf[48 + 64 + i] = i;
    const ev = exitOf(decodeX64Exit(0, h.buf));
    expect(ev.exit).toMatchObject({ kind: 'hypercall', control: 0x1_005cn, input: 0x2000n, output: 0x3000n });
    expect(Array.from((ev.exit as { xmm: Uint8Array }).xmm)).toEqual(Array.from({ length: 96 }, (_, i) => i));
    expect(completeX64(ev.exit, ev.completion as never, { value: 0 })).toEqual([
      { name: 0, value: 0n },
      { name: 0x10, value: 0x5003n },
    ]);
  });

  it('hypercall from 32-bit code: EDX:EAX control, EBX:ECX input, EDI:ESI output, status to EDX:EAX', () => {
    const h = x64Ctx(0x1005, 0x5000n, 0, false);
    h.v.setBigUint64(48, 0x5cn, true); // rax
    h.v.setBigUint64(48 + 8, 0x1n, true); // rbx
    h.v.setBigUint64(48 + 16, 0x2000n, true); // rcx
    h.v.setBigUint64(48 + 24, 0n, true); // rdx
    h.v.setBigUint64(48 + 40, 0x3000n, true); // rsi
    h.v.setBigUint64(48 + 48, 0n, true); // rdi
    const ev = exitOf(decodeX64Exit(0, h.buf));
    expect(ev.exit).toMatchObject({ control: 0x5cn, input: 0x1_0000_2000n, output: 0x3000n, xmm: undefined });
    expect(completeX64(ev.exit, ev.completion as never, { value: 0x1_0000_0002n })).toEqual([
      { name: 0, value: 2n },
      { name: 2, value: 1n },
      { name: 0x10, value: 0x5003n },
    ]);
  });

  it('memory access: decodes the instruction bytes; completion writes the destination and advances RIP', () => {
    const m = x64Ctx(1, 0x3000n, 0);
    m.v.setUint8(48, 2);
    m.buf.set([0x8b, 0x07], 52); // mov eax, [rdi]
    m.v.setUint32(68, 0, true); // read
    m.v.setBigUint64(72, 0xd000_0004n, true); // Gpa @24
    m.v.setBigUint64(80, 0xffff_8000_0000_0000n, true); // Gva @32
    const ev = decodeX64Exit(0, m.buf);
    expect(ev.kind).toBe('mmio-x64');
    if (ev.kind !== 'mmio-x64') return;
    expect(ev.gpa).toBe(0xd000_0004);
    expect(ev.instruction).toMatchObject({ length: 2, size: 4, isWrite: false });
    expect(completeX64Mmio(ev.instruction, regs({ rax: 0xffff_ffff_0000_0000n, rip: 0x3000n }), { value: 0x1122_3344n })).toEqual([
      { name: 0, value: 0x1122_3344n },
      { name: 0x10, value: 0x3002n },
    ]);
  });

  it('memory access the decoder rejects, with 0 or > 16 bytes, an execute access or a direction mismatch: emulation failure with the bytes', () => {
    const bad = (count: number, bytes: number[], access: number) => {
      const m = x64Ctx(1, 0x3000n, 0);
      m.v.setUint8(48, count);
      m.buf.set(bytes, 52);
      m.v.setUint32(68, access, true);
      return decodeX64Exit(0, m.buf);
    };
    expect(exitOf(bad(2, [0x0f, 0x0b], 0)).exit).toMatchObject({
      kind: 'unrecoverable',
      reason: 'emulation-failure',
      instructionBytes: Uint8Array.of(0x0f, 0x0b),
    });
    expect(exitOf(bad(0, [], 0)).exit).toMatchObject({ reason: 'emulation-failure', detail: 0n });
    expect(exitOf(bad(200, [], 0)).exit).toMatchObject({ reason: 'emulation-failure', detail: 200n });
    expect(exitOf(bad(2, [0x8b, 0x07], 2)).exit).toMatchObject({ reason: 'emulation-failure' });
    expect(exitOf(bad(2, [0x8b, 0x07], 1)).exit).toMatchObject({ reason: 'emulation-failure' }); // a load reported as a write
  });

  it('notifications and fatal exits', () => {
    const sint = x64Ctx(0xa, 0n, 0);
    sint.v.setUint16(48, 0x8004, true);
    expect(decodeX64Exit(0, sint.buf)).toEqual({ kind: 'sint-deliverable', sints: 0x8004 });
    expect(decodeX64Exit(0, x64Ctx(0x2001, 0n, 0).buf)).toEqual({ kind: 'canceled' });
    const eoi = x64Ctx(9, 0n, 0);
    eoi.v.setUint32(48, 0x31, true);
    expect(decodeX64Exit(0, eoi.buf)).toMatchObject({ kind: 'ignored', what: 'apic-eoi', detail: 0x31 });
    expect(decodeX64Exit(0, x64Ctx(7, 0n, 0).buf)).toMatchObject({ kind: 'ignored', what: 'interrupt-window' });
    expect(exitOf(decodeX64Exit(2, x64Ctx(8, 0x10n, 1).buf))).toEqual({
      kind: 'exit',
      exit: { kind: 'halt', vp: 2 },
      completion: undefined,
    });
    expect(exitOf(decodeX64Exit(0, x64Ctx(4, 0xfff0n, 0).buf)).exit).toMatchObject({
      kind: 'shutdown',
      reason: 'triple-fault',
      backendCode: 4,
      detail: 0xfff0n,
    });
    expect(exitOf(decodeX64Exit(0, x64Ctx(5, 0n, 0).buf)).exit).toMatchObject({
      kind: 'unrecoverable',
      reason: 'entry-failure',
      backendCode: 5,
    });
    const uf = x64Ctx(6, 0n, 0);
    uf.v.setUint32(48, 2, true);
    uf.v.setBigUint64(56, 0x28n, true);
    expect(exitOf(decodeX64Exit(0, uf.buf)).exit).toMatchObject({
      kind: 'unrecoverable',
      reason: 'internal-error',
      detail: (2n << 32n) | 0x28n,
    });
    expect(exitOf(decodeX64Exit(0, x64Ctx(0x1002, 0n, 0).buf)).exit).toMatchObject({ kind: 'unrecoverable', backendCode: 0x1002 });
    expect(exitOf(decodeX64Exit(0, x64Ctx(0x7777, 0n, 0).buf)).exit).toMatchObject({
      kind: 'unrecoverable',
      reason: 'unknown',
      backendCode: 0x7777,
    });
    expect(exitOf(decodeX64Exit(0, x64Ctx(0, 0n, 0).buf)).exit).toMatchObject({ kind: 'unrecoverable', reason: 'unknown', backendCode: 0 });
    expect(exitOf(decodeX64Exit(0, new Uint8Array(100))).exit).toMatchObject({
      kind: 'unrecoverable',
      reason: 'internal-error',
      detail: 100n,
    });
  });

  it('an IN/MSR/CPUID exit without an instruction length cannot be completed: internal error', () => {
    const io = x64Ctx(2, 0x1000n, 0);
    io.v.setUint32(68, 1 << 1, true);
    expect(exitOf(decodeX64Exit(0, io.buf)).exit).toMatchObject({ kind: 'unrecoverable', reason: 'internal-error', backendCode: 2 });
    expect(exitOf(decodeX64Exit(0, x64Ctx(0x1000, 0n, 0).buf)).exit).toMatchObject({ kind: 'unrecoverable', backendCode: 0x1000 });
    expect(exitOf(decodeX64Exit(0, x64Ctx(0x1001, 0n, 0).buf)).exit).toMatchObject({ kind: 'unrecoverable', backendCode: 0x1001 });
  });

  it('hostile contexts: any 224 bytes decode to a defined event, never a throw', () => {
    const reasons = [0, 1, 2, 4, 5, 6, 7, 8, 9, 0xa, 0x1000, 0x1001, 0x1002, 0x1003, 0x1005, 0x2001, 0xdead];
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 224, maxLength: 224 }),
        fc.option(fc.constantFrom(...reasons), { nil: undefined }),
        (bytes, reason) => {
          if (reason !== undefined) new DataView(bytes.buffer).setUint32(0, reason, true);
          const ev = decodeX64Exit(0, bytes);
          expect(['exit', 'mmio-x64', 'sint-deliverable', 'canceled', 'ignored']).toContain(ev.kind);
          if (ev.kind === 'exit' && ev.exit.kind === 'unrecoverable' && ev.exit.instructionBytes)
            expect(ev.exit.instructionBytes.length).toBeLessThanOrEqual(16);
        },
      ),
      { numRuns: 3000 },
    );
  });
});

describe('arm64 exit decoding', () => {
  // ESR for a data abort: ISV, SAS, SSE, SRT, SF, WnR.
  const esr = (o: { size: number; srt: number; write?: boolean; sse?: boolean; sf?: boolean; isv?: boolean }): bigint =>
    (0x24n << 26n) |
    (1n << 25n) |
    ((o.isv ?? true) ? 1n << 24n : 0n) |
    (BigInt(Math.log2(o.size)) << 22n) |
    (o.sse ? 1n << 21n : 0n) |
    (BigInt(o.srt) << 16n) |
    (o.sf ? 1n << 15n : 0n) |
    (o.write ? 1n << 6n : 0n);

  const mmio = (reason: number, gpa: bigint, syndrome: bigint, pc = 0x4000_0000n, accessType = 0) => {
    const c = arm64Ctx(reason, pc);
    c.v.setUint8(16 + 5, accessType);
    c.v.setUint8(16 + 28, 4); // InstructionByteCount
    c.v.setUint32(16 + 32, 0xb9400020, true); // ldr w0, [x1]
    c.v.setBigUint64(16 + 40, 0xffff_0000_1234_0000n, true); // gva
    c.v.setBigUint64(16 + 48, gpa, true); // gpa
    c.v.setBigUint64(16 + 56, syndrome, true);
    return c.buf;
  };

  it('unmapped GPA with ISV: size, register, direction, sign extension; a load completes X[SRT] and PC += 4', () => {
    const ev = decodeArm64Exit(0, mmio(0x80000000, 0x0900_0000n, esr({ size: 2, srt: 5, sse: true, sf: false })));
    expect(ev).toEqual({
      kind: 'mmio-arm64',
      gpa: 0x0900_0000,
      pc: 0x4000_0000n,
      access: { size: 2, isWrite: false, srt: 5, signExtend: true, sixtyFour: false },
    });
    if (ev.kind !== 'mmio-arm64') return;
    expect(completeArm64Mmio(ev.access, ev.pc, { value: 0x8001n })).toEqual([
      { name: 0x20005, value: 0xffff_8001n }, // LDRSH Wt: sign-extended to 32, upper half zero
      { name: 0x20022, value: 0x4000_0004n },
    ]);
    const st = decodeArm64Exit(0, mmio(0x80000001, 0x0900_0008n, esr({ size: 8, srt: 2, write: true, sf: true })));
    expect(st).toMatchObject({ kind: 'mmio-arm64', gpa: 0x0900_0008, access: { size: 8, isWrite: true, srt: 2 } });
    if (st.kind === 'mmio-arm64') expect(completeArm64Mmio(st.access, st.pc, undefined)).toEqual([{ name: 0x20022, value: 0x4000_0004n }]);
  });

  it('load value rules: zero-extend, sign-extend to W or X, XZR destination writes nothing', () => {
    expect(arm64LoadValue({ size: 1, isWrite: false, srt: 0, signExtend: false, sixtyFour: false }, 0x1ffn)).toBe(0xffn);
    expect(arm64LoadValue({ size: 1, isWrite: false, srt: 0, signExtend: true, sixtyFour: true }, 0x80n)).toBe(0xffff_ffff_ffff_ff80n);
    expect(arm64LoadValue({ size: 4, isWrite: false, srt: 0, signExtend: true, sixtyFour: true }, 0x8000_0000n)).toBe(
      0xffff_ffff_8000_0000n,
    );
    expect(arm64LoadValue({ size: 8, isWrite: false, srt: 0, signExtend: false, sixtyFour: true }, 0x1234_5678_9abc_def0n)).toBe(
      0x1234_5678_9abc_def0n,
    );
    expect(completeArm64Mmio({ size: 4, isWrite: false, srt: 31, signExtend: false, sixtyFour: false }, 0x100n, { value: 5 })).toEqual([
      { name: 0x20022, value: 0x104n },
    ]);
    expect(decodeDataAbort(esr({ size: 4, srt: 3, isv: false }))).toBeUndefined();
  });

  it('ISV = 0, cache maintenance, stage-1 walk, execute access: emulation failure with the instruction', () => {
    const noIsv = exitOf(decodeArm64Exit(0, mmio(0x80000000, 0x0900_0000n, esr({ size: 4, srt: 0, isv: false }))));
    expect(noIsv.exit).toMatchObject({
      kind: 'unrecoverable',
      reason: 'emulation-failure',
      backendCode: 0x80000000,
      instructionBytes: Uint8Array.of(0x20, 0x00, 0x40, 0xb9),
    });
    expect(exitOf(decodeArm64Exit(0, mmio(0x80000000, 0n, esr({ size: 4, srt: 0 }) | (1n << 8n)))).exit).toMatchObject({
      reason: 'emulation-failure',
    });
    expect(exitOf(decodeArm64Exit(0, mmio(0x80000000, 0n, esr({ size: 4, srt: 0 }) | (1n << 7n)))).exit).toMatchObject({
      reason: 'emulation-failure',
    });
    expect(exitOf(decodeArm64Exit(0, mmio(0x80000000, 0n, esr({ size: 4, srt: 0 }), 0n, 2))).exit).toMatchObject({
      reason: 'emulation-failure',
    });
  });

  it('hypercall HVC #1: X0 control, X1 input, X2 output; fast input X3..X14; X0 = status, PC += 4', () => {
    const c = arm64Ctx(0x80000050, 0x8000n);
    c.v.setUint16(16 + 24, 1, true); // immediate
    const x = (n: number, value: bigint) => c.v.setBigUint64(16 + 32 + n * 8, value, true);
    x(0, 0x1_0005n);
    x(1, 0xaaaan);
    x(2, 0xbbbbn);
    for (let i = 3; i < 18; i++) x(i, BigInt(i));
    const ev = exitOf(decodeArm64Exit(1, c.buf));
    expect(ev.exit).toMatchObject({ kind: 'hypercall', vp: 1, control: 0x1_0005n, input: 0xaaaan, output: 0xbbbbn });
    const xmm = new DataView((ev.exit as { xmm: Uint8Array }).xmm.buffer);
    expect(Array.from({ length: 12 }, (_, i) => xmm.getBigUint64(i * 8, true))).toEqual(
      Array.from({ length: 12 }, (_, i) => BigInt(i + 3)),
    );
    expect(completeArm64(ev.exit, ev.completion as never, { value: 0 })).toEqual([
      { name: 0x20000, value: 0n },
      { name: 0x20022, value: 0x8004n },
    ]);
  });

  it('hypercall HVC #0 (SMCCC): control in X1; other immediates are unrecoverable', () => {
    const c = arm64Ctx(0x80000050, 0x8000n);
    c.v.setBigUint64(16 + 32, 0xc600_0001n, true); // X0: function id
    c.v.setBigUint64(16 + 40, 0x5cn, true); // X1 control
    c.v.setBigUint64(16 + 48, 0x1000n, true); // X2 input
    expect(exitOf(decodeArm64Exit(0, c.buf)).exit).toMatchObject({ kind: 'hypercall', control: 0x5cn, input: 0x1000n, xmm: undefined });
    c.v.setUint16(16 + 24, 7, true);
    expect(exitOf(decodeArm64Exit(0, c.buf)).exit).toMatchObject({ kind: 'unrecoverable', reason: 'unknown', detail: 7n });
  });

  it('reset, SINT deliverable, canceled, fatal and unknown reasons', () => {
    const r = arm64Ctx(0x8001000c, 0n);
    r.v.setUint32(16 + 24, 1, true); // reboot
    expect(exitOf(decodeArm64Exit(0, r.buf)).exit).toEqual({
      kind: 'shutdown',
      vp: 0,
      reason: 'system-event',
      backendCode: 0x8001000c,
      detail: 1n,
      registers: undefined,
    });
    const s = arm64Ctx(0x80000062, 0n);
    s.v.setUint16(16 + 24, 0x0006, true);
    expect(decodeArm64Exit(0, s.buf)).toEqual({ kind: 'sint-deliverable', sints: 6 });
    expect(decodeArm64Exit(0, arm64Ctx(0xffffffff, 0n).buf)).toEqual({ kind: 'canceled' });
    expect(exitOf(decodeArm64Exit(0, arm64Ctx(0x80000021, 0x10n).buf)).exit).toMatchObject({
      kind: 'unrecoverable',
      reason: 'internal-error',
      detail: 0x10n,
    });
    expect(exitOf(decodeArm64Exit(0, arm64Ctx(0x80000020, 0n).buf)).exit).toMatchObject({ reason: 'entry-failure' });
    expect(exitOf(decodeArm64Exit(0, arm64Ctx(0x80010006, 0n).buf)).exit).toMatchObject({ reason: 'unknown', backendCode: 0x80010006 });
    expect(exitOf(decodeArm64Exit(0, new Uint8Array(224))).exit).toMatchObject({ reason: 'internal-error', detail: 224n });
  });

  it('hostile contexts: any 272 bytes decode to a defined event, never a throw', () => {
    const reasons = [
      0, 0x80000000, 0x80000001, 0x80000020, 0x80000021, 0x80000022, 0x80000050, 0x80000062, 0x80010006, 0x8001000c, 0xffffffff, 1,
    ];
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 272, maxLength: 272 }),
        fc.option(fc.constantFrom(...reasons), { nil: undefined }),
        (bytes, reason) => {
          if (reason !== undefined) new DataView(bytes.buffer).setUint32(0, reason, true);
          const ev = decodeArm64Exit(0, bytes);
          expect(['exit', 'mmio-arm64', 'sint-deliverable', 'canceled']).toContain(ev.kind);
          if (ev.kind === 'mmio-arm64') expect([1, 2, 4, 8]).toContain(ev.access.size);
        },
      ),
      { numRuns: 3000 },
    );
  });
});

describe('completion helpers', () => {
  it('mergeIn: 8/16-bit merge, 32-bit zero-extends', () => {
    expect(mergeIn(0xffff_ffff_ffff_ffffn, 1, 0x12n)).toBe(0xffff_ffff_ffff_ff12n);
    expect(mergeIn(0xffff_ffff_ffff_ffffn, 2, 0x1234n)).toBe(0xffff_ffff_ffff_1234n);
    expect(mergeIn(0xffff_ffff_ffff_ffffn, 4, 0x1234_5678n)).toBe(0x1234_5678n);
  });
});
