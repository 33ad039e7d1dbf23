import { afterEach, expect, it } from 'vitest';
import { hypervisorVendorLeaf } from '../src/cpuid.js';
import { GuestFatalError } from '../src/errors.js';
import type { KvmPartition } from '../src/backends/kvm/partition.js';
import { describeKvm, runGuest, summary, type GuestRun } from './helpers/harness.js';

const opened: KvmPartition[] = [];
afterEach(() => {
  for (const p of opened.splice(0)) p.close();
});

async function run(name: string, opts: Parameters<typeof runGuest>[1] = {}): Promise<GuestRun> {
  const r = await runGuest(name, opts);
  opened.push(r.partition);
  return r;
}

function expectExit(r: GuestRun, codes: Record<number, number>): void {
  expect(r.error, summary(r)).toBeUndefined();
  expect(r.platform.asserts.failures, summary(r)).toEqual([]);
  expect(Object.fromEntries(r.platform.debugExit.codes), summary(r)).toEqual(codes);
}

describeKvm('KVM test guests', () => {
  it('guest sees the Hyper-V vendor leaf "Microsoft Hv", x2APIC and its APIC id', async () => {
    const r = await run('cpuid', { hypervisorLeaves: [hypervisorVendorLeaf('Microsoft Hv', 0x40000005)] });
    expectExit(r, { 0: 0 });
    expect(r.platform.serial.text()).toContain('hypervisor vendor: Microsoft Hv');
  });

  it('round-trips user-space MSR reads and writes (Hyper-V range and a registered MSR)', async () => {
    const writes: [number, bigint][] = [];
    const r = await run('msr', {
      setup: (p) => {
        let guestOsId = 0n;
        p.addMsrDevice({
          msr: 0x40000000,
          read: () => guestOsId,
          write: (msr, value) => {
            writes.push([msr, value]);
            guestOsId = value;
          },
        });
        p.addMsrDevice({ msr: 0x40000001, read: () => 0xfeedfacecafen, write: () => false });
        p.addMsrDevice({ msr: 0x1a0, read: () => 0x1a0a1a0n });
      },
    });
    expectExit(r, { 0: 0 });
    expect(writes).toEqual([[0x40000000, 0x8100123456789abcn]]);
  });

  it('serves port I/O of every size, string I/O and MMIO from TypeScript devices', async () => {
    const outs: [number, number][] = [];
    const strings: number[] = [];
    const mmio = new Map<number, bigint>();
    const r = await run('pio', {
      setup: (p) => {
        p.addIoDevice({
          port: 0x500,
          count: 1,
          read: (_port, size) => ({ 1: 0xa1, 2: 0xa2a2, 4: 0xa4a4a4a4 })[size],
          write: (_port, size, value) => void outs.push([size, value]),
        });
        const reply = [...'abcd'].map((c) => c.charCodeAt(0));
        p.addIoDevice({ port: 0x502, count: 1, read: () => reply.shift() ?? 0, write: (_p, _s, v) => void strings.push(v) });
        for (const base of [0x10000000, 0xd0000000]) {
          p.addMmioDevice({
            gpa: base,
            size: 0x1000,
            read: (gpa) => mmio.get(gpa) ?? 0n,
            write: (gpa, _size, value) => void mmio.set(gpa, value),
          });
        }
      },
    });
    expectExit(r, { 0: 7 });
    expect(outs).toEqual([
      [1, 0x11],
      [2, 0x2233],
      [4, 0x44556677],
    ]);
    expect(String.fromCharCode(...strings)).toBe('hello');
    expect(mmio.get(0x10000008)).toBe(0xdeadbeefn);
    expect(mmio.get(0xd0000000)).toBe(0x0123456789abcdefn);
    expect(r.platform.serial.text()).toBe('pio done\n');
  });

  it('shares guest RAM with TypeScript zero-copy in both directions', async () => {
    let sawGuestPattern = false;
    const r = await run('memory', {
      setup: (p) => {
        for (let i = 0; i < 256; i++) p.memory.writeU32(0x300000 + i * 4, (0xc0de0000 | i) >>> 0);
        p.addIoDevice({
          port: 0x510,
          count: 1,
          write: () => {
            // The vCPU is parked at this exit: read what it wrote, answer through RAM.
            const view = p.memory.u32Array(0x301000, 256);
            sawGuestPattern = view.every((v, i) => v === (0x600d0000 | i) >>> 0);
            p.memory.writeU32(0x300000, 0x12345678);
          },
        });
      },
    });
    expectExit(r, { 0: 0 });
    expect(sawGuestPattern).toBe(true);
    expect(r.partition.memory.readU32(0x301000 + 255 * 4)).toBe((0x600d0000 | 255) >>> 0);
  });

  it('delivers an MSI and an irqfd interrupt to a halted vCPU, which EOIs them', async () => {
    const delivered: boolean[] = [];
    const r = await run('msi', {
      setup: (p) => {
        const irqfd = p.createIrqfd(0, 0x41);
        p.addIoDevice({
          port: 0x510,
          count: 1,
          write: (_port, _size, value) => {
            // Let the guest reach its sti;hlt before the interrupt arrives.
            setTimeout(() => (value === 1 ? delivered.push(p.interrupt(0, 0x40)) : irqfd.trigger()), 20);
          },
        });
      },
    });
    expectExit(r, { 0: 0 });
    expect(delivered).toEqual([true, true]);
  });

  it('counts MMIO and port doorbell writes through ioeventfds, without user-space exits', async () => {
    const doorbells: { take(): bigint }[] = [];
    const r = await run('doorbell', {
      setup: (p) => {
        doorbells.push(p.createIoeventfd({ space: 'mmio', address: 0xd0001000, length: 4 }));
        doorbells.push(p.createIoeventfd({ space: 'pio', address: 0x560, length: 2 }));
      },
    });
    expectExit(r, { 0: 0 });
    expect(doorbells.map((d) => d.take())).toEqual([10n, 5n]);
    expect(doorbells.map((d) => d.take())).toEqual([0n, 0n]);
    expect(r.partition.vcpus[0].exits).toBe(1); // only the debug-exit port
  });

  it('reports doorbell writes to JS by itself (native eventfd watcher: no timer, no exit)', async () => {
    const seen: bigint[] = [];
    const r = await run('doorbell-watch', {
      setup: (p) => {
        const bell = p.createIoeventfd({ space: 'pio', address: 0x560, length: 2 });
        bell.watch((count) => {
          seen.push(count);
          p.interrupt(0, 0x42);
        });
      },
    });
    expectExit(r, { 0: 0 });
    expect(seen).toEqual([1n, 1n, 1n]);
    // halts wake in the kernel; the only user-space exit is the debug-exit port
    expect(r.partition.vcpus[0].exits).toBe(1);
  });

  it('finishes fwait, fnclex, emms, fild (and clac/stac where the CPU has SMAP) that the emulator stops on', async () => {
    const r = await run('fixups');
    expectExit(r, { 0: 0 });
    expect(r.platform.serial.text()).toContain('x87: fnclex, fwait, emms ran');
    expect(r.platform.serial.text()).toContain('fild: ran');
    expect(r.platform.serial.text()).toMatch(/clac\/stac: (ran|#UD \(no SMAP on this CPU\))/);
    expect(r.platform.serial.text()).toMatch(/popcnt: (ran|not on this CPU)/);
  });

  it('without instruction fixups the same guest stops with the bytes at RIP named', async () => {
    const r = await run('fixups', { instructionFixups: false });
    if (r.error === undefined) {
      // A KVM that runs these instructions itself (hardware virtualization) needs no fixups.
      expect(r.platform.serial.text()).toContain('x87: fnclex, fwait, emms ran');
      return;
    }
    expect(r.error).toBeInstanceOf(GuestFatalError);
    expect(String((r.error as Error).message)).toMatch(/instruction bytes at RIP: (db e2|9b|0f 77|0f 01 c[ab])/);
  });

  it('runs 64-bit SYSCALL/SYSRETQ between CPL 3 and CPL 0 (the host completes a SYSCALL left at CPL 3)', async () => {
    const r = await run('syscall');
    expectExit(r, { 0: 0 });
    expect(r.platform.serial.text()).toContain('syscall: entry at CPL 0, sysretq to CPL 3; user faults delivered');
  });

  it('without the SYSCALL fixup the entry runs at CPL 0 (a KVM that runs SYSCALL) or faults at CPL 3 (this kind)', async () => {
    const r = await run('syscall', { syscallFixup: false });
    expect(r.error, summary(r)).toBeUndefined();
    const code = r.platform.debugExit.codes.get(0);
    if (code === 0) return;
    expect(code, summary(r)).toBe(2);
    expect(r.platform.serial.text()).toMatch(/syscall: entry at CPL 3 \(#PF error 0x15 at the entry\)/);
  });

  it('finishes int3 (an emulation failure here) by injecting #BP', async () => {
    const r = await run('int3');
    expectExit(r, { 0: 0 });
  });

  it('completes hypercalls through the hypercall-port exit (RCX/RDX/R8, XMM0-5 for fast calls), setting RAX', async () => {
    const calls: bigint[][] = [];
    const xmmLow: (bigint[] | undefined)[] = [];
    const r = await run('hypercall', {
      hypercallPort: 0x99,
      setup: (p) =>
        p.onHypercall((h) => {
          calls.push([h.control, h.input, h.output]);
          const x = h.xmm && new DataView(h.xmm.buffer, h.xmm.byteOffset);
          xmmLow.push(x && [0, 1, 2, 3, 4, 5].map((i) => x.getBigUint64(i * 16, true)));
          if (h.xmm) {
            // XMM fast output: the handler writes XMM registers of the parked vCPU.
            const all = p.vcpus[h.vp].getXmm();
            expect(all.subarray(0, 96)).toEqual(h.xmm);
            all[5 * 16 + 8] = 0x77; // XMM5 bits 64-71
            p.vcpus[h.vp].setXmm(all);
          }
          return { value: h.control + h.input + h.output };
        }),
    });
    expectExit(r, { 0: 0 });
    expect(calls).toEqual([
      [0x5cn, 0x1000n, 0x2000n],
      [0x10001n, 7n, 9n],
    ]);
    expect(xmmLow).toEqual([undefined, [0x100n, 0x101n, 0x102n, 0x103n, 0x104n, 0x105n]]);
  });

  for (const syncRegs of [true, false]) {
    it(`keeps a handler's register writes during a hypercall and sets RAX (syncRegs: ${syncRegs})`, async () => {
      const r = await run('hypercall-regs', {
        hypercallPort: 0x99,
        syncRegs,
        setup: (p) =>
          p.onHypercall((h) => {
            const v = p.vcpus[h.vp];
            v.setRegisters({ ...v.getRegisters(), rbx: 0xabc0n + h.input, rax: 0xdeadn });
            return { value: 0x100n + h.input }; // the answer's RAX wins over the one just set
          }),
      });
      expectExit(r, { 0: 0 });
      expect(r.partition.vcpus[0].exits).toBe(4); // three hypercalls and the debug exit
    });
  }

  it('reports a guest triple fault as a GuestFatalError with registers', async () => {
    const r = await run('triple');
    expect(r.error, summary(r)).toBeInstanceOf(GuestFatalError);
    const e = r.error as GuestFatalError;
    expect(e.reason).toBe('triple-fault');
    expect(e.vp).toBe(0);
    expect(e.registers?.rip).toBeGreaterThan(0x100000n);
    expect(e.message).toMatch(/vCPU 0: guest triple fault \(shutdown\) at rip=0x[0-9a-f]+\n {2}registers: rax=/);
  });

  it('runs two vCPUs at once (shared-memory ping-pong)', async () => {
    const r = await run('smp', { vcpuCount: 2 });
    expectExit(r, { 0: 0x50, 1: 0x51 });
  });
});
