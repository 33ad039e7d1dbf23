import { describe, expect, it } from 'vitest';
import { FakeWhpxApi, whpxCapabilities, type WhpxFakeCall as FakeCall } from '../src/testing/index.js';
import { WhpxPartition } from '../src/backends/whpx/partition.js';
import { ExitHandlerError, GuestFatalError, HypervisorUnavailableError, MissingCapabilityError } from '../src/errors.js';

const fake = (arch: 'x64' | 'arm64', over = {}) => new FakeWhpxApi({ arch, capabilities: whpxCapabilities(arch, over) });

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');

/** Setup calls in a readable form. */
function summarize(calls: readonly FakeCall[]): unknown[] {
  return calls.map((c) => {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- recorded FFI arguments of every shape
    const a = c.args as Record<string, any>;
    switch (c.fn) {
      case 'WHvGetCapability':
        return [c.fn, a.code];
      case 'WHvSetPartitionProperty':
        return [c.fn, a.code, hex(a.value)];
      case 'WHvMapGpaRange':
        return [c.fn, a.gpa, a.size, a.flags];
      case 'WHvCreateVirtualProcessor2':
        return [c.fn, a.vp];
      case 'WHvSetVirtualProcessorRegisters':
        return [c.fn, a.vp, a.names, hex(a.values)];
      default:
        return [c.fn];
    }
  });
}

function x64Ctx(reason: number, rip: bigint, length: number): { buf: Uint8Array; v: DataView } {
  const buf = new Uint8Array(224);
  const v = new DataView(buf.buffer);
  v.setUint32(0, reason, true);
  v.setUint16(8, 0x14, true);
  v.setUint8(10, length);
  v.setUint16(30, 0xa09b, true);
  v.setBigUint64(32, rip, true);
  return { buf, v };
}
const out = (port: number, value: number, rip: bigint) => {
  const c = x64Ctx(2, rip, 1);
  c.v.setUint32(68, 1 | (1 << 1), true);
  c.v.setUint16(72, port, true);
  c.v.setBigUint64(80, BigInt(value), true);
  return c.buf;
};
const inb = (port: number, rax: bigint, rip: bigint) => {
  const c = x64Ctx(2, rip, 1);
  c.v.setUint32(68, 1 << 1, true);
  c.v.setUint16(72, port, true);
  c.v.setBigUint64(80, rax, true);
  return c.buf;
};
const rdmsr = (msr: number, rip: bigint) => {
  const c = x64Ctx(0x1000, rip, 2);
  c.v.setUint32(52, msr, true);
  return c.buf;
};
const mmio = (gpa: bigint, write: boolean, bytes: number[], rip: bigint) => {
  const c = x64Ctx(1, rip, 0);
  c.v.setUint8(48, bytes.length);
  c.buf.set(bytes, 52);
  c.v.setUint32(68, write ? 1 : 0, true);
  c.v.setBigUint64(72, gpa, true);
  return c.buf;
};
const hypercall = (control: bigint, input: bigint, output: bigint, rip: bigint) => {
  const c = x64Ctx(0x1005, rip, 0);
  c.v.setBigUint64(64, control, true);
  c.v.setBigUint64(72, input, true);
  c.v.setBigUint64(80, output, true);
  return c.buf;
};
const sintDeliverable = (mask: number) => {
  const c = x64Ctx(0xa, 0n, 0);
  c.v.setUint16(48, mask, true);
  return c.buf;
};

function arm64Ctx(reason: number, pc: bigint): { buf: Uint8Array; v: DataView } {
  const buf = new Uint8Array(272);
  const v = new DataView(buf.buffer);
  v.setUint32(0, reason, true);
  v.setBigUint64(24, pc, true);
  return { buf, v };
}

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !cond(); i++) await new Promise((r) => setImmediate(r));
  if (!cond()) throw new Error('condition not reached');
}

const RAX = 0,
  RDX = 2,
  RDI = 7,
  RIP = 0x10;

