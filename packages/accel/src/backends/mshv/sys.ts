/**
 * The system-call layer under the MSHV backend: the only place that touches libc. The
 * partition talks to an `MshvSys`; tests use FakeMshvSys (@hvemu/accel/testing), real hosts use
 * KoffiMshvSys, which loads koffi and libc lazily, when the backend is opened.
 *
 * Structures that carry pointers (mshv_root_hvcall, mshv_user_mem_region) hold host
 * addresses, so every buffer the kernel reads through a pointer is a `HostBuffer`: memory
 * with a fixed address (an mmap), seen from JS as a Uint8Array over it.
 */
import { createRequire } from 'node:module';
import { HostSystemError } from '../../errors.js';
import { Errno } from './abi.js';

/** Host memory with a stable address (for pointers inside ioctl structures). */
export interface HostBuffer {
  readonly address: bigint;
  readonly bytes: Uint8Array;
}

/** A failed system call; `errno` is undefined when it could not be read (threadpool calls). */
export class MshvSysError extends HostSystemError {}

export interface MshvSys {
  /** open(path, O_RDWR | O_CLOEXEC). */
  open(path: string): number;
  close(fd: number): void;
  /**
   * ioctl with `arg` as the in/out argument structure (null: no argument). Returns the result
   * (>= 0); throws MshvSysError with errno. `arg` is written back even when the call fails.
   */
  ioctl(fd: number, request: number, arg: Uint8Array | null): number;
  /**
   * The same ioctl run off the JS thread (MSHV_RUN_VP blocks until an intercept). `arg` must
   * be a HostBuffer: the call outlives the JS stack frame.
   */
  ioctlAsync(fd: number, request: number, arg: HostBuffer): Promise<number>;
  /** Page-aligned anonymous memory with a fixed address. */
  alloc(size: number): HostBuffer;
  /** Guest RAM: a memfd of `size` bytes mapped shared; the ArrayBuffer is a zero-copy view of it. */
  mapRam(size: number, name: string): HostBuffer;
  /** Unmaps a buffer from alloc or mapRam. */
  free(buffer: HostBuffer): void;
}

const O_RDWR = 0x2;
const O_CLOEXEC = 0x80000;
const MFD_CLOEXEC = 0x1;
const PROT_READ_WRITE = 0x3;
const MAP_SHARED = 0x1;
const MAP_PRIVATE_ANONYMOUS = 0x22;
const MAP_FAILED = 0xffff_ffff_ffff_ffffn;

const errnoNames = new Map<number, string>(Object.entries(Errno).map(([k, v]) => [v, k]));

export function sysError(call: string, errno: number | undefined): MshvSysError {
  const name = errno === undefined ? 'errno unavailable' : (errnoNames.get(errno) ?? `errno ${errno}`);
  return new MshvSysError(`${call} failed: ${name}`, errno);
}

// koffi is untyped at this boundary (functions declared from C prototypes): `any` is the
// honest type here, confined to this module.
/* eslint-disable @typescript-eslint/no-explicit-any */
type Fn = ((...args: any[]) => any) & { async: (...args: any[]) => void };

interface Libc {
  readonly koffi: any;
  readonly open: Fn;
  readonly close: Fn;
  readonly ioctl: Fn;
  readonly memfdCreate: Fn;
  readonly ftruncate: Fn;
  readonly mmap: Fn;
  readonly munmap: Fn;
}

function loadLibc(): Libc {
  // createRequire keeps the load synchronous and lazy: koffi is only needed when MSHV is used.
  const koffi = createRequire(import.meta.url)('koffi');
  const lib = koffi.load('libc.so.6');
  return {
    koffi,
    open: lib.func('int open(const char *path, int flags)'),
    close: lib.func('int close(int fd)'),
    // Declared non-variadic so that it can run .async (koffi cannot run variadic calls async).
    ioctl: lib.func('int ioctl(int fd, unsigned long request, void *arg)'),
    memfdCreate: lib.func('int memfd_create(const char *name, unsigned int flags)'),
    ftruncate: lib.func('int ftruncate(int fd, int64_t length)'),
    mmap: lib.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset)'),
    munmap: lib.func('int munmap(void *addr, size_t length)'),
  };
}

/** MshvSys over libc through koffi. */
export class KoffiMshvSys implements MshvSys {
  private readonly libc: Libc;
  /** One page for synchronous ioctl arguments (JS is single-threaded, so one is enough). */
  private scratchPage: HostBuffer | undefined;

  constructor() {
    this.libc = loadLibc();
  }

  private get scratch(): HostBuffer {
    return (this.scratchPage ??= this.alloc(4096));
  }

  private errno(): number {
    return this.libc.koffi.errno() as number;
  }

  open(path: string): number {
    const fd = this.libc.open(path, O_RDWR | O_CLOEXEC) as number;
    if (fd < 0) throw sysError(`open(${path})`, this.errno());
    return fd;
  }

  close(fd: number): void {
    this.libc.close(fd);
  }

  ioctl(fd: number, request: number, arg: Uint8Array | null): number {
    if (arg && arg.length > this.scratch.bytes.length) throw sysError(`ioctl 0x${request.toString(16)} argument too large`, Errno.EINVAL);
    if (arg) this.scratch.bytes.set(arg);
    const r = this.libc.ioctl(fd, request, arg ? this.scratch.address : null) as number;
    const errno = r < 0 ? this.errno() : 0;
    // Copied back even on failure: MSHV_ROOT_HVCALL returns the hypervisor status that way.
    if (arg) arg.set(this.scratch.bytes.subarray(0, arg.length));
    if (r < 0) throw sysError(`ioctl(0x${request.toString(16)})`, errno);
    return r;
  }

  ioctlAsync(fd: number, request: number, arg: HostBuffer): Promise<number> {
    return new Promise((resolve, reject) => {
      this.libc.ioctl.async(fd, request, arg.address, (err: unknown, r: number) => {
        if (err) reject(err);
        // errno lives on the worker thread and koffi does not carry it back: undefined here.
        else if (r < 0) reject(sysError(`ioctl(0x${request.toString(16)}) on the threadpool`, undefined));
        else resolve(r);
      });
    });
  }

  alloc(size: number): HostBuffer {
    const p = this.libc.mmap(null, size, PROT_READ_WRITE, MAP_PRIVATE_ANONYMOUS, -1, 0) as bigint;
    if (p === null || BigInt(p) === MAP_FAILED) throw sysError('mmap(anonymous)', this.errno());
    return { address: BigInt(p), bytes: new Uint8Array(this.libc.koffi.view(p, size) as ArrayBuffer) };
  }

  mapRam(size: number, name: string): HostBuffer {
    const fd = this.libc.memfdCreate(name, MFD_CLOEXEC) as number;
    if (fd < 0) throw sysError('memfd_create', this.errno());
    try {
      if ((this.libc.ftruncate(fd, size) as number) < 0) throw sysError('ftruncate(memfd)', this.errno());
      const p = this.libc.mmap(null, size, PROT_READ_WRITE, MAP_SHARED, fd, 0) as bigint;
      if (p === null || BigInt(p) === MAP_FAILED) throw sysError('mmap(memfd)', this.errno());
      return { address: BigInt(p), bytes: new Uint8Array(this.libc.koffi.view(p, size) as ArrayBuffer) };
    } finally {
      // The mapping keeps the memfd's pages alive; the descriptor itself is not needed.
      this.libc.close(fd);
    }
  }

  free(buffer: HostBuffer): void {
    this.libc.munmap(buffer.address, buffer.bytes.byteLength);
  }
}
