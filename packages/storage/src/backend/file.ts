/**
 * A raw disk image file. I/O is Node's asynchronous fs on the libuv thread pool (pread/pwrite
 * and fdatasync off the event loop; four threads by default, UV_THREADPOOL_SIZE for more):
 * real asynchronous I/O without a native dependency. io_uring was not tried.
 *
 * - Flush and FUA writes call fdatasync before they resolve: the data is on stable storage
 *   (the metadata a later read needs, such as a grown size, included; atime is not).
 * - Reads try the page cache first: preadv2(RWF_NOWAIT) straight into the request's pages, on
 *   the event loop (it never blocks: data not cached is EAGAIN and goes to the pool). A 4 KiB
 *   hit costs ~1 us instead of a pool round trip (~35 us); a 1 MiB hit saves a copy. Through
 *   the native addon (@hvemu/accel nativeFileIo: one crossing; koffi's marshalling of the iovec
 *   array cost ~9 us per call); where the addon or preadv2 is missing (ENOSYS, EOPNOTSUPP),
 *   reads use the pool only.
 * - UNMAP punches a hole (fallocate(PUNCH_HOLE | KEEP_SIZE)) so a sparse image stays sparse.
 *   Node has no fallocate, so libc's is called through koffi (already hvemu's FFI for MSHV and
 *   WHPX) on koffi's worker thread; where that is unavailable or the file system refuses
 *   (EOPNOTSUPP), the range is written with zeros instead: the guest sees the same data.
 */
import { closeSync, constants, fstatSync, ftruncateSync, openSync, fdatasync, read, write } from 'node:fs';
import { createRequire } from 'node:module';
import { nativeFileIo } from '@hvemu/accel';
import { BackendConfigError, BackendIoError, checkRange, type DiskBackend, type WriteOptions } from './backend.js';

export interface FileBackendOptions {
  readOnly?: boolean;
  /** Create (or extend) the file to this many bytes, sparse. Default: use the file's size. */
  createSize?: number;
  /** Hole punching through libc fallocate (default true); false always writes zeros. */
  punchHoles?: boolean;
  /** Reads from the page cache on the event loop first (preadv2 RWF_NOWAIT; default true). */
  cachedReads?: boolean;
}

const FALLOC_FL_KEEP_SIZE = 0x01;
/** The most iovecs one preadv2 takes (IOV_MAX). */
const IOV_MAX = 1024;
const FALLOC_FL_PUNCH_HOLE = 0x02;
/** Zeros written per call where a hole cannot be punched. */
const ZERO_CHUNK = 1 << 20;

type Fallocate = (fd: number, mode: number, offset: bigint, length: bigint) => Promise<number>;
/** preadv2(RWF_NOWAIT) into `targets`: bytes read, or -errno. */
type ReadNowait = (fd: number, offset: number, targets: readonly Uint8Array[]) => number;

export class FileBackend implements DiskBackend {
  readonly byteLength: number;
  readonly readOnly: boolean;
  private fd: number | null;
  private readonly fallocate: Fallocate | null;
  private readNowait: ReadNowait | null;
  /** How UNMAPs and reads were served (tests and diagnostics). */
  readonly stats = { holesPunched: 0, zeroFilled: 0, syncs: 0, cachedReadBytes: 0 };

  private constructor(
    readonly path: string,
    fd: number,
    options: FileBackendOptions,
  ) {
    this.fd = fd;
    this.readOnly = options.readOnly ?? false;
    this.byteLength = fstatSync(fd).size;
    this.fallocate = options.punchHoles === false || this.readOnly ? null : loadFallocate();
    this.readNowait = options.cachedReads === false ? null : loadReadNowait();
  }

  readCached(offset: number, targets: readonly Uint8Array[]): number {
    const readNowait = this.readNowait;
    if (!readNowait || this.fd === null) return 0;
    let length = 0;
    for (const t of targets) length += t.length;
    checkRange(this.byteLength, offset, length);
    let done = 0;
    for (let first = 0; first < targets.length; first += IOV_MAX) {
      const group = targets.length <= IOV_MAX ? targets : targets.slice(first, first + IOV_MAX);
      let want = 0;
      for (const t of group) want += t.length;
      const n = readNowait(this.fd, offset + done, group);
      if (n < 0) {
        // Not in the page cache (EAGAIN), or this kernel or file system has no RWF_NOWAIT.
        if (n !== -EAGAIN) this.readNowait = null;
        break;
      }
      done += n;
      if (n < want) break; // partly cached: the pool reads the rest
    }
    this.stats.cachedReadBytes += done;
    return done;
  }

