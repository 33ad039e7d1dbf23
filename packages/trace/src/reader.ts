/**
 * Reading traces as streams. A TraceReader reads the magic and the header when it opens (so
 * `hvemu trace show /dev/zero` fails on the first 8 bytes), then hands out records one at a
 * time, each pass from the first record after the header. Its read buffer holds one 64 KiB
 * chunk, or the record being read when that is larger (at most MAX_RECORD_BYTES): memory is
 * bounded by the largest record, never by the trace. Each record is decoded from its own copy
 * of its bytes, so the events handed out keep only their own bytes alive.
 *
 * A pass checks what the file says of itself: one header first, sequence numbers that never go
 * back, nothing after the footer, and a footer whose totals are the events and drops the
 * file holds. A pass that ends without a footer marks the trace truncated (cut at a record
 * boundary, or its recorder never closed); one that ends inside a record throws
 * TraceFormatError naming the offset.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { HostUsageError } from '@hvemu/common';
import { decodeRecordBody, MAX_RECORD_BYTES, type TraceRecord } from './codec.js';
import { describe, TraceFormatError, TraceInputError } from './errors.js';
import {
  TRACE_MAGIC,
  TRACE_SCHEMA_MIN_VERSION,
  TRACE_SCHEMA_VERSION,
  type TraceDropped,
  type TraceEvent,
  type TraceFooter,
  type TraceHeader,
} from './schema.js';

/** A whole trace in memory (small traces, tests); TraceReader for anything else. */
export interface Trace {
  header: TraceHeader;
  events: TraceEvent[];
  dropped: TraceDropped[];
  /** Null when the recorder did not close cleanly (the trace is still readable up to there). */
  footer: TraceFooter | null;
}

/** What the reader's buffer holds: the bound the module comment promises, measurable. */
export interface TraceReaderStats {
  /** Bytes of the file the read buffer holds now. */
  bufferBytes: number;
  /** The most the read buffer ever held: max(64 KiB, the largest record read + its length prefix). */
  peakBufferBytes: number;
  /** Largest record read so far. */
  largestRecordBytes: number;
  /** Records read, over every pass. */
  records: number;
}

/** What the last complete pass found after the events. */
export interface TracePassSummary {
  events: number;
  /** Events the recorder dropped (the sum of the Dropped notices). */
  droppedEvents: bigint;
  /** The first Dropped notices (at most MAX_KEPT_NOTICES are kept; droppedEvents counts all). */
  dropped: TraceDropped[];
  footer: TraceFooter | null;
  /** No footer: the file was cut at a record boundary, or its recorder never closed. */
  truncated: boolean;
  /** Bytes of the file, up to the end of the last record. */
  bytes: number;
  /** The VMBus version negotiated: the header's, else the footer's (0 when neither knows). */
  vmbusVersion: number;
}

/** A record after the header, as a pass hands it out, with its byte offset and length. */
export type TraceBodyRecord = Exclude<TraceRecord, { kind: 'header' }> & { offset: number; length: number };

/** Read buffer size, and the smallest the buffer ever is. */
const CHUNK_BYTES = 64 << 10;
/** Dropped notices a pass keeps (their total is always counted). */
export const MAX_KEPT_NOTICES = 1024;

interface ByteSource {
  /** Reads into `into` at `offset`, from file position `position`; returns 0 at the end. */
  read(into: Uint8Array, offset: number, length: number, position: number): number;
  /** Whether a second pass can start again from an earlier position. */
  readonly rewindable: boolean;
  close(): void;
}

class FileSource implements ByteSource {
  readonly rewindable: boolean;
  private readonly fd: number;
  /** Where a sequential (non-seekable) source is now. */
  private at = 0;
  constructor(private readonly path: string) {
    try {
      this.fd = openSync(path, 'r');
    } catch (error) {
      throw new TraceInputError(path, error);
    }
    try {
      const stat = fstatSync(this.fd);
      if (stat.isDirectory()) throw Object.assign(new Error('EISDIR: is a directory'), { code: 'EISDIR' });
      this.rewindable = stat.isFile();
    } catch (error) {
      closeSync(this.fd);
      throw new TraceInputError(path, error);
    }
  }
  read(into: Uint8Array, offset: number, length: number, position: number): number {
    try {
      if (this.rewindable) return readSync(this.fd, into, offset, length, position);
      // A pipe or a device: only forward, in order.
      if (position !== this.at) throw new TraceInputError(this.path, new Error('not a regular file: it can be read only once, in order'));
      const n = readSync(this.fd, into, offset, length, null);
      this.at += n;
      return n;
    } catch (error) {
      if (error instanceof TraceInputError) throw error;
      throw new TraceInputError(this.path, error);
    }
  }
  close(): void {
    closeSync(this.fd);
  }
}

