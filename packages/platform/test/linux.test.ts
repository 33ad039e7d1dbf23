/**
 * The Linux loader on synthetic kernels built here: a tiny ELF64 vmlinux with a PVH note and
 * PT_LOAD segments, and a fake bzImage with a valid setup header. No real kernel boots in
 * these tests; on KVM two tiny entry stubs check the entry state by running it.
 */
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '@hvemu/memory';
import { KvmPartition, type Registers, type Segment, type SpecialRegisters } from '@hvemu/accel';
import {
  BOOT_E820_ENTRY,
  BOOT_PARAMS,
  BOOT_PARAMS_GPA,
  BootImageError,
  bootLinux,
  buildE820Map,
  HVM_MEMMAP_TABLE_ENTRY,
  HVM_MODLIST_ENTRY,
  HVM_START_INFO,
  LINUX_CMDLINE_GPA,
  LinuxBootError,
  loadLinux,
  parseLinuxKernel,
  PVH_START_INFO_GPA,
  SETUP_HEADER,
  TestPlatform,
  type LoadablePartition,
} from '../src/index.js';
import { describeKvm, MiB } from './helpers/kvm.js';
import { makeVmlinux } from '../../../test/linux-images.js';
import { resetSegment } from '../../../test/api-edges.js';

// ---- synthetic images ---------------------------------------------------------------------

const pattern = (n: number, seed: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);

/** A bzImage: boot sector with the setup header, `setupSects` sectors of setup, then `payload`. */
function makeBzImage(opts: {
  payload: Uint8Array;
  header?: Partial<ReturnType<typeof SETUP_HEADER.decode>>;
  setupSects?: number;
  hdrEndByte?: number;
}): Uint8Array {
  const setupSects = opts.setupSects ?? 1;
  const out = new Uint8Array((setupSects + 1) * 512 + opts.payload.length);
  const hdr = SETUP_HEADER.encodeNew({
    setup_sects: setupSects,
    syssize: Math.ceil(opts.payload.length / 16),
    boot_flag: 0xaa55,
    jump: 0xeb | ((opts.hdrEndByte ?? 0x6a) << 8), // jmp short: byte 0x201 + 0x202 = end of header
    header: 0x53726448,
    version: 0x020f,
    loadflags: 0x01, // LOADED_HIGH
    code32_start: 0x100000,
    initrd_addr_max: 0x7fffffff,
    kernel_alignment: 0x200000,
    relocatable_kernel: 1,
    min_alignment: 21,
    xloadflags: 0x03, // XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G
    cmdline_size: 2047,
    pref_address: 0x1000000n,
    init_size: 0x200000,
    ...opts.header,
  });
  out.set(hdr, 0x1f1);
  out[0x1ef] = 0xff; // the sentinel: must not reach boot_params
  out.set(opts.payload, (setupSects + 1) * 512);
  return out;
}

// ---- a register-holding fake partition ----------------------------------------------------------

const zeroSegment: Segment = resetSegment();

function fakePartition(memory: GuestMemory): LoadablePartition & { regs: () => Registers; sregs: () => SpecialRegisters } {
  let regs = {} as Registers;
  let sregs: SpecialRegisters = {
    cs: zeroSegment,
    ds: zeroSegment,
    es: zeroSegment,
    fs: zeroSegment,
    gs: zeroSegment,
    ss: zeroSegment,
    tr: zeroSegment,
    ldt: zeroSegment,
    gdt: { base: 0n, limit: 0xffff },
    idt: { base: 0n, limit: 0xffff },
    cr0: 0x60000010n,
    cr2: 0n,
    cr3: 0n,
    cr4: 0n,
    cr8: 0n,
    efer: 0n,
    apicBase: 0xfee00900n,
  };
  const vcpu = {
    index: 0,
    getRegisters: () => regs,
    setRegisters: (r: Registers) => void (regs = r),
    getSpecialRegisters: () => sregs,
    setSpecialRegisters: (s: SpecialRegisters) => void (sregs = s),
  };
  return { memory, vcpus: [vcpu as unknown as LoadablePartition['vcpus'][number]], regs: () => regs, sregs: () => sregs };
}

