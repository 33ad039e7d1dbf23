/**
 * ACPI tables: checksums, header fields, the RSDP → XSDT → FADT → DSDT graph and the MADT, as
 * Linux reads them from guest memory; hostile inputs. When iasl is installed, each table is
 * also disassembled by it (`iasl -d`) as an independent parse.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '@hvemu/memory';
import {
  ACPI_TABLE_HEADER,
  FADT,
  FADT_FLAG,
  GAS,
  MADT,
  RSDP,
  acpiChecksum,
  buildDsdt,
  uartDeviceAml,
  buildMadt,
  buildRsdp,
  writeAcpiTables,
  type AcpiTablesLayout,
} from '../../src/acpi/tables.js';
import { ACPI_RESET_PORT, ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_STATUS_PORT } from '../../src/acpi/power.js';
import { AcpiTableError } from '../../src/errors.js';

const hex = (s: string): Uint8Array => Uint8Array.from(s.trim().split(/\s+/), (b) => parseInt(b, 16));
const show = (b: Uint8Array): string => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(' ');
const text = (b: Uint8Array): string => String.fromCharCode(...b);
const MiB = 1024 * 1024;

/** Reads the table at `gpa` the way Linux does: header first, then Length bytes. */
function readTable(memory: GuestMemory, gpa: number): { header: ReturnType<typeof ACPI_TABLE_HEADER.decode>; bytes: Uint8Array } {
  const header = ACPI_TABLE_HEADER.decode(memory.bytes(gpa, ACPI_TABLE_HEADER.size));
  const bytes = memory.bytes(gpa, header.Length).slice();
  expect(acpiChecksum(bytes), `${text(header.Signature)} checksum`).toBe(0);
  return { header, bytes };
}

function boot(cpus: number, base = 0xe0000): { memory: GuestMemory; layout: AcpiTablesLayout } {
  const memory = GuestMemory.createShared(2 * MiB);
  return { memory, layout: writeAcpiTables(memory, base, { cpus }) };
}

describe('RSDP', () => {
  it('matches the worked example (XSDT at 0xE0040, OEM "HVEMU ")', () => {
    const expected = hex('52 53 44 20 50 54 52 20 3A 48 56 45 4D 55 20 02 00 00 00 00 24 00 00 00 40 00 0E 00 00 00 00 00 8E 00 00 00');
    expect(show(buildRsdp(0xe0040))).toBe(show(expected));
  });

  it('both checksums hold for any XSDT address', () => {
    for (const xsdt of [0, 0xe0040, 0x1_2345_6780]) {
      const b = buildRsdp(xsdt);
      expect(acpiChecksum(b, 0, 20)).toBe(0);
      expect(acpiChecksum(b)).toBe(0);
    }
  });
});

