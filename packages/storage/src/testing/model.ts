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
  /** Per sector: the newest content known to be durable. */
  private readonly durable: Version[];
  /** Per sector: contents written since (any of them, or the durable one, may survive a crash). */
  private readonly volatile: Version[][];
  private generation = 0;

  constructor(
    readonly byteLength: number,
    readonly sectorSize: number,
  ) {
    this.current = new Uint8Array(byteLength);
    const sectors = byteLength / sectorSize;
    this.durable = Array.from({ length: sectors }, () => ({ generation: 0, data: new Uint8Array(sectorSize) }));
    this.volatile = Array.from({ length: sectors }, () => []);
  }

  /** A write completed (FUA: it is durable too). */
  write(lba: number, data: Uint8Array, fua = false): void {
    this.current.set(data, lba * this.sectorSize);
    for (let i = 0; i < data.length / this.sectorSize; i++) {
      const v = { generation: ++this.generation, data: data.slice(i * this.sectorSize, (i + 1) * this.sectorSize) };
      if (fua) {
        this.durable[lba + i] = v;
        this.volatile[lba + i] = [];
      } else this.volatile[lba + i].push(v);
    }
  }

  /** An UNMAP (or WRITE SAME with UNMAP of zeros) completed: the blocks read as zeros. */
  unmap(lba: number, blocks: number): void {
    this.write(lba, new Uint8Array(blocks * this.sectorSize));
  }

  /** The state a flush issued now makes durable once it completes. */
  snapshot(): DiskModelSnapshot {
    // What the cache holds now per sector: the last completed write (same-sector writes are never concurrent).
    return { sectors: this.volatile.map((v) => (v.length > 0 ? v[v.length - 1] : null)) };
  }

  /** A flush completed: everything completed before it was issued (`snapshot`) is durable. */
  flushed(snapshot: DiskModelSnapshot): void {
    snapshot.sectors.forEach((v, i) => {
      if (v === null) return;
      // A FUA write that completed meanwhile is newer than what the flush made durable.
      if (this.durable[i].generation < v.generation) this.durable[i] = v;
      this.volatile[i] = this.volatile[i].filter((w) => w.generation > this.durable[i].generation);
    });
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
      if (!allowed.some((c) => sameBytes(c.data, got))) bad.push(i);
    }
    return bad;
  }
}

interface Version {
  readonly generation: number;
  readonly data: Uint8Array;
}

export interface DiskModelSnapshot {
  readonly sectors: readonly (Version | null)[];
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
