/**
 * A Linux TAP device as a NetBackend: /dev/net/tun opened non-blocking, TUNSETIFF with
 * IFF_TAP | IFF_NO_PI (plain Ethernet frames, no packet-info prefix), then read/write.
 *
 * Why koffi and the addon's fd watcher: open/ioctl/read/write are four libc calls, which koffi
 * (already hvemu's FFI for MSHV and WHPX) declares from their C prototypes; nothing needs new
 * C++. A blocking read would stop the event loop, and koffi's async calls would hold a libuv
 * pool thread per TAP for as long as the network is quiet; instead the fd is non-blocking and
 * the native addon's epoll thread (@hvemu/accel createFdWatcher, edge-triggered) says when it
 * became readable, so reads happen on the JS thread only when a frame is there.
 *
 * Edge-triggered means: after a report, read until EAGAIN. When the device refuses a frame
 * (no receive section free), the frame is held and reading stops; resume() delivers it and
 * drains the rest. Writes that the kernel refuses with EAGAIN are copied and retried on a
 * 1 ms timer (tun rarely does this: it drops on its own queue limit instead).
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { HostUsageError, HvemuError, silentLogger, type Logger } from '@hvemu/common';
import { createFdWatcher, type FdWatcher } from '@hvemu/accel';
import { gather, type NetBackend, type NetBackendSink } from './backend.js';

const O_RDWR = 2;
const O_NONBLOCK = 0x800;
const O_CLOEXEC = 0x80000;
/** _IOW('T', 202, int) */
const TUNSETIFF = 0x400454ca;
const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;
const IFNAMSIZ = 16;
const EAGAIN = 11;
const EINTR = 4;
const CAP_NET_ADMIN = 12;
/** Frames read per turn before other work on the event loop gets one. */
const READ_BUDGET = 256;
/** Frames (copied) waiting for the kernel to take them; more are dropped and counted. */
const MAX_PENDING_WRITES = 256;

/** The TAP could not be opened or configured (no /dev/net/tun, no CAP_NET_ADMIN, a bad name). */
export class TapError extends HvemuError {
  readonly outcome = 'host-error' as const;
  constructor(
    message: string,
    readonly errno: number,
  ) {
    super(message);
  }
}

export interface TapOptions {
  /** The interface name (at most 15 bytes); created if it does not exist. */
  name: string;
  logger?: Logger;
  /** Where readiness comes from (default: the native addon's epoll watcher). */
  watcher?: (onReady: (fds: number[]) => void) => FdWatcher;
  /** Largest frame read (default 65535 + 18). */
  maxFrame?: number;
}

export interface TapStats {
  framesIn: number;
  framesOut: number;
  /** Writes the kernel refused for good (not EAGAIN): the frame is dropped. */
  writeErrors: number;
  /** Frames dropped because MAX_PENDING_WRITES were already waiting for EAGAIN to clear. */
  writeDrops: number;
  readErrors: number;
}

// koffi is untyped at this boundary: functions declared from C prototypes.
/* eslint-disable @typescript-eslint/no-explicit-any */
interface Libc {
  koffi: any;
  open: (path: string, flags: number) => number;
  ioctl: (fd: number, request: number, arg: Uint8Array) => number;
  read: (fd: number, buf: Uint8Array, count: number) => number;
  write: (fd: number, buf: Uint8Array, count: number) => number;
  close: (fd: number) => number;
}

let libcCache: Libc | null = null;
/** libc through koffi, loaded on first use (the module is imported on hosts without TAP too). */
function libc(): Libc {
  if (libcCache) return libcCache;
  const koffi = createRequire(import.meta.url)('koffi');
  const lib = koffi.load('libc.so.6');
  libcCache = {
    koffi,
    open: lib.func('int open(const char *path, int flags)'),
    ioctl: lib.func('int ioctl(int fd, unsigned long request, _Inout_ uint8_t *arg)'),
    read: lib.func('long read(int fd, _Out_ uint8_t *buf, unsigned long count)'),
    write: lib.func('long write(int fd, const uint8_t *buf, unsigned long count)'),
    close: lib.func('int close(int fd)'),
  };
  return libcCache;
}
/* eslint-enable @typescript-eslint/no-explicit-any */