describe('table graph in guest memory', () => {
  it('RSDP → XSDT → FADT → DSDT and MADT, every checksum 0', () => {
    const { memory, layout } = boot(2);
    expect(layout.rsdp).toBe(0xe0000);
    expect(layout.end).toBeLessThan(0xe1000);
    const rsdp = RSDP.decode(memory.bytes(layout.rsdp, RSDP.size));
    expect(text(rsdp.Signature)).toBe('RSD PTR ');
    expect(rsdp.Revision).toBe(2);
    expect(rsdp.Length).toBe(36);
    expect(rsdp.RsdtAddress).toBe(0);
    expect(acpiChecksum(memory.bytes(layout.rsdp, 20))).toBe(0);
    expect(acpiChecksum(memory.bytes(layout.rsdp, 36))).toBe(0);

    const xsdt = readTable(memory, Number(rsdp.XsdtAddress));
    expect(text(xsdt.header.Signature)).toBe('XSDT');
    expect(xsdt.header.Revision).toBe(1);
    expect(text(xsdt.header.OEMID)).toBe('HVEMU ');
    expect(text(xsdt.header.OEMTableID)).toBe('HVEMU   ');
    const dv = new DataView(xsdt.bytes.buffer);
    const entries = (xsdt.header.Length - 36) / 8;
    const bySignature = new Map<string, { header: ReturnType<typeof ACPI_TABLE_HEADER.decode>; bytes: Uint8Array }>();
    for (let i = 0; i < entries; i++) {
      const t = readTable(memory, Number(dv.getBigUint64(36 + 8 * i, true)));
      bySignature.set(text(t.header.Signature), t);
    }
    expect([...bySignature.keys()].sort()).toEqual(['APIC', 'FACP']);

    const fadtTable = bySignature.get('FACP')!;
    expect(fadtTable.header.Length).toBe(276);
    expect(fadtTable.header.Revision).toBe(6);
    const fadt = FADT.decode(fadtTable.bytes);
    expect(fadt.FADT_Minor_Version).toBe(5);
    expect(fadt.Flags & FADT_FLAG.HW_REDUCED_ACPI).not.toBe(0);
    expect(fadt.Flags & FADT_FLAG.RESET_REG_SUP).not.toBe(0);
    expect(fadt.DSDT).toBe(0);
    expect(fadt.FIRMWARE_CTRL).toBe(0);
    expect(fadt.X_FIRMWARE_CTRL).toBe(0n);
    expect(fadt.SCI_INT).toBe(0);
    expect(fadt.PM1a_CNT_BLK).toBe(0);
    const port = (gas: Uint8Array): number => {
      const g = GAS.decode(gas);
      expect([g.AddressSpaceID, g.RegisterBitWidth, g.RegisterBitOffset, g.AccessSize]).toEqual([1, 8, 0, 1]);
      return Number(g.Address);
    };
    expect(port(fadt.SLEEP_CONTROL_REG)).toBe(ACPI_SLEEP_CONTROL_PORT);
    expect(port(fadt.SLEEP_STATUS_REG)).toBe(ACPI_SLEEP_STATUS_PORT);
    expect(port(fadt.RESET_REG)).toBe(ACPI_RESET_PORT);
    expect(show(fadt.RESET_REG)).toBe('01 08 00 01 02 06 00 00 00 00 00 00');
    expect(fadt.RESET_VALUE).toBe(1);

    const dsdt = readTable(memory, Number(fadt.X_DSDT));
    expect(Number(fadt.X_DSDT)).toBe(layout.dsdt);
    expect(text(dsdt.header.Signature)).toBe('DSDT');
    expect(dsdt.header.Revision).toBe(2);
    // \_S5 and Scope(\_SB) { VMBS } (bytes checked in the AML tests)
    const body = show(dsdt.bytes.subarray(36));
    expect(body.startsWith('08 5f 53 35 5f 12 08 04 0a 05 0a 05 00 00 10 ')).toBe(true);
    expect(body).toContain('5b 82 22 56 4d 42 53 08 5f 48 49 44 0d 56 4d 42 55 53 00 08 5f 55 49 44 00 08 5f 43 52 53 11 05 0a 02 79 00');

    const madt = bySignature.get('APIC')!;
    expect(madt.header.Revision).toBe(5);
    // two vCPUs, IOAPIC ID 0
    expect(show(madt.bytes.subarray(36))).toBe(
      show(hex('00 00 E0 FE 00 00 00 00 00 08 00 00 01 00 00 00 00 08 01 01 01 00 00 00 01 0C 00 00 00 00 C0 FE 00 00 00 00')),
    );
    expect(madt.header.Length).toBe(72);
  });

  it('tables outside the legacy scan area work too (pass the RSDP address in boot_params)', () => {
    const { memory, layout } = boot(1, 0x10_0000);
    expect(layout.rsdp).toBe(0x10_0000);
    expect(acpiChecksum(memory.bytes(layout.rsdp, 36))).toBe(0);
    readTable(memory, layout.dsdt);
  });
});

