/** The FADT power registers: S5 poweroff and reset are reported once seen and stop the vCPU. */
import { describe, expect, it } from 'vitest';
import {
  AcpiPmDevice,
  ACPI_RESET_PORT,
  ACPI_SLEEP_CONTROL_PORT,
  ACPI_SLEEP_STATUS_PORT,
  type AcpiPowerEvent,
} from '../../src/acpi/power.js';

function device(): { dev: AcpiPmDevice; events: [AcpiPowerEvent, number][] } {
  const events: [AcpiPowerEvent, number][] = [];
  return { dev: new AcpiPmDevice((kind, vp) => events.push([kind, vp])), events };
}

describe('AcpiPmDevice', () => {
  it('covers the three FADT registers from port 0x600', () => {
    const { dev } = device();
    expect([dev.port, dev.count]).toEqual([0x600, 3]);
    expect([ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_STATUS_PORT, ACPI_RESET_PORT]).toEqual([0x600, 0x601, 0x602]);
  });

  it("Linux's S5 sequence: WAK_STS clear is ignored, SLP_EN | SLP_TYP 5 (0x34) powers off and stops the vCPU", () => {
    const { dev, events } = device();
    expect(dev.write(ACPI_SLEEP_STATUS_PORT, 1, 0x80, 0)).toBeUndefined();
    expect(dev.read()).toBe(0); // WAK_STS never reads set
    expect(dev.write(ACPI_SLEEP_CONTROL_PORT, 1, 0x34, 1)).toEqual({ stop: true });
    expect(events).toEqual([['poweroff', 1]]);
    expect(dev.event).toEqual({ kind: 'poweroff', vp: 1 });
  });

  it('RESET_VALUE on RESET_REG resets', () => {
    const { dev, events } = device();
    expect(dev.write(ACPI_RESET_PORT, 1, 0x01, 0)).toEqual({ stop: true });
    expect(events).toEqual([['reset', 0]]);
  });

  it('ignores other sleep types, SLP_TYP 5 without SLP_EN, other reset values and other ports', () => {
    const { dev, events } = device();
    expect(dev.write(ACPI_SLEEP_CONTROL_PORT, 1, 0x14, 0)).toBeUndefined(); // S5 type, no SLP_EN
    expect(dev.write(ACPI_SLEEP_CONTROL_PORT, 1, 0x2c, 0)).toBeUndefined(); // S3 | SLP_EN
    expect(dev.write(ACPI_SLEEP_CONTROL_PORT, 1, 0x20, 0)).toBeUndefined(); // S0 | SLP_EN
    expect(dev.write(ACPI_RESET_PORT, 1, 0x06, 0)).toBeUndefined();
    expect(dev.write(ACPI_SLEEP_STATUS_PORT, 1, 0x34, 0)).toBeUndefined();
    expect(dev.write(ACPI_RESET_PORT, 1, 0x34, 0)).toBeUndefined();
    expect(events).toEqual([]);
    expect(dev.event).toBeUndefined();
  });

  it('a wider write counts by its low byte; the first event is kept, later ones still reported', () => {
    const { dev, events } = device();
    expect(dev.write(ACPI_SLEEP_CONTROL_PORT, 2, 0xff34, 0)).toEqual({ stop: true });
    expect(dev.write(ACPI_RESET_PORT, 4, 0x01, 1)).toEqual({ stop: true });
    expect(events).toEqual([
      ['poweroff', 0],
      ['reset', 1],
    ]);
    expect(dev.event).toEqual({ kind: 'poweroff', vp: 0 });
  });

  it('works without a callback', () => {
    const dev = new AcpiPmDevice();
    expect(dev.write(ACPI_RESET_PORT, 1, 1, 0)).toEqual({ stop: true });
    expect(dev.event?.kind).toBe('reset');
  });
});
