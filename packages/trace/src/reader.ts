/**
 * Reading a whole trace: header first, then events (with Dropped notices), then the footer.
 */
import { readFileSync } from 'node:fs';
import { decodeRecords } from './codec.js';
import { TraceFormatError } from './errors.js';
import { TRACE_SCHEMA_MIN_VERSION, TRACE_SCHEMA_VERSION, type TraceDropped, type TraceEvent, type TraceFooter, type TraceHeader } from './schema.js';

export interface Trace {
  header: TraceHeader;
  events: TraceEvent[];
  dropped: TraceDropped[];
  /** Null when the recorder did not close cleanly (the trace is still readable up to there). */
  footer: TraceFooter | null;
}

export function parseTrace(bytes: Uint8Array): Trace {
  let header: TraceHeader | null = null;
  let footer: TraceFooter | null = null;
  const events: TraceEvent[] = [];
  const dropped: TraceDropped[] = [];
  let expectedSeq = 0n;
  for (const { offset, record } of decodeRecords(bytes)) {
    if (footer) throw new TraceFormatError(offset, 'record after the footer');
    if (record.kind === 'header') {
      if (header) throw new TraceFormatError(offset, 'second header');
      const v = record.header.schemaVersion;
      if (v < TRACE_SCHEMA_MIN_VERSION || v > TRACE_SCHEMA_VERSION) {
        throw new TraceFormatError(offset, `schema version ${v}, this reader knows ${TRACE_SCHEMA_MIN_VERSION}-${TRACE_SCHEMA_VERSION}`);
      }
      header = record.header;
      continue;
    }
    if (!header) throw new TraceFormatError(offset, 'first record is not a header');
    if (record.kind === 'event') {
      if (record.event.seq < expectedSeq) throw new TraceFormatError(offset, `event sequence ${record.event.seq} after ${expectedSeq - 1n}`);
      expectedSeq = record.event.seq + 1n;
      events.push(record.event);
    } else if (record.kind === 'dropped') {
      dropped.push(record.dropped);
    } else {
      footer = record.footer;
    }
  }
  if (!header) throw new TraceFormatError(bytes.length, 'no header');
  return { header, events, dropped, footer };
}

export function readTraceFile(path: string): Trace {
  return parseTrace(readFileSync(path));
}
