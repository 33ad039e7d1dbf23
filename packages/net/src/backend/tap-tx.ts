/**
 * The TAP's transmit side: guest frames copied into batch buffers and written, one write(2) per
 * frame (a TAP takes one frame per call), many per crossing into native code.
 *
 * - ThreadTx (the default where the addon has a FrameWriter): the writes run on a writer thread
 *   of their own, so the JS thread's work on the next frames (the ring, RNDIS, the copy)
 *   overlaps them. Frames fill one slot of SLOTS while earlier slots are written in order; a
 *   slot is reused once the writer says it is done. When no slot is free, frames are held
 *   (copied, bounded) and send() answers false until a slot frees.
 * - SyncTx: the batch is written on the JS thread after the turn's sends (the addon's
 *   writeFrames, or koffi per frame); writes refused with EAGAIN wait on a 1 ms timer.
 *
 * A frame is the backend's once copied: the guest's buffer is free when its send completes.
 */
import type { Logger } from '@hvemu/common';
import { createFrameWriter, FRAME_SLOT_DONE, type FrameIo, type FrameWriter } from '@hvemu/accel';
import { gather } from './backend.js';
import type { TapStats } from './tap.js';

/** Frames per batch and the bytes of each batch buffer (at least 4 maximum frames). */
export const BATCH_FRAMES = 256;
export const BATCH_BYTES = 512 << 10;
/**
 * Batch buffers of the writer thread: one filling while the others are written (8 x 512 KiB:
 * up to 2048 frames queued). Depth is what keeps the JS thread from waiting on the writer
 * (which naps, and takes a while to wake): measured 1500-byte tx frames/s, slots x bytes,
 * 2 x 512K 0.95 M, 4 x 128K 1.35 M, 4 x 512K 1.85 M, 8 x 512K 1.90 M (64 B: 1.32 M, 1.88 M,
 * 1.81 M, 2.13 M).
 */
const SLOTS = 8;

/** Frames copied while they could not be batched (no slot free, or EAGAIN); more are dropped and counted. */
const MAX_HELD = 256;

export interface TxPath {
  /** Takes one frame of `length` bytes (copied before it returns). False: taken, but full now. */
  send(segments: readonly Uint8Array[], length: number): boolean;
  /** The same for bytes [offset, offset + length) of `bytes`. */
  sendFrom(bytes: Uint8Array, offset: number, length: number): boolean;
  /** Counts what the writer finished so far (stats read now are up to date). */
  settle(): void;
  /** Writes what is batched; frames still held are dropped (counted). */
  close(): void;
}

export interface TxContext {
  fd: number;
  name: string;
  stats: TapStats;
  logger: Logger;
  batchBytes: number;
  /** Called when the path takes frames again after send() answered false. */
  writable: () => void;
}

function copyInto(segments: readonly Uint8Array[], buffer: Uint8Array, at: number): void {
  for (const s of segments) {
    buffer.set(s, at);
    at += s.length;
  }
}

function countWrites(ctx: TxContext, consumed: number, failed: number, errno: number): void {
  ctx.stats.framesOut += consumed - failed;
  if (failed > 0) {
    ctx.stats.writeErrors += failed;
    ctx.logger.debug(`${ctx.name}: ${failed} write(s) failed, errno ${errno}`);
  }
}

/** The writer-thread path, or null where the addon has no FrameWriter. */
export function threadTx(ctx: TxContext): TxPath | null {
  const slots = Array.from({ length: SLOTS }, () => ({ buffer: new Uint8Array(ctx.batchBytes), lengths: new Uint32Array(BATCH_FRAMES) }));
  let tx: ThreadTx | null = null;
  const writer = createFrameWriter(ctx.fd, slots, () => tx?.reclaim());
  if (!writer) return null;
  tx = new ThreadTx(ctx, writer, slots);
  return tx;
}

