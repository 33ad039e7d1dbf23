/**
 * The accel public API against bad calls: wrong types, NaN, negative, non-integer and absurd
 * values, calls after close(). Each row is a bad call and the typed error it must raise (an
 * HvemuError subclass whose message names the argument) - never a TypeError from inside, a
 * silently truncated value, a hang or a crash. The backend-neutral rows run on every backend
 * (KVM where /dev/kvm works, MSHV and WHPX on their fake layers).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { FakeMshvSys } from '../src/testing/index.js';
import { MshvPartition } from '../src/backends/mshv/partition.js';
import type { AccelPartition } from '../src/backends/types.js';
import { FakeWhpxApi, whpxCapabilities } from '../src/testing/index.js';
import { WhpxPartition } from '../src/backends/whpx/partition.js';
import { AccelUsageError, MemoryMapError } from '../src/errors.js';
import { encodeHvMessage, OffloadedSynicPort, SynicPostError } from '../src/backends/offloaded-synic.js';
import { buildCpuidModel, hypervisorVendorLeaf } from '../src/cpuid.js';
import { ExitRouter } from '../src/exit-router.js';
import { decodeMmioInstruction, MmioDecodeError } from '../src/backends/x86-mmio.js';
import { KvmPartition } from '../src/backends/kvm/partition.js';
import { registersWith, type Registers, type SpecialRegisters } from '../src/registers.js';
import { describeChild, runChild } from './helpers/child.js';
import { describeKvm, KVM, MiB } from './helpers/harness.js';
import { expectRows, resetSegment, type Row } from '../../../test/api-edges.js';

const zeroRegs = (): Registers => registersWith({});
const segment = resetSegment;
const zeroSregs = (): SpecialRegisters => ({
  cs: segment(),
  ds: segment(),
  es: segment(),
  fs: segment(),
  gs: segment(),
  ss: segment(),
  tr: { ...segment(), type: 11, s: false },
  ldt: { ...segment(), type: 2, s: false },
  gdt: { base: 0n, limit: 0xffff },
  idt: { base: 0n, limit: 0xffff },
  cr0: 0x60000010n,
  cr2: 0n,
  cr3: 0n,
  cr4: 0n,
  cr8: 0n,
  efer: 0n,
  apicBase: 0xfee00900n,
});

/** Bad calls every backend must refuse the same way (AccelPartition). */
const COMMON_ROWS: Row<AccelPartition>[] = [
  // Port I/O devices: ports are 16-bit.
  ['addIoDevice(null)', (p) => p.addIoDevice(null as never), AccelUsageError, /addIoDevice: device must be an object, not null/],
  [
    'addIoDevice port 70000',
    (p) => p.addIoDevice({ port: 70000, count: 1 }),
    AccelUsageError,
    /device.port must be an integer in 0..65535, not 70000/,
  ],
  ['addIoDevice port -1', (p) => p.addIoDevice({ port: -1, count: 1 }), AccelUsageError, /device.port/],
  ['addIoDevice port NaN', (p) => p.addIoDevice({ port: NaN, count: 1 }), AccelUsageError, /device.port .* not NaN/],
  ['addIoDevice port "0x70"', (p) => p.addIoDevice({ port: '0x70' as never, count: 1 }), AccelUsageError, /device.port .* not "0x70"/],
  ['addIoDevice count 0', (p) => p.addIoDevice({ port: 0x70, count: 0 }), AccelUsageError, /device.count/],
  [
    'addIoDevice count past 0xffff',
    (p) => p.addIoDevice({ port: 0xfff0, count: 0x20 }),
    AccelUsageError,
    /device.count must be an integer in 1..16/,
  ],
  ['addIoDevice count 1.5', (p) => p.addIoDevice({ port: 0x70, count: 1.5 }), AccelUsageError, /device.count/],
  [
    'addIoDevice read not a function',
    (p) => p.addIoDevice({ port: 0x70, count: 1, read: 5 as never }),
    AccelUsageError,
    /device.read must be a function/,
  ],
  // MMIO devices.
  ['addMmioDevice(undefined)', (p) => p.addMmioDevice(undefined as never), AccelUsageError, /addMmioDevice: device must be an object/],
  ['addMmioDevice gpa -4096', (p) => p.addMmioDevice({ gpa: -4096, size: 4096 }), AccelUsageError, /device.gpa/],
  ['addMmioDevice gpa 2^60', (p) => p.addMmioDevice({ gpa: 2 ** 60, size: 4096 }), AccelUsageError, /device.gpa/],
  [
    'addMmioDevice size Infinity',
    (p) => p.addMmioDevice({ gpa: 0xd0000000, size: Infinity }),
    AccelUsageError,
    /device.size .* not Infinity/,
  ],
  ['addMmioDevice size 0', (p) => p.addMmioDevice({ gpa: 0xd0000000, size: 0 }), AccelUsageError, /device.size/],
  [
    'addMmioDevice write not a function',
    (p) => p.addMmioDevice({ gpa: 0xd0000000, size: 16, write: {} as never }),
    AccelUsageError,
    /device.write must be a function/,
  ],
  // MSR devices: checked before anything is sized by the count.
  ['addMsrDevice msr -1', (p) => p.addMsrDevice({ msr: -1 }), AccelUsageError, /device.msr/],
  ['addMsrDevice msr 2^32', (p) => p.addMsrDevice({ msr: 2 ** 32 }), AccelUsageError, /device.msr/],
  ['addMsrDevice count NaN', (p) => p.addMsrDevice({ msr: 0x40000000, count: NaN }), AccelUsageError, /device.count .* not NaN/],
  [
    'addMsrDevice count past 2^32',
    (p) => p.addMsrDevice({ msr: 0xffffffff, count: 2 }),
    AccelUsageError,
    /device.count must be an integer in 1..1, not 2/,
  ],
  ['addMsrDevice count 2^33', (p) => p.addMsrDevice({ msr: 0, count: 2 ** 33 }), AccelUsageError, /device.count/],
  // Handlers.
  ['onHypercall(undefined)', (p) => p.onHypercall(undefined as never), AccelUsageError, /onHypercall: handler must be a function/],
  ['onExit("x")', (p) => p.onExit('x' as never), AccelUsageError, /onExit: handler must be a function, not "x"/],
  // Registers: every field, no silent truncation.
  ['setRegisters({})', (p) => p.vcpus[0].setRegisters({} as never), AccelUsageError, /setRegisters: registers.rax must be a bigint/],
  [
    'setRegisters(null)',
    (p) => p.vcpus[0].setRegisters(null as never),
    AccelUsageError,
    /setRegisters: registers must be an object, not null/,
  ],
  [
    'setRegisters rip number',
    (p) => p.vcpus[0].setRegisters({ ...zeroRegs(), rip: 0x1000 as never }),
    AccelUsageError,
    /registers.rip must be a bigint .* not 4096/,
  ],
  [
    'setRegisters rax 2^64',
    (p) => p.vcpus[0].setRegisters({ ...zeroRegs(), rax: 1n << 64n }),
    AccelUsageError,
    /registers.rax must be a bigint in -\(2\^63\)..2\^64-1/,
  ],
  [
    'setSpecialRegisters({})',
    (p) => p.vcpus[0].setSpecialRegisters({} as never),
    AccelUsageError,
    /setSpecialRegisters: registers.cs must be an object/,
  ],
  [
    'setSpecialRegisters cs.selector 0x10000',
    (p) => p.vcpus[0].setSpecialRegisters({ ...zeroSregs(), cs: { ...segment(), selector: 0x10000 } }),
    AccelUsageError,
    /registers.cs.selector/,
  ],
  [
    'setSpecialRegisters gdt.limit -1',
    (p) => p.vcpus[0].setSpecialRegisters({ ...zeroSregs(), gdt: { base: 0n, limit: -1 } }),
    AccelUsageError,
    /registers.gdt.limit/,
  ],
  [
    'setSpecialRegisters cr0 undefined',
    (p) => p.vcpus[0].setSpecialRegisters({ ...zeroSregs(), cr0: undefined as never }),
    AccelUsageError,
    /registers.cr0 must be a bigint/,
  ],
  [
    'setSpecialRegisters tr.present 1',
    (p) => p.vcpus[0].setSpecialRegisters({ ...zeroSregs(), tr: { ...segment(), present: 1 as never } }),
    AccelUsageError,
    /registers.tr.present must be a boolean/,
  ],
];

