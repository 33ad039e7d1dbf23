/**
 * ACPI tables for a firmware-less boot (ACPI 6.5 §5.2): RSDP (v2) → XSDT → FADT (revision 6,
 * HW_REDUCED_ACPI) → DSDT, and the MADT. Structures are declared as data with the spec's field
 * names; `writeAcpiTables` lays them out in guest memory and returns where the RSDP is.
 *
 * Linux needs nothing else to find VMBus (drivers/hv/vmbus_drv.c matches the ACPI IDs "VMBUS"
 * and "VMBus" and walks the device's _CRS), to power off (S5 through SLEEP_CONTROL_REG) or to
 * reset (RESET_REG). See packages/platform/README.md for the ports chosen.
 */
import { defineStruct } from '@hvemu/common';
import type { GuestMemory } from '@hvemu/memory';
import { AcpiTableError } from '../errors.js';
import * as aml from './aml.js';
import { ACPI_RESET_PORT, ACPI_RESET_VALUE, ACPI_S5_SLP_TYP, ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_STATUS_PORT } from './power.js';

/** Root System Description Pointer, revision 2 (ACPI 6.5 table 5.3). */
export const RSDP = defineStruct('RSDP', 36, [
  [0, 'Signature', { bytes: 8 }],
  [8, 'Checksum', 'u8'],
  [9, 'OEMID', { bytes: 6 }],
  [15, 'Revision', 'u8'],
  [16, 'RsdtAddress', 'u32'],
  [20, 'Length', 'u32'],
  [24, 'XsdtAddress', 'u64'],
  [32, 'ExtendedChecksum', 'u8'],
  [33, 'Reserved', { bytes: 3 }],
] as const);

/** System Description Table Header (ACPI 6.5 table 5.4), the first 36 bytes of every table. */
export const ACPI_TABLE_HEADER = defineStruct('ACPI_TABLE_HEADER', 36, [
  [0, 'Signature', { bytes: 4 }],
  [4, 'Length', 'u32'],
  [8, 'Revision', 'u8'],
  [9, 'Checksum', 'u8'],
  [10, 'OEMID', { bytes: 6 }],
  [16, 'OEMTableID', { bytes: 8 }],
  [24, 'OEMRevision', 'u32'],
  [28, 'CreatorID', { bytes: 4 }],
  [32, 'CreatorRevision', 'u32'],
] as const);

/** Generic Address Structure (ACPI 6.5 table 5.1). */
export const GAS = defineStruct('GAS', 12, [
  [0, 'AddressSpaceID', 'u8'],
  [1, 'RegisterBitWidth', 'u8'],
  [2, 'RegisterBitOffset', 'u8'],
  [3, 'AccessSize', 'u8'],
  [4, 'Address', 'u64'],
] as const);

export const GAS_SPACE_SYSTEM_MEMORY = 0;
export const GAS_SPACE_SYSTEM_IO = 1;
export const GAS_ACCESS_BYTE = 1;