class BytesSource implements ByteSource {
  readonly rewindable = true;
  constructor(private readonly bytes: Uint8Array) {}
  read(into: Uint8Array, offset: number, length: number, position: number): number {
    const part = this.bytes.subarray(position, position + length);
    into.set(part, offset);
    return part.length;
  }
  close(): void {}
}

export class TraceReader {
  readonly header: TraceHeader;
  private readonly source: ByteSource;
  /** File offset of the first record after the header. */
  private readonly bodyOffset: number;
  private buf = new Uint8Array(CHUNK_BYTES);
  /** File position of buf[0]; the unread bytes are buf[start, end). */
  private bufPosition = 0;
  private start = 0;
  private end = 0;
  private eof = false;
  private passActive = false;
  private passes = 0;
  private summary: TracePassSummary | null = null;
  private readonly counters = { peakBufferBytes: CHUNK_BYTES, largestRecordBytes: 0, records: 0 };

  private constructor(source: ByteSource) {
    this.source = source;
    try {
      this.fill(TRACE_MAGIC.length);
      if (this.end - this.start < TRACE_MAGIC.length || !TRACE_MAGIC.every((b, i) => this.buf[i] === b)) {
        throw new TraceFormatError(0, 'not an hvemu trace (bad magic)');
      }
      this.start = TRACE_MAGIC.length;
      const first = this.next();
      if (!first) throw new TraceFormatError(TRACE_MAGIC.length, 'no header (the trace is truncated)');
      if (first.record.kind !== 'header') throw new TraceFormatError(first.offset, 'first record is not a header');
      const v = first.record.header.schemaVersion;
      if (v < TRACE_SCHEMA_MIN_VERSION || v > TRACE_SCHEMA_VERSION) {
        throw new TraceFormatError(
          first.offset,
          `schema version ${v}, this reader knows ${TRACE_SCHEMA_MIN_VERSION}-${TRACE_SCHEMA_VERSION}`,
        );
      }
      this.header = first.record.header;
      this.bodyOffset = this.bufPosition + this.start;
    } catch (error) {
      source.close();
      throw error;
    }
  }

  /** Opens a trace file (or a pipe or device, read once) and reads its header. */
  static open(path: string): TraceReader {
    if (typeof path !== 'string' || path.length === 0)
      throw new HostUsageError(`TraceReader.open: path must be a non-empty string, got ${describe(path)}`);
    return new TraceReader(new FileSource(path));
  }

  /** A reader over a trace already in memory. */
  static fromBytes(bytes: Uint8Array): TraceReader {
    if (!(bytes instanceof Uint8Array))
      throw new HostUsageError(`TraceReader.fromBytes: bytes must be a Uint8Array, got ${describe(bytes)}`);
    return new TraceReader(new BytesSource(bytes));
  }

  get stats(): TraceReaderStats {
    return { bufferBytes: this.buf.length, ...this.counters };
  }

  /** What the last pass that reached the end of the file found; null before one has. */
  get lastPass(): TracePassSummary | null {
    return this.summary;
  }

  /**
   * One pass over the records after the header (events, Dropped notices, the footer), checked
   * as the module comment says. Each call starts a new pass; one pass at a time.
   */
  *records(): Generator<TraceBodyRecord, TracePassSummary> {
    if (this.passActive) throw new HostUsageError('TraceReader.records: a pass is already under way');
    if (this.passes > 0 && !this.source.rewindable)
      throw new HostUsageError('TraceReader.records: this trace is not a regular file and can be read only once');
    this.passActive = true;
    this.passes++;
    try {
      this.seek(this.bodyOffset);
      let footer: TraceFooter | null = null;
      let events = 0;
      let droppedEvents = 0n;
      const dropped: TraceDropped[] = [];
      let expectedSeq = 0n;
      for (let r = this.next(); r; r = this.next()) {
        const { offset, length, record } = r;
        if (footer) throw new TraceFormatError(offset, 'record after the footer');
        switch (record.kind) {
          case 'header':
            throw new TraceFormatError(offset, 'second header');
          case 'event':
            if (record.event.seq < expectedSeq)
              throw new TraceFormatError(offset, `event sequence ${record.event.seq} after ${expectedSeq - 1n}`);
            expectedSeq = record.event.seq + 1n;
            events++;
            yield { kind: 'event', event: record.event, offset, length };
            break;
          case 'dropped':
            droppedEvents += record.dropped.count;
            if (dropped.length < MAX_KEPT_NOTICES) dropped.push(record.dropped);
            yield { kind: 'dropped', dropped: record.dropped, offset, length };
            break;
          case 'footer':
            footer = record.footer;
            if (footer.events !== BigInt(events) || footer.dropped !== droppedEvents) {
              throw new TraceFormatError(
                offset,
                `the footer counts ${footer.events} events and ${footer.dropped} dropped; the trace holds ${events} and ${droppedEvents}`,
              );
            }
            yield { kind: 'footer', footer, offset, length };
            break;
        }
      }
      this.summary = {
        events,
        droppedEvents,
        dropped,
        footer,
        truncated: footer === null,
        bytes: this.bufPosition + this.start,
        vmbusVersion: this.header.vmbusVersion || (footer?.vmbusVersion ?? 0),
      };
      return this.summary;
    } finally {
      this.passActive = false;
    }
  }

