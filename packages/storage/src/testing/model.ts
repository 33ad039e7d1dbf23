/**
 * The reference model of a disk for property tests: what every read must return, and, with
 * VolatileCacheBackend, what must survive a crash. Writes, UNMAPs and flushes are applied in
 * completion order by the test; requests issued together must not overlap (the model does not
 * guess an order the device is free to choose).
 */
import type { DiskBackend, WriteOptions } from '../backend/backend.js';
import { checkRange } from '../backend/backend.js';

export class DiskModel {
  /** What a read returns now. */
  readonly current: Uint8Array;
  /** Per sector: the content the disk must hold after a crash, if it is known. */
  private readonly durable: Uint8Array[];
  /** Per sector: contents written since the last guarantee (any of them, or the durable one, may survive). */
  private readonly volatile: Uint8Array[][];

  constructor(
    readonly byteLength: number,
    readonly sectorSize: number,
  ) {
    this.current = new Uint8Array(byteLength);
    const sectors = byteLength / sectorSize;
    this.durable = Array.from({ length: sectors }, () => new Uint8Array(sectorSize));
    this.volatile = Array.from({ length: sectors }, () => []);
  }

  /** A write completed (FUA: it is durable too). */
  write(lba: number, data: Uint8Array, fua = false): void {
    this.current.set(data, lba * this.sectorSize);
    for (let i = 0; i < data.length / this.sectorSize; i++) {
      const sector = data.slice(i * this.sectorSize, (i + 1) * this.sectorSize);
      if (fua) {
        this.durable[lba + i] = sector;
        this.volatile[lba + i] = [];
      } else this.volatile[lba + i].push(sector);
    }
  }

  /** An UNMAP (or WRITE SAME with UNMAP of zeros) completed: the blocks read as zeros. */
  unmap(lba: number, blocks: number): void {
    this.write(lba, new Uint8Array(blocks * this.sectorSize));
  }

  /** A flush completed: everything completed before it was issued is durable. `snapshot` is the model's state at issue. */
  flushed(snapshot: DiskModelSnapshot): void {
    snapshot.sectors.forEach((content, i) => {
      if (content === null) return;
      this.durable[i] = content;
      // Writes completed after the flush was issued may still be lost: keep only those.
      this.volatile[i] = this.volatile[i].slice(snapshot.volatileCounts[i]);
    });
  }

  /** The state a flush issued now makes durable once it completes. */
  snapshot(): DiskModelSnapshot {
    return {
      // What the cache holds now per sector: the last completed write (same-sector writes are never concurrent).
      sectors: this.volatile.map((v) => (v.length > 0 ? v[v.length - 1] : null)),
      volatileCounts: this.volatile.map((v) => v.length),
    };
  }

  expected(lba: number, blocks: number): Uint8Array {
    return this.current.slice(lba * this.sectorSize, (lba + blocks) * this.sectorSize);
  }

  /** Sectors of `image` (what survived a crash) that hold something the model says cannot be there. */
  crashViolations(image: Uint8Array): number[] {
    const bad: number[] = [];
    for (let i = 0; i < this.durable.length; i++) {
      const got = image.subarray(i * this.sectorSize, (i + 1) * this.sectorSize);
      const allowed = [this.durable[i], ...this.volatile[i]];
      if (!allowed.some((c) => sameBytes(c, got))) bad.push(i);
    }
    return bad;
  }
}

export interface DiskModelSnapshot {
  readonly sectors: readonly (Uint8Array | null)[];
  readonly volatileCounts: readonly number[];
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return (
    a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))
  );
}

/**
 * A backend with a volatile write cache, like a disk's or the host page cache: writes land in
 * the cache, flush and FUA make them durable, `crash()` loses what was not. What a crash test
 * checks a device against (the device must flush before it acknowledges a flush or FUA).
 */
export class VolatileCacheBackend implements DiskBackend {
  readonly durable: Uint8Array;
  private readonly cache = new Map<number, Uint8Array>();
  readonly readOnly = false;

  constructor(
    readonly byteLength: number,
    private readonly blockSize = 512,
  ) {
    this.durable = new Uint8Array(byteLength);
  }

  async read(offset: number, target: Uint8Array): Promise<void> {
    checkRange(this.byteLength, offset, target.length);
    target.set(this.durable.subarray(offset, offset + target.length));
    for (const [at, block] of this.cache) {
      const lo = Math.max(at, offset);
      const hi = Math.min(at + block.length, offset + target.length);
      if (lo < hi) target.set(block.subarray(lo - at, hi - at), lo - offset);
    }
  }

  async write(offset: number, source: Uint8Array, options?: WriteOptions): Promise<void> {
    checkRange(this.byteLength, offset, source.length);
    for (let i = 0; i < source.length; i += this.blockSize) {
      const block = source.slice(i, i + this.blockSize);
      if (options?.fua) {
        this.durable.set(block, offset + i);
        this.cache.delete(offset + i);
      } else this.cache.set(offset + i, block);
    }
  }

  async flush(): Promise<void> {
    for (const [at, block] of this.cache) this.durable.set(block, at);
    this.cache.clear();
  }

  async unmap(offset: number, length: number): Promise<void> {
    await this.write(offset, new Uint8Array(length));
  }

  /** Power loss: the cache is gone; what remains is returned. */
  crash(): Uint8Array {
    this.cache.clear();
    return this.durable.slice();
  }

  async close(): Promise<void> {}
}
