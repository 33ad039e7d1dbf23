/** Pure parts of accel: no /dev/kvm needed. */
import { describe, expect, it } from 'vitest';
import { buildCpuidModel, decodeCpuid, encodeCpuid, hypervisorVendorLeaf, type CpuidEntry } from '../src/cpuid.js';
import { RangeMap } from '../src/devices.js';
import {
  AccelUsageError,
  ApiVersionError,
  HostSystemError,
  HypervisorUnavailableError,
  MemoryMapError,
  MissingCapabilityError,
  fromNativeError,
} from '../src/errors.js';
import { decodeExit, encodeResponse } from '../src/exit-decode.js';
import { AnswerStatus, ExitFlag, ExitKindCode, HEADER_SIZE, Off, SLOT_DATA_OFFSET, SLOT_SIZE, SlotView } from '../src/native/exit-slot.js';
import { packRegisters, packSpecialRegisters, unpackRegisters, unpackSpecialRegisters, REG_NAMES, SREG_WORDS } from '../src/registers.js';

const entry = (fn: number, regs: Partial<CpuidEntry> = {}): CpuidEntry => ({
  function: fn,
  index: 0,
  flags: 0,
  eax: 0,
  ebx: 0,
  ecx: 0,
  edx: 0,
  ...regs,
});

describe('CPUID model', () => {
  const supported = [
    entry(0, { eax: 0xd }),
    entry(1, { ebx: 0x00020800, ecx: 0xf6f83203, edx: 0x178bfbff }),
    entry(7, { flags: 1, ebx: 0x219c03ab, ecx: 0x604 }),
    { ...entry(7, { flags: 1, ebx: 5 }), index: 1 },
    entry(0xd, { eax: 7 }),
    entry(0x40000000, { ebx: 0x4b4d564b }),
    entry(0x40000001, { eax: 0x1007efb }),
    entry(0x80000001, { ecx: 0x75c237ff, edx: 0x2fd3fbff }),
  ];

  it('replaces the hypervisor leaves instead of appending', () => {
    const m = buildCpuidModel(supported, { apicId: 0, hypervisorLeaves: [hypervisorVendorLeaf('Microsoft Hv', 0x40000005)] });
    const hv = m.filter((e) => e.function >= 0x40000000 && e.function <= 0x400000ff);
    expect(hv).toHaveLength(1);
    expect(hv[0]).toMatchObject({ eax: 0x40000005, ebx: 0x7263694d, ecx: 0x666f736f, edx: 0x76482074 });
  });

  it('offers an old, small CPU: x2APIC on, no POPCNT/XSAVE/AVX/leaf-7 features, no XSAVE leaf', () => {
    const m = buildCpuidModel(supported, { apicId: 3 });
    const leaf = (fn: number, index = 0): CpuidEntry | undefined => m.find((e) => e.function === fn && e.index === index);
    const l1 = leaf(1)!;
    expect(l1.ecx & (1 << 21)).not.toBe(0);
    expect(l1.ecx >>> 31).toBe(1);
    for (const bit of [23, 26, 27, 28, 30]) expect(l1.ecx & (1 << bit)).toBe(0);
    expect(l1.ebx >>> 24).toBe(3);
    expect(leaf(7)).toMatchObject({ eax: 0, ebx: 0, ecx: 0, edx: 0 });
    expect(leaf(7, 1)).toBeUndefined();
    expect(leaf(0xd)).toBeUndefined();
    expect(leaf(0x80000001)!.edx & (1 << 26)).toBe(0); // no 1 GiB pages
    expect(leaf(0x80000001)!.edx & (1 << 29)).not.toBe(0); // long mode
  });

  it('rejects a caller leaf outside the hypervisor range, and round-trips the wire form', () => {
    expect(() => buildCpuidModel(supported, { apicId: 0, hypervisorLeaves: [entry(1)] })).toThrow(AccelUsageError);
    expect(decodeCpuid(encodeCpuid(supported))).toEqual(supported);
  });
});