  /** One pass over the events alone (see records()). */
  *events(): Generator<TraceEvent, TracePassSummary> {
    const pass = this.records();
    for (;;) {
      const r = pass.next();
      if (r.done) return r.value;
      if (r.value.kind === 'event') yield r.value.event;
    }
  }

  /** Reads the whole trace into memory (small traces only: the events are all kept). */
  readAll(): Trace {
    const events: TraceEvent[] = [];
    const pass = this.events();
    let r = pass.next();
    for (; !r.done; r = pass.next()) events.push(r.value);
    const summary = r.value;
    return { header: this.header, events, dropped: summary.dropped, footer: summary.footer };
  }

  close(): void {
    this.source.close();
    this.buf = new Uint8Array(0);
  }

  private seek(position: number): void {
    if (position >= this.bufPosition && position <= this.bufPosition + this.end) {
      this.start = position - this.bufPosition;
      return;
    }
    this.bufPosition = position;
    this.start = 0;
    this.end = 0;
    this.eof = false;
  }

  /** Makes at least `need` unread bytes available in the buffer, or all the file has left. */
  private fill(need: number): void {
    if (this.end - this.start >= need || this.eof) return;
    const keep = this.end - this.start;
    const capacity = Math.max(CHUNK_BYTES, need);
    if (capacity !== this.buf.length && (capacity > this.buf.length || keep <= CHUNK_BYTES)) {
      // Grow for a large record; shrink back to a chunk after one.
      const next = new Uint8Array(capacity);
      next.set(this.buf.subarray(this.start, this.end));
      this.buf = next;
      this.counters.peakBufferBytes = Math.max(this.counters.peakBufferBytes, capacity);
    } else if (this.start > 0) {
      this.buf.copyWithin(0, this.start, this.end);
    }
    this.bufPosition += this.start;
    this.start = 0;
    this.end = keep;
    while (this.end < need) {
      const n = this.source.read(this.buf, this.end, this.buf.length - this.end, this.bufPosition + this.end);
      if (n === 0) {
        this.eof = true;
        return;
      }
      this.end += n;
    }
  }

  /** The next record, or null at the end of the file. Throws TraceFormatError on a corrupt or cut record. */
  private next(): { offset: number; length: number; record: TraceRecord } | null {
    this.fill(5);
    if (this.start === this.end) return null;
    const offset = this.bufPosition + this.start;
    let at = this.start;
    let length = 0;
    let shift = 1;
    for (let i = 0; ; i++) {
      if (at >= this.end) throw new TraceFormatError(offset, 'truncated record length (the trace is truncated)');
      if (i >= 5) throw new TraceFormatError(offset, 'record length varint too long');
      const b = this.buf[at++];
      length += (b & 0x7f) * shift;
      shift *= 128;
      if ((b & 0x80) === 0) break;
    }
    if (length > MAX_RECORD_BYTES) throw new TraceFormatError(offset, `record of ${length} bytes exceeds the limit of ${MAX_RECORD_BYTES}`);
    const prefix = at - this.start;
    this.fill(prefix + length);
    const available = this.end - this.start - prefix;
    if (available < length) throw new TraceFormatError(offset, `record of ${length} bytes cut after ${available} (the trace is truncated)`);
    const bodyStart = this.start + prefix;
    // Its own copy: the buffer is reused, and a decoded event's bytes are views of what it decoded.
    const body = this.buf.slice(bodyStart, bodyStart + length);
    this.start = bodyStart + length;
    this.counters.records++;
    this.counters.largestRecordBytes = Math.max(this.counters.largestRecordBytes, length);
    return { offset, length: prefix + length, record: decodeRecordBody(body, offset) };
  }
}

/** Reads every record of a trace in memory into one Trace (see TraceReader for the checks). */
export function parseTrace(bytes: Uint8Array): Trace {
  const reader = TraceReader.fromBytes(bytes);
  return reader.readAll();
}

/**
 * Reads a whole trace file into memory (read in chunks, but every event is kept). For small
 * traces and tests: use TraceReader.open to stream a trace of any size.
 */
export function readTraceFile(path: string): Trace {
  if (typeof path !== 'string' || path.length === 0)
    throw new HostUsageError(`readTraceFile: path must be a non-empty string, got ${describe(path)}`);
  const reader = TraceReader.open(path);
  try {
    return reader.readAll();
  } finally {
    reader.close();
  }
}
