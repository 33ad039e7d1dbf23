/**
 * The balloon's narrow view of guest RAM (a port): what the device asks of the VMM, so it
 * depends on neither accel nor vm. `balloonMemory(memory, control?)` makes one: over a
 * partition's memoryControl (KVM: one batched hole punch per balloon message, real hot add),
 * or over GuestMemory alone (the simulated VM: released pages are zero-filled, hot-added RAM is
 * a new SharedArrayBuffer).
 */
import { HostUsageError } from '@hvemu/common';
import type { GuestMemory } from '@hvemu/memory';

export interface RamSpan {
  readonly gpa: number;
  readonly size: number;
}

export interface BalloonMemory {
  /** Guest RAM now, sorted by GPA. */
  regions(): readonly RamSpan[];
  /**
   * The guest gave these pages up: `pairs` are (gpa, size) byte pairs, each inside one RAM
   * region (the device checked). After it they read as zero; the host frees their memory where
   * it can. Returns the bytes released.
   */
  release(pairs: Float64Array): number;
  /** New RAM at `region` (hot add). Absent: hot add is not offered. */
  addRam?(region: RamSpan): void;
  /** Takes back RAM added by addRam (a hot add the guest refused). */
  removeRam?(gpa: number): void;
  /** Host bytes behind guest RAM now (absent: not measured). */
  allocatedBytes?(): number;
}

/** The part of an accel partition's MemoryControl the balloon uses (structural: no import of accel). */
export interface MemoryControlLike {
  discardRanges(ranges: Float64Array): number;
  addRam(region: { readonly gpa: number; readonly size: number }): void;
  removeRam(gpa: number): void;
  ramUsage?(): readonly { readonly allocatedBytes: number }[];
}

/** A BalloonMemory over `memory`, releasing through `control` when given (else zero-filling). */
export function balloonMemory(memory: GuestMemory, control?: MemoryControlLike): BalloonMemory {
  const regions = (): RamSpan[] => memory.regions.map((r) => ({ gpa: r.gpa, size: r.size }));
  if (control) {
    return {
      regions,
      release: (pairs) => control.discardRanges(pairs),
      addRam: (region) => control.addRam(region),
      removeRam: (gpa) => control.removeRam(gpa),
      allocatedBytes: control.ramUsage ? () => control.ramUsage!().reduce((n, r) => n + r.allocatedBytes, 0) : undefined,
    };
  }
  return {
    regions,
    release: (pairs) => memory.zeroRanges(pairs),
    addRam(region) {
      if (memory.regions.some((r) => region.gpa < r.end && r.gpa < region.gpa + region.size)) {
        throw new HostUsageError(`RAM at 0x${region.gpa.toString(16)}+0x${region.size.toString(16)} overlaps guest RAM`);
      }
      memory.addRegion({ gpa: region.gpa, size: region.size, buffer: new SharedArrayBuffer(region.size) });
    },
    removeRam: (gpa) => void memory.removeRegion(gpa),
  };
}
