/**
 * User devices on a partition: port-I/O and MMIO handlers by address range, MSR handlers by
 * index. Lookups happen once per exit, so ranges are kept sorted and searched linearly (a
 * platform has a handful of devices).
 */
import { AccelUsageError } from './errors.js';

/** A port-I/O device: ports [port, port + count). */
export interface IoDevice {
  readonly port: number;
  readonly count: number;
  /** IN of `size` bytes at `port`; return the value (default: all ones, as on a PC bus). */
  read?(port: number, size: 1 | 2 | 4, vp: number): number | Promise<number>;
  /** OUT; return `{ stop: true }`-style control through `stopVcpu` instead of blocking. */
  write?(port: number, size: 1 | 2 | 4, value: number, vp: number): void | DeviceControl | Promise<void | DeviceControl>;
}

/** A memory-mapped device: guest-physical [gpa, gpa + size). Must not overlap RAM. */
export interface MmioDevice {
  readonly gpa: number;
  readonly size: number;
  read?(gpa: number, size: number, vp: number): bigint | number | Promise<bigint | number>;
  write?(gpa: number, size: number, value: bigint, vp: number): void | DeviceControl | Promise<void | DeviceControl>;
}

/** A device's request to stop the vCPU that made the access (debug-exit style devices). */
export interface DeviceControl {
  stop?: boolean;
}

/** MSR handler for one MSR or a range; `read` returning undefined injects #GP. */
export interface MsrDevice {
  readonly msr: number;
  readonly count?: number;
  read?(msr: number, vp: number): bigint | undefined | Promise<bigint | undefined>;
  /** Return false to inject #GP. */
  write?(msr: number, value: bigint, vp: number): boolean | void | Promise<boolean | void>;
}

interface Range<D> {
  start: number;
  end: number;
  device: D;
}

/** Non-overlapping address ranges mapped to devices. */
export class RangeMap<D> {
  private readonly ranges: Range<D>[] = [];

  constructor(private readonly what: string) {}

  add(start: number, length: number, device: D): void {
    this.check(start, length);
    this.ranges.push({ start, end: start + length, device });
    this.ranges.sort((a, b) => a.start - b.start);
  }

  /** Throws AccelUsageError unless [start, start + length) is a valid range that overlaps no device. */
  check(start: number, length: number): void {
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(length) || start < 0 || length <= 0) {
      throw new AccelUsageError(`${this.what} range [${start}, +${length}) is not a valid range`);
    }
    const end = start + length;
    for (const r of this.ranges) {
      if (start < r.end && r.start < end) {
        throw new AccelUsageError(
          `${this.what} range [0x${start.toString(16)}, 0x${end.toString(16)}) overlaps [0x${r.start.toString(16)}, 0x${r.end.toString(16)})`,
        );
      }
    }
  }

  /** The device covering [addr, addr + size), or undefined (an access straddling two devices misses). */
  find(addr: number, size = 1): D | undefined {
    for (const r of this.ranges) {
      if (addr >= r.start && addr + size <= r.end) return r.device;
    }
    return undefined;
  }

  /** Every start..end range, for building filters. */
  spans(): readonly { start: number; end: number }[] {
    return this.ranges.map(({ start, end }) => ({ start, end }));
  }
}
