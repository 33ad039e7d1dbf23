export {
  TRACE_MAGIC,
  TRACE_SCHEMA_VERSION,
  TRACE_SCHEMA_MIN_VERSION,
  TRACE_SCHEMA_HOST_INPUTS,
  RecordType,
  isGuestOriginated,
  eventBodyProblem,
  eventRelid,
  encodeHostCallArgs,
  decodeHostCallArgs,
  type ChannelStateKind,
  type Direction,
  type GpaRangeData,
  type HostInput,
  type HostInputSource,
  type TraceDevice,
  type TraceDropped,
  type TraceEvent,
  type TraceEventBody,
  type TraceEventKind,
  type TraceFooter,
  type TraceHeader,
} from './schema.js';
export { TraceFormatError, TraceInputError, TraceOutputError } from './errors.js';
export { encodeRecord, decodeRecords, MAX_RECORD_BYTES, type TraceRecord } from './codec.js';
export {
  TraceRecorder,
  FileOutput,
  MemoryOutput,
  disabledTraceSink,
  type TraceSink,
  type RecordOutput,
  type RecorderOptions,
} from './recorder.js';
export {
  parseTrace,
  readTraceFile,
  TraceReader,
  MAX_KEPT_NOTICES,
  type Trace,
  type TraceBodyRecord,
  type TracePassSummary,
  type TraceReaderStats,
} from './reader.js';
export { firstDivergence, eventDifferences, type Divergence, type DiffOptions } from './diff.js';