const ram = (size: number): GuestMemory => GuestMemory.createShared(size);
const read = (m: GuestMemory, gpa: number, n: number): Uint8Array => {
  const b = new Uint8Array(n);
  m.read(gpa, b);
  return b;
};
const cstring = (m: GuestMemory, gpa: number): string => {
  const b = read(m, gpa, 4096);
  return new TextDecoder().decode(b.subarray(0, b.indexOf(0)));
};

// ---- tests ----------------------------------------------------------------------------------

describe('Linux boot structures', () => {
  it('have the kernel header sizes and offsets', () => {
    expect(BOOT_PARAMS.size).toBe(4096);
    expect(SETUP_HEADER.size).toBe(0x7b);
    expect(BOOT_PARAMS.offsetOf.hdr).toBe(0x1f1);
    expect(BOOT_PARAMS.offsetOf.acpi_rsdp_addr).toBe(0x70);
    expect(BOOT_PARAMS.offsetOf.e820_entries).toBe(0x1e8);
    expect(BOOT_PARAMS.offsetOf.sentinel).toBe(0x1ef);
    expect(BOOT_PARAMS.offsetOf.e820_table).toBe(0x2d0);
    expect(BOOT_PARAMS.offsetOf.ext_cmd_line_ptr).toBe(0xc8);
    // setup_header fields at their boot.rst file offsets (0x1f1 + offset in the struct).
    const at = (f: keyof typeof SETUP_HEADER.offsetOf): number => 0x1f1 + SETUP_HEADER.offsetOf[f];
    expect([at('boot_flag'), at('header'), at('version'), at('type_of_loader'), at('loadflags')]).toEqual([
      0x1fe, 0x202, 0x206, 0x210, 0x211,
    ]);
    expect([at('code32_start'), at('ramdisk_image'), at('ramdisk_size'), at('cmd_line_ptr'), at('initrd_addr_max')]).toEqual([
      0x214, 0x218, 0x21c, 0x228, 0x22c,
    ]);
    expect([at('kernel_alignment'), at('relocatable_kernel'), at('xloadflags'), at('cmdline_size')]).toEqual([0x230, 0x234, 0x236, 0x238]);
    expect([at('setup_data'), at('pref_address'), at('init_size'), at('kernel_info_offset')]).toEqual([0x250, 0x258, 0x260, 0x268]);
    expect(BOOT_E820_ENTRY.size).toBe(20);
    expect(HVM_START_INFO.size).toBe(56);
    expect(HVM_MODLIST_ENTRY.size).toBe(32);
    expect(HVM_MEMMAP_TABLE_ENTRY.size).toBe(24);
    expect(HVM_START_INFO.offsetOf.memmap_paddr).toBe(40);
  });
});

describe('buildE820Map', () => {
  it('lists RAM as type 1 with declared ranges cut out and typed', () => {
    const m = GuestMemory.createShared([
      { gpa: 0, size: 16 * MiB },
      { gpa: 0x1_0000_0000, size: 2 * MiB },
    ]);
    const map = buildE820Map(m, [
      { gpa: 0xe0000, size: 0x20000, type: 3 },
      { gpa: 0xfec00000, size: 0x1000, type: 2 },
      { gpa: 0xf00000, size: 0x100000, type: 4 }, // the top of RAM
    ]);
    expect(map).toEqual([
      { addr: 0, size: 0xe0000, type: 1 },
      { addr: 0xe0000, size: 0x20000, type: 3 },
      { addr: 0x100000, size: 0xe00000, type: 1 },
      { addr: 0xf00000, size: 0x100000, type: 4 },
      { addr: 0xfec00000, size: 0x1000, type: 2 },
      { addr: 0x1_0000_0000, size: 2 * MiB, type: 1 },
    ]);
    expect(buildE820Map(ram(MiB))).toEqual([{ addr: 0, size: MiB, type: 1 }]);
  });

  it('refuses overlapping or malformed ranges', () => {
    const m = ram(MiB);
    expect(() =>
      buildE820Map(m, [
        { gpa: 0x1000, size: 0x2000, type: 2 },
        { gpa: 0x2000, size: 0x1000, type: 3 },
      ]),
    ).toThrow(/overlap/);
    expect(() => buildE820Map(m, [{ gpa: 0x1000, size: 0x1000, type: 1 }])).toThrow(LinuxBootError);
    expect(() => buildE820Map(m, [{ gpa: -1, size: 0x1000, type: 2 }])).toThrow(/gpa/);
    expect(() => buildE820Map(m, [{ gpa: 0, size: 0, type: 2 }])).toThrow(/size/);
    expect(() => buildE820Map(m, 'x' as never)).toThrow(LinuxBootError);
  });
});