/** Fixed ACPI Description Table, revision 6 (ACPI 6.5 table 5.9), 276 bytes. */
export const FADT = defineStruct('FADT', 276, [
  [0, 'Header', { bytes: 36 }],
  [36, 'FIRMWARE_CTRL', 'u32'],
  [40, 'DSDT', 'u32'],
  [44, 'Reserved0', 'u8'],
  [45, 'Preferred_PM_Profile', 'u8'],
  [46, 'SCI_INT', 'u16'],
  [48, 'SMI_CMD', 'u32'],
  [52, 'ACPI_ENABLE', 'u8'],
  [53, 'ACPI_DISABLE', 'u8'],
  [54, 'S4BIOS_REQ', 'u8'],
  [55, 'PSTATE_CNT', 'u8'],
  [56, 'PM1a_EVT_BLK', 'u32'],
  [60, 'PM1b_EVT_BLK', 'u32'],
  [64, 'PM1a_CNT_BLK', 'u32'],
  [68, 'PM1b_CNT_BLK', 'u32'],
  [72, 'PM2_CNT_BLK', 'u32'],
  [76, 'PM_TMR_BLK', 'u32'],
  [80, 'GPE0_BLK', 'u32'],
  [84, 'GPE1_BLK', 'u32'],
  [88, 'PM1_EVT_LEN', 'u8'],
  [89, 'PM1_CNT_LEN', 'u8'],
  [90, 'PM2_CNT_LEN', 'u8'],
  [91, 'PM_TMR_LEN', 'u8'],
  [92, 'GPE0_BLK_LEN', 'u8'],
  [93, 'GPE1_BLK_LEN', 'u8'],
  [94, 'GPE1_BASE', 'u8'],
  [95, 'CST_CNT', 'u8'],
  [96, 'P_LVL2_LAT', 'u16'],
  [98, 'P_LVL3_LAT', 'u16'],
  [100, 'FLUSH_SIZE', 'u16'],
  [102, 'FLUSH_STRIDE', 'u16'],
  [104, 'DUTY_OFFSET', 'u8'],
  [105, 'DUTY_WIDTH', 'u8'],
  [106, 'DAY_ALRM', 'u8'],
  [107, 'MON_ALRM', 'u8'],
  [108, 'CENTURY', 'u8'],
  [109, 'IAPC_BOOT_ARCH', 'u16'],
  [111, 'Reserved1', 'u8'],
  [112, 'Flags', 'u32'],
  [116, 'RESET_REG', { bytes: 12 }],
  [128, 'RESET_VALUE', 'u8'],
  [129, 'ARM_BOOT_ARCH', 'u16'],
  [131, 'FADT_Minor_Version', 'u8'],
  [132, 'X_FIRMWARE_CTRL', 'u64'],
  [140, 'X_DSDT', 'u64'],
  [148, 'X_PM1a_EVT_BLK', { bytes: 12 }],
  [160, 'X_PM1b_EVT_BLK', { bytes: 12 }],
  [172, 'X_PM1a_CNT_BLK', { bytes: 12 }],
  [184, 'X_PM1b_CNT_BLK', { bytes: 12 }],
  [196, 'X_PM2_CNT_BLK', { bytes: 12 }],
  [208, 'X_PM_TMR_BLK', { bytes: 12 }],
  [220, 'X_GPE0_BLK', { bytes: 12 }],
  [232, 'X_GPE1_BLK', { bytes: 12 }],
  [244, 'SLEEP_CONTROL_REG', { bytes: 12 }],
  [256, 'SLEEP_STATUS_REG', { bytes: 12 }],
  [268, 'Hypervisor_Vendor_Identity', { bytes: 8 }],
] as const);

/** FADT Flags bits (ACPI 6.5 table 5.10). */
export const FADT_FLAG = {
  PWR_BUTTON: 1 << 4,
  SLP_BUTTON: 1 << 5,
  RESET_REG_SUP: 1 << 10,
  HW_REDUCED_ACPI: 1 << 20,
} as const;

/** IAPC_BOOT_ARCH bit 2: VGA Not Present. */
export const IAPC_BOOT_ARCH_VGA_NOT_PRESENT = 1 << 2;

/** MADT fixed part after the header (ACPI 6.5 table 5.19). */
export const MADT = defineStruct('MADT', 44, [
  [0, 'Header', { bytes: 36 }],
  [36, 'LocalInterruptControllerAddress', 'u32'],
  [40, 'Flags', 'u32'],
] as const);

/** Processor Local APIC Structure, type 0 (table 5.22). */
export const MADT_LOCAL_APIC = defineStruct('MADT_LOCAL_APIC', 8, [
  [0, 'Type', 'u8'],
  [1, 'Length', 'u8'],
  [2, 'ACPIProcessorUID', 'u8'],
  [3, 'APICID', 'u8'],
  [4, 'Flags', 'u32'],
] as const);

/** I/O APIC Structure, type 1 (table 5.24). */
export const MADT_IO_APIC = defineStruct('MADT_IO_APIC', 12, [
  [0, 'Type', 'u8'],
  [1, 'Length', 'u8'],
  [2, 'IOAPICID', 'u8'],
  [3, 'Reserved', 'u8'],
  [4, 'IOAPICAddress', 'u32'],
  [8, 'GlobalSystemInterruptBase', 'u32'],
] as const);

