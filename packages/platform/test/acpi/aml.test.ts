/**
 * The AML encoder against byte sequences derived by hand from the ACPI 6.5 encoding rules
 * (§20.2 AML grammar, §6.4 resource descriptors), then — when Debian's iasl (acpica-tools) is
 * installed — against what iasl compiles from the same ASL.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import * as aml from '../../src/acpi/aml.js';
import { AcpiTableError } from '../../src/errors.js';

const hex = (s: string): Uint8Array => Uint8Array.from(s.trim().split(/\s+/), (b) => parseInt(b, 16));
const show = (b: Uint8Array): string => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(' ');
const same = (actual: Uint8Array, expected: Uint8Array | string): void => {
  expect(show(actual)).toBe(show(typeof expected === 'string' ? hex(expected) : expected));
};

describe('AML names', () => {
  it('pads NameSegs with _ and encodes root, parent, dual and multi-segment paths', () => {
    same(aml.nameSeg('_SB'), '5f 53 42 5f');
    same(aml.nameSeg('A'), '41 5f 5f 5f');
    same(aml.nameString('VMBS'), '56 4d 42 53');
    same(aml.nameString('\\_S5'), '5c 5f 53 35 5f');
    same(aml.nameString('\\_SB.PCI0'), '5c 2e 5f 53 42 5f 50 43 49 30');
    same(aml.nameString('\\_SB.PCI0.VMBS'), '5c 2f 03 5f 53 42 5f 50 43 49 30 56 4d 42 53');
    same(aml.nameString('^^FOO'), '5e 5e 46 4f 4f 5f');
    same(aml.nameString('\\'), '5c 00');
  });

  it('rejects segments that are too long, start with a digit or hold other characters', () => {
    for (const bad of ['TOOLONG', '1ABC', 'ab', 'A-B', '\\_SB..X']) expect(() => aml.nameString(bad)).toThrow(AcpiTableError);
  });
});

describe('PkgLength', () => {
  it('uses one byte up to a total of 63, then 2, 3, 4 bytes with the low nibble in the lead byte', () => {
    same(aml.pkgLength(0), '01');
    same(aml.pkgLength(62), '3f');
    // body 63: total 63 + 2 = 65 = 0x041 → lead 0x40 | 0x1, then 0x04
    same(aml.pkgLength(63), '41 04');
    // body 4093: total 4095 = 0xfff, the largest two-byte length
    same(aml.pkgLength(4093), '4f ff');
    // body 4094: total 4094 + 3 = 4097 = 0x01001 → 0x80 | 0x1, 0x00, 0x01
    same(aml.pkgLength(4094), '81 00 01');
    // body 2^20 - 4: total 2^20 - 1 = 0xfffff, the largest three-byte length
    same(aml.pkgLength(2 ** 20 - 4), '8f ff ff');
    // body 2^20 - 3: total 2^20 - 3 + 4 = 0x100001 → 0xc0 | 0x1, 0x00, 0x00, 0x01
    same(aml.pkgLength(2 ** 20 - 3), 'c1 00 00 01');
    expect(() => aml.pkgLength(2 ** 28)).toThrow(AcpiTableError);
    expect(() => aml.pkgLength(-1)).toThrow(AcpiTableError);
  });
});

describe('AML data objects', () => {
  it('encodes integers with the shortest form', () => {
    same(aml.integer(0), '00');
    same(aml.integer(1), '01');
    same(aml.integer(2), '0a 02');
    same(aml.integer(0xff), '0a ff');
    same(aml.integer(0x100), '0b 00 01');
    same(aml.integer(0x12345678), '0c 78 56 34 12');
    same(aml.integer(0x1_0000_0000), '0e 00 00 00 00 01 00 00 00');
    same(aml.integer(0xffff_ffff_ffff_ffffn), 'ff');
    for (const bad of [-1, 1.5, 2 ** 64, Number.NaN]) expect(() => aml.integer(bad)).toThrow(AcpiTableError);
    expect(() => aml.integer(2n ** 64n)).toThrow(AcpiTableError);
  });

  it('encodes strings, buffers and packages', () => {
    same(aml.string('VMBUS'), '0d 56 4d 42 55 53 00');
    same(aml.string(''), '0d 00');
    expect(() => aml.string('é')).toThrow(AcpiTableError);
    expect(() => aml.string('a\0b')).toThrow(AcpiTableError);
    same(aml.buffer(Uint8Array.of(1, 2, 3)), '11 06 0a 03 01 02 03');
    same(aml.buffer(new Uint8Array(0)), '11 02 00');
    same(aml.pkg(), '12 02 00');
    expect(() => aml.pkg(...Array.from({ length: 256 }, () => aml.integer(0)))).toThrow(AcpiTableError);
  });

  it('compresses EISA IDs: three 5-bit letters and four hex digits, stored big-endian', () => {
    // 'P' = 0x10, 'N' = 0x0e: 0x10 << 10 | 0x0e << 5 | 0x10 = 0x41d0
    expect(aml.eisaIdValue('PNP0A03')).toBe(0x030ad041);
    same(aml.eisaId('PNP0501'), '0c 41 d0 05 01');
    same(aml.eisaId('PNP0B00'), '0c 41 d0 0b 00');
    for (const bad of ['PNP0a03', 'PN0A03', 'pnp0A03', 'PNP0A0G']) expect(() => aml.eisaId(bad)).toThrow(AcpiTableError);
  });
});

describe('AML named objects and control', () => {
  it('\\_S5 = Package {5, 5, 0, 0}', () => {
    same(
      aml.name('\\_S5', aml.pkg(aml.integer(5), aml.integer(5), aml.integer(0), aml.integer(0))),
      '08 5c 5f 53 35 5f 12 08 04 0a 05 0a 05 00 00',
    );
  });

  it('a Device with _HID string, _UID and an empty _CRS', () => {
    const vmbs = aml.device(
      'VMBS',
      aml.name('_HID', aml.string('VMBUS')),
      aml.name('_UID', aml.integer(0)),
      aml.name('_CRS', aml.resourceTemplate()),
    );
    same(vmbs, '5b 82 22 56 4d 42 53 08 5f 48 49 44 0d 56 4d 42 55 53 00 08 5f 55 49 44 00 08 5f 43 52 53 11 05 0a 02 79 00');
    expect(vmbs.length).toBe(36);
  });

  it('COM1 with IO and Interrupt in a Scope whose PkgLength needs two bytes', () => {
    const com1 = aml.device(
      'COM1',
      aml.name('_HID', aml.eisaId('PNP0501')),
      aml.name('_UID', aml.integer(0)),
      aml.name('_CRS', aml.resourceTemplate(aml.ioPort(0x3f8, 0x3f8, 1, 8), aml.extendedInterrupt([4]))),
    );
    same(
      com1,
      '5b 82 31 43 4f 4d 31 08 5f 48 49 44 0c 41 d0 05 01 08 5f 55 49 44 00 08 5f 43 52 53 11 16 0a 13 47 01 f8 03 f8 03 01 08 89 06 00 03 01 04 00 00 00 79 00',
    );
    const sb = aml.scope('\\_SB', new Uint8Array(36), com1);
    // body = 5 (name) + 36 + 51 = 92; total 94 = 0x5e → 0x4e 0x05
    same(sb.subarray(0, 7), '10 4e 05 5c 5f 53 42');
  });

  it('Method flags and Return', () => {
    same(aml.method('_STA', {}, aml.ret(aml.integer(0x0f))), '14 09 5f 53 54 41 00 a4 0a 0f');
    // ArgCount 3 | Serialized (bit 3) | SyncLevel 4 << 4 = 0x4b
    same(aml.method('TST1', { args: 3, serialized: true, syncLevel: 4 }, aml.ret(aml.integer(1))), '14 08 54 53 54 31 4b a4 01');
    expect(() => aml.method('X', { args: 8 })).toThrow(AcpiTableError);
    expect(() => aml.method('X', { syncLevel: 16 })).toThrow(AcpiTableError);
  });

  it('QWordMemory window: 46 bytes, min at +14, max at +22, length at +38', () => {
    const d = aml.qwordMemory(0xf800_0000n, 0x0600_0000n);
    expect(d.length).toBe(46);
    same(d.subarray(0, 6), '8a 2b 00 00 0c 03');
    const dv = new DataView(d.buffer, d.byteOffset);
    expect(dv.getBigUint64(14, true)).toBe(0xf800_0000n);
    expect(dv.getBigUint64(22, true)).toBe(0xfdff_ffffn);
    expect(dv.getBigUint64(38, true)).toBe(0x0600_0000n);
    expect(() => aml.qwordMemory(0n, 0n)).toThrow(AcpiTableError);
    expect(() => aml.qwordMemory(0xffff_ffff_ffff_f000n, 0x2000n)).toThrow(AcpiTableError);
  });

  it('an end tag with a computed checksum makes the template sum to 0', () => {
    const io = aml.ioPort(0x60, 0x60, 1, 1);
    const tag = aml.endTag(io);
    expect(tag[0]).toBe(0x79);
    expect(aml.checksumByte(aml.concat(io, tag))).toBe(0);
    same(aml.endTag(), '79 00');
  });
});

/**
 * The iasl cross-check: the same objects compiled by ACPICA's compiler. `-on` keeps name
 * strings as written (iasl otherwise drops a root prefix that the scope makes redundant).
 */
