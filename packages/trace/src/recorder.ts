/**
 * Capture. Components that can be traced take a TraceSink and guard each record with
 * `sink.enabled`, so a disabled trace costs one property read. TraceRecorder streams records
 * to a file through a bounded buffer: when the disk falls behind by more than
 * `maxBufferedBytes`, events are dropped, counted, and a Dropped record says how many before
 * the next event that gets through; the footer repeats the totals. A record larger than
 * `maxBufferedBytes` is still written when nothing is pending (else it could never be), and
 * one larger than the reader's MAX_RECORD_BYTES is never written (dropped and counted).
 */
import { createWriteStream, openSync, type WriteStream } from 'node:fs';
import { HostUsageError, type Clock } from '@hvemu/common';
import { encodeRecordUnchecked as encodeRecord, MAX_RECORD_BYTES } from './codec.js';
import { describe, TraceOutputError } from './errors.js';
import { eventBodyProblem, TRACE_MAGIC, TRACE_SCHEMA_VERSION, type TraceEventBody, type TraceHeader } from './schema.js';

export interface TraceSink {
  readonly enabled: boolean;
  /** Records one event on `vp` now. Call only when `enabled`. */
  record(vp: number, body: TraceEventBody): void;
  /**
   * The VMBus version the guest negotiated, when it is known (after the header was written):
   * the recorder keeps it for the footer.
   */
  noteVmbusVersion?(version: number): void;
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
  private vmbusVersion: number;
  private readonly maxBuffered: number;

  constructor(
    private readonly output: RecordOutput,
    header: Omit<TraceHeader, 'schemaVersion' | 'createdUnixMs'> & Partial<Pick<TraceHeader, 'createdUnixMs'>>,
    private readonly options: RecorderOptions,
  ) {
    checkRecorderArguments(output, header, options);
    this.maxBuffered = options.maxBufferedBytes ?? 8 << 20;
    this.vmbusVersion = header.vmbusVersion;
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
    // The arguments first: a bad header must not leave an empty file behind.
    checkRecorderArguments(null, header, options);
    return new TraceRecorder(new FileOutput(path), header, options);
  }

  noteVmbusVersion(version: number): void {
    if (!isU32(version))
      throw new HostUsageError(`TraceRecorder.noteVmbusVersion: version must be a 32-bit unsigned integer, got ${describe(version)}`);
    this.vmbusVersion = version;
  }

  get eventsRecorded(): bigint {
    return this.seq - this.dropped;
  }
  get eventsDropped(): bigint {
    return this.dropped;
  }

  record(vp: number, body: TraceEventBody): void {
    if (this.closed) return;
    if (!isU32(vp)) throw new HostUsageError(`TraceRecorder.record: vp must be a 32-bit unsigned integer, got ${describe(vp)}`);
    const problem = eventBodyProblem(body);
    if (problem) throw new HostUsageError(`TraceRecorder.record: body: ${problem}`);
    const seq = this.seq;
    let bytes: Uint8Array;
    try {
      bytes = encodeRecord({ kind: 'event', event: { seq, time: this.options.clock.now(), vp, ...body } as never });
    } catch (error) {
      throw new HostUsageError(`TraceRecorder.record: the ${body.kind} body does not encode: ${(error as Error).message}`);
    }
    this.seq++;
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
    this.output.write(
      encodeRecord({ kind: 'footer', footer: { events: this.seq - this.dropped, dropped: this.dropped, vmbusVersion: this.vmbusVersion } }),
    );
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
  private failure: TraceOutputError | null = null;

