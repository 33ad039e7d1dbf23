/**
 * One conformance suite for every backend: the same scenarios, written once against
 * AccelPartition, run on real KVM (a tiny real-mode guest; skipped with a message where
 * /dev/kvm is missing, failed instead under HVEMU_REQUIRE_KVM=1) and on the MSHV and WHPX
 * fake layers (the same guest steps scripted as the hypervisor would report them).
 *
 * A scenario is a list of guest steps; each backend turns it into what its hypervisor does:
 * KVM runs x86 real-mode code at 0x1000 (DS = 0xffff, so DS:0x10 is GPA 0x100000, just above
 * the 1 MiB of RAM), the fakes answer each run with the intercept message or exit context
 * that step causes. Results are read the same way everywhere: the devices' logs and the
 * vCPU's registers once it has stopped.
 */
import { describe, expect, it } from 'vitest';
import { KvmPartition } from '../src/backends/kvm/partition.js';
import { enterFlatRealMode } from '../src/cpuid-probe.js';
import { MshvPartition } from '../src/backends/mshv/partition.js';
import { WhpxPartition } from '../src/backends/whpx/partition.js';
import type { AccelPartition, BackendName } from '../src/backends/types.js';
import { AccelUsageError } from '../src/errors.js';
import { FakeMshvSys, FakeWhpxApi, mshvExits, whpxCapabilities, whpxExits } from '../src/testing/index.js';
import { KVM } from './helpers/harness.js';

type Step =
  | { op: 'in'; port: number }
  | { op: 'out-stop' }
  | { op: 'mmio-write8'; gpa: number; value: number }
  | { op: 'mmio-read8'; gpa: number }
  | { op: 'rdmsr'; msr: number }
  | { op: 'wrmsr'; msr: number; value: bigint }
  | { op: 'cpuid'; leaf: number }
  | { op: 'hypercall'; control: number }
  | { op: 'halt' }
  | { op: 'spin' };

interface Backend {
  readonly name: BackendName;
  /** Steps this backend cannot express as exits, with the reason. */
  readonly cannot: Partial<Record<Step['op'], string>>;
  /** The optional capabilities it serves. */
  readonly capabilities: readonly ('doorbells' | 'interruptTriggers' | 'pageLists' | 'memoryControl' | 'tsc')[];
  create(): { p: AccelPartition; load(steps: readonly Step[]): void };
}

const MiB = 1 << 20;
const STOP_PORT = 0xf4;
const HYPERCALL_PORT = 0x99;
const DS_BASE = 0xffff0;

// ---- KVM: real-mode code ----------------------------------------------------------------------

const le16 = (v: number) => [v & 0xff, (v >>> 8) & 0xff];
const le32 = (v: number) => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];

function realModeCode(steps: readonly Step[]): number[] {
  const code = [0xb8, 0xff, 0xff, 0x8e, 0xd8]; // mov ax, 0xffff; mov ds, ax
  for (const s of steps) {
    switch (s.op) {
      case 'in':
        code.push(0xe4, s.port);
        break; // in al, imm8
      case 'out-stop':
        code.push(0xe6, STOP_PORT);
        break; // out 0xf4, al
      case 'mmio-write8':
        code.push(0xc6, 0x06, ...le16(s.gpa - DS_BASE), s.value);
        break; // mov byte [disp16], imm8
      case 'mmio-read8':
        code.push(0xa0, ...le16(s.gpa - DS_BASE));
        break; // mov al, [moffs16]
      case 'rdmsr':
        code.push(0x66, 0xb9, ...le32(s.msr), 0x0f, 0x32);
        break;
      case 'wrmsr':
        code.push(
          0x66,
          0xb9,
          ...le32(s.msr),
          0x66,
          0xb8,
          ...le32(Number(s.value & 0xffff_ffffn)),
          0x66,
          0xba,
          ...le32(Number(s.value >> 32n)),
          0x0f,
          0x30,
        );
        break;
      case 'hypercall':
        code.push(0x66, 0xb9, ...le32(s.control), 0xe6, HYPERCALL_PORT);
        break; // ecx = control; the hypercall page's OUT
      case 'spin':
        code.push(0xeb, 0xfe);
        break;
      default:
        throw new Error(`KVM cannot run ${s.op}`);
    }
  }
  return code;
}

