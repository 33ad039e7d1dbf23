import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { decodeRunMessage } from '../src/backends/mshv/messages.js';

/**
 * hv_message buffers built by hand from the published layouts: every offset below is the
 * absolute offset in the 256-byte RUN_VP buffer (16-byte hv_message header + payload), written
 * out rather than taken from the decoder's own tables.
 */
const LONG_MODE_CS_ATTR = 0xa09b; // G, L, P, S, type 0xb
const EFER_LMA = 1 << 4;
const CR0_PE = 1 << 2;

interface HeaderSpec {
  vp?: number;
  length?: number;
  access?: number;
  rip?: bigint;
  rflags?: bigint;
  csAttr?: number;
}

function message(type: number, payloadSize: number, h: HeaderSpec = {}): { buf: Uint8Array; v: DataView } {
  const buf = new Uint8Array(256);
  const v = new DataView(buf.buffer);
  v.setUint32(0, type, true); // message_type
  v.setUint8(4, payloadSize); // payload_size
  v.setUint32(16, h.vp ?? 0, true); // header.vp_index
  v.setUint8(20, (h.length ?? 0) & 0xf); // instruction_length (bits 0-3)
  v.setUint8(21, h.access ?? 0); // intercept_access_type
  v.setUint16(22, EFER_LMA | CR0_PE, true); // execution_state
  v.setUint16(38, h.csAttr ?? LONG_MODE_CS_ATTR, true); // cs.attributes (cs @24: base, limit @32, selector @36)
  v.setBigUint64(40, h.rip ?? 0x1000n, true); // rip
  v.setBigUint64(48, h.rflags ?? 0x2n, true); // rflags
  return { buf, v };
}

function ioMessage(opts: { port: number; size: number; write: boolean; rax: bigint; string?: boolean; length?: number }): Uint8Array {
  const { buf, v } = message(0x80010000, 128, { access: opts.write ? 1 : 0, length: opts.length ?? 1 });
  v.setUint16(56, opts.port, true); // port_number
  v.setUint8(58, opts.size | (opts.string ? 1 << 3 : 0)); // access_info
  v.setUint8(59, 1); // instruction_byte_count
  v.setBigUint64(64, opts.rax, true); // rax
  buf[72] = opts.write ? 0xee : 0xec; // instruction_bytes
  return buf;
}

function memoryMessage(gpa: bigint, write: boolean, bytes: number[]): Uint8Array {
  const { buf, v } = message(0x80000000, 80, { access: write ? 1 : 0 });
  v.setUint8(60, bytes.length); // instruction_byte_count
  v.setUint8(61, 0x3); // memory_access_info: gva valid, gva-gpa valid
  v.setBigUint64(64, 0xffff_8000_0000_0000n, true); // guest_virtual_address
  v.setBigUint64(72, gpa, true); // guest_physical_address
  buf.set(bytes, 80); // instruction_bytes
  return buf;
}

