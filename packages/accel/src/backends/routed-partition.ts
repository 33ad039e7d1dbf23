/**
 * What every backend does the same way: device and handler registration (each routes its
 * exits through one ExitRouter and refuses registrations once closed), and the bookkeeping of
 * memoryControl (which regions exist, what may be added, removed or discarded, keeping
 * GuestMemory and the router in step). A backend supplies mapRam / unmapRam / discardPages.
 */
import type { GuestMemory, RamRegionSpec } from '@hvemu/memory';
import type { IoDevice, MmioDevice, MsrDevice } from '../devices.js';
import { AccelUsageError, MemoryMapError } from '../errors.js';
import type { ExitRouter } from '../exit-router.js';
import type { ExitHandler, HypercallExit } from '../exits.js';
import { checkInt, describeValue, MAX_GPA } from '../validate.js';
import type { MemoryControl, RamUsage } from './types.js';

const PAGE = 4096;
/** Most (gpa, size) pairs one discardRanges call takes (the addon's bound too). */
export const MAX_DISCARD_RANGES = 1 << 20;

export abstract class RoutedPartition {
  abstract readonly memory: GuestMemory;
  protected abstract readonly router: ExitRouter;
  protected closed = false;
  /** Guest RAM regions as given (at creation or by addRam): start GPA -> size. */
  private readonly ramRegions = new Map<number, number>();

  /** Guest RAM at run time (AccelPartition.memoryControl). */
  readonly memoryControl: MemoryControl = {
    addRam: (region) => this.addRam(region),
    removeRam: (gpa) => this.removeRam(gpa),
    discardRam: (gpa, size) => this.discardRam(gpa, size),
    discardRanges: (ranges) => this.discardRanges(ranges),
    ramUsage: () => this.ramUsage(),
  };

  /** Maps new zeroed RAM at [gpa, gpa + size) into the guest; returns it as GuestMemory regions. */
  protected abstract mapRam(gpa: number, size: number): RamRegionSpec[];
  /** Takes [gpa, gpa + size) (a whole region) out of the guest; no JS view may reach unmapped memory after. */
  protected abstract unmapRam(gpa: number, size: number): void;
  /** The pages of [gpa, gpa + size) (inside one region) become zero. */
  protected abstract discardPages(gpa: number, size: number): void;

  /** The pages of each (gpa, size) pair (checked already) become zero; KVM overrides with one native call. */
  protected discardPageRanges(pairs: Float64Array): void {
    for (let i = 0; i < pairs.length; i += 2) this.discardPages(pairs[i], pairs[i + 1]);
  }

  /** Host bytes behind each region; backends that cannot release pages report the whole region. */
  protected regionUsage(): RamUsage[] {
    return [...this.ramRegions].sort((a, b) => a[0] - b[0]).map(([gpa, size]) => ({ gpa, size, allocatedBytes: size }));
  }

  /** Records a region mapped at creation. */
  protected noteRam(gpa: number, size: number): void {
    this.ramRegions.set(gpa, size);
  }

  private addRam(region: { readonly gpa: number; readonly size: number }): void {
    this.checkOpen('memoryControl.addRam');
    if (region === null || typeof region !== 'object')
      throw new AccelUsageError(`memoryControl.addRam: region must be an object {gpa, size}, not ${describeValue(region)}`);
    const gpa = checkInt(region.gpa, 'memoryControl.addRam: region.gpa', 0, MAX_GPA - PAGE);
    const size = checkInt(region.size, 'memoryControl.addRam: region.size', PAGE, MAX_GPA - gpa);
    const where = `RAM at 0x${gpa.toString(16)}+0x${size.toString(16)}`;
    if (gpa % PAGE !== 0 || size % PAGE !== 0) throw new MemoryMapError(`memoryControl.addRam: ${where} is not page-aligned`);
    for (const [start, n] of this.ramRegions) {
      if (gpa < start + n && start < gpa + size)
        throw new MemoryMapError(`memoryControl.addRam: ${where} overlaps RAM at 0x${start.toString(16)}`);
    }
    this.router.checkRam(gpa, size);
    const specs = this.mapRam(gpa, size);
    this.ramRegions.set(gpa, size);
    for (const spec of specs) this.memory.addRegion(spec);
  }