/** Processor Local x2APIC Structure, type 9 (table 5.37). */
export const MADT_LOCAL_X2APIC = defineStruct('MADT_LOCAL_X2APIC', 16, [
  [0, 'Type', 'u8'],
  [1, 'Length', 'u8'],
  [2, 'Reserved', 'u16'],
  [4, 'X2APICID', 'u32'],
  [8, 'Flags', 'u32'],
  [12, 'ACPIProcessorUID', 'u32'],
] as const);

export const MADT_TYPE_LOCAL_APIC = 0;
export const MADT_TYPE_IO_APIC = 1;
export const MADT_TYPE_LOCAL_X2APIC = 9;
/** Local APIC / x2APIC Flags bit 0: Enabled. */
export const MADT_LAPIC_ENABLED = 1;
/** MADT Flags bit 0: PCAT_COMPAT (a dual 8259 is present). */
export const MADT_PCAT_COMPAT = 1;

export const LOCAL_APIC_ADDRESS = 0xfee0_0000;
/** KVM's in-kernel IOAPIC (KVM_CREATE_IRQCHIP): 24 pins, GSI 0-23. */
export const IOAPIC_ADDRESS = 0xfec0_0000;

export interface AcpiHeaderIds {
  /** OEMID, ≤ 6 ASCII characters (padded with spaces). Default "HVEMU". */
  oemId?: string;
  /** OEM Table ID, ≤ 8 characters. Default "HVEMU". */
  oemTableId?: string;
}

function ascii(text: string, length: number, what: string): Uint8Array {
  if (text.length > length || !/^[\x20-\x7e]*$/.test(text))
    throw new AcpiTableError(`${what} "${text}": at most ${length} printable ASCII characters`);
  return Uint8Array.from(text.padEnd(length, ' '), (c) => c.charCodeAt(0));
}

/** Sum of all bytes mod 256 (0 for a valid table). */
export function acpiChecksum(bytes: Uint8Array, start = 0, end = bytes.length): number {
  let sum = 0;
  for (let i = start; i < end; i++) sum = (sum + bytes[i]) & 0xff;
  return sum;
}

/** Writes the header into `table[0..36)` (Length = table.length) and sets the checksum. */
function sealTable(table: Uint8Array, signature: string, revision: number, ids: AcpiHeaderIds): Uint8Array {
  ACPI_TABLE_HEADER.encode(
    {
      Signature: ascii(signature, 4, 'signature'),
      Length: table.length,
      Revision: revision,
      OEMID: ascii(ids.oemId ?? 'HVEMU', 6, 'OEMID'),
      OEMTableID: ascii(ids.oemTableId ?? 'HVEMU', 8, 'OEM Table ID'),
      OEMRevision: 1,
      CreatorID: ascii('HVEM', 4, 'Creator ID'),
      CreatorRevision: 1,
    },
    table,
  );
  table[ACPI_TABLE_HEADER.offsetOf.Checksum] = (0x100 - acpiChecksum(table)) & 0xff;
  return table;
}

/** RSDP v2 pointing at the XSDT; both checksums set. */
export function buildRsdp(xsdtGpa: number, ids: AcpiHeaderIds = {}): Uint8Array {
  const b = RSDP.encodeNew({
    Signature: ascii('RSD PTR ', 8, 'signature'),
    OEMID: ascii(ids.oemId ?? 'HVEMU', 6, 'OEMID'),
    Revision: 2,
    RsdtAddress: 0,
    Length: RSDP.size,
    XsdtAddress: BigInt(xsdtGpa),
  });
  b[RSDP.offsetOf.Checksum] = (0x100 - acpiChecksum(b, 0, 20)) & 0xff;
  b[RSDP.offsetOf.ExtendedChecksum] = (0x100 - acpiChecksum(b)) & 0xff;
  return b;
}

/** XSDT (revision 1): the header and one u64 address per table. */
export function buildXsdt(tableGpas: readonly number[], ids: AcpiHeaderIds = {}): Uint8Array {
  const b = new Uint8Array(ACPI_TABLE_HEADER.size + 8 * tableGpas.length);
  const dv = new DataView(b.buffer);
  tableGpas.forEach((gpa, i) => dv.setBigUint64(ACPI_TABLE_HEADER.size + 8 * i, BigInt(gpa), true));
  return sealTable(b, 'XSDT', 1, ids);
}