/** The same partition-level calls after close(). */
const CLOSED_ROWS: Row<AccelPartition>[] = [
  ['addIoDevice after close', (p) => p.addIoDevice({ port: 0x70, count: 1 }), AccelUsageError, /addIoDevice: the partition is closed/],
  [
    'addMmioDevice after close',
    (p) => p.addMmioDevice({ gpa: 0xd0000000, size: 16 }),
    AccelUsageError,
    /addMmioDevice: the partition is closed/,
  ],
  ['addMsrDevice after close', (p) => p.addMsrDevice({ msr: 0x40000010 }), AccelUsageError, /addMsrDevice: the partition is closed/],
  ['onHypercall after close', (p) => p.onHypercall(() => undefined), AccelUsageError, /onHypercall: the partition is closed/],
  ['onExit after close', (p) => p.onExit(() => undefined), AccelUsageError, /onExit: the partition is closed/],
  ['interrupt after close', (p) => p.interrupt(0, 0x30), AccelUsageError, /the partition is closed/],
];

/** run() misuse: a rejected promise, never a synchronous throw, never a promise that hangs. */
async function expectRunMisuse(p: AccelPartition): Promise<void> {
  const bad: unknown[] = [[7], [-1], [0.5], [NaN], ['0'], [0, 0], ['0', 0], 0, null, 'all'];
  for (const vps of bad) {
    let result: Promise<unknown> | undefined;
    expect(() => (result = p.run(vps as number[])), JSON.stringify(String(vps))).not.toThrow();
    await expect(result, String(vps)).rejects.toThrow(AccelUsageError);
  }
  await expect(Promise.race([p.run([]), new Promise((r) => setTimeout(() => r('pending'), 500))])).resolves.toEqual([]);
}