  /** Opens (creates or truncates) `path` now: an unwritable path is a TraceOutputError here, not an error event later. */
  constructor(private readonly path: string) {
    if (typeof path !== 'string' || path.length === 0)
      throw new HostUsageError(`FileOutput: path must be a non-empty string, got ${describe(path)}`);
    let fd: number;
    try {
      fd = openSync(path, 'w');
    } catch (error) {
      throw new TraceOutputError(path, error);
    }
    this.stream = createWriteStream(path, { fd });
    // A write that fails later (disk full, EIO) ends the trace there; close() reports it.
    this.stream.on('error', (error) => {
      this.failure ??= new TraceOutputError(path, error);
      this.chunk = [];
      this.chunkBytes = 0;
    });
  }
  get pending(): number {
    return this.stream.writableLength + this.chunkBytes;
  }
  /** The write error that ended the trace, if one did. */
  get error(): TraceOutputError | null {
    return this.failure;
  }
  write(bytes: Uint8Array): void {
    if (this.failure) return;
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
    if (this.chunkBytes === 0 || this.failure) return;
    this.stream.write(this.chunk.length === 1 ? this.chunk[0] : Buffer.concat(this.chunk, this.chunkBytes));
    this.chunk = [];
    this.chunkBytes = 0;
  }
  close(): Promise<void> {
    this.flush();
    return new Promise((resolve, reject) => {
      const done = (error?: Error | null): void => {
        // end()'s callback may see a write error before the 'error' listener has recorded it.
        if (error) this.failure ??= new TraceOutputError(this.path, error);
        if (this.failure) reject(this.failure);
        else resolve();
      };
      // Destroyed by a write error whose 'error' event has not been emitted yet: `errored` has it.
      if (this.failure || this.stream.destroyed)
        return done(this.stream.errored ?? (this.failure ? null : new Error('the output stream was destroyed')));
      this.stream.once('error', (error) => done(error));
      this.stream.end((error?: Error | null) => done(error));
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

function isU32(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
}

/** The recorder's arguments, checked where they enter (output null: toFile makes its own). */
function checkRecorderArguments(output: RecordOutput | null, header: unknown, options: unknown): void {
  const where = 'TraceRecorder';
  if (
    output !== null &&
    (typeof output !== 'object' ||
      typeof (output as RecordOutput).write !== 'function' ||
      typeof (output as RecordOutput).close !== 'function')
  ) {
    throw new HostUsageError(`${where}: output must be a RecordOutput (pending, write, close), got ${describe(output)}`);
  }
  if (typeof header !== 'object' || header === null)
    throw new HostUsageError(`${where}: header must be an object, got ${describe(header)}`);
  const h = header as Record<string, unknown>;
  if (!isU32(h.vmbusVersion))
    throw new HostUsageError(`${where}: header.vmbusVersion must be a 32-bit unsigned integer, got ${describe(h.vmbusVersion)}`);
  if (typeof h.producer !== 'string') throw new HostUsageError(`${where}: header.producer must be a string, got ${describe(h.producer)}`);
  if (h.createdUnixMs !== undefined && (typeof h.createdUnixMs !== 'bigint' || h.createdUnixMs < 0n)) {
    throw new HostUsageError(`${where}: header.createdUnixMs must be a non-negative bigint, got ${describe(h.createdUnixMs)}`);
  }
  if (!Array.isArray(h.devices)) throw new HostUsageError(`${where}: header.devices must be an array, got ${describe(h.devices)}`);
  h.devices.forEach((d: unknown, i) => {
    const dev = d as Record<string, unknown> | null;
    if (
      typeof dev !== 'object' ||
      dev === null ||
      typeof dev.name !== 'string' ||
      typeof dev.classId !== 'string' ||
      typeof dev.instanceId !== 'string' ||
      !isU32(dev.relid)
    ) {
      throw new HostUsageError(
        `${where}: header.devices[${i}] must be { name, classId, instanceId: string; relid: u32 }, got ${describe(d)}`,
      );
    }
  });
  if (typeof options !== 'object' || options === null)
    throw new HostUsageError(`${where}: options must be an object with a clock, got ${describe(options)}`);
  const o = options as Record<string, unknown>;
  if (typeof o.clock !== 'object' || o.clock === null || typeof (o.clock as { now?: unknown }).now !== 'function') {
    throw new HostUsageError(`${where}: options.clock must be a Clock (now()), got ${describe(o.clock)}`);
  }
  const max = o.maxBufferedBytes;
  if (max !== undefined && !(typeof max === 'number' && max >= 0 && (Number.isSafeInteger(max) || max === Infinity))) {
    throw new HostUsageError(`${where}: options.maxBufferedBytes must be a non-negative integer, got ${describe(max)}`);
  }
}