/** A one-byte SystemIO register at `port`. */
function ioByteRegister(port: number): Uint8Array {
  return GAS.encodeNew({
    AddressSpaceID: GAS_SPACE_SYSTEM_IO,
    RegisterBitWidth: 8,
    RegisterBitOffset: 0,
    AccessSize: GAS_ACCESS_BYTE,
    Address: BigInt(port),
  });
}

/**
 * FADT revision 6.5, hardware-reduced: no PM1/GPE blocks, no SCI; SLEEP_CONTROL_REG,
 * SLEEP_STATUS_REG and RESET_REG are byte-wide SystemIO registers of the AcpiPmDevice.
 * PWR_BUTTON / SLP_BUTTON are set: there are no fixed-feature buttons.
 */
export function buildFadt(dsdtGpa: number, ids: AcpiHeaderIds = {}): Uint8Array {
  const b = FADT.encodeNew({
    Flags: FADT_FLAG.HW_REDUCED_ACPI | FADT_FLAG.RESET_REG_SUP | FADT_FLAG.PWR_BUTTON | FADT_FLAG.SLP_BUTTON,
    IAPC_BOOT_ARCH: IAPC_BOOT_ARCH_VGA_NOT_PRESENT,
    RESET_REG: ioByteRegister(ACPI_RESET_PORT),
    RESET_VALUE: ACPI_RESET_VALUE,
    FADT_Minor_Version: 5,
    X_DSDT: BigInt(dsdtGpa),
    SLEEP_CONTROL_REG: ioByteRegister(ACPI_SLEEP_CONTROL_PORT),
    SLEEP_STATUS_REG: ioByteRegister(ACPI_SLEEP_STATUS_PORT),
    Hypervisor_Vendor_Identity: ascii('HVEMU', 8, 'Hypervisor Vendor Identity'),
  });
  return sealTable(b, 'FACP', 6, ids);
}

export interface MadtOptions extends AcpiHeaderIds {
  /** APIC ID of each vCPU, in vCPU order (ACPI processor UID = index). At least one. */
  apicIds: readonly number[];
  /** IOAPIC ID (default 0). */
  ioApicId?: number;
  /** Set PCAT_COMPAT (a dual 8259 exists, e.g. KVM_CREATE_IRQCHIP's PIC). Default false. */
  pcatCompat?: boolean;
}

/**
 * MADT (revision 5): one enabled Processor Local APIC entry per vCPU whose APIC ID and UID fit
 * in 0-254 (255 is the xAPIC broadcast ID), a Processor Local x2APIC entry for the others, and
 * KVM's in-kernel IOAPIC at 0xFEC00000 with GSI base 0. No interrupt source overrides: KVM's
 * default routing maps GSI n to IOAPIC pin n.
 */
export function buildMadt(options: MadtOptions): Uint8Array {
  const { apicIds } = options;
  if (apicIds.length === 0) throw new AcpiTableError('MADT: at least one vCPU is needed');
  const seen = new Set<number>();
  for (const id of apicIds) {
    if (!Number.isInteger(id) || id < 0 || id > 0xffff_fffe) throw new AcpiTableError(`MADT: APIC ID ${id} is not in [0, 0xfffffffe]`);
    if (seen.has(id)) throw new AcpiTableError(`MADT: APIC ID ${id} given twice`);
    seen.add(id);
  }
  const ioApicId = options.ioApicId ?? 0;
  if (!Number.isInteger(ioApicId) || ioApicId < 0 || ioApicId > 0xff) throw new AcpiTableError(`MADT: IOAPIC ID ${ioApicId} is not a byte`);
  const entries: Uint8Array[] = apicIds.map((id, uid) =>
    id < 0xff && uid < 0xff
      ? MADT_LOCAL_APIC.encodeNew({
          Type: MADT_TYPE_LOCAL_APIC,
          Length: MADT_LOCAL_APIC.size,
          ACPIProcessorUID: uid,
          APICID: id,
          Flags: MADT_LAPIC_ENABLED,
        })
      : MADT_LOCAL_X2APIC.encodeNew({
          Type: MADT_TYPE_LOCAL_X2APIC,
          Length: MADT_LOCAL_X2APIC.size,
          X2APICID: id,
          Flags: MADT_LAPIC_ENABLED,
          ACPIProcessorUID: uid,
        }),
  );
  entries.push(
    MADT_IO_APIC.encodeNew({
      Type: MADT_TYPE_IO_APIC,
      Length: MADT_IO_APIC.size,
      IOAPICID: ioApicId,
      IOAPICAddress: IOAPIC_ADDRESS,
      GlobalSystemInterruptBase: 0,
    }),
  );
  const fixed = MADT.encodeNew({ LocalInterruptControllerAddress: LOCAL_APIC_ADDRESS, Flags: options.pcatCompat ? MADT_PCAT_COMPAT : 0 });
  return sealTable(aml.concat(fixed, ...entries), 'APIC', 5, options);
}