const backends: [string, () => AccelPartition, boolean][] = [
  ['MSHV (fake /dev/mshv)', () => MshvPartition.create({ memory: [{ gpa: 0, size: 0x10000 }] }, new FakeMshvSys()), true],
  ['WHPX (fake WinHvPlatform, x64)', () => WhpxPartition.create({ arch: 'x64', memory: [{ gpa: 0, size: 0x10000 }] }, whpxFake()), true],
  ['KVM', () => KvmPartition.create({ memory: [{ gpa: 0, size: MiB }] }), KVM.ok],
];

function whpxFake(): FakeWhpxApi {
  return new FakeWhpxApi({ arch: 'x64', capabilities: whpxCapabilities('x64') });
}

const opened: AccelPartition[] = [];
afterEach(() => {
  for (const p of opened.splice(0)) p.close();
});

for (const [name, create, available] of backends) {
  (available ? describe : describe.skip)(`API edges, every backend: ${name}`, () => {
    const make = (): AccelPartition => {
      const p = create();
      opened.push(p);
      return p;
    };

    it('refuses bad device, handler and register arguments with a typed error naming the argument', () => {
      const p = make();
      expectRows(() => p, COMMON_ROWS);
      // Nothing half-added: the valid forms still work afterwards.
      p.addIoDevice({ port: 0x70, count: 1 });
      p.addMmioDevice({ gpa: 0xd0000000, size: 16 });
      p.addMsrDevice({ msr: 0x40000010 });
    });

    it("sizes nothing by an MSR device's count: 1e9 MSRs are refused where each needs an intercept, a range where not", () => {
      const p = make();
      const device = { msr: 0, count: 1e9, read: () => 0n };
      if (p.backend === 'whpx') {
        p.addMsrDevice(device); // unhandled MSRs exit anyway: one range, nothing per MSR
      } else {
        expect(() => p.addMsrDevice(device)).toThrow(AccelUsageError);
        expect(() => p.addMsrDevice(device)).toThrow(/1000000000 outside 0x40000000-0x400000ff; this backend can intercept at most/);
      }
    });

    it('rejects run() misuse and resolves run([]) at once', async () => {
      await expectRunMisuse(make());
    });

    it('refuses calls after close() with AccelUsageError; stop() and close() stay no-ops', async () => {
      const p = make();
      p.close();
      expectRows(() => p, CLOSED_ROWS);
      await expect(p.run()).rejects.toThrow(AccelUsageError);
      p.stop();
      p.close();
    });
  });
}