describe('MADT', () => {
  it('uses x2APIC entries for APIC IDs or UIDs of 255 and above', () => {
    const madt = buildMadt({ apicIds: Array.from({ length: 300 }, (_, i) => i) });
    expect(acpiChecksum(madt)).toBe(0);
    const types: number[] = [];
    const ids: number[] = [];
    const dv = new DataView(madt.buffer);
    for (let at = MADT.size; at < madt.length; at += madt[at + 1]) {
      types.push(madt[at]);
      if (madt[at] === 0) ids.push(madt[at + 3]);
      if (madt[at] === 9) {
        ids.push(dv.getUint32(at + 4, true));
        expect(dv.getUint32(at + 12, true)).toBe(ids.length - 1); // UID = vCPU index
        expect(dv.getUint32(at + 8, true)).toBe(1); // enabled
      }
    }
    expect(types.filter((t) => t === 0)).toHaveLength(255);
    expect(types.filter((t) => t === 9)).toHaveLength(45);
    expect(types.filter((t) => t === 1)).toHaveLength(1);
    expect(ids).toEqual(Array.from({ length: 300 }, (_, i) => i));
    expect(madt.length).toBe(44 + 255 * 8 + 45 * 16 + 12);
  });

  it('a sparse APIC ID above 254 gets an x2APIC entry even for vCPU 0', () => {
    const madt = buildMadt({ apicIds: [0x100, 1], pcatCompat: true });
    expect(madt[MADT.size]).toBe(9);
    expect(madt[MADT.size + 16]).toBe(0);
    expect(new DataView(madt.buffer).getUint32(40, true)).toBe(1);
  });

  it('rejects no vCPU, duplicate or out-of-range APIC IDs and a bad IOAPIC ID', () => {
    expect(() => buildMadt({ apicIds: [] })).toThrow(AcpiTableError);
    expect(() => buildMadt({ apicIds: [1, 1] })).toThrow(AcpiTableError);
    expect(() => buildMadt({ apicIds: [-1] })).toThrow(AcpiTableError);
    expect(() => buildMadt({ apicIds: [0xffff_ffff] })).toThrow(AcpiTableError);
    expect(() => buildMadt({ apicIds: [0], ioApicId: 256 })).toThrow(AcpiTableError);
  });
});

describe('DSDT', () => {
  it('with MMIO windows, VMBS sits under an ACPI0004 module device that carries them', () => {
    const dsdt = buildDsdt({
      vmbusMmio: [
        { gpa: 0xf800_0000n, size: 0x0600_0000n },
        { gpa: 0x10_0000_0000n, size: 0x4000_0000n },
      ],
    });
    expect(acpiChecksum(dsdt)).toBe(0);
    const body = show(dsdt);
    // Device(VMOD) PkgLength 167 (0x47 0x0a), _HID "ACPI0004", _CRS Buffer PkgLength 98 (0x42 0x06), size 0x5e
    expect(body).toContain(
      '5b 82 47 0a 56 4d 4f 44 08 5f 48 49 44 0d 41 43 50 49 30 30 30 34 00 08 5f 55 49 44 00 08 5f 43 52 53 11 42 06 0a 5e 8a 2b',
    );
    expect(
      body.endsWith('79 00 5b 82 22 56 4d 42 53 08 5f 48 49 44 0d 56 4d 42 55 53 00 08 5f 55 49 44 00 08 5f 43 52 53 11 05 0a 02 79 00'),
    ).toBe(true);
  });
});

describe('DSDT UARTs', () => {
  it('describes COM1 as PNP0501 with its I/O range and GSI (bytes derived by hand from ACPI 6.5 §6.4)', () => {
    // Device(UAR1) PkgLength 49; _HID EISAID("PNP0501") = 0x0105D041; _UID One;
    // _CRS Buffer(19) { IO(Decode16, 0x3f8, 0x3f8, 1, 8), Interrupt(consumer, edge, high) {4}, end tag }
    const expected =
      '5b 82 31 55 41 52 31 08 5f 48 49 44 0c 41 d0 05 01 08 5f 55 49 44 01 08 5f 43 52 53 11 16 0a 13 ' +
      '47 01 f8 03 f8 03 01 08 89 06 00 03 01 04 00 00 00 79 00';
    expect(show(uartDeviceAml(1, { port: 0x3f8, gsi: 4 }))).toBe(expected);
    const dsdt = buildDsdt({ uarts: [{ port: 0x3f8, gsi: 4 }] });
    expect(acpiChecksum(dsdt)).toBe(0);
    expect(show(dsdt).endsWith(expected)).toBe(true); // inside \_SB, after VMBS
    expect(show(buildDsdt())).not.toContain('50 4e 50'); // no UART unless asked
  });

  it('refuses a bad UART index, port or GSI', () => {
    expect(() => uartDeviceAml(0, { port: 0x3f8, gsi: 4 })).toThrow(AcpiTableError);
    expect(() => uartDeviceAml(10, { port: 0x3f8, gsi: 4 })).toThrow(AcpiTableError);
    expect(() => uartDeviceAml(1, { port: 0x10000, gsi: 4 })).toThrow(AcpiTableError);
    expect(() => uartDeviceAml(1, { port: 0x3f8, gsi: -1 })).toThrow(AcpiTableError);
    expect(() => uartDeviceAml(1, null as unknown as { port: number; gsi: number })).toThrow(AcpiTableError);
  });
});