  /** Opens `path` (synchronously, so a bad path fails where the VM is configured). BackendConfigError if it cannot. */
  static open(path: string, options: FileBackendOptions = {}): FileBackend {
    const flags = options.readOnly ? constants.O_RDONLY : constants.O_RDWR | (options.createSize !== undefined ? constants.O_CREAT : 0);
    let fd: number;
    try {
      fd = openSync(path, flags, 0o644);
    } catch (error) {
      throw new BackendConfigError(`cannot open disk image ${path}: ${(error as Error).message}`, { cause: error });
    }
    try {
      if (options.createSize !== undefined && fstatSync(fd).size < options.createSize) ftruncateSync(fd, options.createSize);
      return new FileBackend(path, fd, options);
    } catch (error) {
      closeSync(fd);
      throw new BackendConfigError(`cannot use disk image ${path}: ${(error as Error).message}`, { cause: error });
    }
  }

  async read(offset: number, target: Uint8Array): Promise<void> {
    checkRange(this.byteLength, offset, target.length);
    const fd = this.handle();
    for (let done = 0; done < target.length;) {
      const n = await new Promise<number>((resolve, reject) =>
        read(fd, target, done, target.length - done, offset + done, (e, bytes) => (e ? reject(ioError('read', e)) : resolve(bytes))),
      );
      // Past the end of a file shorter than byteLength (truncated under us): zeros, like a hole.
      if (n === 0) {
        target.fill(0, done);
        return;
      }
      done += n;
    }
  }

  async write(offset: number, source: Uint8Array, options?: WriteOptions): Promise<void> {
    checkRange(this.byteLength, offset, source.length);
    if (this.readOnly) throw new BackendIoError(`${this.path} is read-only`);
    await this.writeAll(offset, source);
    if (options?.fua) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.readOnly) return;
    const fd = this.handle();
    await new Promise<void>((resolve, reject) => fdatasync(fd, (e) => (e ? reject(ioError('fdatasync', e)) : resolve())));
    this.stats.syncs++;
  }

  async unmap(offset: number, length: number): Promise<void> {
    checkRange(this.byteLength, offset, length);
    if (this.readOnly) throw new BackendIoError(`${this.path} is read-only`);
    if (length === 0) return;
    if (this.fallocate) {
      const rc = await this.fallocate(this.handle(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, BigInt(offset), BigInt(length));
      if (rc === 0) {
        this.stats.holesPunched++;
        return;
      }
    }
    const zeros = new Uint8Array(Math.min(length, ZERO_CHUNK));
    for (let done = 0; done < length; done += zeros.length) {
      await this.writeAll(offset + done, zeros.subarray(0, Math.min(zeros.length, length - done)));
    }
    this.stats.zeroFilled++;
  }

  async close(): Promise<void> {
    if (this.fd === null) return;
    const fd = this.fd;
    this.fd = null;
    closeSync(fd);
  }

  private handle(): number {
    if (this.fd === null) throw new BackendIoError(`${this.path} is closed`);
    return this.fd;
  }

  private async writeAll(offset: number, source: Uint8Array): Promise<void> {
    const fd = this.handle();
    for (let done = 0; done < source.length;) {
      done += await new Promise<number>((resolve, reject) =>
        write(fd, source, done, source.length - done, offset + done, (e, bytes) => (e ? reject(ioError('write', e)) : resolve(bytes))),
      );
    }
  }
}

function ioError(op: string, e: NodeJS.ErrnoException): BackendIoError {
  return new BackendIoError(`${op} failed: ${e.code ?? e.message}`, { cause: e });
}

const EAGAIN = 11;

/** The addon's preadv2(RWF_NOWAIT); null where it has none (reads then use the pool only). */
function loadReadNowait(): ReadNowait | null {
  const io = process.platform === 'linux' ? nativeFileIo() : null;
  return io ? (fd, offset, targets) => io.readNowait(fd, offset, targets) : null;
}

/** libc fallocate through koffi, run on koffi's worker thread; null where koffi or libc is missing. */
function loadFallocate(): Fallocate | null {
  if (process.platform !== 'linux') return null;
  try {
    // createRequire keeps koffi optional and lazy, as accel's MSHV layer does.
    const koffi = createRequire(import.meta.url)('koffi');
    const fn = koffi.load('libc.so.6').func('int fallocate(int fd, int mode, int64_t offset, int64_t len)');
    return (fd, mode, offset, length) =>
      new Promise((resolve) => fn.async(fd, mode, offset, length, (error: unknown, rc: number) => resolve(error ? -1 : rc)));
  } catch {
    return null;
  }
}