class ThreadTx implements TxPath {
  /** The slot being filled (-1: none free), and its frames and bytes so far. */
  private filling = 0;
  private count = 0;
  private bytes = 0;
  /** Submitted slots, oldest first (written in this order). */
  private readonly queued: number[] = [];
  private readonly free: number[] = [];
  private readonly held: Uint8Array[] = [];
  /** Frames submitted per slot (what the writer's result is measured against). */
  private readonly submitted: number[];
  private flushQueued = false;
  private full = false;
  private closed = false;
  private readonly maxFrames: number;
  private readonly maxBytes: number;
  private readonly flush = (): void => {
    this.flushQueued = false;
    if (this.count > 0) this.submit();
  };

  constructor(
    private readonly ctx: TxContext,
    private readonly writer: FrameWriter,
    private readonly slots: { buffer: Uint8Array; lengths: Uint32Array }[],
  ) {
    for (let k = slots.length - 1; k > 0; k--) this.free.push(k);
    this.submitted = slots.map(() => 0);
    this.maxFrames = slots[0].lengths.length;
    this.maxBytes = slots[0].buffer.length;
  }

  send(segments: readonly Uint8Array[], length: number): boolean {
    if (!this.reserve(length)) return this.hold(gather(segments, new Uint8Array(length)));
    copyInto(segments, this.slots[this.filling].buffer, this.bytes);
    this.commit(length);
    return true;
  }

  sendFrom(bytes: Uint8Array, offset: number, length: number): boolean {
    if (!this.reserve(length)) return this.hold(bytes.slice(offset, offset + length));
    this.slots[this.filling].buffer.set(bytes.subarray(offset, offset + length), this.bytes);
    this.commit(length);
    return true;
  }

  /** Whether the filling slot has room for `length` bytes now (submitting it if it is full); false: hold the frame. */
  private reserve(length: number): boolean {
    if (this.held.length > 0 || this.filling < 0) {
      this.reclaim();
      if (this.held.length > 0 || this.filling < 0) return false;
    }
    if (this.count === this.maxFrames || this.bytes + length > this.maxBytes) {
      this.submit();
      if (this.filling < 0) return false;
    }
    return true;
  }

  /** The frame just copied at `bytes` counts; the slot goes to the writer after this turn at the latest. */
  private commit(length: number): void {
    this.slots[this.filling].lengths[this.count++] = length;
    this.bytes += length;
    if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(this.flush);
    }
  }

  /** Queues the filling slot for the writer and takes a free one (after reclaiming finished slots). */
  private submit(): void {
    this.writer.submit(this.filling, this.count);
    this.submitted[this.filling] = this.count;
    this.queued.push(this.filling);
    this.count = 0;
    this.bytes = 0;
    this.reclaimDone();
    this.filling = this.free.pop() ?? -1;
  }

  private hold(copy: Uint8Array): boolean {
    if (this.held.length >= MAX_HELD) this.ctx.stats.writeDrops++;
    else this.held.push(copy);
    this.full = true;
    return false;
  }

  settle(): void {
    this.reclaimDone();
  }

  private reclaimDone(): void {
    while (this.queued.length > 0 && this.writer.state(this.queued[0]) === FRAME_SLOT_DONE) {
      const slot = this.queued.shift()!;
      const r = this.writer.take(slot);
      countWrites(this.ctx, r.consumed, r.failed, r.errno);
      // Frames the writer gave up on (closed while waiting out EAGAIN) are dropped.
      this.ctx.stats.writeDrops += this.submitted[slot] - r.consumed;
      this.free.push(slot);
    }
  }

  /** Finished slots back to the free list; held frames into them; writable() once all are batched. */
  reclaim(): void {
    if (this.closed) return;
    this.reclaimDone();
    if (this.filling < 0) this.filling = this.free.pop() ?? -1;
    while (this.held.length > 0 && this.filling >= 0) {
      const frame = this.held[0];
      if (this.count === this.maxFrames || this.bytes + frame.length > this.maxBytes) {
        this.submit();
        continue;
      }
      this.held.shift();
      this.slots[this.filling].buffer.set(frame, this.bytes);
      this.commit(frame.length);
    }
    if (this.full && this.held.length === 0 && this.filling >= 0) {
      this.full = false;
      this.ctx.writable();
    }
  }

  close(): void {
    if (this.closed) return;
    if (this.count > 0 && this.filling >= 0) this.submit();
    this.writer.close(); // writes what is queued, then joins
    this.reclaimDone();
    this.ctx.stats.writeDrops += this.held.length;
    this.held.length = 0;
    this.closed = true;
  }
}

