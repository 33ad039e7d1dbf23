/**
 * A Linux TAP device as a NetBackend: /dev/net/tun opened non-blocking, TUNSETIFF with
 * IFF_TAP | IFF_NO_PI (plain Ethernet frames, no packet-info prefix), then read/write.
 *
 * Why koffi and the addon: open/ioctl/close are libc calls koffi (already hvemu's FFI for MSHV
 * and WHPX) declares from their C prototypes; the per-frame path is native (below). A blocking read would stop the event loop, and koffi's async calls would hold a libuv
 * pool thread per TAP for as long as the network is quiet; instead the fd is non-blocking and
 * the native addon's epoll thread (@hvemu/accel createFdWatcher, edge-triggered) says when it
 * became readable, so reads happen on the JS thread only when a frame is there.
 *
 * Frames move in batches: the addon's readFrames (@hvemu/accel nativeFrameIo) does one read(2)
 * per frame but crosses from JavaScript once per batch (an FFI call per frame was most of a small
 * frame's cost). Guest frames are copied into a batch when sent (the guest's buffer is free once
 * its send completes) and written by the addon's writer thread, which overlaps the write(2)s
 * with the JS thread's work (tap-tx.ts). Without the addon's calls, koffi's read and write serve
 * one frame per call on the JS thread.
 *
 * The fd is watched one-shot (a TAP wakes its waiters for every frame queued; an armed watcher
 * would wake for each while the JS thread is still reading): after a report, read until EAGAIN,
 * then re-arm. When the device refuses a frame
 * (no receive section free), it and the rest of its batch are held and reading stops;
 * resume() delivers them and drains the rest. Writes that the kernel refuses with EAGAIN wait
 * (on the writer thread, or a 1 ms timer without it; tun rarely does this: it drops on its own
 * queue limit instead).
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { HostUsageError, HvemuError, silentLogger, type Logger } from '@hvemu/common';
import { createFdWatcher, nativeFrameIo, type FdWatcher, type FrameIo } from '@hvemu/accel';
import type { NetBackend, NetBackendSink } from './backend.js';
import { BATCH_BYTES, BATCH_FRAMES, syncTx, threadTx, type TxPath } from './tap-tx.js';

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
/** How long reading pauses after a read error before the fd is watched again. */
const READ_ERROR_PAUSE_MS = 100;

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
  /** How frames are read and written (default: the addon's batched calls, else koffi per frame; null forces koffi). */
  frameIo?: FrameIo | null;
  /**
   * Writes on the addon's writer thread (default: true unless `frameIo` is given; false, or an
   * addon without one, writes on the JS thread through `frameIo`).
   */
  writerThread?: boolean;
}

export interface TapStats {
  framesIn: number;
  framesOut: number;
  /** Writes the kernel refused for good (not EAGAIN): the frame is dropped. */
  writeErrors: number;
  /** Frames dropped because too many were already held (no batch free, or EAGAIN), or held at close. */
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
  private readonly counters: TapStats = { framesIn: 0, framesOut: 0, writeErrors: 0, writeDrops: 0, readErrors: 0 };
  private fd: number;
  private sink: NetBackendSink | null = null;
  private readonly watcher: FdWatcher;
  private readonly logger: Logger;
  private readonly io: FrameIo;
  private readonly maxFrame: number;
  /** Frames read in one call, back to back; rxIndex/rxAt: the next one not yet delivered. */
  private readonly rxBatch: Uint8Array;
  private readonly rxLengths = new Uint32Array(BATCH_FRAMES);
  private rxCount = 0;
  private rxIndex = 0;
  private rxAt = 0;
  private paused = false;
  private reading: ReturnType<typeof setImmediate> | null = null;
  private readonly tx: TxPath;
  private rearmTimer: ReturnType<typeof setTimeout> | null = null;