describe('API edges: create() options on every backend', () => {
  const creates: [string, (opts: unknown) => unknown][] = [
    ['MshvPartition.create', (o) => MshvPartition.create(o as never, new FakeMshvSys())],
    ['WhpxPartition.create', (o) => WhpxPartition.create(o as never, whpxFake())],
    ...(KVM.ok
      ? ([['KvmPartition.create', (o: unknown) => KvmPartition.create(o as never)]] as [string, (opts: unknown) => unknown][])
      : []),
  ];
  const rows: [unknown, RegExp][] = [
    [undefined, /options are required/],
    [null, /options must be an object, not null/],
    [{}, /options.memory must be an array, not undefined/],
    [{ memory: 'lots' }, /options.memory must be an array/],
    [{ memory: [null] }, /options.memory\[0\] must be an object/],
    [{ memory: [{ gpa: 0, size: NaN }] }, /options.memory\[0\].size .* not NaN/],
    [{ memory: [{ gpa: -4096, size: 4096 }] }, /options.memory\[0\].gpa/],
    [{ memory: [{ gpa: '0', size: 4096 }] }, /options.memory\[0\].gpa .* not "0"/],
    [{ memory: [{ gpa: 0, size: 2 ** 53 }] }, /options.memory\[0\].size/],
    [{ memory: new Array(5000).fill({ gpa: 0, size: 4096 }) }, /options.memory has 5000 entries; at most 1024/],
    [{ memory: [{ gpa: 0, size: 4096 }], vcpuCount: 0 }, /options.vcpuCount/],
    [{ memory: [{ gpa: 0, size: 4096 }], vcpuCount: 1.5 }, /options.vcpuCount/],
    [{ memory: [{ gpa: 0, size: 4096 }], vcpuCount: 1e6 }, /options.vcpuCount/],
    [{ memory: [{ gpa: 0, size: 4096 }], userMsrs: [0x1a0, -1] }, /options.userMsrs\[1\]/],
    [{ memory: [{ gpa: 0, size: 4096 }], userMsrs: 0x1a0 }, /options.userMsrs must be an array/],
    [{ memory: [{ gpa: 0, size: 4096 }], logger: 'console' }, /options.logger must be an object/],
  ];
  for (const [create, fn] of creates) {
    it(`${create}: bad options are an AccelUsageError naming the option, before any host call`, () => {
      for (const [opts, message] of rows) {
        let thrown: unknown;
        try {
          fn(opts);
        } catch (e) {
          thrown = e;
        }
        expect(thrown, `${JSON.stringify(opts)?.slice(0, 80)}: ${String(thrown)}`).toBeInstanceOf(AccelUsageError);
        expect((thrown as Error).message).toMatch(new RegExp(`^${create}: `));
        expect((thrown as Error).message).toMatch(message);
      }
    });
  }
});