  private removeRam(gpa: number): void {
    this.checkOpen('memoryControl.removeRam');
    const size = this.ramRegions.get(gpa);
    if (size === undefined)
      throw new AccelUsageError(
        `memoryControl.removeRam: no RAM region starts at ${typeof gpa === 'number' ? `0x${gpa.toString(16)}` : describeValue(gpa)}`,
      );
    if (this.ramRegions.size === 1) throw new AccelUsageError('memoryControl.removeRam: the last RAM region cannot be removed');
    // GuestMemory first: from here on no access through it reaches the region.
    for (const r of this.memory.regions.filter((m) => m.gpa >= gpa && m.end <= gpa + size)) this.memory.removeRegion(r.gpa);
    this.unmapRam(gpa, size);
    this.ramRegions.delete(gpa);
  }

  private discardRam(gpa: number, size: number): void {
    this.checkOpen('memoryControl.discardRam');
    checkInt(gpa, 'memoryControl.discardRam: gpa', 0, MAX_GPA - PAGE);
    checkInt(size, 'memoryControl.discardRam: size', PAGE, MAX_GPA - gpa);
    const where = `0x${gpa.toString(16)}+0x${size.toString(16)}`;
    if (gpa % PAGE !== 0 || size % PAGE !== 0) throw new AccelUsageError(`memoryControl.discardRam: ${where} is not page-aligned`);
    if (![...this.ramRegions].some(([start, n]) => gpa >= start && gpa + size <= start + n)) {
      throw new AccelUsageError(`memoryControl.discardRam: ${where} is not inside one RAM region`);
    }
    this.discardPages(gpa, size);
  }

  private discardRanges(ranges: Float64Array): number {
    this.checkOpen('memoryControl.discardRanges');
    if (!(ranges instanceof Float64Array)) {
      throw new AccelUsageError(
        `memoryControl.discardRanges: ranges must be a Float64Array of (gpa, size) pairs, not ${describeValue(ranges)}`,
      );
    }
    if (ranges.length === 0 || ranges.length % 2 !== 0 || ranges.length / 2 > MAX_DISCARD_RANGES) {
      throw new AccelUsageError(`memoryControl.discardRanges: 1..${MAX_DISCARD_RANGES} (gpa, size) pairs, not ${ranges.length} numbers`);
    }
    // Sorted regions once, then each pair located by binary search: all checked before any discard.
    const regions = [...this.ramRegions].sort((a, b) => a[0] - b[0]);
    let total = 0;
    for (let i = 0; i < ranges.length; i += 2) {
      const gpa = ranges[i];
      const size = ranges[i + 1];
      const where = `pair ${i / 2} (0x${Number(gpa).toString(16)}+0x${Number(size).toString(16)})`;
      if (!Number.isInteger(gpa) || !Number.isInteger(size) || gpa < 0 || size < PAGE || gpa + size > MAX_GPA) {
        throw new AccelUsageError(`memoryControl.discardRanges: ${where} is not a non-empty range of guest-physical addresses`);
      }
      if (gpa % PAGE !== 0 || size % PAGE !== 0) throw new AccelUsageError(`memoryControl.discardRanges: ${where} is not page-aligned`);
      let lo = 0;
      let hi = regions.length - 1;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (regions[mid][0] <= gpa) lo = mid;
        else hi = mid - 1;
      }
      const [start, n] = regions[lo] ?? [0, 0];
      if (!(gpa >= start && gpa + size <= start + n)) {
        throw new AccelUsageError(`memoryControl.discardRanges: ${where} is not inside one RAM region`);
      }
      total += size;
    }
    this.discardPageRanges(ranges);
    return total;
  }

  private ramUsage(): RamUsage[] {
    this.checkOpen('memoryControl.ramUsage');
    return this.regionUsage();
  }

  protected checkOpen(call: string): void {
    if (this.closed) throw new AccelUsageError(`${call}: the partition is closed`);
  }

  addIoDevice(device: IoDevice): void {
    this.checkOpen('addIoDevice');
    this.router.addIoDevice(device);
  }

  addMmioDevice(device: MmioDevice): void {
    this.checkOpen('addMmioDevice');
    this.router.addMmioDevice(device);
  }

  /** MSRs a backend traps without asking the hypervisor first (WHPX: UnhandledMsrs exits); others override. */
  addMsrDevice(device: MsrDevice): void {
    this.checkOpen('addMsrDevice');
    this.router.addMsrDevice(device);
  }

  /** Receives hypercall exits. */
  onHypercall(handler: ExitHandler<HypercallExit>): void {
    this.checkOpen('onHypercall');
    this.router.onHypercall(handler);
  }

  /** Receives every exit no device or specific handler took (including halt, shutdown, unrecoverable). */
  onExit(handler: ExitHandler): void {
    this.checkOpen('onExit');
    this.router.onExit(handler);
  }
}