  /** The counters, with every batch the writer thread finished counted. */
  get stats(): TapStats {
    if (this.fd >= 0) this.tx.settle();
    return this.counters;
  }

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
    this.maxFrame = options.maxFrame ?? 65535 + 18;
    this.io = (options.frameIo === undefined ? nativeFrameIo() : options.frameIo) ?? koffiFrameIo();
    // Room for at least a few maximum frames, and for BATCH_FRAMES typical ones.
    const batchBytes = Math.max(BATCH_BYTES, 4 * this.maxFrame);
    this.rxBatch = new Uint8Array(batchBytes);
    this.fd = openTap(options.name);
    let tx: TxPath | null = null;
    try {
      const ctx = {
        fd: this.fd,
        name: this.name,
        stats: this.counters,
        logger: this.logger,
        batchBytes,
        writable: () => this.sink?.writable(),
      };
      const thread = (options.writerThread ?? options.frameIo === undefined) ? threadTx(ctx) : null;
      tx = thread ?? syncTx(ctx, this.io);
      this.tx = tx;
      this.watcher = (options.watcher ?? createFdWatcher)(() => this.onReadable());
      this.watcher.add(this.fd, true);
    } catch (error) {
      tx?.close(); // the writer thread is joined before its fd closes
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

  /**
   * Copies the frame into a write batch (the segments are the guest's memory, valid during the
   * call only). False once frames are held (no batch free, or EAGAIN): the device stops reading
   * the guest until writable().
   */
  send(segments: readonly Uint8Array[]): boolean {
    if (this.fd < 0) return true;
    const length = total(segments);
    if (length > this.maxFrame) {
      // Larger than any frame this TAP takes (the kernel would refuse it too): dropped, counted.
      this.counters.writeErrors++;
      this.logger.debug(`${this.name}: a ${length}-byte frame is over the ${this.maxFrame}-byte limit, dropped`);
      return true;
    }
    return this.tx.send(segments, length);
  }

  sendFrom(bytes: Uint8Array, offset: number, length: number): boolean {
    if (this.fd < 0) return true;
    if (length > this.maxFrame) return this.send([bytes.subarray(offset, offset + length)]); // dropped and counted there
    return this.tx.sendFrom(bytes, offset, length);
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.scheduleRead();
  }

  close(): void {
    if (this.fd < 0) return;
    this.tx.close(); // writes what is batched (the writer thread is joined before the fd closes)
    this.watcher.remove(this.fd);
    this.watcher.close();
    if (this.reading) clearImmediate(this.reading);
    if (this.rearmTimer) clearTimeout(this.rearmTimer);
    libc().close(this.fd);
    this.fd = -1;
  }

  private onReadable(): void {
    if (!this.paused) this.readFrames();
  }

  private rearmAfterError(): void {
    this.rearmTimer = null;
    if (this.fd >= 0) this.watcher.rearm(this.fd);
  }

  private scheduleRead(): void {
    if (this.reading || this.fd < 0) return;
    this.reading = setImmediate(() => {
      this.reading = null;
      this.readFrames();
    });
  }

  /** Delivers the held frames, then reads batches until EAGAIN, a refusal or the budget. */
  private readFrames(): void {
    if (this.fd < 0 || !this.sink || this.paused) return;
    if (!this.deliverBatch()) return;
    for (let read = 0; read < READ_BUDGET;) {
      const n = this.io.readFrames(this.fd, this.rxBatch, this.rxLengths, this.maxFrame);
      if (n < 0) {
        this.counters.readErrors++;
        this.logger.warn(`${this.name}: read failed, errno ${-n}`);
        // Watched again after a pause: an fd that keeps failing must not spin the event loop.
        if (!this.rearmTimer) this.rearmTimer = setTimeout(() => this.rearmAfterError(), READ_ERROR_PAUSE_MS);
        return;
      }
      if (n === 0) {
        // Drained (EAGAIN): only now may the watcher report the fd again.
        this.watcher.rearm(this.fd);
        return;
      }
      this.counters.framesIn += n;
      this.rxCount = n;
      this.rxIndex = 0;
      this.rxAt = 0;
      if (!this.deliverBatch()) return;
      read += n;
    }
    // Budget spent with frames possibly left: the edge will not be reported again.
    this.scheduleRead();
  }

  /** Hands the batch's frames to the sink in order; on a refusal keeps the rest and pauses. */
  private deliverBatch(): boolean {
    while (this.rxIndex < this.rxCount) {
      const length = this.rxLengths[this.rxIndex];
      if (!this.sink!.receive(this.rxBatch.subarray(this.rxAt, this.rxAt + length))) {
        this.paused = true;
        return false;
      }
      this.rxAt += length;
      this.rxIndex++;
    }
    return true;
  }
}

/** FrameIo over koffi's read and write, one call per frame: where the addon has none. */
function koffiFrameIo(): FrameIo {
  return {
    readFrames(fd, buffer, lengths, maxFrame) {
      const { read, koffi } = libc();
      let count = 0;
      let at = 0;
      while (count < lengths.length && buffer.length - at >= maxFrame) {
        const n = read(fd, buffer.subarray(at), maxFrame);
        if (n < 0) {
          const errno = koffi.errno();
          if (errno === EINTR) continue;
          if (errno !== EAGAIN && count === 0) return -errno;
          break;
        }
        if (n === 0) break;
        lengths[count++] = n;
        at += n;
      }
      return count;
    },
    writeFrames(fd, buffer, lengths, count, status) {
      const { write, koffi } = libc();
      status[0] = 0;
      status[1] = 0;
      let at = 0;
      let done = 0;
      while (done < count) {
        const n = write(fd, buffer.subarray(at, at + lengths[done]), lengths[done]);
        if (n < 0) {
          const errno = koffi.errno();
          if (errno === EINTR) continue;
          if (errno === EAGAIN) break;
          status[0]++;
          status[1] = errno;
        }
        at += lengths[done];
        done++;
      }
      return done;
    },
  };
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