describe('API edges: MSHV and WHPX backend options (fake layers)', () => {
  it('refuse unknown names, non-u32 lists, an unknown arch and bad GIC parameters (silently accepted or a TypeError before)', () => {
    const memory = [{ gpa: 0, size: 0x10000 }];
    const arm = [{ gpa: 0x4000_0000, size: 0x4000 }];
    const rows: Row<null>[] = [
      [
        'MSHV syntheticFeatures ["nope"]',
        () => MshvPartition.create({ memory, syntheticFeatures: ['nope' as never] }, new FakeMshvSys()),
        AccelUsageError,
        /options.syntheticFeatures\[0\] "nope" is not one of/,
      ],
      [
        'MSHV cpuidLeaves [NaN]',
        () => MshvPartition.create({ memory, cpuidLeaves: [NaN] }, new FakeMshvSys()),
        AccelUsageError,
        /options.cpuidLeaves\[0\] .* not NaN/,
      ],
      [
        'MSHV cpuidLeaves "x"',
        () => MshvPartition.create({ memory, cpuidLeaves: 'x' as never }, new FakeMshvSys()),
        AccelUsageError,
        /options.cpuidLeaves must be an array/,
      ],
      [
        'WHPX arch "mips"',
        () => WhpxPartition.create({ arch: 'mips' as never, memory }, whpxFake()),
        AccelUsageError,
        /options.arch must be 'x64' or 'arm64', not "mips"/,
      ],
      [
        'WHPX cpuidLeaves [-1]',
        () => WhpxPartition.create({ arch: 'x64', memory, cpuidLeaves: [-1] }, whpxFake()),
        AccelUsageError,
        /options.cpuidLeaves\[0\]/,
      ],
      [
        'WHPX syntheticFeatures [5]',
        () => WhpxPartition.create({ arch: 'x64', memory, syntheticFeatures: [5 as never] }, whpxFake()),
        AccelUsageError,
        /options.syntheticFeatures\[0\] 5 is not one of/,
      ],
      [
        'WHPX gic.distributorBase 5',
        () => WhpxPartition.create({ arch: 'arm64', memory: arm, gic: { distributorBase: 5 as never } }, whpxFake()),
        AccelUsageError,
        /options.gic.distributorBase must be a bigint/,
      ],
      [
        'WHPX gic.virtualTimerPpi 40',
        () => WhpxPartition.create({ arch: 'arm64', memory: arm, gic: { virtualTimerPpi: 40 } }, whpxFake()),
        AccelUsageError,
        /options.gic.virtualTimerPpi/,
      ],
      [
        'WHPX overlapping RAM',
        () =>
          WhpxPartition.create(
            {
              arch: 'x64',
              memory: [
                { gpa: 0, size: 0x2000 },
                { gpa: 0x1000, size: 0x1000 },
              ],
            },
            whpxFake(),
          ),
        MemoryMapError,
        /RAM regions overlap/,
      ],
    ];
    expectRows(() => null, rows);
  });
});

describe('RAM regions over 4 GiB on MSHV and WHPX (fake layers)', () => {
  const GiB = 2 ** 30;
  const memory = [
    { gpa: 0, size: 0x10000 },
    { gpa: 4 * GiB, size: 4 * GiB + 0x1000 },
  ];
  it.each([
    ['MSHV', () => MshvPartition.create({ memory }, new FakeMshvSys())],
    ['WHPX', () => WhpxPartition.create({ arch: 'x64', memory }, whpxFake())],
  ])('%s maps a 4 GiB + 4 KiB region as adjacent pieces of at most 4 GiB (Node 20: no larger typed array)', (_name, create) => {
    const p = create();
    opened.push(p);
    expect(p.memory.regions.map((r) => [r.gpa, r.size])).toEqual([
      [0, 0x10000],
      [4 * GiB, 4 * GiB],
      [8 * GiB, 0x1000],
    ]);
    p.memory.writeU32(8 * GiB + 0xffc, 0xfeedf00d);
    p.memory.write(8 * GiB - 2, Uint8Array.of(1, 2, 3, 4));
    const across = new Uint8Array(4);
    p.memory.read(8 * GiB - 2, across);
    expect([p.memory.readU32(8 * GiB + 0xffc), [...across]]).toEqual([0xfeedf00d, [1, 2, 3, 4]]);
  });
});