describe('WhpxPartition.create', () => {
  it('x64: capabilities, every property before setup, then RAM and VPs, in order', () => {
    const api = fake('x64');
    const p = WhpxPartition.create(
      {
        arch: 'x64',
        vcpuCount: 2,
        memory: [
          { gpa: 0, size: 0x10000 },
          { gpa: 0x10_0000, size: 0x2000 },
        ],
        userMsrs: [0x1a0],
        cpuidLeaves: [0x4000_0010],
      },
      api,
    );
    expect(p.backend).toBe('whpx');
    expect(summarize(api.calls)).toEqual([
      ['WHvGetCapability', 0], // HypervisorPresent
      ['WHvGetCapability', 1], // Features
      ['WHvGetCapability', 2], // ExtendedVmExits
      ['WHvGetCapability', 0x1008], // SyntheticProcessorFeaturesBanks
      ['WHvCreatePartition'],
      ['WHvSetPartitionProperty', 0x1fff, '02000000'], // ProcessorCount
      ['WHvSetPartitionProperty', 0x1005, '02000000'], // LocalApicEmulationMode = X2Apic
      // banks: count 1, reserved, bank0 = bits 0-9, 18, 22, 29 = 0x204403ff
      ['WHvSetPartitionProperty', 0x100c, '01000000' + '00000000' + 'ff034420' + '00000000'],
      ['WHvSetPartitionProperty', 5, '0100000000000000'], // X64MsrExitBitmap: UnhandledMsrs
      ['WHvSetPartitionProperty', 0x100f, 'a001000002020000'], // MsrActionList: {0x1a0, Exit, Exit}
      ['WHvSetPartitionProperty', 0x1003, '10000040'], // CpuidExitList
      ['WHvSetPartitionProperty', 1, '2304000000000000'], // ExtendedVmExits: Cpuid|Msr|Hypercall|UnknownSynicConnection
      ['WHvSetupPartition'],
      ['WHvMapGpaRange', 0n, 0x10000n, 7],
      ['WHvMapGpaRange', 0x10_0000n, 0x2000n, 7],
      ['WHvCreateVirtualProcessor2', 0],
      ['WHvCreateVirtualProcessor2', 1],
    ]);
    // Guest RAM is the very memory handed to WHvMapGpaRange.
    expect(api.named('WHvMapGpaRange')[1].args['source']).toBe(api.allocations[1].address);
    p.memory.write(0x10_0000, Uint8Array.of(1, 2, 3));
    expect(api.allocations[1].bytes.subarray(0, 3)).toEqual(Uint8Array.of(1, 2, 3));
    p.close();
    expect(summarize(api.calls.slice(-3))).toEqual([['WHvDeleteVirtualProcessor'], ['WHvDeleteVirtualProcessor'], ['WHvDeletePartition']]);
  });

  it('arm64: GICv3 parameters before setup (64 bytes), hypercall exits only, GICR base per VP after creation', () => {
    const api = fake('arm64');
    const p = WhpxPartition.create(
      {
        arch: 'arm64',
        vcpuCount: 2,
        memory: [{ gpa: 0x4000_0000, size: 0x4000 }],
        gic: { distributorBase: 0x0800_0000n, redistributorBase: 0x080a_0000n },
      },
      api,
    );
    const gic =
      '01000000' +
      '00000000' + // EmulationMode GicV3, reserved
      '0000000800000000' + // GicdBaseAddress
      '0000000000000000' + // GitsTranslaterBaseAddress: none
      '00000000' +
      '00000000' + // reserved, GicLpiIntIdBits = 0 (no LPIs: v2m-style MSIs)
      '14000000' +
      '17000000' + // virtual timer PPI 20, PMU PPI 0x17
      '00'.repeat(24);
    expect(summarize(api.calls)).toEqual([
      ['WHvGetCapability', 0],
      ['WHvGetCapability', 1],
      ['WHvGetCapability', 2],
      ['WHvGetCapability', 0x1008],
      ['WHvCreatePartition'],
      ['WHvSetPartitionProperty', 0x1fff, '02000000'],
      ['WHvSetPartitionProperty', 0x1012, gic],
      ['WHvSetPartitionProperty', 0x100c, '01000000' + '00000000' + 'ff034420' + '00000000'], // same default bits on arm64
      ['WHvSetPartitionProperty', 1, '2000000000000000'], // HypercallExit only
      ['WHvSetupPartition'],
      ['WHvMapGpaRange', 0x4000_0000n, 0x4000n, 7],
      ['WHvCreateVirtualProcessor2', 0],
      ['WHvSetVirtualProcessorRegisters', 0, [0x63000], '00000a0800000000' + '0000000000000000'],
      ['WHvCreateVirtualProcessor2', 1],
      ['WHvSetVirtualProcessorRegisters', 1, [0x63000], '00000c0800000000' + '0000000000000000'], // + 0x20000
    ]);
    p.close();
  });

  it('no hypervisor, no arm64 support, missing synthetic features: typed errors that say what is missing', () => {
    expect(() => WhpxPartition.create({ arch: 'x64', memory: [{ gpa: 0, size: 0x1000 }] }, fake('x64', { present: 0 }))).toThrow(
      HypervisorUnavailableError,
    );
    expect(() => WhpxPartition.create({ arch: 'x64', memory: [{ gpa: 0, size: 0x1000 }] }, fake('x64', { present: 0 }))).toThrow(
      /WinHvPlatform\.dll is loaded but reports no hypervisor.*Windows Hypervisor Platform/,
    );
    expect(() => WhpxPartition.create({ arch: 'arm64', memory: [{ gpa: 0, size: 0x1000 }] }, fake('arm64', { features: 0n }))).toThrow(
      /Arm64Support.*26100\.3915/,
    );
    expect(() => WhpxPartition.create({ arch: 'x64', memory: [{ gpa: 0, size: 0x1000 }] }, fake('x64', { synthetic: 0xfn }))).toThrow(
      MissingCapabilityError,
    );
    expect(() => WhpxPartition.create({ arch: 'x64', memory: [{ gpa: 0, size: 0x1000 }] }, fake('x64', { synthetic: 0xfn }))).toThrow(
      /AccessSynicRegs.*AccessSyntheticTimerRegs/,
    );
  });

  it('a failing setup call deletes the partition and names the call and HRESULT', () => {
    const api = fake('x64');
    api.results.set('WHvSetupPartition', [0x80370302]);
    expect(() => WhpxPartition.create({ arch: 'x64', memory: [{ gpa: 0, size: 0x1000 }] }, api)).toThrow(
      /WHvSetupPartition failed: HRESULT 0x80370302/,
    );
    expect(api.calls.at(-1)?.fn).toBe('WHvDeletePartition');
  });

  it('on this Linux machine (real koffi, no DLL): HypervisorUnavailableError naming WinHvPlatform.dll and the requirements', () => {
    let err: unknown;
    try {
      WhpxPartition.create({ memory: [{ gpa: 0, size: 0x1000 }] }).close();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(HypervisorUnavailableError);
    expect((err as Error).message).toMatch(/WinHvPlatform\.dll/);
    expect((err as Error).message).toMatch(/Windows 10 1803\+.*Windows Hypervisor Platform/);
  });
});

describe('WhpxPartition run loop (fake DLL)', () => {
  it('x64: routes scripted exits to devices and writes back exactly the completion registers', async () => {
    const api = fake('x64');
    const p = WhpxPartition.create({ arch: 'x64', memory: [{ gpa: 0, size: 0x10000 }] }, api);
    const events: string[] = [];
    p.addIoDevice({
      port: 0x3f8,
      count: 1,
      write: (port, size, value) => void events.push(`out ${port.toString(16)} ${size} ${value.toString(16)}`),
    });
    p.addIoDevice({ port: 0x60, count: 1, read: () => (events.push('in 60'), 0xab) });
    p.addMsrDevice({ msr: 0x1a0, read: () => (events.push('rdmsr 1a0'), undefined) });
    p.addMmioDevice({
      gpa: 0xd000_0000,
      size: 0x1000,
      write: (gpa, size, value) => void events.push(`mmio write ${gpa.toString(16)} ${size} ${value.toString(16)}`),
      read: (gpa, size) => (events.push(`mmio read ${gpa.toString(16)} ${size}`), 0x1122_3344n),
    });
    p.onHypercall(
      (h) => (events.push(`hypercall ${h.control.toString(16)} ${h.input.toString(16)} ${h.output.toString(16)}`), { value: 0 }),
    );

    // A SynIC message that finds its slot busy waits for SINT-deliverable (VP parked: written at once).
    api.results.set('WHvPostVirtualProcessorSynicMessage', [0xc0350019]);
    expect(p.synic.postMessage(0, 2, { type: 1, payload: Uint8Array.of(9) })).toBe('queued');
    expect(api.register64(0, 0x80000004)).toBe(1n << 50n); // SINT 2 -> bit 48 + 2

    api.setRegister64(0, RAX, 0xd000_0000n);
    api.setRegister64(0, RDX, 0xdead_beefn);
    api.setRegister64(0, RDI, 0xd000_0004n);
    api.script(
      0,
      out(0x3f8, 0x41, 0x1000n),
      inb(0x60, 0x1234_5600n, 0x1001n),
      rdmsr(0x1a0, 0x1002n),
      mmio(0xd000_0000n, true, [0x89, 0x10], 0x3000n), // mov [rax], edx
      mmio(0xd000_0004n, false, [0x8b, 0x07], 0x3002n), // mov eax, [rdi]
      hypercall(0x5cn, 0x2000n, 0n, 0x4000n),
      sintDeliverable(1 << 2),
    );
    const mark = api.calls.length;
    const running = p.run();
    await until(() => api.isBlocked(0));
    p.stop();
    const outcomes = await running;
    expect(outcomes).toEqual([{ vp: 0, cause: 'stop-requested', error: undefined, exits: 8 }]);
    expect(events).toEqual([
      'out 3f8 1 41',
      'in 60',
      'rdmsr 1a0',
      'mmio write d0000000 4 deadbeef',
      'mmio read d0000004 4',
      'hypercall 5c 2000 0',
    ]);

    const writes = api.calls
      .slice(mark)
      .filter((c) => c.fn === 'WHvSetVirtualProcessorRegisters')
      .map((c) => {
        const values = new DataView((c.args['values'] as Uint8Array).buffer);
        return (c.args['names'] as number[]).map((n, i) => [n, values.getBigUint64(i * 16, true), values.getBigUint64(i * 16 + 8, true)]);
      });
    expect(writes).toEqual([
      [[RIP, 0x1001n, 0n]], // OUT: advance
      [
        [RAX, 0x1234_56abn, 0n],
        [RIP, 0x1002n, 0n],
      ], // IN: AL merged
      [[0x80000002, 0xd0101n, 0n]], // RDMSR #GP: pending exception, RIP unchanged
      [[RIP, 0x3002n, 0n]], // MMIO write
      [
        [RAX, 0x1122_3344n, 0n],
        [RIP, 0x3004n, 0n],
      ], // MMIO read
      [
        [RAX, 0n, 0n],
        [RIP, 0x4003n, 0n],
      ], // hypercall: status, RIP += 3
      // SINT deliverable: no write; the notification is one-shot and the backlog is empty.
    ]);
    const posts = api.named('WHvPostVirtualProcessorSynicMessage');
    expect(posts).toHaveLength(2);
    expect(posts[1].args).toMatchObject({ vp: 0, sint: 2 });
    expect(hex((posts[1].args['message'] as Uint8Array).subarray(0, 17))).toBe('01000000' + '01000000' + '0000000000000000' + '09');
    expect(p.synic.pending(0, 2)).toBe(0);
    expect(api.named('WHvCancelRunVirtualProcessor')).toHaveLength(1);
    p.close();
  });

  it('a post while the VP runs: cancel, write DeliverabilityNotifications, run again (never under a running VP)', async () => {
    const api = fake('x64');
    const p = WhpxPartition.create({ arch: 'x64', memory: [{ gpa: 0, size: 0x1000 }] }, api);
    const running = p.run();
    await until(() => api.isBlocked(0));
    api.results.set('WHvPostVirtualProcessorSynicMessage', [0xc0350019]);
    expect(p.synic.postMessage(0, 5, { type: 1, payload: new Uint8Array(0) })).toBe('queued');
    await until(() => api.register64(0, 0x80000004) === 1n << 53n && api.isBlocked(0));
    const seq = api.calls.map((c) => c.fn);
    const i = seq.lastIndexOf('WHvCancelRunVirtualProcessor');
    expect(seq.slice(i, i + 3)).toEqual(['WHvCancelRunVirtualProcessor', 'WHvSetVirtualProcessorRegisters', 'WHvRunVirtualProcessor']);
    p.stop();
    await running;
    p.close();
  });

  it('signal: WHV_SYNIC_EVENT_PARAMETERS bytes and newlySignaled', () => {
    const api = fake('x64');
    const p = WhpxPartition.create({ arch: 'x64', memory: [{ gpa: 0, size: 0x1000 }], vcpuCount: 2 }, api);
    expect(p.synic.signalEvent(1, 3, 0x102)).toBe(true);
    expect(hex(api.named('WHvSignalVirtualProcessorSynicEvent')[0].args['params'] as Uint8Array)).toBe('01000000' + '03' + '00' + '0201');
    api.results.set('WHvSignalVirtualProcessorSynicEvent', [0xc0350018]); // SINT not configured
    expect(p.synic.signalEvent(1, 3, 0x102)).toBe(false);
    p.close();
  });

  it('interrupts: x64 WHV_INTERRUPT_CONTROL (16 bytes), arm64 (32 bytes, Asserted)', () => {
    const api = fake('x64');
    const p = WhpxPartition.create({ arch: 'x64', memory: [{ gpa: 0, size: 0x1000 }], vcpuCount: 2 }, api);
    expect(p.interrupt(1, 0x31)).toBe(true);
    expect(hex(api.named('WHvRequestInterrupt')[0].args['control'] as Uint8Array)).toBe('0000000000000000' + '01000000' + '31000000');
    expect(() => p.interrupt(0, 3)).toThrow(/vector 3/);
    api.results.set('WHvRequestInterrupt', [0x80070057]);
    expect(p.interrupt(0, 0x40)).toBe(false);
    p.close();

    const a = fake('arm64');
    const q = WhpxPartition.create({ arch: 'arm64', memory: [{ gpa: 0, size: 0x1000 }], vcpuCount: 2 }, a);
    expect(q.interrupt(1, 40)).toBe(true);
    expect(hex(a.named('WHvRequestInterrupt')[0].args['control'] as Uint8Array)).toBe(
      '0000000000000000' + '0000000004000000' + '0100000000000000' + '28000000' + '00' + '00' + '0000',
    );
    expect(() => q.interrupt(0, 3)).toThrow(/INTID 3/);
    q.close();
  });

  it('arm64: MMIO read into X[SRT], MMIO write from X[SRT], hypercall X0/PC, then PSCI power-off stops with GuestFatalError', async () => {
    const api = fake('arm64');
    const p = WhpxPartition.create({ arch: 'arm64', memory: [{ gpa: 0x4000_0000, size: 0x1000 }] }, api);
    const events: string[] = [];
    p.addMmioDevice({
      gpa: 0x0900_0000,
      size: 0x1000,
      read: (gpa, size) => (events.push(`read ${gpa.toString(16)} ${size}`), 0xfen),
      write: (gpa, size, v) => void events.push(`write ${gpa.toString(16)} ${size} ${v.toString(16)}`),
    });
    p.onHypercall((h) => (events.push(`hvc ${h.control.toString(16)}`), { value: 0x1234 }));
    api.setRegister64(0, 0x20003, 0xaabb_ccddn); // X3
    const abort = (gpa: bigint, syndrome: bigint, pc: bigint) => {
      const c = arm64Ctx(0x80000000, pc);
      c.v.setBigUint64(16 + 48, gpa, true);
      c.v.setBigUint64(16 + 56, syndrome, true);
      return c.buf;
    };
    const isv = 1n << 24n;
    const hvc = arm64Ctx(0x80000050, 0x2000n);
    hvc.v.setUint16(16 + 24, 1, true);
    hvc.v.setBigUint64(16 + 32, 0x5cn, true);
    const reset = arm64Ctx(0x8001000c, 0x3000n);
    api.script(
      0,
      abort(0x0900_0010n, isv | (0n << 22n) | (1n << 21n) | (7n << 16n) | (1n << 15n), 0x1000n), // ldrsb x7, [..]
      abort(0x0900_0020n, isv | (1n << 22n) | (3n << 16n) | (1n << 6n), 0x1004n), // strh w3, [..]
      hvc.buf,
      reset.buf,
    );
    const mark = api.calls.length;
    await expect(p.run()).rejects.toThrow(GuestFatalError);
    expect(events).toEqual(['read 9000010 1', 'write 9000020 2 ccdd', 'hvc 5c']);
    const writes = api.calls
      .slice(mark)
      .filter((c) => c.fn === 'WHvSetVirtualProcessorRegisters')
      .map((c) => {
        const values = new DataView((c.args['values'] as Uint8Array).buffer);
        return (c.args['names'] as number[]).map((n, i) => [n, values.getBigUint64(i * 16, true)]);
      });
    expect(writes).toEqual([
      [
        [0x20007, 0xffff_ffff_ffff_fffen],
        [0x20022, 0x1004n],
      ],
      [[0x20022, 0x1008n]],
      [
        [0x20000, 0x1234n],
        [0x20022, 0x2004n],
      ],
    ]);
    p.close();
  });

  it('a handler that throws stops its vCPU with ExitHandlerError; an unknown exit reason stops with GuestFatalError', async () => {
    const api = fake('x64');
    const p = WhpxPartition.create({ arch: 'x64', memory: [{ gpa: 0, size: 0x1000 }] }, api);
    p.addIoDevice({
      port: 0x80,
      count: 1,
      write: () => {
        throw new Error('boom');
      },
    });
    api.script(0, out(0x80, 1, 0x10n));
    await expect(p.run()).rejects.toThrow(ExitHandlerError);
    api.script(0, x64Ctx(0x4242, 0x20n, 0).buf);
    await expect(p.run()).rejects.toThrow(/unrecoverable exit \(unknown, backend code 16962/);
    p.close();
  });

  it('a handler answer that is not a 64-bit integer (NaN, 1.5, 2^70) fails the handler instead of reaching RAX', async () => {
    for (const answer of [NaN, 1.5, 2n ** 70n]) {
      const api = fake('x64');
      const p = WhpxPartition.create({ arch: 'x64', memory: [{ gpa: 0, size: 0x1000 }] }, api);
      p.addIoDevice({ port: 0x60, count: 1, read: () => answer as number });
      api.script(0, inb(0x60, 0n, 0x10n));
      const e = await p.run().then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(e, String(answer)).toBeInstanceOf(ExitHandlerError);
      expect((e as Error).message).toMatch(/handler for io failed: the answer to the io exit has value .* within 64 bits/);
      p.close();
    }
  });

  it('a failing WHvRunVirtualProcessor ends the vCPU as a host error naming the HRESULT', async () => {
    const api = fake('x64');
    const p = WhpxPartition.create({ arch: 'x64', memory: [{ gpa: 0, size: 0x1000 }] }, api);
    api.results.set('WHvRunVirtualProcessor', [0x80070057]);
    await expect(p.run()).rejects.toThrow(/WHvRunVirtualProcessor failed: HRESULT 0x80070057/);
    p.close();
  });

  it('registers: parked-only access, segment/table encoding round trip', async () => {
    const api = fake('x64');
    const p = WhpxPartition.create({ arch: 'x64', memory: [{ gpa: 0, size: 0x1000 }] }, api);
    const v = p.vcpus[0];
    const regs = v.getRegisters();
    v.setRegisters({ ...regs, rip: 0xfff0n, rflags: 2n });
    expect(api.register64(0, RIP)).toBe(0xfff0n);
    const s = v.getSpecialRegisters();
    const cs = {
      base: 0xffff_0000n,
      limit: 0xffff,
      selector: 0xf000,
      type: 0xb,
      present: true,
      dpl: 0,
      db: false,
      s: true,
      l: false,
      g: false,
      avl: false,
      unusable: false,
    };
    v.setSpecialRegisters({ ...s, cs, gdt: { base: 0x1000n, limit: 0x27 }, cr0: 0x60000010n });
    const back = v.getSpecialRegisters();
    expect(back.cs).toEqual(cs);
    expect(back.gdt).toEqual({ base: 0x1000n, limit: 0x27 });
    expect(back.cr0).toBe(0x60000010n);
    const running = p.run();
    await until(() => api.isBlocked(0));
    expect(() => v.getRegisters()).toThrow(/running/);
    p.stop();
    await running;
    p.close();
  });
});

describe('WhpxPartition after close', () => {
  it('makes no DLL call with the deleted partition handle', () => {
    const api = fake('x64');
    const p = WhpxPartition.create({ arch: 'x64', vcpuCount: 1, memory: [{ gpa: 0, size: 0x10000 }] }, api);
    p.close();
    const calls = api.calls.length;
    expect(() => p.interrupt(0, 0x30)).toThrow(/partition is closed/);
    expect(() => p.vcpus[0].getRegisters()).toThrow(/partition is closed/);
    expect(() => p.synic.signalEvent(0, 2, 1)).toThrow(/partition is closed/);
    expect(api.calls.length).toBe(calls);
  });
});

describe('WhpxPartition setup failures release what they allocated', () => {
  it('arm64: a VP whose GICR base write fails is deleted with its exit-context buffer, and so are the VPs and RAM before it', () => {
    const api = fake('arm64');
    // VP 0's GICR write succeeds, VP 1's fails.
    api.results.set('WHvSetVirtualProcessorRegisters', [0, 0x80070057]);
    expect(() => WhpxPartition.create({ arch: 'arm64', vcpuCount: 2, memory: [{ gpa: 0, size: 0x10000 }] }, api)).toThrow(
      /WHvSetVirtualProcessorRegisters/,
    );
    const deleted = api
      .named('WHvDeleteVirtualProcessor')
      .map((c) => c.args['vp'])
      .sort();
    expect(deleted).toEqual([0, 1]);
    expect(new Set(api.freed)).toEqual(new Set(api.allocations)); // RAM + both exit contexts
    expect(api.calls.at(-1)?.fn).toBe('WHvDeletePartition');
  });
});
