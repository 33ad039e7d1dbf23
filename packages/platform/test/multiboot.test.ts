/**
 * Multiboot (v1) loader: header and info structure, fw_cfg and isa-debug-exit devices (no KVM
 * needed), then a freestanding multiboot test kernel booted on KVM the way kvm-unit-tests runs
 * under QEMU (ELF32 at 4 MiB, 32-bit entry, fw_cfg CPU count, an AP started with INIT/SIPI).
 */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '@hvemu/memory';
import { KvmPartition } from '@hvemu/accel';
import { BootImageError } from '../src/errors.js';
import { buildFreestandingImage } from '../src/build.js';
import {
  bootMultiboot,
  FwCfg,
  FW_CFG_NB_CPUS,
  FW_CFG_PORT,
  FW_CFG_SIGNATURE,
  IsaDebugExit,
  MAX_COMMAND_LINE,
  MULTIBOOT_INFO_GPA,
  MultibootPlatform,
  parseMultibootHeader,
  writeMultibootInfo,
} from '../src/multiboot.js';
import { describeKvm, MiB } from './helpers/kvm.js';

const KERNEL_DIR = fileURLToPath(new URL('./guests/multiboot/', import.meta.url));

function buildKernel(): Uint8Array {
  return buildFreestandingImage({
    name: 'multiboot-kernel',
    sources: [join(KERNEL_DIR, 'entry.S'), join(KERNEL_DIR, 'kernel.c')],
    linkScript: join(KERNEL_DIR, 'link.ld'),
    flags: ['-m32'],
  });
}

function header(flags: number, at = 64, size = 256): Uint8Array {
  const image = new Uint8Array(size);
  const v = new DataView(image.buffer);
  v.setUint32(at, 0x1badb002, true);
  v.setUint32(at + 4, flags, true);
  v.setUint32(at + 8, -(0x1badb002 + flags) >>> 0, true);
  return image;
}

/** A one-segment ELF32 i386 image (ELF header, one PT_LOAD of 0x2000 bytes at `paddr`) with a multiboot header at 96. */
function elf32WithHeader(paddr: number): Uint8Array {
  const image = header(0x2, 96, 128);
  const v = new DataView(image.buffer);
  v.setUint32(0, 0x7f454c46);
  image[4] = 1; // ELF32
  image[5] = 1; // little-endian
  v.setUint16(18, 3, true); // EM_386
  v.setUint32(24, paddr, true); // entry
  v.setUint32(28, 52, true); // phoff
  v.setUint16(42, 32, true); // phentsize
  v.setUint16(44, 1, true); // phnum
  v.setUint32(52, 1, true); // PT_LOAD
  v.setUint32(52 + 12, paddr, true);
  v.setUint32(52 + 16, 128, true); // filesz
  v.setUint32(52 + 20, 0x2000, true); // memsz
  return image;
}