describe('API edges: exported helpers given the wrong types', () => {
  it('refuse with a typed error instead of a TypeError from inside (or a silent coercion)', () => {
    const rows: Row<null>[] = [
      ['hypervisorVendorLeaf(5)', () => hypervisorVendorLeaf(5 as never, 1), AccelUsageError, /vendor must be a string, not number/],
      [
        'buildCpuidModel(undefined)',
        () => buildCpuidModel(undefined as never, { apicId: 0 }),
        AccelUsageError,
        /supported must be an array/,
      ],
      ['buildCpuidModel apicId NaN', () => buildCpuidModel([], { apicId: NaN }), AccelUsageError, /opts.apicId/],
      [
        'decodeMmioInstruction(undefined)',
        () => decodeMmioInstruction(undefined as never, { long: true } as never),
        MmioDecodeError,
        /bytes must be a Uint8Array/,
      ],
      ['encodeHvMessage(undefined)', () => encodeHvMessage(undefined as never), SynicPostError, /must be \{ type, payload: Uint8Array \}/],
      ['encodeHvMessage payload "abc"', () => encodeHvMessage({ type: 1, payload: 'abc' as never }), SynicPostError, /payload: Uint8Array/],
      ['encodeHvMessage type -1', () => encodeHvMessage({ type: -1, payload: new Uint8Array(4) }), SynicPostError, /type -1 is not a u32/],
      ['new ExitRouter(undefined)', () => new ExitRouter(undefined as never), AccelUsageError, /ram must be an array/],
    ];
    expectRows(() => null, rows);
  });
});

describe('API edges: OffloadedSynicPort', () => {
  const ops = { post: () => 'ok' as const, signal: () => true, requestDeliverable: () => undefined };
  it('refuses a vpCount it would size per-VP backlogs by, and event flags past the page', () => {
    for (const vpCount of [0, 1e9, NaN, 1.5, undefined]) {
      expect(() => new OffloadedSynicPort(ops as never, { vpCount } as never), String(vpCount)).toThrow(SynicPostError);
    }
    expect(() => new OffloadedSynicPort(ops as never, { vpCount: 1, queueLimit: 0 })).toThrow(/queueLimit/);
    const port = new OffloadedSynicPort(ops as never, { vpCount: 1 });
    expect(port.signalEvent(0, 2, 2047)).toBe(true);
    for (const flag of [2048, -1, NaN, 0.5])
      expect(() => port.signalEvent(0, 2, flag), String(flag)).toThrow(/event flag .* is out of range 0..2047/);
  });
});

