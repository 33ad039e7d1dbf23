import { describe, expect, it } from 'vitest';
import * as abi from '../src/backends/mshv/abi.js';
import { FakeMshvSys, mshvExits, mshvMessage, type FakeCall } from '../src/testing/index.js';
import { MshvPartition } from '../src/backends/mshv/partition.js';
import { KoffiMshvSys } from '../src/backends/mshv/sys.js';
import { GuestFatalError, HypervisorUnavailableError, ExitHandlerError } from '../src/errors.js';

// hv_message builders (@hvemu/accel/testing): an instruction length of 1 for I/O, 2 for MSRs, 3 for VMCALL.
const msg = (type: number, size: number, rip: bigint, length: number, access = 0) => mshvMessage(type, size, access, { rip, length });
const out = (port: number, value: number, rip: bigint) => mshvExits.io(port, true, BigInt(value), { rip });
const inb = (port: number, rax: bigint, rip: bigint) => mshvExits.io(port, false, rax, { rip });
const rdmsr = (msr: number, rip: bigint) => mshvExits.msr(msr, false, 0n, { rip });
const mmio = (gpa: bigint, write: boolean, bytes: number[], rip: bigint) => mshvExits.mmio(gpa, write, bytes, { rip });
const hypercall = (control: bigint, input: bigint, output: bigint, rip: bigint) => mshvExits.hypercall(control, input, output, { rip });
const sintDeliverable = (mask: number) => mshvExits.sintDeliverable(mask);

const RAX = 0x20000,
  RDX = 0x20002,
  RIP = 0x20010;

/** The setup calls in a readable form: ioctl name + decoded argument, or hypercall code + input fields. */
function summarize(calls: readonly FakeCall[]): unknown[] {
  const names = new Map<number, string>([
    [abi.MSHV_CREATE_PARTITION, 'CREATE_PARTITION'],
    [abi.MSHV_INITIALIZE_PARTITION, 'INITIALIZE_PARTITION'],
    [abi.MSHV_CREATE_VP, 'CREATE_VP'],
    [abi.MSHV_SET_GUEST_MEMORY, 'SET_GUEST_MEMORY'],
  ]);
  const outList: unknown[] = [];
  for (const c of calls) {
    if (c.op === 'open') outList.push(['open', c.path]);
    else if (c.op === 'mapRam') outList.push(['mapRam', c.size]);
    else if (c.op === 'hvcall') {
      const v = new DataView(c.input.buffer, c.input.byteOffset);
      if (c.code === 0x45) outList.push(['SetPartitionProperty', v.getUint32(8, true), v.getBigUint64(16, true)]);
      else if (c.code === 0x4d) outList.push(['InstallIntercept', v.getUint32(8, true), v.getUint32(12, true), v.getBigUint64(16, true)]);
      else outList.push(['hvcall', c.code]);
    } else if (c.op === 'ioctl' && c.request !== abi.MSHV_ROOT_HVCALL) {
      const name = names.get(c.request) ?? c.request;
      const a = c.arg ? new DataView(c.arg.buffer, c.arg.byteOffset) : undefined;
      if (c.request === abi.MSHV_CREATE_PARTITION) outList.push([name, c.fd, a!.getBigUint64(0, true), a!.getBigUint64(8, true)]);
      else if (c.request === abi.MSHV_CREATE_VP) outList.push([name, c.fd, a!.getUint32(0, true)]);
      else if (c.request === abi.MSHV_SET_GUEST_MEMORY)
        outList.push([name, c.fd, a!.getBigUint64(0, true), a!.getBigUint64(8, true), c.arg![24]]);
      else outList.push([name, c.fd]);
    }
  }
  return outList;
}

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !cond(); i++) await new Promise((r) => setImmediate(r));
  if (!cond()) throw new Error('condition not reached');
}

