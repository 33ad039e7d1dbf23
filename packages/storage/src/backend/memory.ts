/**
 * A disk in host memory, for tests and scratch disks. Writes are "stable" as soon as they are
 * copied; `failNext` injects I/O errors so tests can see the guest's MEDIUM ERROR.
 */
import { checkRange, BackendIoError, type DiskBackend } from './backend.js';

export class MemoryBackend implements DiskBackend {
  readonly bytes: Uint8Array;
  /** Counts of calls (tests check that flushes and unmaps reached the backend). */
  readonly stats = { reads: 0, writes: 0, fuaWrites: 0, flushes: 0, unmaps: 0 };
  private failures: { op: 'read' | 'write' | 'flush' | 'unmap'; count: number } | null = null;

  constructor(
    byteLength: number,
    readonly readOnly = false,
  ) {
    this.bytes = new Uint8Array(byteLength);
  }

  get byteLength(): number {
    return this.bytes.length;
  }

  /** The next `count` calls of `op` fail with BackendIoError. */
  failNext(op: 'read' | 'write' | 'flush' | 'unmap', count = 1): void {
    this.failures = { op, count };
  }

  private maybeFail(op: 'read' | 'write' | 'flush' | 'unmap'): void {
    if (this.failures?.op === op && this.failures.count > 0) {
      this.failures.count--;
      throw new BackendIoError(`injected ${op} failure`);
    }
  }

  async read(offset: number, target: Uint8Array): Promise<void> {
    checkRange(this.byteLength, offset, target.length);
    this.maybeFail('read');
    this.stats.reads++;
    target.set(this.bytes.subarray(offset, offset + target.length));
  }

  async write(offset: number, source: Uint8Array, options?: { fua?: boolean }): Promise<void> {
    checkRange(this.byteLength, offset, source.length);
    this.maybeFail('write');
    this.stats.writes++;
    if (options?.fua) this.stats.fuaWrites++;
    this.bytes.set(source, offset);
  }

  async flush(): Promise<void> {
    this.maybeFail('flush');
    this.stats.flushes++;
  }

  async unmap(offset: number, length: number): Promise<void> {
    checkRange(this.byteLength, offset, length);
    this.maybeFail('unmap');
    this.stats.unmaps++;
    this.bytes.fill(0, offset, offset + length);
  }

  async close(): Promise<void> {}
}