describe('multiboot loader (model)', () => {
  it('finds the header by magic and checksum, and refuses what it cannot honour', () => {
    expect(parseMultibootHeader(header(0x3, 128))).toEqual({ offset: 128, flags: 0x3 });
    const badSum = header(0x2);
    badSum[64 + 8] ^= 1;
    expect(() => parseMultibootHeader(badSum)).toThrow(BootImageError);
    expect(() => parseMultibootHeader(header(0x2, 8192 + 64, 9000))).toThrow(/no multiboot header/);
    expect(() => parseMultibootHeader(header(1 << 16))).toThrow(/a\.out kludge/);
    expect(() => parseMultibootHeader(header(1 << 2))).toThrow(/video mode/);
    expect(() => parseMultibootHeader(header(1 << 5))).toThrow(/does not know/);
    expect(() => parseMultibootHeader(new Uint8Array(5))).toThrow(BootImageError);
  });

  it('writes mem_lower/mem_upper, the command line and a memory map', () => {
    const mem = new GuestMemory([
      { gpa: 0, size: 6 * MiB, buffer: new ArrayBuffer(6 * MiB) },
      { gpa: 8 * MiB, size: 1 * MiB, buffer: new ArrayBuffer(1 * MiB) },
    ]);
    const at = writeMultibootInfo(mem, 'console=ttyS0 exit=3');
    expect(at).toBe(MULTIBOOT_INFO_GPA);
    expect(mem.readU32(at) & 0x45).toBe(0x45); // memory, cmdline, mmap
    expect(mem.readU32(at + 4)).toBe(640);
    expect(mem.readU32(at + 8)).toBe(5 * 1024); // 1 MiB up to the hole at 6 MiB
    const cmd = mem.readU32(at + 16);
    expect(new TextDecoder().decode(mem.bytes(cmd, 20))).toBe('console=ttyS0 exit=3');
    expect(mem.readU8(cmd + 20)).toBe(0);
    expect(mem.readU32(at + 44)).toBe(2 * 24);
    const map = mem.readU32(at + 48);
    expect([mem.readU32(map), mem.readU64(map + 4), mem.readU64(map + 12), mem.readU32(map + 20)]).toEqual([20, 0n, BigInt(6 * MiB), 1]);
    expect(mem.readU64(map + 24 + 4)).toBe(BigInt(8 * MiB));
    expect(() => writeMultibootInfo(mem, 'x'.repeat(MAX_COMMAND_LINE + 1))).toThrow(/at most/);
    expect(() => writeMultibootInfo(mem, 'a\0b')).toThrow(/NUL/);
  });

  it('serves fw_cfg items byte by byte through 0x510/0x511, zeros past the end', () => {
    const fw = new FwCfg({ cpus: 3, ramSize: 16 * MiB });
    const readItem = (key: number, n: number): number[] => {
      fw.write(FW_CFG_PORT, 2, key);
      return Array.from({ length: n }, () => fw.read(FW_CFG_PORT + 1));
    };
    expect(String.fromCharCode(...readItem(FW_CFG_SIGNATURE, 4))).toBe('QEMU');
    expect(readItem(FW_CFG_NB_CPUS, 3)).toEqual([3, 0, 0]);
    expect(readItem(0x1234, 2)).toEqual([0, 0]); // unknown key
    expect(readItem(0x10000 | FW_CFG_NB_CPUS, 1)).toEqual([3]); // selector is 16 bits wide
    expect(fw.read(FW_CFG_PORT)).toBe(0);
  });

  it('turns an isa-debug-exit write into QEMU exit status (value << 1) | 1 and stops the partition', () => {
    let stops = 0;
    const dev = new IsaDebugExit({ stop: () => void stops++ });
    expect(dev.write(0xf4, 4, 21, 1)).toEqual({ stop: true });
    dev.write(0xf4, 4, 5, 0); // later writes (another vCPU racing) do not overwrite the first
    expect(dev.result).toEqual({ value: 21, status: 43, vp: 1 });
    expect(stops).toBe(2);
    const big = new IsaDebugExit({ stop: () => {} });
    big.write(0xf4, 4, 0xffffffff, 0);
    expect(big.result?.status).toBe(0xffffffff);
  });
});

describeKvm('multiboot loader (KVM)', () => {
  it('boots a multiboot ELF32 kernel at 4 MiB: info, command line, fw_cfg, INIT/SIPI-started AP, exit status', async () => {
    const p = KvmPartition.create({ vcpuCount: 2, memory: [{ gpa: 0, size: 8 * MiB }] });
    try {
      const platform = new MultibootPlatform(p);
      const boot = bootMultiboot(p, buildKernel(), { commandLine: 'console=ttyS0 exit=21' });
      expect(boot.low).toBe(0x400000);
      const regs = p.vcpus[0].getRegisters();
      expect([regs.rax, regs.rbx]).toEqual([0x2badb002n, BigInt(MULTIBOOT_INFO_GPA)]);
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          p.stop();
          reject(new Error(`multiboot kernel timed out; serial: ${platform.serial.text()}`));
        }, 20_000);
      });
      const outcomes = await Promise.race([p.run(), timeout]).finally(() => clearTimeout(timer));
      expect(platform.serial.text()).toBe("multiboot: cmdline='console=ttyS0 exit=21' mem_upper=7168 fw_cfg=QEMU cpus=2 ap=1\n");
      expect(platform.debugExit.result).toEqual({ value: 21, status: 43, vp: 0 });
      // Both vCPUs ended without error. The BSP's cause is 'handler-stop' or 'stop-requested'
      // depending on whether its thread read the answer before it saw the partition-wide stop.
      expect(outcomes.map((o) => [o.vp, o.error])).toEqual([
        [0, undefined],
        [1, undefined],
      ]);
      expect(outcomes[1].cause).toBe('stop-requested');
    } finally {
      p.close();
    }
  });

  it('rejects an image without a multiboot header or one that overlaps the info area', () => {
    const p = KvmPartition.create({ memory: [{ gpa: 0, size: 8 * MiB }] });
    try {
      expect(() => bootMultiboot(p, new Uint8Array(4096))).toThrow(BootImageError);
      expect(() => bootMultiboot(p, elf32WithHeader(0x9000))).toThrow(/overlaps the multiboot info area/);
      expect(() => bootMultiboot(p, elf32WithHeader(0x7ff000))).toThrow(/not in guest RAM/);
      expect(bootMultiboot(p, elf32WithHeader(0x400000)).entry).toBe(0x400000);
    } finally {
      p.close();
    }
  });
});
