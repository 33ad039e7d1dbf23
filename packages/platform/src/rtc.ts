/**
 * The CMOS real-time clock (MC146818) at ports 0x70 (index) / 0x71 (data), enough for a
 * kernel's boot: the time and date from the host's wall clock in BCD, 24-hour mode, never an
 * update in progress, the battery good. Without it a Linux kernel polls for the update flag
 * of an RTC that is not there (port 0x71 reads 0xFF) for seconds on an instruction-emulating
 * KVM ("Unable to read current time from RTC": 2.75 s of its boot here) and starts in 1970.
 * No alarms, no periodic interrupt, no NVRAM beyond reads of zero: writes are ignored.
 */
import type { IoDevice } from '@hvemu/accel';

export const RTC_INDEX_PORT = 0x70;

/** MC146818 registers. */
const REG_SECONDS = 0x00;
const REG_MINUTES = 0x02;
const REG_HOURS = 0x04;
const REG_DAY_OF_WEEK = 0x06;
const REG_DAY_OF_MONTH = 0x07;
const REG_MONTH = 0x08;
const REG_YEAR = 0x09;
const REG_A = 0x0a;
const REG_B = 0x0b;
const REG_C = 0x0c;
const REG_D = 0x0d;
/** The century byte PC firmware keeps (ACPI FADT's CENTURY field names it; Linux also infers it). */
const REG_CENTURY = 0x32;

/** Register A: 32.768 kHz time base, 1024 Hz rate; UIP (bit 7) never set. */
const A_VALUE = 0x26;
/** Register B: 24-hour mode (bit 1), BCD (bit 2 clear), no interrupts. */
const B_VALUE = 0x02;
/** Register D: VRT, the battery (and so the time) is valid. */
const D_VALUE = 0x80;

const bcd = (n: number): number => ((Math.floor(n / 10) % 10) << 4) | (n % 10);

export class CmosRtc implements IoDevice {
  readonly port = RTC_INDEX_PORT;
  readonly count = 2;
  private index = 0;

  /** `wallClockMs`: the host's time, Unix ms (default Date.now); the guest reads it in UTC. */
  constructor(private readonly wallClockMs: () => number = Date.now) {}

  read(port: number): number {
    if (port === RTC_INDEX_PORT) return 0xff; // the index register is write-only
    return this.register(this.index);
  }

  write(port: number, _size: 1 | 2 | 4, value: number): void {
    // Bit 7 of the index is the NMI mask on PCs: not modelled, not part of the index.
    if (port === RTC_INDEX_PORT) this.index = value & 0x7f;
  }

  private register(index: number): number {
    const now = new Date(this.wallClockMs());
    switch (index) {
      case REG_SECONDS:
        return bcd(now.getUTCSeconds());
      case REG_MINUTES:
        return bcd(now.getUTCMinutes());
      case REG_HOURS:
        return bcd(now.getUTCHours());
      case REG_DAY_OF_WEEK:
        return bcd(now.getUTCDay() + 1);
      case REG_DAY_OF_MONTH:
        return bcd(now.getUTCDate());
      case REG_MONTH:
        return bcd(now.getUTCMonth() + 1);
      case REG_YEAR:
        return bcd(now.getUTCFullYear() % 100);
      case REG_CENTURY:
        return bcd(Math.floor(now.getUTCFullYear() / 100));
      case REG_A:
        return A_VALUE;
      case REG_B:
        return B_VALUE;
      case REG_C:
        return 0;
      case REG_D:
        return D_VALUE;
      default:
        return 0;
    }
  }
}