function findIasl(): string | undefined {
  try {
    execFileSync('iasl', ['-v'], { stdio: 'ignore' });
    return 'iasl';
  } catch {
    return undefined;
  }
}

const iasl = findIasl();
if (iasl === undefined) console.warn('aml.test: iasl not found (apt-get install acpica-tools); skipping the iasl cross-check');

describe.skipIf(iasl === undefined)('AML encoder vs iasl', () => {
  it('compiles to the same definition block body', () => {
    const asl = `DefinitionBlock ("", "DSDT", 2, "HVEMU", "HVEMU", 1)
{
    Name (\\_S5, Package () { 5, 5, 0, 0 })
    Scope (\\_SB)
    {
        Device (COM1)
        {
            Name (_HID, EisaId ("PNP0501"))
            Name (_UID, Zero)
            Name (_CRS, ResourceTemplate ()
            {
                IO (Decode16, 0x03F8, 0x03F8, 0x01, 0x08)
                Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) { 4 }
                QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, Cacheable, ReadWrite,
                    0, 0xF8000000, 0xFDFFFFFF, 0, 0x06000000, ,, , AddressRangeMemory, TypeStatic)
            })
            Method (_STA, 0, NotSerialized) { Return (0x0F) }
            Method (TST1, 3, Serialized, 4) { Return (0x12345678) }
        }
        Name (INTS, Package () { 0x1234, 0x123456789A, Ones, "abc", Buffer () { 1, 2, 3 } })
        Name (\\_SB.BIG, Buffer () { ${Array.from({ length: 300 }, (_, i) => i & 0xff).join(', ')} })
    }
}
`;
    const mine = aml.concat(
      aml.name('\\_S5', aml.pkg(aml.integer(5), aml.integer(5), aml.integer(0), aml.integer(0))),
      aml.scope(
        '\\_SB',
        aml.device(
          'COM1',
          aml.name('_HID', aml.eisaId('PNP0501')),
          aml.name('_UID', aml.integer(0)),
          aml.name(
            '_CRS',
            aml.resourceTemplate(aml.ioPort(0x3f8, 0x3f8, 1, 8), aml.extendedInterrupt([4]), aml.qwordMemory(0xf800_0000n, 0x0600_0000n)),
          ),
          aml.method('_STA', {}, aml.ret(aml.integer(0x0f))),
          aml.method('TST1', { args: 3, serialized: true, syncLevel: 4 }, aml.ret(aml.integer(0x12345678))),
        ),
        aml.name(
          'INTS',
          aml.pkg(
            aml.integer(0x1234),
            aml.integer(0x12_3456_789an),
            aml.integer(0xffff_ffff_ffff_ffffn),
            aml.string('abc'),
            aml.buffer(Uint8Array.of(1, 2, 3)),
          ),
        ),
        aml.name('\\_SB.BIG', aml.buffer(Uint8Array.from({ length: 300 }, (_, i) => i & 0xff))),
      ),
    );
    const dir = mkdtempSync(join(tmpdir(), 'hvemu-aml-'));
    try {
      writeFileSync(join(dir, 't.asl'), asl);
      execFileSync(iasl, ['-on', '-p', join(dir, 't'), join(dir, 't.asl')], { stdio: 'pipe' });
      const compiled = new Uint8Array(readFileSync(join(dir, 't.aml')));
      same(mine, compiled.subarray(36));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