describe('decodeRunMessage: intercepts', () => {
  it('port OUT: port, size, data from RAX, RIP context', () => {
    const ev = decodeRunMessage(0, ioMessage({ port: 0x3f8, size: 1, write: true, rax: 0x1234_5641n }));
    expect(ev.kind).toBe('exit');
    if (ev.kind !== 'exit') return;
    expect(ev.exit).toEqual({ kind: 'io', vp: 0, port: 0x3f8, size: 1, isWrite: true, data: 0x41, count: 1, bytes: new Uint8Array(0) });
    expect(ev.context).toMatchObject({ instructionLength: 1, rip: 0x1000n, accessType: 1, longMode: true });
    expect(ev.rax).toBe(0x1234_5641n);
  });

  it('port IN of 4 bytes', () => {
    const ev = decodeRunMessage(1, ioMessage({ port: 0xcfc, size: 4, write: false, rax: 0xffn }));
    expect(ev.kind === 'exit' && ev.exit).toMatchObject({ kind: 'io', vp: 1, port: 0xcfc, size: 4, isWrite: false, data: 0 });
  });

  it('string port I/O is a clear unrecoverable bad-io exit', () => {
    const ev = decodeRunMessage(0, ioMessage({ port: 0x3f8, size: 1, write: true, rax: 0n, string: true }));
    expect(ev.kind === 'exit' && ev.exit).toMatchObject({ kind: 'unrecoverable', reason: 'bad-io', backendCode: 0x80010000 });
  });

  it('MSR read and write (RDX before RAX in the message)', () => {
    const r = message(0x80010001, 64, { access: 0, length: 2 });
    r.v.setUint32(56, 0x1a0, true); // msr_number
    expect(decodeRunMessage(0, r.buf)).toMatchObject({ kind: 'exit', exit: { kind: 'msr-read', msr: 0x1a0 } });
    const w = message(0x80010001, 64, { access: 1, length: 2 });
    w.v.setUint32(56, 0x277, true);
    w.v.setBigUint64(64, 0xaabb_ccddn, true); // rdx
    w.v.setBigUint64(72, 0xffff_ffff_1122_3344n, true); // rax (upper half ignored)
    expect(decodeRunMessage(0, w.buf)).toMatchObject({
      kind: 'exit',
      exit: { kind: 'msr-write', msr: 0x277, value: 0xaabb_ccdd_1122_3344n },
    });
  });

  it('CPUID: leaf/subleaf and the hypervisor default result', () => {
    const { buf, v } = message(0x80010002, 104, { length: 2 });
    v.setBigUint64(56, 0x4000_0000n, true); // rax
    v.setBigUint64(64, 3n, true); // rcx
    v.setBigUint64(88, 0x11n, true); // default rax
    v.setBigUint64(96, 0x33n, true); // default rcx
    v.setBigUint64(104, 0x44n, true); // default rdx
    v.setBigUint64(112, 0x22n, true); // default rbx
    const ev = decodeRunMessage(0, buf);
    expect(ev).toMatchObject({
      kind: 'exit',
      exit: { kind: 'cpuid', leaf: 0x4000_0000, subleaf: 3 },
      cpuidDefault: [0x11, 0x22, 0x33, 0x44],
    });
  });

  it('hypercall: RCX control, RDX input, R8 output; XMM only for fast calls', () => {
    const { buf, v } = message(0x80000050, 196, { length: 3 });
    v.setBigUint64(56, 0xdeadn, true); // rax (not the control word)
    v.setBigUint64(72, 0x5cn, true); // rcx
    v.setBigUint64(80, 0x2000n, true); // rdx
    v.setBigUint64(88, 0x3000n, true); // r8
    const slow = decodeRunMessage(0, buf);
    expect(slow).toMatchObject({
      kind: 'exit',
      exit: { kind: 'hypercall', control: 0x5cn, input: 0x2000n, output: 0x3000n, xmm: undefined },
    });
    v.setBigUint64(72, 0x5cn | (1n << 16n), true);
    buf[112] = 0x77; // xmm0 byte 0
    buf[207] = 0x99; // xmm5 byte 15
    const fast = decodeRunMessage(0, buf);
    const xmm = fast.kind === 'exit' && fast.exit.kind === 'hypercall' ? fast.exit.xmm : undefined;
    expect(xmm?.length).toBe(96);
    expect(xmm?.[0]).toBe(0x77);
    expect(xmm?.[95]).toBe(0x99);
  });

  it('MMIO write and read via the instruction bytes', () => {
    const w = decodeRunMessage(0, memoryMessage(0xd000_0000n, true, [0x89, 0x10]));
    expect(w).toMatchObject({ kind: 'mmio', gpa: 0xd000_0000, instruction: { size: 4, isWrite: true, length: 2 } });
    const r = decodeRunMessage(0, memoryMessage(0xd000_0004n, false, [0x8b, 0x07]));
    expect(r).toMatchObject({ kind: 'mmio', gpa: 0xd000_0004, instruction: { size: 4, isWrite: false, length: 2 } });
  });

  it('an instruction fetch from an MMIO hole is not emulated as a data access, even when its bytes decode as a MOV', () => {
    const buf = memoryMessage(0xd000_0000n, false, [0x8b, 0x07]);
    buf[21] = 2; // intercept access type: execute
    expect(decodeRunMessage(0, buf)).toMatchObject({ kind: 'exit', exit: { kind: 'unrecoverable', reason: 'emulation-failure' } });
  });

  it('MMIO whose bytes disagree with the access type, or cannot be decoded, is an emulation failure', () => {
    expect(decodeRunMessage(0, memoryMessage(0xd000_0000n, false, [0x89, 0x10]))).toMatchObject({
      kind: 'exit',
      exit: { kind: 'unrecoverable', reason: 'emulation-failure' },
    });
    expect(decodeRunMessage(0, memoryMessage(0xd000_0000n, true, [0x0f, 0x0b]))).toMatchObject({
      kind: 'exit',
      exit: { kind: 'unrecoverable', reason: 'emulation-failure' },
    });
  });

  it('halt, triple fault, invalid VP register, exception intercept', () => {
    expect(decodeRunMessage(0, message(0x80010007, 40, { length: 1 }).buf)).toMatchObject({ kind: 'exit', exit: { kind: 'halt' } });
    expect(decodeRunMessage(2, message(0x80000021, 40, { rip: 0xfff0n }).buf)).toMatchObject({
      kind: 'exit',
      exit: { kind: 'shutdown', vp: 2, reason: 'triple-fault', detail: 0xfff0n },
    });
    expect(decodeRunMessage(0, message(0x80000020, 8).buf)).toMatchObject({
      kind: 'exit',
      exit: { kind: 'unrecoverable', reason: 'entry-failure' },
    });
    const ex = message(0x80010003, 240, { length: 2 });
    ex.v.setUint16(56, 6, true); // vector #UD
    ex.v.setUint8(59, 2); // instruction_byte_count
    ex.buf.set([0x0f, 0x0b], 80);
    expect(decodeRunMessage(0, ex.buf)).toMatchObject({
      kind: 'exit',
      exit: { kind: 'unrecoverable', reason: 'internal-error', detail: 6n << 32n, instructionBytes: Uint8Array.of(0x0f, 0x0b) },
    });
  });

  it('SINT deliverable and interruption deliverable are notifications', () => {
    const s = message(0x80000062, 48);
    s.v.setUint16(56, 0b100, true); // deliverable_sints
    expect(decodeRunMessage(1, s.buf)).toEqual({ kind: 'sint-deliverable', vp: 1, sints: 4 });
    const i = message(0x80010008, 48);
    i.v.setUint32(56, 2, true);
    expect(decodeRunMessage(0, i.buf)).toEqual({ kind: 'interruption-deliverable', vp: 0, deliverableType: 2 });
  });
});