const text = pattern(0x3000, 1);
const data = pattern(0x800, 2);
const vmlinux = (): Uint8Array =>
  makeVmlinux({
    entry: 0x1000040,
    segments: [
      { paddr: 0x1000000, data: text },
      { paddr: 0x1200000, data, memsz: 0x2000 },
    ],
  });

describe('PVH (vmlinux)', () => {
  it('is detected from the note', () => {
    const k = parseLinuxKernel(vmlinux());
    expect(k.kind).toBe('pvh');
    expect(k.kind === 'pvh' && [k.entry, k.low, k.high]).toEqual([0x1000040, 0x1000000, 0x1202000]);
    const k4 = parseLinuxKernel(makeVmlinux({ entry: 0x1000010, descsz: 4, segments: [{ paddr: 0x1000000, data: text }] }));
    expect(k4.kind === 'pvh' && k4.entry).toBe(0x1000010);
  });

  it('loads the segments, hvm_start_info, memmap, modlist and command line, and sets the 32-bit entry state', () => {
    const m = ram(32 * MiB);
    m.bytes(0x1200000, 0x2000).fill(0xcc); // the bss must be zeroed
    const p = fakePartition(m);
    const initrd = pattern(5000, 9);
    const boot = bootLinux(p, vmlinux(), {
      commandLine: 'console=ttyS0 panic=-1',
      initrd,
      acpiRsdp: 0xe0000,
      reserved: [{ gpa: 0xe0000, size: 0x20000, type: 3 }],
    });
    expect(boot.kind).toBe('pvh');
    expect(read(m, 0x1000000, text.length)).toEqual(text);
    expect(read(m, 0x1200000, data.length)).toEqual(data);
    expect(read(m, 0x1200000 + data.length, 0x2000 - data.length).every((b) => b === 0)).toBe(true);

    const info = HVM_START_INFO.decode(read(m, PVH_START_INFO_GPA, HVM_START_INFO.size));
    expect(info).toMatchObject({
      magic: 0x336ec578,
      version: 1,
      flags: 0,
      nr_modules: 1,
      rsdp_paddr: 0xe0000n,
      memmap_entries: 3,
      reserved: 0,
    });
    expect(cstring(m, Number(info.cmdline_paddr))).toBe('console=ttyS0 panic=-1');
    const mod = HVM_MODLIST_ENTRY.decode(read(m, Number(info.modlist_paddr), HVM_MODLIST_ENTRY.size));
    expect(mod).toEqual({ paddr: BigInt(boot.initrd!.gpa), size: 5000n, cmdline_paddr: 0n, reserved: 0n });
    // At the top of RAM, page-aligned, holding the bytes.
    expect(boot.initrd!.gpa).toBe(32 * MiB - 0x2000);
    expect(read(m, boot.initrd!.gpa, initrd.length)).toEqual(initrd);
    const memmap = [0, 1, 2].map((i) => HVM_MEMMAP_TABLE_ENTRY.decode(read(m, Number(info.memmap_paddr) + i * 24, 24)));
    expect(memmap).toEqual([
      { addr: 0n, size: 0xe0000n, type: 1, reserved: 0 },
      { addr: 0xe0000n, size: 0x20000n, type: 3, reserved: 0 },
      { addr: 0x100000n, size: BigInt(31 * MiB), type: 1, reserved: 0 },
    ]);

    const s = p.sregs();
    expect([s.cr0 & 1n, s.cr0 & 0x80000000n, s.cr4, s.efer]).toEqual([1n, 0n, 0n, 0n]);
    expect(s.cs).toMatchObject({ base: 0n, limit: 0xffffffff, type: 0xb, db: true, l: false, s: true, present: true });
    for (const seg of [s.ds, s.es, s.ss]) expect(seg).toMatchObject({ base: 0n, limit: 0xffffffff, type: 0x3, db: true, s: true });
    expect(s.tr).toMatchObject({ base: 0n, limit: 0x67, type: 0xb, s: false, present: true });
    const r = p.regs();
    expect([r.rip, r.rbx, r.rflags]).toEqual([0x1000040n, BigInt(PVH_START_INFO_GPA), 2n]);
  });

  it('leaves modlist and rsdp at 0 without an initrd or RSDP', () => {
    const m = ram(32 * MiB);
    const boot = loadLinux(m, vmlinux());
    const info = HVM_START_INFO.decode(read(m, boot.bootInfoGpa, HVM_START_INFO.size));
    expect(info).toMatchObject({ nr_modules: 0, modlist_paddr: 0n, rsdp_paddr: 0n, memmap_entries: 1 });
    expect(cstring(m, LINUX_CMDLINE_GPA)).toBe('');
    expect(boot.initrd).toBeUndefined();
  });
});

