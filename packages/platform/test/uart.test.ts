/** The 16550A as Linux's 8250 driver probes it (drivers/tty/serial/8250/8250_port.c autoconfig), and empty ports. */
import { describe, expect, it } from 'vitest';
import { AbsentPorts, COM1_PORT, EmptyPciConfig, Uart16550 } from '@hvemu/platform';

const B = 1 as const;

describe('Uart16550', () => {
  it("passes the 8250 driver's detection: IER read-back, scratch, loopback, FIFO bits in IIR", () => {
    const u = new Uart16550();
    const r = (off: number) => u.read(COM1_PORT + off);
    const w = (off: number, v: number) => u.write(COM1_PORT + off, B, v);
    // IER: 0 reads 0, 0x0f reads 0x0f (a UART is there)
    w(1, 0);
    expect(r(1) & 0x0f).toBe(0);
    w(1, 0x0f);
    expect(r(1) & 0x0f).toBe(0x0f);
    // scratch register holds what was written
    w(7, 0xa5);
    expect(r(7)).toBe(0xa5);
    // loopback: MCR = LOOP | OUT2 | RTS (0x1a) makes MSR's top nibble 0x90 (DCD | CTS)
    w(4, 0x1a);
    expect(r(6) & 0xf0).toBe(0x90);
    w(4, 0);
    // FIFO enable shows as the 16550A bits in IIR, no interrupt pending (interrupts off again)
    w(1, 0);
    w(2, 0x01);
    expect(r(2)).toBe(0xc1);
  });

  it('transmits through THR, polls as always ready, latches the divisor under DLAB, echoes in loopback', () => {
    const out: number[] = [];
    const u = new Uart16550(COM1_PORT, (b) => out.push(b));
    const r = (off: number) => u.read(COM1_PORT + off);
    const w = (off: number, v: number) => u.write(COM1_PORT + off, B, v);
    expect(r(5) & 0x60).toBe(0x60); // THRE | TEMT
    for (const c of 'ok\n') w(0, c.charCodeAt(0));
    expect(String.fromCharCode(...out)).toBe('ok\n');
    w(3, 0x80); // DLAB
    w(0, 0x0c);
    w(1, 0x00);
    expect([r(0), r(1)]).toEqual([0x0c, 0]);
    w(3, 0x03);
    w(4, 0x10); // loopback: a transmitted byte is received, not output
    w(0, 0x41);
    expect(r(5) & 0x01).toBe(1);
    expect(r(0)).toBe(0x41);
    expect(out).toHaveLength(3);
  });

  it('raises THRE and received-data interrupts as edges on an OUT2-gated line, reported in IIR by priority', () => {
    let edges = 0;
    const u = new Uart16550(
      COM1_PORT,
      () => {},
      () => edges++,
    );
    const r = (off: number) => u.read(COM1_PORT + off);
    const w = (off: number, v: number) => u.write(COM1_PORT + off, B, v);
    w(1, 0x02); // THRE interrupts on, THR empty: pending, but OUT2 is off
    expect(edges).toBe(0);
    w(4, 0x08); // OUT2 connects the line
    expect(edges).toBe(1);
    expect(r(2) & 0x0f).toBe(0x02); // THRE, and reading IIR resets it
    expect(r(2) & 0x0f).toBe(0x01);
    w(0, 0x41); // a transmitted byte leaves THR empty again: a new edge
    w(0, 0x42); // still pending: no edge
    expect(edges).toBe(2);
    expect(u.receive(Uint8Array.of(0x61))).toBe(true); // received data is not enabled yet
    expect(r(2) & 0x0f).toBe(0x02);
    w(1, 0x03); // received data on: it outranks THRE
    expect(edges).toBe(3);
    expect(r(2) & 0x0f).toBe(0x04);
    expect(r(0)).toBe(0x61); // reading RBR clears it
    expect(r(2) & 0x0f).toBe(0x01);
    w(1, 0x00);
    w(0, 0x43);
    expect(edges).toBe(3); // disabled: nothing pending
    const quiet = new Uart16550();
    quiet.write(COM1_PORT + 4, B, 0x08);
    quiet.write(COM1_PORT + 1, B, 0x02); // no irq callback: nothing to call, IIR still reports
    expect(quiet.read(COM1_PORT + 2) & 0x0f).toBe(0x02);
  });

  it('bounds console input', () => {
    const u = new Uart16550();
    expect(u.receive(new Uint8Array(4096))).toBe(true);
    expect(u.receive(new Uint8Array(1))).toBe(false);
  });
});

describe('empty ports', () => {
  it('COM2-4 and an empty PCI bus read all ones; CONFIG_ADDRESS keeps its value', () => {
    const com2 = new AbsentPorts(0x2f8, 8);
    expect([com2.read(0x2f8, 1), com2.read(0x2fd, 2), com2.read(0x2f8, 4)]).toEqual([0xff, 0xffff, 0xffff_ffff]);
    const pci = new EmptyPciConfig();
    pci.write(0xcf8, 4, 0x8000_0000);
    expect(pci.read(0xcf8, 4)).toBe(0x8000_0000);
    expect(pci.read(0xcfc, 4)).toBe(0xffff_ffff);
    expect(pci.read(0xcfe, 2)).toBe(0xffff);
  });
});