const kvm: Backend = {
  name: 'kvm',
  cannot: {
    cpuid: 'KVM answers CPUID from the model set at creation: no exit',
    halt: 'the in-kernel LAPIC runs HLT in the kernel: no exit',
  },
  capabilities: ['doorbells', 'interruptTriggers', 'pageLists', 'memoryControl', 'tsc'],
  create() {
    const p = KvmPartition.create({ memory: [{ gpa: 0, size: MiB }], hypercallPort: HYPERCALL_PORT });
    return {
      p,
      load(steps) {
        p.memory.write(0x1000, Uint8Array.from(realModeCode(steps)));
        enterFlatRealMode(p, 0x1000);
      },
    };
  },
};

// ---- MSHV and WHPX: the intercept each step causes (@hvemu/accel/testing builders) -------------

type Builders = typeof mshvExits;

function scripted(steps: readonly Step[], x: Builders): Uint8Array[] {
  const out: Uint8Array[] = [];
  steps.forEach((s, i) => {
    const at = { rip: 0x1000n + BigInt(i * 16) };
    switch (s.op) {
      case 'in':
        out.push(x.io(s.port, false, 0n, at));
        break;
      case 'out-stop':
        out.push(x.io(STOP_PORT, true, 0n, at));
        break;
      case 'mmio-write8':
        out.push(x.mmio(BigInt(s.gpa), true, [0xc6, 0x00, s.value], at));
        break; // mov byte [rax], imm8
      case 'mmio-read8':
        out.push(x.mmio(BigInt(s.gpa), false, [0x8a, 0x00], at));
        break; // mov al, [rax]
      case 'rdmsr':
        out.push(x.msr(s.msr, false, 0n, at));
        break;
      case 'wrmsr':
        out.push(x.msr(s.msr, true, s.value, at));
        break;
      case 'cpuid':
        out.push(x.cpuid(s.leaf, 0, at));
        break;
      case 'hypercall':
        out.push(x.hypercall(BigInt(s.control), 0n, 0n, at));
        break;
      case 'halt':
        out.push(x.halt(at));
        break;
      case 'spin':
        break; // an empty script blocks the run until the backend's kick
    }
  });
  return out;
}

const mshv: Backend = {
  name: 'mshv',
  cannot: {},
  capabilities: ['memoryControl'],
  create() {
    const sys = new FakeMshvSys();
    const p = MshvPartition.create({ memory: [{ gpa: 0, size: MiB }], cpuidLeaves: [0x4000_0000] }, sys);
    return { p, load: (steps) => sys.script(0, ...scripted(steps, mshvExits)) };
  },
};

const whpx: Backend = {
  name: 'whpx',
  cannot: {},
  capabilities: ['memoryControl'],
  create() {
    const api = new FakeWhpxApi({ arch: 'x64', capabilities: whpxCapabilities('x64') });
    const p = WhpxPartition.create({ arch: 'x64', memory: [{ gpa: 0, size: MiB }], cpuidLeaves: [0x4000_0000] }, api);
    return { p, load: (steps) => api.script(0, ...scripted(steps, whpxExits)) };
  },
};

// ---- the suite ----------------------------------------------------------------------------------

if (!KVM.ok && process.env['HVEMU_REQUIRE_KVM'] === '1') throw new Error(`HVEMU_REQUIRE_KVM=1 but KVM is not usable here: ${KVM.reason}`);
if (!KVM.ok) console.warn(`conformance: skipping the KVM column: KVM is not usable here (${KVM.reason})`);

const backends = [kvm, mshv, whpx].map((b) => ({ ...b, skip: b.name === 'kvm' && !KVM.ok }));

/** A partition with a stop device on STOP_PORT, loaded with `steps`, run on vCPU 0. */
async function runSteps(b: Backend, steps: readonly Step[], setup: (p: AccelPartition) => void) {
  const { p, load } = b.create();
  try {
    p.addIoDevice({ port: STOP_PORT, count: 1, write: () => ({ stop: true }) });
    setup(p);
    load([...steps, { op: 'out-stop' }]);
    const outcomes = await p.run([0]);
    return { outcomes, regs: p.vcpus[0].getRegisters() };
  } finally {
    p.close();
  }
}

