/**
 * Capture. Components that can be traced take a TraceSink and guard each record with
 * `sink.enabled`, so a disabled trace costs one property read. TraceRecorder streams records
 * to a file through a bounded buffer: when the disk falls behind by more than
 * `maxBufferedBytes`, events are dropped, counted, and a Dropped record says how many before
 * the next event that gets through; the footer repeats the totals. A record larger than
 * `maxBufferedBytes` is still written when nothing is pending (else it could never be), and
 * one larger than the reader's MAX_RECORD_BYTES is never written (dropped and counted).
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import type { Clock } from '@hvemu/common';
import { encodeRecord, MAX_RECORD_BYTES } from './codec.js';
import { TRACE_MAGIC, TRACE_SCHEMA_VERSION, type TraceEventBody, type TraceHeader } from './schema.js';

export interface TraceSink {
  readonly enabled: boolean;
  /** Records one event on `vp` now. Call only when `enabled`. */
  record(vp: number, body: TraceEventBody): void;
}

/** The sink every traceable component defaults to. */
export const disabledTraceSink: TraceSink = Object.freeze({ enabled: false, record: () => {} });

export interface RecorderOptions {
  clock: Clock;
  /**
   * Bytes that may wait for the disk before events are dropped (default 8 MiB). An event
   * larger than this is written when nothing waits.
   */
  maxBufferedBytes?: number;
}

/** Writes records somewhere; the file writer below, or memory for tests. */
export interface RecordOutput {
  /** Bytes accepted but not yet written. */
  readonly pending: number;
  write(bytes: Uint8Array): void;
  close(): Promise<void>;
}

export class TraceRecorder implements TraceSink {
  readonly enabled = true;
  private seq = 0n;
  private dropped = 0n;
  private droppedSinceLast = 0n;
  private firstDroppedSeq = 0n;
  private closed = false;
  private readonly maxBuffered: number;

  constructor(
    private readonly output: RecordOutput,
    header: Omit<TraceHeader, 'schemaVersion' | 'createdUnixMs'> & Partial<Pick<TraceHeader, 'createdUnixMs'>>,
    private readonly options: RecorderOptions,
  ) {
    this.maxBuffered = options.maxBufferedBytes ?? 8 << 20;
    output.write(TRACE_MAGIC);
    output.write(
      encodeRecord({
        kind: 'header',
        header: { schemaVersion: TRACE_SCHEMA_VERSION, createdUnixMs: header.createdUnixMs ?? BigInt(Date.now()), ...header },
      }),
    );
  }

  /** A recorder streaming to `path`. */
  static toFile(path: string, header: ConstructorParameters<typeof TraceRecorder>[1], options: RecorderOptions): TraceRecorder {
    return new TraceRecorder(new FileOutput(path), header, options);
  }

  get eventsRecorded(): bigint {
    return this.seq - this.dropped;
  }
  get eventsDropped(): bigint {
    return this.dropped;
  }

  record(vp: number, body: TraceEventBody): void {
    if (this.closed) return;
    const seq = this.seq++;
    const bytes = encodeRecord({ kind: 'event', event: { seq, time: this.options.clock.now(), vp, ...body } as never });
    const pending = this.output.pending;
    if (bytes.length > MAX_RECORD_BYTES || (pending > 0 && pending + bytes.length > this.maxBuffered)) {
      if (this.droppedSinceLast === 0n) this.firstDroppedSeq = seq;
      this.droppedSinceLast++;
      this.dropped++;
      return;
    }
    if (this.droppedSinceLast > 0n) {
      this.output.write(encodeRecord({ kind: 'dropped', dropped: { count: this.droppedSinceLast, firstSeq: this.firstDroppedSeq } }));
      this.droppedSinceLast = 0n;
    }
    this.output.write(bytes);
  }

  /** Writes the footer and closes the output. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.droppedSinceLast > 0n) {
      this.output.write(encodeRecord({ kind: 'dropped', dropped: { count: this.droppedSinceLast, firstSeq: this.firstDroppedSeq } }));
    }
    this.output.write(encodeRecord({ kind: 'footer', footer: { events: this.seq - this.dropped, dropped: this.dropped } }));
    await this.output.close();
  }
}

/**
 * A RecordOutput over a file write stream. Records are gathered into one chunk and handed to
 * the stream at most once per event-loop turn (or every 64 KiB): one stream write per record
 * cost more than encoding it. `pending` counts the gathered bytes and what the stream still
 * buffers.
 */
export class FileOutput implements RecordOutput {
  private static readonly CHUNK_BYTES = 64 << 10;
  private readonly stream: WriteStream;
  private chunk: Uint8Array[] = [];
  private chunkBytes = 0;
  private flushQueued = false;

  constructor(path: string) {
    this.stream = createWriteStream(path);
  }
  get pending(): number {
    return this.stream.writableLength + this.chunkBytes;
  }
  write(bytes: Uint8Array): void {
    this.chunk.push(bytes);
    this.chunkBytes += bytes.length;
    if (this.chunkBytes >= FileOutput.CHUNK_BYTES) this.flush();
    else if (!this.flushQueued) {
      this.flushQueued = true;
      setImmediate(() => this.flush());
    }
  }
  private flush(): void {
    this.flushQueued = false;
    if (this.chunkBytes === 0) return;
    this.stream.write(this.chunk.length === 1 ? this.chunk[0] : Buffer.concat(this.chunk, this.chunkBytes));
    this.chunk = [];
    this.chunkBytes = 0;
  }
  close(): Promise<void> {
    this.flush();
    return new Promise((resolve, reject) => {
      this.stream.once('error', reject);
      this.stream.end(() => resolve());
    });
  }
}

/** A RecordOutput in memory (tests, replay of a just-captured run). */
export class MemoryOutput implements RecordOutput {
  private readonly chunks: Uint8Array[] = [];
  /** Bytes the test pretends the disk has not taken yet. */
  stalledBytes = 0;
  get pending(): number {
    return this.stalledBytes;
  }
  write(bytes: Uint8Array): void {
    this.chunks.push(bytes.slice());
  }
  async close(): Promise<void> {}
  bytes(): Uint8Array {
    return Buffer.concat(this.chunks);
  }
}
