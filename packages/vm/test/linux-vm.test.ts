/**
 * LinuxVm, the VMM path for a Linux kernel, on KVM with synthetic PVH kernels: each tiny
 * "kernel" does one thing a real one does at the end of its life (print on COM1 and power off
 * through the FADT's sleep register; reset; crash through the Hyper-V crash MSRs).
 */
import { afterEach, expect, it } from 'vitest';
import { HostUsageError } from '@hvemu/common';
import { LinuxBootError } from '@hvemu/platform';
import { LinuxVm } from '@hvemu/vm';
import { makeVmlinux } from '../../../test/linux-images.js';
import { describeKvm } from './helpers/hv-guest.js';

const ENTRY = 0x1000000;

/** 32-bit protected-mode code (the PVH entry state): bytes for `out` of AL/EAX to DX. */
const asm = {
  movDx: (port: number) => [0x66, 0xba, port & 0xff, port >> 8],
  movAl: (v: number) => [0xb0, v],
  outAl: [0xee],
  movEcx: (v: number) => [0xb9, v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, v >>> 24],
  movEax: (v: number) => [0xb8, v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, v >>> 24],
  xorEdx: [0x31, 0xd2],
  wrmsr: [0x0f, 0x30],
  hltLoop: [0xf4, 0xeb, 0xfd],
};

const u32 = (v: number) => [v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, v >>> 24];

function kernel(code: number[]): Uint8Array {
  return makeVmlinux({ entry: ENTRY, segments: [{ paddr: ENTRY, data: Uint8Array.from(code) }] });
}

/** Prints `text` on COM1, then writes `value` to `port` and halts. */
function printThenOut(text: string, port: number, value: number): Uint8Array {
  const code: number[] = [...asm.movDx(0x3f8)];
  for (const c of text) code.push(...asm.movAl(c.charCodeAt(0)), ...asm.outAl);
  code.push(...asm.movDx(port), ...asm.movAl(value), ...asm.outAl, ...asm.hltLoop);
  return kernel(code);
}

const opened: LinuxVm[] = [];
afterEach(() => {
  for (const vm of opened.splice(0)) vm.close();
});
const make = (k: Uint8Array, console?: (b: number) => void) => {
  const vm = new LinuxVm({ kernel: k, ramBytes: 64 << 20, console, commandLine: 'console=ttyS0' });
  opened.push(vm);
  return vm;
};

describeKvm('LinuxVm on KVM (synthetic PVH kernels)', () => {
  it('loads a PVH kernel with ACPI and the console, and ends powered off when the guest writes S5', async () => {
    const out: number[] = [];
    const vm = make(printThenOut('bye\n', 0x600, 0x34), (b) => out.push(b));
    expect(vm.boot.kind).toBe('pvh');
    expect(vm.boot.e820.some((e) => e.type === 3)).toBe(true); // the ACPI tables' range
    expect(await vm.run(30_000)).toEqual({ kind: 'poweroff' });
    expect(String.fromCharCode(...out)).toBe('bye\n');
  });

  it('ends with reset when the guest writes the FADT reset register', async () => {
    expect(await make(printThenOut('', 0x602, 0x01)).run(30_000)).toEqual({ kind: 'reset' });
  });

  it("reports a guest crash from the Hyper-V crash MSRs (P0 and CRASH_CTL's notify bit)", async () => {
    const code = [
      // GUEST_OS_ID first is not needed for the crash MSRs; P0 = 0xdead, then CRASH_CTL = notify (bit 63).
      ...asm.movEcx(0x40000100),
      ...asm.movEax(0xdead),
      ...asm.xorEdx,
      ...asm.wrmsr,
      ...asm.movEcx(0x40000105),
      0x31,
      0xc0, // xor eax, eax
      0xba,
      0x00,
      0x00,
      0x00,
      0x80, // mov edx, 0x80000000
      ...asm.wrmsr,
      ...asm.hltLoop,
    ];
    const end = await make(kernel(code)).run(30_000);
    expect(end.kind).toBe('crash');
    expect(end.kind === 'crash' && end.params[0]).toBe(0xdeadn);
  });

  it("hands over the guest's crash message (CrashNotifyMsg: P3 = its GPA, P4 = its length), as Linux's kmsg dumper does", async () => {
    const text = 'Kernel panic - not syncing: test\n';
    const msgGpa = ENTRY + 0x800;
    const wrmsr = (msr: number, lo: number, hi = 0) => [...asm.movEcx(msr), ...asm.movEax(lo), 0xba, ...u32(hi), ...asm.wrmsr];
    const code = [
      ...wrmsr(0x40000103, msgGpa),
      ...wrmsr(0x40000104, text.length),
      ...wrmsr(0x40000105, 0, 0xc0000000), // CRASH_CTL = notify | notify msg
      ...asm.hltLoop,
    ];
    const image = new Uint8Array(0x800 + text.length);
    image.set(code);
    image.set(new TextEncoder().encode(text), 0x800);
    const vm = new LinuxVm({
      kernel: makeVmlinux({ entry: ENTRY, segments: [{ paddr: ENTRY, data: image }] }),
      ramBytes: 64 << 20,
    });
    opened.push(vm);
    const end = await vm.run(30_000);
    expect(end).toMatchObject({ kind: 'crash', message: text });
    expect(end.kind === 'crash' && end.params[3]).toBe(BigInt(msgGpa));
  });

  it('names a triple fault (no IDT, then #UD) with the registers', async () => {
    // lidt [zeros] (limit 0): every exception then faults again, to a shutdown.
    const zeros = ENTRY + 0x100;
    const image = new Uint8Array(0x108);
    image.set([0x0f, 0x01, 0x1d, ...u32(zeros), 0x0f, 0x0b]); // lidt [zeros]; ud2
    const vm = new LinuxVm({ kernel: makeVmlinux({ entry: ENTRY, segments: [{ paddr: ENTRY, data: image }] }), ramBytes: 64 << 20 });
    opened.push(vm);
    const end = await vm.run(30_000);
    expect(end.kind).toBe('triple-fault');
    expect(end.kind === 'triple-fault' && end.error.registers?.rip).toBeTypeOf('bigint');
  });

  it('names an emulation failure (code fetched from outside guest RAM) with the registers', async () => {
    const end = await make(kernel([...asm.movEax(0xf0000000), 0xff, 0xe0])).run(30_000); // jmp eax into the MMIO hole
    expect(end.kind).toBe('emulation-failure');
    expect(end.kind === 'emulation-failure' && end.error.registers?.rip).toBe(0xf0000000n);
  });

  it('logs the host side on request: the offers, the end', async () => {
    const events: string[] = [];
    const vm = new LinuxVm({ kernel: printThenOut('', 0x600, 0x34), ramBytes: 64 << 20, onEvent: (e) => events.push(e.text) });
    opened.push(vm);
    await vm.run(30_000);
    expect(events).toEqual([
      'offered heartbeat as relid 1',
      'offered shutdown as relid 2',
      'offered timesync as relid 3',
      'offered kvp as relid 4',
      'guest ended: poweroff',
    ]);
  });

  it('a guest that never ends is stopped at the timeout', async () => {
    expect(await make(kernel(asm.hltLoop)).run(300)).toEqual({ kind: 'timeout' });
  });

  it('refuses what is not a kernel, and a missing one, with typed errors', () => {
    expect(() => new LinuxVm({ kernel: new Uint8Array(100), ramBytes: 64 << 20 })).toThrow(LinuxBootError);
    expect(() => new LinuxVm({} as never)).toThrow(HostUsageError);
  });
});
