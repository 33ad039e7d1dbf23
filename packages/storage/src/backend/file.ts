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
 *   koffi; where koffi or preadv2 is missing (ENOSYS, EOPNOTSUPP), reads use the pool only.
 * - UNMAP punches a hole (fallocate(PUNCH_HOLE | KEEP_SIZE)) so a sparse image stays sparse.
 *   Node has no fallocate, so libc's is called through koffi (already hvemu's FFI for MSHV and
 *   WHPX) on koffi's worker thread; where that is unavailable or the file system refuses
 *   (EOPNOTSUPP), the range is written with zeros instead: the guest sees the same data.
 */
import { closeSync, constants, fstatSync, ftruncateSync, openSync, fdatasync, read, write } from 'node:fs';
import { createRequire } from 'node:module';
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
/** preadv2's flag: fail with EAGAIN rather than wait for the disk (include/uapi/linux/fs.h). */
const RWF_NOWAIT = 0x08;
/** The most iovecs one preadv2 takes (IOV_MAX). */
const IOV_MAX = 1024;
const FALLOC_FL_PUNCH_HOLE = 0x02;
/** Zeros written per call where a hole cannot be punched. */
const ZERO_CHUNK = 1 << 20;

type Fallocate = (fd: number, mode: number, offset: bigint, length: bigint) => Promise<number>;
/** preadv2 over an array of {iov_base, iov_len}: bytes read, or -1 (errno through koffi). */
interface Preadv2 {
  call(fd: number, iov: { iov_base: Uint8Array; iov_len: number }[], count: number, offset: number, flags: number): number;
  errno(): number;
}

export class FileBackend implements DiskBackend {
  readonly byteLength: number;
  readonly readOnly: boolean;
  private fd: number | null;
  private readonly fallocate: Fallocate | null;
  private preadv2: Preadv2 | null;
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
    this.preadv2 = options.cachedReads === false ? null : loadPreadv2();
  }

  readCached(offset: number, targets: readonly Uint8Array[]): number {
    const p = this.preadv2;
    if (!p || this.fd === null) return 0;
    let length = 0;
    for (const t of targets) length += t.length;
    checkRange(this.byteLength, offset, length);
    let done = 0;
    for (let first = 0; first < targets.length; first += IOV_MAX) {
      const group = targets.slice(first, first + IOV_MAX);
      const iov = group.map((t) => ({ iov_base: t, iov_len: t.length }));
      let want = 0;
      for (const t of group) want += t.length;
      const n = p.call(this.fd, iov, iov.length, offset + done, RWF_NOWAIT);
      if (n < 0) {
        const errno = p.errno();
        // Not in the page cache (EAGAIN), or this kernel or file system has no RWF_NOWAIT.
        if (errno !== EAGAIN) this.preadv2 = null;
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

/** libc preadv2 through koffi (synchronous: with RWF_NOWAIT it never blocks); null where either is missing. */
function loadPreadv2(): Preadv2 | null {
  // Bound once per process: koffi refuses a second struct type of the same name.
  preadv2Binding ??= { value: bindPreadv2() };
  return preadv2Binding.value;
}
let preadv2Binding: { value: Preadv2 | null } | undefined;

function bindPreadv2(): Preadv2 | null {
  if (process.platform !== 'linux') return null;
  try {
    const koffi = createRequire(import.meta.url)('koffi');
    const iovec = koffi.struct('hvemu_iovec', { iov_base: 'void *', iov_len: 'size_t' });
    const fn = koffi.load('libc.so.6').func('preadv2', 'intptr_t', ['int', koffi.pointer(iovec), 'int', 'int64_t', 'int']);
    return { call: fn, errno: () => koffi.errno() };
  } catch {
    return null;
  }
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
