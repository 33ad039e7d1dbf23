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
import type { MemoryControl } from './types.js';

const PAGE = 4096;

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
  };

  /** Maps new zeroed RAM at [gpa, gpa + size) into the guest; returns it as GuestMemory regions. */
  protected abstract mapRam(gpa: number, size: number): RamRegionSpec[];
  /** Takes [gpa, gpa + size) (a whole region) out of the guest; no JS view may reach unmapped memory after. */
  protected abstract unmapRam(gpa: number, size: number): void;
  /** The pages of [gpa, gpa + size) (inside one region) become zero. */
  protected abstract discardPages(gpa: number, size: number): void;

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