export class TapBackend implements NetBackend {
  readonly name: string;
  readonly stats: TapStats = { framesIn: 0, framesOut: 0, writeErrors: 0, writeDrops: 0, readErrors: 0 };
  private fd: number;
  private sink: NetBackendSink | null = null;
  private readonly watcher: FdWatcher;
  private readonly logger: Logger;
  private readonly readBuffer: Uint8Array;
  private readonly gatherBuffer: Uint8Array;
  /** A frame the sink refused, held in readBuffer[0, heldLength) until resume(). */
  private heldLength = 0;
  private paused = false;
  private reading: ReturnType<typeof setImmediate> | null = null;
  private readonly pendingWrites: Uint8Array[] = [];
  private retry: ReturnType<typeof setTimeout> | null = null;
  private full = false;

  /** Opens (creating if needed) the TAP `options.name`. TapError when the host does not allow it. */
  static open(options: TapOptions): TapBackend {
    return new TapBackend(options);
  }

  private constructor(options: TapOptions) {
    if (typeof options.name !== 'string' || options.name === '' || Buffer.byteLength(options.name) >= IFNAMSIZ) {
      throw new HostUsageError(`tap: interface name ${String(options.name)} must be 1-15 bytes`);
    }
    this.name = `tap ${options.name}`;
    this.logger = options.logger ?? silentLogger;
    const maxFrame = options.maxFrame ?? 65535 + 18;
    this.readBuffer = new Uint8Array(maxFrame);
    this.gatherBuffer = new Uint8Array(maxFrame);
    this.fd = openTap(options.name);
    try {
      this.watcher = (options.watcher ?? createFdWatcher)(() => this.onReadable());
      this.watcher.add(this.fd);
    } catch (error) {
      libc().close(this.fd);
      throw error;
    }
  }

  attach(sink: NetBackendSink): void {
    this.sink = sink;
    this.paused = false;
    // Frames may have queued before anyone listened, and the edge was reported to nobody.
    this.scheduleRead();
  }

  send(segments: readonly Uint8Array[]): boolean {
    if (this.fd < 0) return true;
    if (this.pendingWrites.length > 0) return this.queueWrite(gather(segments, new Uint8Array(total(segments))));
    // One buffer for write(2): a single segment as it is, several gathered into a reused one.
    const frame = gather(segments, segments.length === 1 ? undefined : this.gatherBuffer);
    const n = this.writeOnce(frame);
    if (n === -EAGAIN) return this.queueWrite(frame.slice());
    return true;
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.scheduleRead();
  }

  close(): void {
    if (this.fd < 0) return;
    this.watcher.remove(this.fd);
    this.watcher.close();
    if (this.reading) clearImmediate(this.reading);
    if (this.retry) clearTimeout(this.retry);
    libc().close(this.fd);
    this.fd = -1;
    this.pendingWrites.length = 0;
  }

  private onReadable(): void {
    if (!this.paused) this.readFrames();
  }

  private scheduleRead(): void {
    if (this.reading || this.fd < 0) return;
    this.reading = setImmediate(() => {
      this.reading = null;
      this.readFrames();
    });
  }

  /** Delivers the held frame, then reads until EAGAIN, a refusal or the budget. */
  private readFrames(): void {
    if (this.fd < 0 || !this.sink || this.paused) return;
    if (this.heldLength > 0 && !this.deliver(this.heldLength)) return;
    const { read, koffi } = libc();
    for (let i = 0; i < READ_BUDGET; i++) {
      const n = read(this.fd, this.readBuffer, this.readBuffer.length);
      if (n < 0) {
        const errno = koffi.errno();
        if (errno === EINTR) continue;
        if (errno !== EAGAIN) {
          this.stats.readErrors++;
          this.logger.warn(`${this.name}: read failed, errno ${errno}`);
        }
        return;
      }
      if (n === 0) return;
      this.stats.framesIn++;
      if (!this.deliver(n)) return;
    }
    // Budget spent with frames possibly left: the edge will not be reported again.
    this.scheduleRead();
  }