describe.each(backends)('conformance: $name', (b) => {
  const test = (name: string, fn: () => Promise<void> | void, needs: Step['op'][] = []) => {
    const missing = needs.map((op) => b.cannot[op]).find((reason) => reason !== undefined);
    if (b.skip) it.skip(`${name} [KVM unavailable]`, fn);
    else if (missing) it.skip(`${name} [not an exit on ${b.name}: ${missing}]`, fn);
    else it(name, fn);
  };

  test('port I/O: an IN is answered by its device into AL, an OUT reaches its device and can stop the vCPU', async () => {
    const reads: number[] = [];
    const { outcomes, regs } = await runSteps(b, [{ op: 'in', port: 0x60 }], (p) =>
      p.addIoDevice({ port: 0x60, count: 1, read: (port, size) => (reads.push(port, size), 0x5a) }),
    );
    expect(reads).toEqual([0x60, 1]);
    expect(regs.rax & 0xffn).toBe(0x5an);
    expect(outcomes).toMatchObject([{ vp: 0, cause: 'handler-stop', error: undefined }]);
  });

  test('MMIO: a store and a load outside RAM reach the device with GPA, size and data; the load lands in AL', async () => {
    const log: string[] = [];
    const { regs } = await runSteps(
      b,
      [
        { op: 'mmio-write8', gpa: 0x10_0010, value: 0x42 },
        { op: 'mmio-read8', gpa: 0x10_0020 },
      ],
      (p) =>
        p.addMmioDevice({
          gpa: 0x10_0000,
          size: 0x100,
          read: (gpa, size) => (log.push(`r ${gpa.toString(16)} ${size}`), 0x99n),
          write: (gpa, size, data) => void log.push(`w ${gpa.toString(16)} ${size} ${data.toString(16)}`),
        }),
    );
    expect(log).toEqual(['w 100010 1 42', 'r 100020 1']);
    expect(regs.rax & 0xffn).toBe(0x99n);
  });

  test(
    'MSRs: WRMSR hands EDX:EAX to the device, RDMSR returns its value in EDX:EAX',
    async () => {
      const written: bigint[] = [];
      const { regs } = await runSteps(
        b,
        [
          { op: 'wrmsr', msr: 0x4000_0105, value: 0xaabb_ccdd_0011_2233n },
          { op: 'rdmsr', msr: 0x4000_0105 },
        ],
        (p) => p.addMsrDevice({ msr: 0x4000_0105, read: () => 0x1122_3344_5566_7788n, write: (_msr, value) => void written.push(value) }),
      );
      expect(written).toEqual([0xaabb_ccdd_0011_2233n]);
      expect(regs.rax & 0xffff_ffffn).toBe(0x5566_7788n);
      expect(regs.rdx & 0xffff_ffffn).toBe(0x1122_3344n);
    },
    ['wrmsr'],
  );

  test(
    'CPUID: a leaf that exits is answered by the handler into EAX/EBX/ECX/EDX',
    async () => {
      const { regs } = await runSteps(b, [{ op: 'cpuid', leaf: 0x4000_0000 }], (p) =>
        p.onExit((e) => (e.kind === 'cpuid' && e.leaf === 0x4000_0000 ? { cpuid: [1, 2, 3, 4] } : undefined)),
      );
      expect([regs.rax, regs.rbx, regs.rcx, regs.rdx].map((r) => r & 0xffff_ffffn)).toEqual([1n, 2n, 3n, 4n]);
    },
    ['cpuid'],
  );

  test('hypercall: the handler sees the control word and its status lands in RAX', async () => {
    const controls: bigint[] = [];
    const { regs } = await runSteps(b, [{ op: 'hypercall', control: 0x5c }], (p) =>
      p.onHypercall((h) => (controls.push(h.control & 0xffffn), { value: 0x1234 })),
    );
    expect(controls).toEqual([0x5cn]);
    expect(regs.rax & 0xffffn).toBe(0x1234n);
  });

  test(
    'halt: the exit reaches onExit, which may stop the vCPU',
    async () => {
      const kinds: string[] = [];
      const { outcomes } = await runSteps(b, [{ op: 'halt' }], (p) =>
        p.onExit((e) => (kinds.push(e.kind), e.kind === 'halt' ? { stop: true } : undefined)),
      );
      expect(kinds).toEqual(['halt']);
      expect(outcomes[0].cause).toBe('handler-stop');
    },
    ['halt'],
  );

  test('stop(): a vCPU that makes no exit is kicked out and ends stop-requested; run() again works after', async () => {
    const { p, load } = b.create();
    try {
      load([{ op: 'spin' }]);
      const running = p.run([0]);
      setTimeout(() => p.stop(), 20);
      expect(await running).toMatchObject([{ vp: 0, cause: 'stop-requested', error: undefined }]);
      expect(p.vcpus[0].status).toBe('stopped');
    } finally {
      p.close();
    }
  });

  test('run() misuse is a rejected promise, never a throw; run([]) resolves with []', async () => {
    const { p } = b.create();
    try {
      await expect(p.run([])).resolves.toEqual([]);
      await expect(p.run([7])).rejects.toThrow(AccelUsageError);
      await expect(p.run([0, 0])).rejects.toThrow(AccelUsageError);
      await expect(p.run('0' as never)).rejects.toThrow(AccelUsageError);
      await expect(p.run([0.5])).rejects.toThrow(AccelUsageError);
    } finally {
      p.close();
    }
  });

  test('after close(): every call is an AccelUsageError (run() rejects); stop() and close() are no-ops', async () => {
    const { p } = b.create();
    p.close();
    expect(() => p.addIoDevice({ port: 0x70, count: 1 })).toThrow(AccelUsageError);
    expect(() => p.addMmioDevice({ gpa: 0x20_0000, size: 0x1000 })).toThrow(AccelUsageError);
    expect(() => p.onExit(() => undefined)).toThrow(AccelUsageError);
    expect(() => p.interrupt(0, 0x30)).toThrow(AccelUsageError);
    expect(() => p.vcpus[0].getRegisters()).toThrow(AccelUsageError);
    expect(() => p.memoryControl?.addRam({ gpa: 0x20_0000, size: 0x1000 })).toThrow(AccelUsageError);
    await expect(p.run()).rejects.toThrow(AccelUsageError);
    expect(() => p.stop()).not.toThrow();
    expect(() => p.close()).not.toThrow();
  });

  test('optional capabilities are present exactly where the backend serves them', () => {
    const { p } = b.create();
    try {
      const has = {
        doorbells: p.doorbells !== undefined,
        interruptTriggers: p.interruptTriggers !== undefined,
        pageLists: p.pageLists !== undefined,
        memoryControl: p.memoryControl !== undefined,
        tsc: p.vcpus[0].tsc !== undefined,
      };
      expect(
        Object.entries(has)
          .filter(([, v]) => v)
          .map(([k]) => k)
          .sort(),
      ).toEqual([...b.capabilities].sort());
    } finally {
      p.close();
    }
  });

  test('memoryControl: RAM added at run time is guest memory (GuestMemory hears of it), discards to zero, and goes again', () => {
    const { p } = b.create();
    try {
      const changes: string[] = [];
      p.memory.onChange((c) => changes.push(`${c.kind} ${c.region.gpa.toString(16)}`));
      p.memoryControl!.addRam({ gpa: 0x400_0000, size: 2 * MiB });
      p.memory.write(0x400_0000 + 0x1000, Uint8Array.of(7, 8, 9));
      const back = new Uint8Array(3);
      p.memory.read(0x400_1000, back);
      expect(Array.from(back)).toEqual([7, 8, 9]);
      p.memoryControl!.discardRam(0x400_1000, 0x1000);
      p.memory.read(0x400_1000, back);
      expect(Array.from(back)).toEqual([0, 0, 0]);
      expect(() => p.addMmioDevice({ gpa: 0x400_0000, size: 0x1000 })).toThrow(AccelUsageError);
      p.memoryControl!.removeRam(0x400_0000);
      expect(changes).toEqual(['added 4000000', 'removed 4000000']);
      expect(() => p.memory.read(0x400_0000, back)).toThrow();
      expect(() => p.memoryControl!.removeRam(0)).toThrow(AccelUsageError); // the last region
      p.addMmioDevice({ gpa: 0x400_0000, size: 0x1000 }); // the exit routing followed the RAM map
    } finally {
      p.close();
    }
  });
});