const payload = pattern(0x4000, 5);

describe('bzImage (64-bit boot protocol)', () => {
  it('is detected from the header', () => {
    const k = parseLinuxKernel(makeBzImage({ payload }));
    expect(k.kind).toBe('bzimage');
    expect(k.kind === 'bzimage' && [k.payloadOffset, k.payloadSize]).toEqual([1024, 0x4000]);
  });

  it('fills boot_params, loads the kernel at 1 MiB and enters at +0x200 in long mode with RSI = boot_params', () => {
    const m = ram(64 * MiB);
    m.bytes(BOOT_PARAMS_GPA, 4096).fill(0xee);
    const p = fakePartition(m);
    const initrd = pattern(0x1800, 3);
    const boot = bootLinux(p, makeBzImage({ payload }), {
      commandLine: 'console=ttyS0',
      initrd,
      acpiRsdp: 0xe0000,
      reserved: [{ gpa: 0xe0000, size: 0x20000, type: 3 }],
    });
    expect(boot).toMatchObject({
      kind: 'bzimage',
      entry: 0x100200,
      bootInfoGpa: BOOT_PARAMS_GPA,
      kernel: { low: 0x100000, high: 0x1200000 },
    });
    expect(read(m, 0x100000, payload.length)).toEqual(payload);
    const bp = BOOT_PARAMS.decode(read(m, BOOT_PARAMS_GPA, 4096));
    expect(bp.sentinel).toBe(0);
    expect(bp.acpi_rsdp_addr).toBe(0xe0000n);
    expect(bp.e820_entries).toBe(3);
    expect([0, 1, 2].map((i) => BOOT_E820_ENTRY.decode(bp.e820_table, i * 20))).toEqual([
      { addr: 0n, size: 0xe0000n, type: 1 },
      { addr: 0xe0000n, size: 0x20000n, type: 3 },
      { addr: 0x100000n, size: BigInt(63 * MiB), type: 1 },
    ]);
    expect(bp.screen_info.every((b) => b === 0) && bp.efi_info.every((b) => b === 0)).toBe(true);
    const hdr = SETUP_HEADER.decode(bp.hdr);
    expect(hdr).toMatchObject({
      type_of_loader: 0xff,
      loadflags: 0x01,
      cmd_line_ptr: LINUX_CMDLINE_GPA,
      ramdisk_image: boot.initrd!.gpa,
      ramdisk_size: 0x1800,
      code32_start: 0x100000,
      header: 0x53726448,
      version: 0x020f,
      init_size: 0x200000,
      kernel_alignment: 0x200000,
    });
    expect([bp.ext_ramdisk_image, bp.ext_ramdisk_size, bp.ext_cmd_line_ptr]).toEqual([0, 0, 0]);
    // initrd below initrd_addr_max and 4 GiB: at the top of the 64 MiB.
    expect(boot.initrd!.gpa).toBe(64 * MiB - 0x2000);
    expect(read(m, boot.initrd!.gpa, initrd.length)).toEqual(initrd);
    expect(cstring(m, LINUX_CMDLINE_GPA)).toBe('console=ttyS0');

    const s = p.sregs();
    expect(s.cs).toMatchObject({ selector: 0x10, l: true, db: false, type: 0xb, present: true });
    expect(s.ds).toMatchObject({ selector: 0x18, type: 0x3, base: 0n, limit: 0xffffffff });
    expect(s.ss.selector).toBe(0x18);
    expect([s.cr0 & 0x80000001n, s.cr4 & 0x20n, s.efer & 0x500n, s.cr3]).toEqual([0x80000001n, 0x20n, 0x500n, 0x1000n]);
    // GDT descriptors at __BOOT_CS / __BOOT_DS; identity map: PML4 -> PDPT -> 2 MiB pages.
    expect(m.readU64(Number(s.gdt.base) + 0x10)).toBe(0x00af9b000000ffffn);
    expect(m.readU64(Number(s.gdt.base) + 0x18)).toBe(0x00cf93000000ffffn);
    const pdpt = Number(m.readU64(0x1000) & ~0xfffn);
    const pd = Number(m.readU64(pdpt) & ~0xfffn);
    expect(m.readU64(pd + 8 * 8)).toBe(0x1000000n | 0x83n);
    const r = p.regs();
    expect([r.rip, r.rsi, r.rflags]).toEqual([0x100200n, BigInt(BOOT_PARAMS_GPA), 2n]);
  });

  it('keeps the initrd out of the decompression range and below initrd_addr_max', () => {
    const m = ram(64 * MiB);
    const bz = makeBzImage({ payload, header: { initrd_addr_max: 0x11fffff } });
    // Below 0x1200000 and outside [0x1000000, 0x1200000) and [0x100000, 0x104000).
    const boot = loadLinux(m, bz, { initrd: pattern(0x3000, 1) });
    expect(boot.initrd!.gpa).toBe(0x1000000 - 0x3000);
  });

  it('refuses a kernel whose decompression range is not RAM', () => {
    expect(() => loadLinux(ram(16 * MiB), makeBzImage({ payload }))).toThrow(/decompresses to \[0x1000000/);
  });
});

describe('hostile and unsupported files', () => {
  const m = ram(32 * MiB);
  const untouched = new Uint8Array(32 * MiB).fill(0x5a);
  const check = (image: Uint8Array, message: RegExp): void => {
    m.bytes(0, 32 * MiB).fill(0x5a);
    let error: unknown;
    try {
      loadLinux(m, image, { commandLine: 'x' });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(LinuxBootError);
    expect(error).toBeInstanceOf(BootImageError);
    expect((error as Error).message).toMatch(message);
    // Checked before writing: memory untouched.
    expect(Buffer.compare(m.bytes(0, 32 * MiB), untouched)).toBe(0);
  };

  it('names what was expected for anything else', () => {
    check(new Uint8Array(0), /expected an uncompressed ELF64 vmlinux with a PVH entry note .* or a bzImage/);
    check(new Uint8Array(8192), /not a Linux kernel/);
    expect(() => loadLinux(m, 'vmlinux' as never)).toThrow(LinuxBootError);
  });

  it('refuses bad ELF files', () => {
    const good = vmlinux();
    check(good.subarray(0, 40), /truncated ELF header/);
    const elf32 = good.slice();
    elf32[4] = 1;
    check(elf32, /not an ELF64/);
    check(makeVmlinux({ entry: 0x1000040, note: false, segments: [{ paddr: 0x1000000, data: text }] }), /no PVH entry note.*CONFIG_PVH/);
    check(makeVmlinux({ entry: 0x1000040, noteName: 'Xeo\0', segments: [{ paddr: 0x1000000, data: text }] }), /no PVH entry note/);
    check(good.subarray(0, good.length - 1), /extends past the end of the file/);
    const phnum = good.slice();
    new DataView(phnum.buffer).setUint16(56, 0xffff, true);
    check(phnum, /program headers extend past the end/);
    const huge = good.slice();
    new DataView(huge.buffer).setBigUint64(64 + 56 + 24, 0xffffffffffff0000n, true); // first PT_LOAD paddr
    check(huge, /out of range/);
    const noteLen = good.slice();
    new DataView(noteLen.buffer).setUint32(64 + 3 * 56 + 4, 0xfffffff0, true); // descsz
    check(noteLen, /note extends past/);
    check(
      makeVmlinux({
        entry: 0x1000040,
        segments: [
          { paddr: 0x1000000, data: text },
          { paddr: 0x1002000, data },
        ],
      }),
      /overlap/,
    );
    check(makeVmlinux({ entry: 0x2000000, segments: [{ paddr: 0x1000000, data: text }] }), /not inside a PT_LOAD/);
    check(makeVmlinux({ entry: 0x7fff000, segments: [{ paddr: 0x7ffe000, data: text }] }), /not in guest RAM/);
    check(makeVmlinux({ entry: 0x10000, segments: [{ paddr: 0x10000, data: text }] }), /overlaps the loader area/);
  });

  it('refuses bad bzImages', () => {
    const bz = makeBzImage({ payload });
    check(bz.subarray(0, 0x207), /truncated setup header/);
    check(makeBzImage({ payload, header: { version: 0x020b } }), /older than 2.12/);
    check(makeBzImage({ payload, header: { xloadflags: 0 } }), /XLF_KERNEL_64/);
    check(makeBzImage({ payload, header: { loadflags: 0 } }), /LOADED_HIGH/);
    check(makeBzImage({ payload, header: { boot_flag: 0 } }), /boot_flag/);
    check(makeBzImage({ payload, hdrEndByte: 0x40 }), /before init_size/);
    check(bz.subarray(0, 0x250), /extends past the end of the file/);
    const sects = bz.slice();
    sects[0x1f1] = 200; // setup_sects past the end
    check(sects, /setup_sects 200 puts the protected-mode kernel at 0x19200, past the end of the file/);
    check(bz.subarray(0, 1024 + 0x1000), /syssize/);
    check(makeBzImage({ payload, header: { kernel_alignment: 0x300000 } }), /power of two/);
    check(makeBzImage({ payload, header: { init_size: 0 } }), /init_size is 0/);
    check(makeBzImage({ payload, header: { pref_address: 0xffffffffffff0000n } }), /not guest RAM/);
    check(makeBzImage({ payload, header: { relocatable_kernel: 0, pref_address: 0n } }), /overlaps the loader area/);
    check(makeBzImage({ payload, header: { init_size: 0xffffffff } }), /not guest RAM/);
  });

  it('refuses a bad request before writing', () => {
    const small = makeBzImage({ payload: pattern(0x1000, 1), header: { pref_address: 0x400000n, init_size: 0x100000 } });
    expect(() => loadLinux(m, small, { commandLine: 'a'.repeat(2048) })).toThrow(/at most 2047/);
    expect(() => loadLinux(m, small, { commandLine: 'a\0b' })).toThrow(/NUL/);
    expect(() => loadLinux(m, small, { initrd: new Uint8Array(40 * MiB) })).toThrow(/no room for the .*initrd/);
    expect(() => loadLinux(m, small, { reserved: [{ gpa: 0x400000, size: 0x1000, type: 2 }] })).toThrow(/overlaps the reserved range/);
    expect(() => loadLinux(m, small, { reserved: [{ gpa: 0x8000, size: 0x1000, type: 3 }] })).toThrow(/loader area/);
    expect(() => loadLinux(m, small, { acpiRsdp: -1 })).toThrow(/acpiRsdp/);
    expect(() => loadLinux(GuestMemory.createShared([{ gpa: 0x100000, size: 16 * MiB }]), small)).toThrow(
      /needs guest RAM at \[0, 0x21000\)/,
    );
    expect(() => loadLinux({} as never, small)).toThrow(LinuxBootError);
    expect(() => bootLinux({ memory: m, vcpus: [] } as never, small)).toThrow(/at least one vCPU/);
    // The small image itself loads, with a reserved range the initrd must skip.
    const boot = loadLinux(m, small, { initrd: pattern(0x2000, 1), reserved: [{ gpa: 31 * MiB, size: MiB, type: 4 }] });
    expect(boot.initrd!.gpa).toBe(31 * MiB - 0x2000);
  });
});

describe('e820 capacity', () => {
  it('fits 128 entries in the zero page, 127 in the PVH memmap (the kernel appends the ISA hole)', () => {
    const m = ram(32 * MiB);
    // 64 reserved pages, the last one flush with the end of RAM: 128 entries.
    const reserved = Array.from({ length: 64 }, (_, i) => ({
      gpa: i === 63 ? 32 * MiB - 0x1000 : 0x1400000 + i * 0x2000,
      size: 0x1000,
      type: 2,
    }));
    expect(buildE820Map(m, reserved)).toHaveLength(128);
    expect(loadLinux(m, makeBzImage({ payload }), { reserved }).e820).toHaveLength(128);
    expect(() => loadLinux(m, vmlinux(), { reserved })).toThrow(/128 entries, at most 127 fit/);
    expect(loadLinux(m, vmlinux(), { reserved: reserved.slice(1) }).e820).toHaveLength(126);
  });
});

describeKvm('Linux loader entry state (KVM)', () => {
  async function run(p: KvmPartition, platform: TestPlatform): Promise<number | undefined> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        p.stop();
        reject(new Error('entry stub timed out'));
      }, 10_000);
    });
    await Promise.race([p.run(), timeout]).finally(() => clearTimeout(timer));
    return platform.debugExit.codes.get(0);
  }

  it('PVH: a 32-bit stub reads hvm_start_info.magic through EBX and reports it on port 0xf4', async () => {
    // mov eax, [ebx]; out 0xf4, eax; hlt
    const stub = new Uint8Array([0x8b, 0x03, 0xe7, 0xf4, 0xf4]);
    const p = KvmPartition.create({ memory: [{ gpa: 0, size: 32 * MiB }] });
    try {
      const platform = new TestPlatform(p);
      bootLinux(p, makeVmlinux({ entry: 0x1000000, segments: [{ paddr: 0x1000000, data: stub }] }));
      const s = p.vcpus[0].getSpecialRegisters();
      expect([s.cr0 & 0x80000001n, s.efer & 0x400n, s.cs.db, s.cs.l]).toEqual([1n, 0n, true, false]);
      expect(await run(p, platform)).toBe(0x336ec578);
    } finally {
      p.close();
    }
  });

  it('bzImage: a 64-bit stub at +0x200 reads boot_params.hdr.type_of_loader through RSI and reports it', async () => {
    // movzx eax, byte [rsi + 0x210]; out 0xf4, eax; hlt
    const body = new Uint8Array(0x400);
    body.set([0x0f, 0xb6, 0x86, 0x10, 0x02, 0x00, 0x00, 0xe7, 0xf4, 0xf4], 0x200);
    const p = KvmPartition.create({ memory: [{ gpa: 0, size: 32 * MiB }] });
    try {
      const platform = new TestPlatform(p);
      bootLinux(p, makeBzImage({ payload: body }), { commandLine: 'console=ttyS0' });
      const s = p.vcpus[0].getSpecialRegisters();
      expect([s.cs.selector, s.cs.l, s.efer & 0x400n, s.cr0 & 0x80000000n]).toEqual([0x10, true, 0x400n, 0x80000000n]);
      expect(await run(p, platform)).toBe(0xff);
    } finally {
      p.close();
    }
  });
});