export interface VmbusMmioWindow {
  gpa: bigint;
  size: bigint;
}

export interface DsdtOptions extends AcpiHeaderIds {
  /**
   * MMIO windows for VMBus devices (synthetic video, vPCI). When given, VMBS sits under a
   * module device \_SB.VMOD (_HID "ACPI0004") whose _CRS carries them, as on Hyper-V: the
   * ACPI core then does not claim them for VMBS itself. VMBS's own _CRS stays empty.
   */
  vmbusMmio?: readonly VmbusMmioWindow[];
  /** 16550 UARTs to describe (PNP0501), in order: COM1 first. */
  uarts?: readonly AcpiUart[];
}

/**
 * A serial port the DSDT describes. Why describe it: with a hardware-reduced FADT the kernel has
 * no legacy ISA IRQs ("preallocated irqs: 0"), so the 8250 driver's built-in COM1 at IRQ 4 fails
 * request_irq, its tty gets TTY_IO_ERROR and every user-space write to the console returns EIO
 * (measured with the test kernel's /init). Described with an interrupt GSI, 8250_pnp takes the
 * port over with an IOAPIC-routed IRQ.
 */
export interface AcpiUart {
  /** I/O base (8 ports). */
  port: number;
  /** IOAPIC input (GSI), edge-triggered, active-high, as ISA IRQs are. */
  gsi: number;
}

/** Device(UARn) { _HID PNP0501, _UID n, _CRS { IO(port, port, 1, 8), Interrupt(edge, high){gsi} } }. */
export function uartDeviceAml(index: number, uart: AcpiUart): aml.Aml {
  if (!Number.isInteger(index) || index < 1 || index > 9) throw new AcpiTableError(`UART index ${index} (1-9)`);
  if (uart === null || typeof uart !== 'object') throw new AcpiTableError('a UART needs {port, gsi}');
  return aml.device(
    `UAR${index}`,
    aml.name('_HID', aml.eisaId('PNP0501')),
    aml.name('_UID', aml.integer(index)),
    aml.name('_CRS', aml.resourceTemplate(aml.ioPort(uart.port, uart.port, 1, 8), aml.extendedInterrupt([uart.gsi]))),
  );
}

/** Device(VMBS) { _HID "VMBUS", _UID 0, _CRS empty } — what hv_vmbus binds to. */
export function vmbusDeviceAml(): aml.Aml {
  return aml.device(
    'VMBS',
    aml.name('_HID', aml.string('VMBUS')),
    aml.name('_UID', aml.integer(0)),
    aml.name('_CRS', aml.resourceTemplate()),
  );
}

/** Name(\_S5, Package { 5, 5, 0, 0 }): SLP_TYPa/SLP_TYPb for the soft-off state. */
export function s5Aml(): aml.Aml {
  return aml.name('_S5', aml.pkg(aml.integer(ACPI_S5_SLP_TYP), aml.integer(ACPI_S5_SLP_TYP), aml.integer(0), aml.integer(0)));
}

/** DSDT (revision 2: 64-bit integers): \_S5, \_SB.VMBS (or \_SB.VMOD.VMBS with windows), \_SB.UARn. */
export function buildDsdt(options: DsdtOptions = {}): Uint8Array {
  let vmbus = vmbusDeviceAml();
  if (options.vmbusMmio !== undefined && options.vmbusMmio.length > 0) {
    const windows = options.vmbusMmio.map((w) => aml.qwordMemory(w.gpa, w.size));
    vmbus = aml.device(
      'VMOD',
      aml.name('_HID', aml.string('ACPI0004')),
      aml.name('_UID', aml.integer(0)),
      aml.name('_CRS', aml.resourceTemplate(...windows)),
      vmbus,
    );
  }
  const uarts = (options.uarts ?? []).map((u, i) => uartDeviceAml(i + 1, u));
  const body = aml.concat(s5Aml(), aml.scope('\\_SB', vmbus, ...uarts));
  return sealTable(aml.concat(new Uint8Array(ACPI_TABLE_HEADER.size), body), 'DSDT', 2, options);
}