describe('exit slot decoding', () => {
  const slotFor = (): SlotView => new SlotView(new ArrayBuffer(HEADER_SIZE + SLOT_SIZE), 0);

  it('decodes an I/O exit and clamps a hostile repeat count to the data page', () => {
    const s = slotFor();
    s.setWord(Off.kind, ExitKindCode.io);
    s.setWord(Off.flags, ExitFlag.write | ExitFlag.string);
    s.setWord(Off.size, 4);
    s.setWord(Off.count, 0xffffffff);
    s.setBig(Off.a0, 0x1234f8n);
    const e = decodeExit(s);
    expect(e).toMatchObject({ kind: 'io', port: 0x34f8, size: 4, isWrite: true, count: 1024 });
    expect(e.kind === 'io' && e.bytes.length).toBe(4096);
  });

  it('encodes answers: MSR #GP, string IN bytes, and fatal exits stop unless told otherwise', () => {
    const s = slotFor();
    encodeResponse(s, { kind: 'msr-read', vp: 0, msr: 0x40000000 }, { gp: true });
    expect(s.word(Off.answerStatus)).toBe(AnswerStatus.gp);
    const io = { kind: 'io', vp: 0, port: 1, size: 1, isWrite: false, data: 0, count: 3, bytes: new Uint8Array(0) } as const;
    encodeResponse(s, io, { bytes: new Uint8Array([7]) });
    expect([...s.bytes.subarray(SLOT_DATA_OFFSET, SLOT_DATA_OFFSET + 3)]).toEqual([7, 0xff, 0xff]);
    const fatal = { kind: 'shutdown', vp: 0, reason: 'triple-fault', backendCode: 8, detail: 0n, registers: undefined } as const;
    expect(encodeResponse(s, fatal, undefined)).toBe(true);
    expect(encodeResponse(s, fatal, { stop: false })).toBe(false);
    encodeResponse(s, { kind: 'mmio', vp: 0, gpa: 0, size: 8, isWrite: false, data: 0n }, { value: -1 });
    expect(s.big(Off.answer0)).toBe(0xffffffffffffffffn);
  });
});

describe('exit slot answers', () => {
  it('publishes ANSWERED only over POSTED: an EXITED slot (vCPU gave up on a stop request) stays EXITED', () => {
    const slot = new SlotView(new ArrayBuffer(HEADER_SIZE + SLOT_SIZE), 0);
    const stateWord = Off.state / 4;
    slot.i32[stateWord] = 1; // POSTED
    slot.i32[Off.sleeping / 4] = 1;
    expect(slot.publishAnswer()).toBe(true); // answered, and the thread sleeps: wake it
    expect(slot.state()).toBe(2);
    slot.i32[stateWord] = 3; // EXITED
    expect(slot.publishAnswer()).toBe(false); // nothing to wake
    expect(slot.state()).toBe(3);
  });
});

describe('device ranges', () => {
  it('finds devices by range and refuses overlaps', () => {
    const m = new RangeMap<string>('I/O port');
    m.add(0x3f8, 8, 'serial');
    m.add(0xf4, 1, 'exit');
    expect(m.find(0x3fd)).toBe('serial');
    expect(m.find(0x3ff, 2)).toBeUndefined();
    expect(() => m.add(0x3f0, 0x10, 'x')).toThrow(AccelUsageError);
    expect(() => m.add(-1, 1, 'x')).toThrow(AccelUsageError);
  });
});

describe('registers', () => {
  it('packs and unpacks general and special registers', () => {
    const regs = Object.fromEntries(REG_NAMES.map((n, i) => [n, BigInt(i) * 0x1111n])) as ReturnType<typeof unpackRegisters>;
    expect(unpackRegisters(packRegisters(regs))).toEqual(regs);
    const raw = new BigUint64Array(SREG_WORDS).map((_, i) => BigInt(i));
    raw[2] = 0x1fff0008n; // every attribute bit set, selector 8
    const s = unpackSpecialRegisters(raw);
    expect(s.cs).toMatchObject({
      selector: 8,
      type: 0xf,
      present: true,
      dpl: 3,
      db: true,
      s: true,
      l: true,
      g: true,
      avl: true,
      unusable: true,
    });
    expect(packSpecialRegisters(s)).toEqual(raw);
  });
});

describe('native error mapping', () => {
  it('maps addon error codes to typed errors', () => {
    const err = (code: string): Error => Object.assign(new Error(code), { code, errno: 5 });
    expect(fromNativeError(err('HVEMU_NO_KVM'))).toBeInstanceOf(HypervisorUnavailableError);
    expect(fromNativeError(err('HVEMU_KVM_API'))).toBeInstanceOf(ApiVersionError);
    expect(fromNativeError(err('HVEMU_CAPABILITY'))).toBeInstanceOf(MissingCapabilityError);
    expect(fromNativeError(err('HVEMU_MEMORY_MAP'))).toBeInstanceOf(MemoryMapError);
    expect(fromNativeError(err('HVEMU_USAGE'))).toBeInstanceOf(AccelUsageError);
    expect(fromNativeError(err('HVEMU_SYSTEM'))).toMatchObject({ errno: 5 });
    expect(fromNativeError(err('HVEMU_SYSTEM'))).toBeInstanceOf(HostSystemError);
  });
});