describe('decodeRunMessage: hostile input', () => {
  it('truncated buffer, payload_size > 240, unknown type, zero instruction length, > 16 instruction bytes', () => {
    expect(decodeRunMessage(0, new Uint8Array(100))).toMatchObject({
      kind: 'exit',
      exit: { kind: 'unrecoverable', reason: 'internal-error' },
    });
    expect(decodeRunMessage(0, message(0x80010000, 241).buf)).toMatchObject({
      kind: 'exit',
      exit: { kind: 'unrecoverable', detail: 241n },
    });
    expect(decodeRunMessage(0, message(0x8123_4567, 0).buf)).toMatchObject({
      kind: 'exit',
      exit: { kind: 'unrecoverable', reason: 'unknown', backendCode: 0x8123_4567 },
    });
    expect(decodeRunMessage(0, ioMessage({ port: 1, size: 1, write: true, rax: 0n, length: 0 }))).toMatchObject({
      kind: 'exit',
      exit: { kind: 'unrecoverable' },
    });
    const m = memoryMessage(0xd000_0000n, true, [0x89, 0x10]);
    m[60] = 200; // instruction_byte_count
    expect(decodeRunMessage(0, m)).toMatchObject({ kind: 'exit', exit: { kind: 'unrecoverable', reason: 'emulation-failure' } });
    const badSize = ioMessage({ port: 1, size: 1, write: true, rax: 0n });
    badSize[58] = 3; // access size 3
    expect(decodeRunMessage(0, badSize)).toMatchObject({ kind: 'exit', exit: { kind: 'unrecoverable', reason: 'bad-io' } });
  });

  it('any 256 bytes decode to a defined event without throwing', () => {
    const types = [
      0, 0x80000000, 0x80000001, 0x80000020, 0x80000021, 0x80000022, 0x80000050, 0x80000062, 0x80010000, 0x80010001, 0x80010002, 0x80010003,
      0x80010004, 0x80010007, 0x80010008,
    ];
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 256, maxLength: 256 }),
        fc.option(fc.constantFrom(...types), { nil: undefined }),
        (bytes, type) => {
          if (type !== undefined) new DataView(bytes.buffer).setUint32(0, type, true);
          const ev = decodeRunMessage(0, bytes);
          expect(['exit', 'mmio', 'sint-deliverable', 'interruption-deliverable', 'ignored']).toContain(ev.kind);
          if (ev.kind === 'exit' && ev.exit.kind === 'unrecoverable') expect((ev.exit.instructionBytes?.length ?? 0) <= 16).toBe(true);
          if (ev.kind === 'mmio') expect(ev.instructionBytes.length).toBeLessThanOrEqual(16);
        },
      ),
      { numRuns: 3000 },
    );
  });
});