  /** Hands readBuffer[0, length) to the sink; holds it and pauses when refused. */
  private deliver(length: number): boolean {
    if (this.sink!.receive(this.readBuffer.subarray(0, length))) {
      this.heldLength = 0;
      return true;
    }
    this.heldLength = length;
    this.paused = true;
    return false;
  }

  /** write(2) once: bytes written, or -errno. */
  private writeOnce(frame: Uint8Array): number {
    const { write, koffi } = libc();
    for (;;) {
      const n = write(this.fd, frame, frame.length);
      if (n >= 0) {
        this.stats.framesOut++;
        return n;
      }
      const errno = koffi.errno();
      if (errno === EINTR) continue;
      if (errno !== EAGAIN) {
        this.stats.writeErrors++;
        this.logger.debug(`${this.name}: write failed, errno ${errno}`);
      }
      return -errno;
    }
  }

  private queueWrite(copy: Uint8Array): boolean {
    if (this.pendingWrites.length >= MAX_PENDING_WRITES) {
      this.stats.writeDrops++;
    } else this.pendingWrites.push(copy);
    if (!this.retry) this.retry = setTimeout(() => this.flushWrites(), 1);
    this.full = this.pendingWrites.length >= MAX_PENDING_WRITES / 2;
    return !this.full;
  }

  private flushWrites(): void {
    this.retry = null;
    while (this.pendingWrites.length > 0 && this.fd >= 0) {
      if (this.writeOnce(this.pendingWrites[0]) === -EAGAIN) {
        this.retry = setTimeout(() => this.flushWrites(), 1);
        return;
      }
      this.pendingWrites.shift();
    }
    if (this.full) {
      this.full = false;
      this.sink?.writable();
    }
  }
}

function total(segments: readonly Uint8Array[]): number {
  let n = 0;
  for (const s of segments) n += s.length;
  return n;
}

/** open + TUNSETIFF(IFF_TAP | IFF_NO_PI): the TAP's fd, non-blocking. */
function openTap(name: string): number {
  const { open, ioctl, close, koffi } = libc();
  const fd = open('/dev/net/tun', O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    const errno = koffi.errno();
    throw new TapError(`tap: cannot open /dev/net/tun (errno ${errno})`, errno);
  }
  const ifr = new Uint8Array(40); // struct ifreq: ifr_name[16], then ifr_flags (short)
  ifr.set(Buffer.from(name));
  new DataView(ifr.buffer).setUint16(IFNAMSIZ, IFF_TAP | IFF_NO_PI, true);
  if (ioctl(fd, TUNSETIFF, ifr) < 0) {
    const errno = koffi.errno();
    close(fd);
    throw new TapError(`tap: TUNSETIFF ${name} failed (errno ${errno}${errno === 1 ? ': needs CAP_NET_ADMIN' : ''})`, errno);
  }
  return fd;
}

/**
 * Why a TAP cannot be opened here, or null when it can: /dev/net/tun must open and the process
 * must hold CAP_NET_ADMIN (TUNSETIFF needs it to create an interface). Probes without creating
 * anything on the host.
 */
export function tapUnavailableReason(): string | null {
  if (process.platform !== 'linux') return `TAP devices are Linux only (this is ${process.platform})`;
  try {
    const { open, close, koffi } = libc();
    const fd = open('/dev/net/tun', O_RDWR | O_CLOEXEC);
    if (fd < 0) return `cannot open /dev/net/tun (errno ${koffi.errno()})`;
    close(fd);
  } catch (error) {
    return `cannot load libc through koffi: ${error instanceof Error ? error.message : String(error)}`;
  }
  const status = readFileSync('/proc/self/status', 'utf8');
  const capEff = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1];
  if (capEff === undefined) return 'cannot read CapEff from /proc/self/status';
  return (BigInt(`0x${capEff}`) >> BigInt(CAP_NET_ADMIN)) & 1n ? null : 'the process lacks CAP_NET_ADMIN';
}