export interface AcpiTablesOptions extends AcpiHeaderIds {
  /** Number of vCPUs (APIC IDs 0..cpus-1) unless `apicIds` is given. */
  cpus?: number;
  apicIds?: readonly number[];
  ioApicId?: number;
  pcatCompat?: boolean;
  vmbusMmio?: readonly VmbusMmioWindow[];
  uarts?: readonly AcpiUart[];
}

export interface AcpiTablesLayout {
  rsdp: number;
  xsdt: number;
  fadt: number;
  madt: number;
  dsdt: number;
  /** First byte after the tables: [base, end) should be an e820 ACPI (type 3) or reserved range. */
  end: number;
}

/** Builds every table and lays them out from `base` (RSDP first); nothing is written. */
export function buildAcpiTables(base: number, options: AcpiTablesOptions): { layout: AcpiTablesLayout; bytes: Uint8Array } {
  if (!Number.isSafeInteger(base) || base < 0 || base % 16 !== 0)
    throw new AcpiTableError(`ACPI tables: base 0x${base.toString(16)} is not a 16-byte aligned GPA`);
  let apicIds = options.apicIds;
  if (apicIds === undefined) {
    const cpus = options.cpus ?? 0;
    if (!Number.isInteger(cpus) || cpus < 1) throw new AcpiTableError(`ACPI tables: ${cpus} vCPUs (at least one)`);
    apicIds = Array.from({ length: cpus }, (_, i) => i);
  }
  const align = (n: number): number => (n + 15) & ~15;
  const dsdt = buildDsdt(options);
  const madt = buildMadt({ ...options, apicIds });
  const rsdpGpa = base;
  const xsdtGpa = align(rsdpGpa + RSDP.size);
  const xsdtSize = ACPI_TABLE_HEADER.size + 8 * 2;
  const fadtGpa = align(xsdtGpa + xsdtSize);
  const madtGpa = align(fadtGpa + FADT.size);
  const dsdtGpa = align(madtGpa + madt.length);
  const end = dsdtGpa + dsdt.length;
  const bytes = new Uint8Array(end - base);
  bytes.set(buildRsdp(xsdtGpa, options), rsdpGpa - base);
  bytes.set(buildXsdt([fadtGpa, madtGpa], options), xsdtGpa - base);
  bytes.set(buildFadt(dsdtGpa, options), fadtGpa - base);
  bytes.set(madt, madtGpa - base);
  bytes.set(dsdt, dsdtGpa - base);
  return { layout: { rsdp: rsdpGpa, xsdt: xsdtGpa, fadt: fadtGpa, madt: madtGpa, dsdt: dsdtGpa, end }, bytes };
}

/**
 * Writes the tables to guest memory from `base` and returns their addresses; `layout.rsdp`
 * (= base) is what goes into boot_params.acpi_rsdp_addr. With base in [0xE0000, 0x100000) the
 * kernel's legacy scan also finds the RSDP (it looks on 16-byte boundaries there). Throws
 * AcpiTableError if [base, end) is not all guest RAM.
 */
export function writeAcpiTables(
  memory: Pick<GuestMemory, 'contains' | 'write'>,
  base: number,
  options: AcpiTablesOptions,
): AcpiTablesLayout {
  const { layout, bytes } = buildAcpiTables(base, options);
  if (!memory.contains(base, bytes.length)) {
    throw new AcpiTableError(`ACPI tables: [0x${base.toString(16)}, 0x${layout.end.toString(16)}) is not in guest RAM`);
  }
  memory.write(base, bytes);
  return layout;
}

/** Legacy RSDP scan area (the kernel also scans the first KiB of the EBDA). */
export const ACPI_RSDP_SCAN_START = 0xe0000;
export const ACPI_RSDP_SCAN_END = 0x100000;
