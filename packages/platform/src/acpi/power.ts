/**
 * The FADT's hardware-reduced power registers as one port-I/O device (ACPI 6.5 §4.8.3.7,
 * "Sleep Control and Status Registers", and §4.8.3.6, "Reset Register"):
 *
 *   0x600  SLEEP_CONTROL_REG  write SLP_EN (bit 5) | SLP_TYPx << 2: 0x34 = enter S5 (poweroff)
 *   0x601  SLEEP_STATUS_REG   reads 0 (WAK_STS never set: the VM does not wake); writes ignored
 *   0x602  RESET_REG          write RESET_VALUE (0x01) = reset
 *
 * Linux (drivers/acpi/acpica/hwesleep.c) writes WAK_STS to the status register, then the
 * control byte, then spins on WAK_STS; the device must stop the vCPU on the control write,
 * which it does by answering `{ stop: true }` after reporting the event.
 */
import type { DeviceControl, IoDevice } from '@hvemu/accel';

/** First port of the block; 0x600-0x602 are unused by the PC devices hvemu models. */
export const ACPI_PM_PORT = 0x600;
export const ACPI_SLEEP_CONTROL_PORT = ACPI_PM_PORT;
export const ACPI_SLEEP_STATUS_PORT = ACPI_PM_PORT + 1;
export const ACPI_RESET_PORT = ACPI_PM_PORT + 2;
export const ACPI_RESET_VALUE = 0x01;
/** SLP_TYP of S5 in the DSDT's \_S5 package. */
export const ACPI_S5_SLP_TYP = 5;
/** SLEEP_CONTROL_REG bit 5. */
export const ACPI_SLP_EN = 0x20;

export type AcpiPowerEvent = 'poweroff' | 'reset';

export class AcpiPmDevice implements IoDevice {
  readonly port = ACPI_PM_PORT;
  readonly count = 3;
  /** The first event seen (later ones are reported too, but this keeps the first). */
  event: { kind: AcpiPowerEvent; vp: number } | undefined;

  constructor(private readonly onEvent?: (kind: AcpiPowerEvent, vp: number) => void) {}

  read(): number {
    return 0;
  }

  write(port: number, _size: 1 | 2 | 4, value: number, vp: number): void | DeviceControl {
    const byte = value & 0xff;
    let kind: AcpiPowerEvent | undefined;
    if (port === ACPI_SLEEP_CONTROL_PORT && (byte & ACPI_SLP_EN) !== 0 && ((byte >> 2) & 7) === ACPI_S5_SLP_TYP) kind = 'poweroff';
    else if (port === ACPI_RESET_PORT && byte === ACPI_RESET_VALUE) kind = 'reset';
    if (kind === undefined) return;
    this.event ??= { kind, vp };
    this.onEvent?.(kind, vp);
    return { stop: true };
  }
}