describe('MshvPartition.create', () => {
  it('issues the setup calls in the order the kernel requires', () => {
    const sys = new FakeMshvSys();
    const p = MshvPartition.create(
      {
        vcpuCount: 2,
        memory: [
          { gpa: 0, size: 0x10000 },
          { gpa: 0x10_0000, size: 0x2000 },
        ],
        userMsrs: [0x1a0],
        cpuidLeaves: [0x4000_0010],
      },
      sys,
    );
    expect(p.backend).toBe('mshv');
    expect(summarize(sys.calls)).toEqual([
      ['open', '/dev/mshv'],
      ['CREATE_PARTITION', 3, 0b11n, 0n], // LAPIC | X2APIC, no isolation
      ['SetPartitionProperty', 0x0001_0001, abi.syntheticFeatureMask(abi.DEFAULT_SYNTHETIC_FEATURES)],
      ['INITIALIZE_PARTITION', 4],
      ['CREATE_VP', 4, 0],
      ['CREATE_VP', 4, 1],
      ['mapRam', 0x10000],
      ['SET_GUEST_MEMORY', 4, 0x10000n, 0n, 0b11],
      ['mapRam', 0x2000],
      ['SET_GUEST_MEMORY', 4, 0x2000n, 0x100n, 0b11],
      ['InstallIntercept', 4, 8, 0n], // HYPERCALL, EXECUTE
      ['InstallIntercept', 4, 0xd, 0n], // UnknownSynicConnection, EXECUTE
      ['InstallIntercept', 3, 0xc, 0x1a0n], // MSR_INDEX, READ|WRITE
      ['InstallIntercept', 4, 2, 0x4000_0010n], // CPUID leaf
    ]);
    // The kernel fills the partition id; the hypercalls go to the partition fd.
    expect(sys.hvcalls().every((c) => c.fd === 4)).toBe(true);
    p.memory.write(0x10_0000, Uint8Array.of(1, 2, 3));
    expect(p.memory.bytes(0x10_0000, 3)).toEqual(Uint8Array.of(1, 2, 3));
    p.close();
  });

  it('an optional intercept the hypervisor refuses is not fatal; a required one is', () => {
    const sys = new FakeMshvSys();
    sys.hvcallHook = (code, input) =>
      code === 0x4d && new DataView(input.buffer).getUint32(12, true) === 0xd ? { status: abi.HV_STATUS_INVALID_PARAMETER } : undefined;
    expect(() => MshvPartition.create({ memory: [{ gpa: 0, size: 0x1000 }] }, sys).close()).not.toThrow();
    const strict = new FakeMshvSys();
    strict.hvcallHook = (code) => (code === 0x4d ? { status: abi.HV_STATUS_ACCESS_DENIED } : undefined);
    expect(() => MshvPartition.create({ memory: [{ gpa: 0, size: 0x1000 }] }, strict)).toThrow(/InstallIntercept/);
    expect(strict.calls.filter((c) => c.op === 'close').map((c) => (c as { fd: number }).fd)).toEqual([5, 4, 3]); // VP, partition, /dev/mshv
  });

  it('without /dev/mshv: HypervisorUnavailableError naming the device and what it needs', () => {
    const sys = new FakeMshvSys();
    sys.openErrno = abi.Errno.ENOENT;
    expect(() => MshvPartition.create({ memory: [{ gpa: 0, size: 0x1000 }] }, sys)).toThrow(HypervisorUnavailableError);
    expect(() => MshvPartition.create({ memory: [{ gpa: 0, size: 0x1000 }] }, sys)).toThrow(
      /\/dev\/mshv.*Linux 6\.15\+.*root partition.*CONFIG_MSHV_ROOT/,
    );
    sys.openErrno = abi.Errno.EACCES;
    expect(() => MshvPartition.create({ memory: [{ gpa: 0, size: 0x1000 }] }, sys)).toThrow(/\/dev\/mshv: permission denied/);
  });

  it('on this machine (real koffi/libc, no /dev/mshv) create() throws HypervisorUnavailableError', () => {
    let err: unknown;
    try {
      MshvPartition.create({ memory: [{ gpa: 0, size: 0x1000 }] }).close();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(HypervisorUnavailableError);
    expect((err as Error).message).toMatch(/\/dev\/mshv/);
  });

  it('the koffi layer maps memfd RAM and anonymous pages as zero-copy ArrayBuffers', () => {
    const sys = new KoffiMshvSys();
    const ram = sys.mapRam(0x2000, 'hvemu-test');
    ram.bytes[0x1fff] = 0x5a;
    expect(ram.bytes.byteLength).toBe(0x2000);
    expect(ram.address % 4096n).toBe(0n);
    expect(ram.bytes[0x1fff]).toBe(0x5a);
    sys.free(ram);
    expect(() => sys.open('/nonexistent/mshv')).toThrow(/ENOENT/);
  });
});

describe('MshvPartition run loop (fake /dev/mshv)', () => {
  it('routes scripted intercepts to devices and writes back exactly the completion registers', async () => {
    const sys = new FakeMshvSys();
    const p = MshvPartition.create({ vcpuCount: 1, memory: [{ gpa: 0, size: 0x10000 }] }, sys);
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
    p.onHypercall((h) => {
      events.push(`hypercall ${h.control.toString(16)} ${h.input.toString(16)} ${h.output.toString(16)}`);
      return { value: 0 };
    });
    // A SynIC message that finds its slot busy waits for SINT-deliverable.
    sys.busySlots.add('0:2');
    expect(p.synic.postMessage(0, 2, { type: 1, payload: Uint8Array.of(9) })).toBe('queued');
    const deliverability = sys.hvcalls(0x51).map((c) => abi.HvRegisterAssoc.decode(c.input, 16));
    expect(deliverability.at(-1)).toMatchObject({ name: 0x10006, valueLow: 1n << 50n }); // SINT 2 -> bit 48+2

    const regs = sys.regs(0);
    regs.set(RAX, 0xd000_0000n).set(RDX, 0xdead_beefn).set(0x20007, 0xd000_0004n); // rdi
    sys.script(
      0,
      out(0x3f8, 0x41, 0x1000n),
      inb(0x60, 0x1234_5600n, 0x1001n),
      rdmsr(0x1a0, 0x1002n),
      mmio(0xd000_0000n, true, [0x89, 0x10], 0x3000n),
      mmio(0xd000_0004n, false, [0x8b, 0x07], 0x3002n),
      hypercall(0x5cn, 0x2000n, 0n, 0x4000n),
      { before: () => sys.busySlots.delete('0:2'), message: sintDeliverable(1 << 2) },
    );
    const writesFrom = sys.hvcalls(0x51).length;
    const running = p.run();
    await until(() => sys.calls.filter((c) => c.op === 'run').length === 8); // 7 scripted + the blocking one
    expect(p.vcpus[0].status).toBe('running');
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
    const writes = sys
      .hvcalls(0x51)
      .slice(writesFrom)
      .map((c) => {
        const n = c.reps;
        return Array.from({ length: n }, (_, i) => {
          const a = abi.HvRegisterAssoc.decode(c.input, 16 + i * 32);
          return [a.name.toString(16), a.valueLow.toString(16)];
        });
      });
    expect(writes).toEqual([
      [['20010', '1001']], // OUT: RIP
      [
        ['20000', '123456ab'],
        ['20010', '1002'],
      ], // IN: AL merged, RIP
      [['10002', 'd0017']], // RDMSR -> #GP, no RIP advance
      [['20010', '3002']], // MMIO write: RIP
      [
        ['20000', '11223344'],
        ['20010', '3004'],
      ], // MMIO read: EAX, RIP
      [
        ['20000', '0'],
        ['20010', '4003'],
      ], // hypercall: status, RIP past VMCALL
      [['10006', '3']], // stop(): NMI | interrupt notification kick
    ]);
    expect(sys.posted.map((m) => [m.vp, m.sint, m.message[16]])).toEqual([[0, 2, 9]]);
    expect(p.synic.pending(0, 2)).toBe(0);
    p.close();
  });

  it('registers are accessible while parked and inside a handler, refused while running', async () => {
    const sys = new FakeMshvSys();
    const p = MshvPartition.create({ memory: [{ gpa: 0, size: 0x1000 }] }, sys);
    const v = p.vcpus[0];
    v.setRegisters({ ...v.getRegisters(), rip: 0x7c00n, rflags: 2n });
    expect(sys.regs(0).get(RIP)).toBe(0x7c00n);
    const s = v.getSpecialRegisters();
    v.setSpecialRegisters({ ...s, cr0: 0x11n, gdt: { base: 0x5000n, limit: 0x27 } });
    const gdtr = sys.hvcalls(0x51).at(-1)!;
    const gdtAssoc = Array.from({ length: gdtr.reps }, (_, i) => abi.HvRegisterAssoc.decode(gdtr.input, 16 + i * 32)).find(
      (a) => a.name === 0x70001,
    );
    expect(gdtAssoc).toMatchObject({ valueLow: 0x27n << 48n, valueHigh: 0x5000n }); // limit @6, base @8
    let inside: bigint | undefined;
    p.addIoDevice({ port: 0x80, count: 1, write: () => ((inside = v.getRegisters().rip), { stop: true }) });
    sys.script(0, out(0x80, 1, 0x7c00n));
    const run = p.run();
    expect(() => v.getRegisters()).toThrow(/running/);
    expect(await run).toEqual([{ vp: 0, cause: 'handler-stop', error: undefined, exits: 1 }]);
    expect(inside).toBe(0x7c00n);
    p.close();
  });

  it('a triple fault rejects run() with GuestFatalError; a throwing handler with ExitHandlerError', async () => {
    const sys = new FakeMshvSys();
    const p = MshvPartition.create({ memory: [{ gpa: 0, size: 0x1000 }] }, sys);
    sys.script(0, msg(0x80000021, 40, 0xfff0n, 0).buf);
    await expect(p.run()).rejects.toThrow(GuestFatalError);
    p.addIoDevice({
      port: 0x70,
      count: 1,
      write: () => {
        throw new Error('boom');
      },
    });
    sys.script(0, out(0x70, 0, 0x10n));
    await expect(p.run()).rejects.toThrow(ExitHandlerError);
    p.close();
  });

  it('a handler answer that is not a 64-bit integer (NaN, 1.5, 2^70) fails the handler instead of reaching RAX', async () => {
    for (const answer of [NaN, 1.5, 2n ** 70n]) {
      const sys = new FakeMshvSys();
      const p = MshvPartition.create({ memory: [{ gpa: 0, size: 0x1000 }] }, sys);
      p.addIoDevice({ port: 0x60, count: 1, read: () => answer as number });
      sys.script(0, inb(0x60, 0n, 0x10n));
      const writes = sys.hvcalls(0x51).length;
      const e = await p.run().then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(e, String(answer)).toBeInstanceOf(ExitHandlerError);
      expect((e as Error).message).toMatch(/handler for io failed: the answer to the io exit has value .* within 64 bits/);
      expect(sys.hvcalls(0x51).length, 'no register write-back').toBe(writes);
      p.close();
    }
  });

  it('EINTR from RUN_VP is retried; interrupt() asserts a fixed interrupt', async () => {
    const sys = new FakeMshvSys();
    const p = MshvPartition.create({ memory: [{ gpa: 0, size: 0x1000 }] }, sys);
    p.addIoDevice({ port: 0xf4, count: 1, write: () => ({ stop: true }) });
    sys.script(0, { errno: abi.Errno.EINTR }, out(0xf4, 0, 0x10n));
    expect(await p.run()).toMatchObject([{ cause: 'handler-stop', exits: 1 }]);
    expect(p.interrupt(0, 0x30)).toBe(true);
    const a = abi.HvInputAssertVirtualInterrupt.decode(sys.hvcalls(0x94)[0].input);
    expect(a).toMatchObject({ interruptType: 0, controlFlags: 0, destAddr: 0n, vector: 0x30, targetVtl: 0 });
    expect(() => p.interrupt(0, 3)).toThrow(/vector/);
    p.close();
  });

  it('SynIC signal goes through SignalEventDirect', () => {
    const sys = new FakeMshvSys();
    const p = MshvPartition.create({ vcpuCount: 2, memory: [{ gpa: 0, size: 0x1000 }] }, sys);
    expect(p.synic.signalEvent(1, 3, 7)).toBe(true);
    expect(abi.HvInputSignalEventDirect.decode(sys.hvcalls(0xc0)[0].input)).toMatchObject({
      targetVp: 1,
      targetSint: 3,
      flagNumber: 7,
      targetVtl: 0,
    });
    p.close();
  });
});

describe('MshvPartition after close and with bad run lists', () => {
  it('refuses hypercall-backed calls once closed (its hypercall pages are gone) and a vCPU named twice', async () => {
    const sys = new FakeMshvSys();
    const p = MshvPartition.create({ vcpuCount: 1, memory: [{ gpa: 0, size: 0x10000 }] }, sys);
    await expect(p.run([0, 0])).rejects.toThrow(/names a vCPU twice/);
    p.close();
    expect(() => p.interrupt(0, 0x30)).toThrow(/partition is closed/);
    expect(() => p.vcpus[0].getRegisters()).toThrow(/partition is closed/);
    expect(() => p.synic.postMessage(0, 2, { type: 1, payload: Uint8Array.of(1) })).toThrow(/partition is closed/);
    await expect(p.run()).rejects.toThrow(/partition is closed/);
  });
});

describe('MshvPartition setup failures release what they allocated', () => {
  // Each step of setup made to fail in turn: the hypercall pages, VP run pages, VP fds and RAM
  // are all released (before: the two hypercall pages leaked whenever setup threw).
  const steps: [string, (sys: FakeMshvSys) => void][] = [
    [
      'the synthetic-features property',
      (sys) => (sys.hvcallHook = (code) => (code === abi.HVCALL_SET_PARTITION_PROPERTY ? { status: 0x5 } : undefined)),
    ],
    ['an intercept', (sys) => (sys.hvcallHook = (code) => (code === abi.HVCALL_INSTALL_INTERCEPT ? { status: 0x5 } : undefined))],
  ];
  for (const [what, inject] of steps) {
    it(`when ${what} fails`, () => {
      const sys = new FakeMshvSys();
      inject(sys);
      expect(() => MshvPartition.create({ vcpuCount: 2, memory: [{ gpa: 0, size: 0x10000 }] }, sys)).toThrow();
      expect(sys.liveBuffers()).toBe(0);
      const opened =
        sys.calls.filter((c) => c.op === 'open').length +
        sys.calls.filter((c) => c.op === 'ioctl' && (c.request === abi.MSHV_CREATE_PARTITION || c.request === abi.MSHV_CREATE_VP)).length;
      expect(sys.calls.filter((c) => c.op === 'close').length).toBe(opened);
    });
  }

  it('when the guest memory map is refused (MemoryMapError), and a close() after a good create frees every page', () => {
    const sys = new FakeMshvSys();
    expect(() => MshvPartition.create({ memory: [{ gpa: 0x800, size: 0x1000 }] }, sys)).toThrow(/page-aligned/);
    expect(sys.liveBuffers()).toBe(0);
    const p = MshvPartition.create({ vcpuCount: 2, memory: [{ gpa: 0, size: 0x10000 }] }, sys);
    p.close();
    expect(sys.liveBuffers()).toBe(1); // guest RAM stays mapped for the views handed out (as on KVM)
  });
});
