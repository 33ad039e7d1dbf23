/**
 * The loaders and test-platform devices without a guest: long-mode tables, ELF checks, the
 * assertion port, and the exported helpers given bad arguments (each must raise a typed error
 * naming the argument, never a TypeError from inside). Moved from accel's model and API-edge
 * tests with the code they test.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { GuestMemory } from '@hvemu/memory';
import { AccelUsageError, KvmPartition } from '@hvemu/accel';
import { BootImageError } from '../src/errors.js';
import { loadElf, loadElf64 } from '../src/elf.js';
import { enterLongMode, writeLongModeTables, PML4_GPA, GDT_GPA } from '../src/long-mode.js';
import { MultibootPlatform, parseMultibootHeader, writeMultibootInfo } from '../src/multiboot.js';
import { AssertPort, TestPlatform } from '../src/platform.js';
import { describeKvm, MiB } from './helpers/kvm.js';
import { expectRows, type Row } from '../../../test/api-edges.js';

describe('test-guest loader', () => {
  it('writes identity-mapped page tables and a GDT', () => {
    const mem = GuestMemory.createShared(1 << 20);
    writeLongModeTables(mem);
    expect(mem.readU64(PML4_GPA)).toBe(0x2003n);
    expect(mem.readU64(0x3000 + 3 * 0x1000 + 511 * 8)).toBe(0xffe00000n | 0x93n); // last 2 MiB below 4 GiB, uncached
    expect(mem.readU64(GDT_GPA + 8)).toBe(0x00af9a000000ffffn);
  });

  it('rejects ELF images whose segments point outside guest RAM or the file', () => {
    const mem = GuestMemory.createShared(1 << 20);
    const elf = new Uint8Array(64 + 56);
    const v = new DataView(elf.buffer);
    v.setUint32(0, 0x7f454c46);
    elf[4] = 2;
    elf[5] = 1;
    v.setUint16(18, 62, true);
    v.setBigUint64(24, 0x1000n, true);
    v.setBigUint64(32, 64n, true);
    v.setUint16(54, 56, true);
    v.setUint16(56, 1, true);
    v.setUint32(64, 1, true); // PT_LOAD
    v.setBigUint64(64 + 24, 0x200000n, true); // paddr beyond the 1 MiB of RAM
    v.setBigUint64(64 + 40, 0x1000n, true);
    expect(() => loadElf64(mem, elf)).toThrow(/not in guest RAM/);
    v.setBigUint64(64 + 24, 0x1000n, true);
    v.setBigUint64(64 + 32, 0x10000n, true); // filesz beyond the file
    v.setBigUint64(64 + 40, 0x10000n, true);
    expect(() => loadElf64(mem, elf)).toThrow(/exceeds the file/);
    expect(() => loadElf64(mem, new Uint8Array(10))).toThrow(/bad magic/);
  });

  it('reads guest assertion reports through bounds-checked memory, surviving bad pointers', () => {
    const mem = GuestMemory.createShared(1 << 20);
    const port = new AssertPort(mem);
    mem.write(0x2000, new TextEncoder().encode('a.c\0'));
    mem.write(0x2100, new TextEncoder().encode('x == 1\0'));
    mem.writeU64(0x1000, 0x2000n);
    mem.writeU64(0x1008, 0x2100n);
    mem.writeU32(0x1010, 42);
    expect(port.write(0xf6, 4, 0x1000, 0)).toEqual({ stop: true });
    mem.writeU64(0x1000, 0xdead00000000n);
    port.write(0xf6, 4, 0x1000, 1);
    port.write(0xf6, 4, 0xfffffff0, 2);
    expect(port.failures).toEqual([
      { vp: 0, file: 'a.c', line: 42, expression: 'x == 1' },
      { vp: 1, file: '<bad pointer>', line: 0, expression: '<bad pointer>' },
      { vp: 2, file: '<bad pointer>', line: 0, expression: '<bad pointer>' },
    ]);
  });
});

describe('API edges: loaders and platform devices given the wrong types', () => {
  it('refuse with a typed error instead of a TypeError from inside (or a silent coercion)', () => {
    const memory = GuestMemory.createShared(1 << 20);
    const rows: Row<null>[] = [
      ['loadElf64(undefined)', () => loadElf64(memory, undefined as never), AccelUsageError, /loadElf64: image must be a Uint8Array/],
      ['loadElf("x")', () => loadElf(memory, 'x' as never), AccelUsageError, /loadElf: image must be a Uint8Array .* not string/],
      [
        'parseMultibootHeader(undefined)',
        () => parseMultibootHeader(undefined as never),
        BootImageError,
        /a multiboot image must be a Uint8Array/,
      ],
      [
        'writeMultibootInfo command line {}',
        () => writeMultibootInfo(memory, {} as never),
        BootImageError,
        /the command line must be a string, not object/,
      ],
      [
        'new TestPlatform(undefined)',
        () => new TestPlatform(undefined as never),
        AccelUsageError,
        /new TestPlatform: partition must be a partition/,
      ],
      [
        'new MultibootPlatform({})',
        () => new MultibootPlatform({} as never),
        AccelUsageError,
        /new MultibootPlatform: partition must be a partition/,
      ],
      [
        'enterLongMode(null)',
        () => enterLongMode(null as never, 0x100000),
        AccelUsageError,
        /enterLongMode: partition must be a partition .*, not null/,
      ],
      ['writeLongModeTables(undefined)', () => writeLongModeTables(undefined as never), AccelUsageError, /memory must be a GuestMemory/],
    ];
    expectRows(() => null, rows);
  });
});

const opened: KvmPartition[] = [];
afterEach(() => {
  for (const p of opened.splice(0)) p.close();
});

describeKvm('API edges: the loaders on a KVM partition', () => {
  const make = (vcpuCount = 1): KvmPartition => {
    const p = KvmPartition.create({ memory: [{ gpa: 0, size: 2 * MiB }], vcpuCount });
    opened.push(p);
    return p;
  };

  it('enterLongMode refuses a bad entry or vCPU list before touching the partition', () => {
    const p = make(2);
    for (const entry of [NaN, -1, 1.5, 2 ** 60])
      expect(() => enterLongMode(p, entry), String(entry)).toThrow(/enterLongMode: entry must be a non-negative integer address/);
    for (const vps of [[2], ['0'], [0.5]])
      expect(() => enterLongMode(p, 0x100000, vps as never), String(vps)).toThrow(/enterLongMode: no vCPU/);
    expect(p.memory.readU32(0x1000)).toBe(0); // the page tables were not written
  });
});
