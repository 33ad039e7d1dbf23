/**
 * The legacy ports a Linux kernel touches on the way to its console: a 16550A UART that its
 * 8250 driver detects (IER read-back, the FIFO bits in IIR, the MCR loopback test, the scratch
 * register) and a console can print through (LSR polling), and empty ISA/PCI ports that read as
 * "nothing here" (all ones) so probes of COM2-4 and PCI configuration space end quickly.
 *
 * Interrupts: received data (IER bit 0) and transmitter empty (IER bit 1), reported in IIR by
 * priority, on an interrupt line gated by MCR OUT2 as on a PC. The line is given to `irq` as a
 * rising edge (the ISA IRQ is edge-triggered). The console's polled output needs none of it;
 * the kernel's tty does (user space writing to /dev/console): without a THRE interrupt the 8250
 * driver's transmit waits for ever. Transmission is instant, so THR is always empty: a THRE
 * interrupt is pending after THR is written or THRE interrupts are enabled, until IIR reports
 * it or THR is written again (16550 data sheet, interrupt reset conditions).
 */
import type { IoDevice } from '@hvemu/accel';

const RBR_THR_DLL = 0;
const IER_DLM = 1;
const IIR_FCR = 2;
const LCR = 3;
const MCR = 4;
const LSR = 5;
const MSR = 6;
const SCR = 7;

const LCR_DLAB = 0x80;
const MCR_LOOP = 0x10;
const LSR_DR = 0x01;
const LSR_THRE = 0x20;
const LSR_TEMT = 0x40;
const IIR_NO_INTERRUPT = 0x01;
const IIR_THRE = 0x02;
const IIR_RX_DATA = 0x04;
const IER_RX_DATA = 0x01;
const IER_THRE = 0x02;
const MCR_OUT2 = 0x08;
const IIR_FIFO_ENABLED = 0xc0;
const FCR_FIFO_ENABLE = 0x01;
/** Carrier, data-set ready, clear to send: a line that is there. */
const MSR_LINE_UP = 0xb0;
/** Bytes kept for the guest to read; a host that pushes more is refused. */
const MAX_INPUT = 4096;

export const COM1_PORT = 0x3f8;

export class Uart16550 implements IoDevice {
  readonly count = 8;
  private ier = 0;
  private lcr = 0x03;
  private mcr = 0;
  private scr = 0;
  private dll = 0x01;
  private dlm = 0;
  private fifo = false;
  private threPending = false;
  private line = false;
  private readonly input: number[] = [];

  /**
   * `onByte` gets each byte the guest transmits (not in loopback mode); `irq`, where given, is
   * called on each rising edge of the interrupt line.
   */
  constructor(
    readonly port: number = COM1_PORT,
    private readonly onByte: (byte: number) => void = () => {},
    private readonly irq?: () => void,
  ) {}

  /** Queues bytes for the guest to read (console input); false when the buffer is full. */
  receive(bytes: Uint8Array): boolean {
    if (this.input.length + bytes.length > MAX_INPUT) return false;
    this.input.push(...bytes);
    this.updateLine();
    return true;
  }

  /** The highest-priority pending interrupt's IIR code, or IIR_NO_INTERRUPT. */
  private pending(): number {
    if ((this.ier & IER_RX_DATA) !== 0 && this.input.length > 0) return IIR_RX_DATA;
    if ((this.ier & IER_THRE) !== 0 && this.threPending) return IIR_THRE;
    return IIR_NO_INTERRUPT;
  }

  private updateLine(): void {
    const level = this.pending() !== IIR_NO_INTERRUPT && (this.mcr & MCR_OUT2) !== 0 && (this.mcr & MCR_LOOP) === 0;
    if (level && !this.line) this.irq?.();
    this.line = level;
  }

  read(port: number): number {
    const dlab = (this.lcr & LCR_DLAB) !== 0;
    switch (port - this.port) {
      case RBR_THR_DLL: {
        if (dlab) return this.dll;
        const byte = this.input.shift() ?? 0;
        this.updateLine();
        return byte;
      }
      case IER_DLM:
        return dlab ? this.dlm : this.ier;
      case IIR_FCR: {
        const code = this.pending();
        if (code === IIR_THRE) this.threPending = false; // reporting THRE resets it
        this.updateLine();
        return code | (this.fifo ? IIR_FIFO_ENABLED : 0);
      }
      case LCR:
        return this.lcr;
      case MCR:
        return this.mcr;
      case LSR:
        return LSR_THRE | LSR_TEMT | (this.input.length > 0 ? LSR_DR : 0);
      case MSR:
        return (this.mcr & MCR_LOOP) !== 0 ? loopbackMsr(this.mcr) : MSR_LINE_UP;
      case SCR:
        return this.scr;
      default:
        return 0xff;
    }
  }

  write(port: number, _size: 1 | 2 | 4, value: number): void {
    const v = value & 0xff;
    const dlab = (this.lcr & LCR_DLAB) !== 0;
    switch (port - this.port) {
      case RBR_THR_DLL:
        if (dlab) {
          this.dll = v;
          return;
        }
        if ((this.mcr & MCR_LOOP) !== 0) this.receive(Uint8Array.of(v));
        else this.onByte(v);
        this.threPending = true; // sent at once: the holding register is empty again
        this.updateLine();
        return;
      case IER_DLM:
        if (dlab) {
          this.dlm = v;
          return;
        }
        // Enabling THRE interrupts while THR is empty (always, here) raises one.
        if ((v & IER_THRE) !== 0 && (this.ier & IER_THRE) === 0) this.threPending = true;
        this.ier = v & 0x0f;
        this.updateLine();
        return;
      case IIR_FCR:
        this.fifo = (v & FCR_FIFO_ENABLE) !== 0;
        return;
      case LCR:
        this.lcr = v;
        return;
      case MCR:
        this.mcr = v & 0x1f;
        this.updateLine();
        return;
      case SCR:
        this.scr = v;
        return;
      default:
        return; // LSR and MSR are read-only
    }
  }
}

/** In loopback the modem outputs come back as inputs: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD. */
function loopbackMsr(mcr: number): number {
  return ((mcr & 0x01) << 5) | ((mcr & 0x02) << 3) | ((mcr & 0x04) << 4) | ((mcr & 0x08) << 4);
}

/** I/O ports with nothing behind them: reads are all ones, writes vanish (COM2-4, an empty ISA slot). */
export class AbsentPorts implements IoDevice {
  constructor(
    readonly port: number,
    readonly count: number,
  ) {}
  read(_port: number, size: 1 | 2 | 4): number {
    return size === 4 ? 0xffff_ffff : size === 2 ? 0xffff : 0xff;
  }
  write(): void {}
}

/**
 * PCI configuration mechanism #1 with no devices: CONFIG_ADDRESS (0xcf8) holds what the guest
 * writes, CONFIG_DATA (0xcfc-0xcff) reads all ones (no function at any address), so a kernel's
 * PCI probe finds an empty bus.
 */
export class EmptyPciConfig implements IoDevice {
  readonly port = 0xcf8;
  readonly count = 8;
  private address = 0;

  read(port: number, size: 1 | 2 | 4): number {
    if (port === 0xcf8 && size === 4) return this.address;
    return size === 4 ? 0xffff_ffff : size === 2 ? 0xffff : 0xff;
  }
  write(port: number, size: 1 | 2 | 4, value: number): void {
    if (port === 0xcf8 && size === 4) this.address = value >>> 0;
  }
}