describeKvm('API edges: the KVM partition', () => {
  const make = (vcpuCount = 1): KvmPartition => {
    const p = KvmPartition.create({ memory: [{ gpa: 0, size: 2 * MiB }], vcpuCount });
    opened.push(p);
    return p;
  };

  it('KvmPartition.create refuses bad KVM options (silently accepted before) with AccelUsageError', () => {
    const base = { memory: [{ gpa: 0, size: MiB }] };
    const rows: [Record<string, unknown>, RegExp][] = [
      [{ pollMicros: NaN }, /options.pollMicros must be a finite number in 0..1000000, not NaN/],
      [{ pollMicros: -1 }, /options.pollMicros/],
      [{ pollMicros: Infinity }, /options.pollMicros/],
      [{ hypercallPort: 0x10000 }, /options.hypercallPort/],
      [{ hypercallPort: '0x3f0' }, /options.hypercallPort .* not "0x3f0"/],
      [{ int3Fixup: 'no' }, /options.int3Fixup must be a boolean/],
      [{ syncRegs: 0 }, /options.syncRegs must be a boolean, not 0/],
      [{ spinIterations: -5 }, /options.spinIterations/],
      [{ spinIterations: 1e12 }, /options.spinIterations/],
      [{ hypervisorLeaves: [{ function: 0x40000000 }] }, /options.hypervisorLeaves\[0\].index must be an integer/],
      [{ customizeCpuid: true }, /options.customizeCpuid must be a function/],
      [
        { hypervisorLeaves: [{ function: 1, index: 0, flags: 0, eax: 0, ebx: 0, ecx: 0, edx: 0 }] },
        /options.hypervisorLeaves\[0\].function 0x1 is outside 0x40000000-0x400000ff/,
      ],
      [{ vcpuCount: 300 }, /options.vcpuCount must be an integer in 1..256/],
    ];
    for (const [extra, message] of rows) {
      expect(() => KvmPartition.create({ ...base, ...extra } as never), JSON.stringify(extra)).toThrow(AccelUsageError);
      expect(() => KvmPartition.create({ ...base, ...extra } as never)).toThrow(message);
    }
    // A RAM map KVM cannot take stays a MemoryMapError (the layout is KVM's to judge).
    expect(() => KvmPartition.create({ memory: [{ gpa: 0x800, size: MiB }] })).toThrow(MemoryMapError);
    expect(() => KvmPartition.create({ memory: [{ gpa: 0, size: 0 }] })).toThrow(MemoryMapError);
  });

  it('refuses bad interrupt, MSI, irqfd, ioeventfd, page-list, XMM and CPUID arguments', () => {
    const p = make(2);
    const v = p.vcpus[0];
    expectRows<KvmPartition>(
      () => p,
      [
        [
          'createIoeventfd space xyz',
          (q) => q.createIoeventfd({ space: 'xyz' as never, address: 0x90, length: 1 }),
          AccelUsageError,
          /spec.space must be 'mmio' or 'pio', not "xyz"/,
        ],
        [
          'createIoeventfd(undefined)',
          (q) => q.createIoeventfd(undefined as never),
          AccelUsageError,
          /createIoeventfd: spec must be an object/,
        ],
        [
          'createIoeventfd pio port 0x10000',
          (q) => q.createIoeventfd({ space: 'pio', address: 0x10000, length: 1 }),
          AccelUsageError,
          /spec.address must be an integer in 0..65535/,
        ],
        [
          'createIoeventfd address NaN',
          (q) => q.createIoeventfd({ space: 'mmio', address: NaN, length: 4 }),
          AccelUsageError,
          /spec.address/,
        ],
        [
          'createIoeventfd length 3',
          (q) => q.createIoeventfd({ space: 'mmio', address: 0xd0000000, length: 3 }),
          AccelUsageError,
          /spec.length must be 0 \(any\), 1, 2, 4 or 8, not 3/,
        ],
        [
          'createIoeventfd datamatch number',
          (q) => q.createIoeventfd({ space: 'pio', address: 0x90, length: 4, datamatch: 5 as never }),
          AccelUsageError,
          /spec.datamatch must be a bigint/,
        ],
        [
          'createIoeventfd datamatch 2^64',
          (q) => q.createIoeventfd({ space: 'pio', address: 0x90, length: 4, datamatch: 1n << 64n }),
          AccelUsageError,
          /spec.datamatch/,
        ],
        [
          'createIoeventfd in RAM',
          (q) => q.createIoeventfd({ space: 'mmio', address: 0x1000, length: 4 }),
          AccelUsageError,
          /lies in guest RAM/,
        ],
        [
          'watch(undefined)',
          (q) => q.createIoeventfd({ space: 'pio', address: 0x91, length: 1 }).watch(undefined as never),
          AccelUsageError,
          /watch\(onWrites\): onWrites must be a function/,
        ],
        ['interrupt vp 2 of 2', (q) => q.interrupt(2, 0x30), AccelUsageError, /APIC id 2 is out of range \(the partition has vCPUs 0..1\)/],
        ['interrupt vp 255 (broadcast)', (q) => q.interrupt(255, 0x30), AccelUsageError, /APIC id 255/],
        ['interrupt vector 15', (q) => q.interrupt(0, 15), AccelUsageError, /interrupt vector 15 must be 16..255/],
        ['interrupt vector NaN', (q) => q.interrupt(0, NaN), AccelUsageError, /interrupt vector NaN/],
        ['createIrqfd vp -1', (q) => q.createIrqfd(-1, 0x30), AccelUsageError, /APIC id -1/],
        ['signalMsi address NaN', (q) => q.signalMsi(NaN, 0x30), AccelUsageError, /signalMsi: address .* not NaN/],
        ['signalMsi data 2^32', (q) => q.signalMsi(0xfee00000, 2 ** 32), AccelUsageError, /signalMsi: data/],
        ['setIrqLine gsi 24 (not an IOAPIC pin)', (q) => q.setIrqLine(24, true), AccelUsageError, /setIrqLine: gsi/],
        ['setIrqLine level 1', (q) => q.setIrqLine(4, 1 as never), AccelUsageError, /level must be a boolean/],
        [
          'mapPageList(5)',
          (q) => q.mapPageList(5 as never),
          AccelUsageError,
          /mapPageList\(pfns\): pfns must be an array of page numbers, not 5/,
        ],
        ['mapPageList([])', (q) => q.mapPageList([]), AccelUsageError, /a page list must have 1..262144 pages, not 0/],
        ['mapPageList([-1])', (q) => q.mapPageList([-1]), AccelUsageError, /PFN 0 is not a non-negative integer/],
        ['mapPageList(["x"])', (q) => q.mapPageList(['x'] as never), AccelUsageError, /PFN 0/],
        [
          'mapPageList(huge)',
          (q) => q.mapPageList({ length: 2 ** 30 } as never),
          AccelUsageError,
          /a page list must have 1..262144 pages, not 1073741824/,
        ],
        ['setXmm(16 bytes)', () => v.setXmm(new Uint8Array(16)), AccelUsageError, /setXmm: xmm must be a Uint8Array of 256 bytes/],
        ['setCpuid(null)', () => v.setCpuid(null as never), AccelUsageError, /setCpuid: entries must be an array/],
        [
          'setCpuid eax -1',
          () => v.setCpuid([{ function: 0, index: 0, flags: 0, eax: -1, ebx: 0, ecx: 0, edx: 0 }]),
          AccelUsageError,
          /entries\[0\].eax/,
        ],
        [
          'setCpuid 2000 entries',
          () => v.setCpuid(new Array(2000).fill({ function: 0, index: 0, flags: 0, eax: 0, ebx: 0, ecx: 0, edx: 0 })),
          AccelUsageError,
          /has 2000 entries; at most 1024/,
        ],
        ['addMsrDevice in the x2APIC range', (q) => q.addMsrDevice({ msr: 0x830 }), AccelUsageError, /x2APIC MSRs \(0x800-0x8ff\)/],
        ['addMsrDevice beyond the filter', (q) => q.addMsrDevice({ msr: 0x100, count: 16 }), AccelUsageError, /at most 14 more/],
      ],
    );
    // A refused MSR device adds nothing: the same MSR can be added properly afterwards.
    p.addMsrDevice({ msr: 0x100, count: 14 }); // 15 filter ranges, one of them IA32_LSTAR for the SYSCALL fixup
    expect(() => p.addMsrDevice({ msr: 0x200 })).toThrow(/at most 0 more/);
  });

  it('addMsrDevice with a count of 1e9 or 1e6 is refused before anything is sized by it (it killed the process)', () => {
    for (const count of ['1000000000', '1000000']) {
      const r = runChild('msr-count.mjs', ['0', count]);
      expect(r.status, describeChild(r)).toBe(0);
      expect(r.json).toEqual({
        name: 'AccelUsageError',
        message: `addMsrDevice: MSRs 0x0+${count} include ${count} outside 0x40000000-0x400000ff; this backend can intercept at most 14 more`,
      });
    }
  });
});