/** The path on the JS thread: `io` writes the batch after the turn's sends. */
export function syncTx(ctx: TxContext, io: FrameIo): TxPath {
  return new SyncTx(ctx, io);
}

class SyncTx implements TxPath {
  private readonly batch: Uint8Array;
  private readonly lengths = new Uint32Array(BATCH_FRAMES);
  private readonly status = new Int32Array(2);
  private count = 0;
  private bytes = 0;
  private flushQueued = false;
  private readonly pending: Uint8Array[] = [];
  private retry: ReturnType<typeof setTimeout> | null = null;
  private full = false;
  private closed = false;

  constructor(
    private readonly ctx: TxContext,
    private readonly io: FrameIo,
  ) {
    this.batch = new Uint8Array(ctx.batchBytes);
  }

  send(segments: readonly Uint8Array[], length: number): boolean {
    if (!this.reserve(length)) return this.queueWrite(gather(segments, new Uint8Array(length)));
    copyInto(segments, this.batch, this.bytes);
    return this.commit(length);
  }

  sendFrom(bytes: Uint8Array, offset: number, length: number): boolean {
    if (!this.reserve(length)) return this.queueWrite(bytes.slice(offset, offset + length));
    this.batch.set(bytes.subarray(offset, offset + length), this.bytes);
    return this.commit(length);
  }

  /** Whether the batch takes `length` bytes now (written first if it is full); false: queue the frame. */
  private reserve(length: number): boolean {
    if (this.pending.length > 0) return false;
    if (this.count === BATCH_FRAMES || this.bytes + length > this.batch.length) {
      this.flushBatch();
      if (this.pending.length > 0) return false;
    }
    return true;
  }

  private commit(length: number): boolean {
    this.lengths[this.count++] = length;
    this.bytes += length;
    if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(() => this.flushBatch());
    }
    return !this.full;
  }

  settle(): void {
    // Counted as written: nothing in flight.
  }

  close(): void {
    if (this.closed) return;
    this.flushBatch();
    if (this.retry) clearTimeout(this.retry);
    this.ctx.stats.writeDrops += this.pending.length;
    this.pending.length = 0;
    this.closed = true;
  }

  /** Writes the batch; what EAGAIN left is copied to the pending queue (retried on a timer). */
  private flushBatch(): void {
    this.flushQueued = false;
    if (this.count === 0 || this.closed) return;
    const count = this.count;
    const done = this.io.writeFrames(this.ctx.fd, this.batch, this.lengths, count, this.status);
    countWrites(this.ctx, done, this.status[0], this.status[1]);
    let at = 0;
    for (let i = 0; i < done; i++) at += this.lengths[i];
    for (let i = done; i < count; i++) {
      this.queueWrite(this.batch.slice(at, at + this.lengths[i]));
      at += this.lengths[i];
    }
    this.count = 0;
    this.bytes = 0;
  }

  private queueWrite(copy: Uint8Array): boolean {
    if (this.pending.length >= MAX_HELD) this.ctx.stats.writeDrops++;
    else this.pending.push(copy);
    if (!this.retry) this.retry = setTimeout(() => this.flushPending(), 1);
    this.full = this.pending.length >= MAX_HELD / 2;
    return !this.full;
  }

  private flushPending(): void {
    this.retry = null;
    const status = new Int32Array(2);
    const lengths = new Uint32Array(1);
    while (this.pending.length > 0 && !this.closed) {
      const frame = this.pending[0];
      lengths[0] = frame.length;
      const done = this.io.writeFrames(this.ctx.fd, frame, lengths, 1, status);
      if (done === 0) {
        this.retry = setTimeout(() => this.flushPending(), 1);
        return;
      }
      countWrites(this.ctx, done, status[0], status[1]);
      this.pending.shift();
    }
    if (this.full) {
      this.full = false;
      this.ctx.writable();
    }
  }
}