describe('hostile inputs', () => {
  it('0 vCPUs, a base outside RAM, an unaligned base and bad OEM strings are AcpiTableErrors', () => {
    const memory = GuestMemory.createShared(1 * MiB);
    expect(() => writeAcpiTables(memory, 0xe0000, { cpus: 0 })).toThrow(AcpiTableError);
    expect(() => writeAcpiTables(memory, 0xe0000, {})).toThrow(AcpiTableError);
    expect(() => writeAcpiTables(memory, 0x20_0000, { cpus: 1 })).toThrow(AcpiTableError);
    // straddles the end of RAM
    expect(() => writeAcpiTables(memory, 1 * MiB - 0x100, { cpus: 1 })).toThrow(AcpiTableError);
    expect(() => writeAcpiTables(memory, 0xe0008, { cpus: 1 })).toThrow(AcpiTableError);
    expect(() => writeAcpiTables(memory, -16, { cpus: 1 })).toThrow(AcpiTableError);
    expect(() => writeAcpiTables(memory, 0xe0000, { cpus: 1, oemId: 'TOOLONGID' })).toThrow(AcpiTableError);
    expect(() => writeAcpiTables(memory, 0xe0000, { cpus: 1, oemTableId: 'ünicode' })).toThrow(AcpiTableError);
    // nothing was written by the failed calls
    expect(memory.bytes(0xe0000, 36).every((b) => b === 0)).toBe(true);
  });
});

function findIasl(): string | undefined {
  try {
    execFileSync('iasl', ['-v'], { stdio: 'ignore' });
    return 'iasl';
  } catch {
    return undefined;
  }
}
const iasl = findIasl();
if (iasl === undefined) console.warn('tables.test: iasl not found (apt-get install acpica-tools); skipping the iasl -d cross-check');

describe.skipIf(iasl === undefined)('tables vs iasl -d', () => {
  it('iasl disassembles every table and reads back the fields', () => {
    const { memory, layout } = boot(2);
    const dir = mkdtempSync(join(tmpdir(), 'hvemu-acpi-'));
    try {
      const out: Record<string, string> = {};
      for (const [name, gpa] of [
        ['facp', layout.fadt],
        ['apic', layout.madt],
        ['dsdt', layout.dsdt],
        ['xsdt', layout.xsdt],
      ] as const) {
        const length = new DataView(memory.bytes(gpa, 8).slice().buffer).getUint32(4, true);
        writeFileSync(join(dir, `${name}.dat`), memory.bytes(gpa, length));
        execFileSync(iasl, ['-d', join(dir, `${name}.dat`)], { stdio: 'pipe', cwd: dir });
        out[name] = readFileSync(join(dir, `${name}.dsl`), 'utf8');
      }
      for (const dsl of Object.values(out)) expect(dsl).not.toMatch(/invalid|error|warning|incorrect checksum/i);
      expect(out.facp).toMatch(/Hardware Reduced \(V5\) : 1/);
      expect(out.facp).toMatch(/Reset Register Supported \(V2\) : 1/);
      expect(out.facp).toMatch(/Sleep Control Register : \[Generic Address Structure\][^]*?Address : 0000000000000600/);
      expect(out.apic).toMatch(/Local Apic ID : 01/);
      expect(out.apic).toMatch(/Address : FEC00000/);
      expect(out.dsdt).toMatch(/Device \(VMBS\)/);
      expect(out.dsdt).toMatch(/Name \(_HID, "VMBUS"\)/);
      expect(out.dsdt).toMatch(/Name \(_S5, Package \(0x04\)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
