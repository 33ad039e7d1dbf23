export { HvemuError, HostUsageError, type GuestOutcome } from './errors.js';
export { type Logger, type LogRecord, silentLogger, MemoryLogger, ConsoleLogger } from './logger.js';
export {
  defineStruct,
  formatGuid,
  parseGuid,
  StructBoundsError,
  type BytesType,
  type FieldRow,
  type FieldType,
  type ScalarType,
  type StructLayout,
  type StructValue,
} from './struct.js';
export { type Clock, HV_CLOCK_HZ, MonotonicClock, ManualClock } from './clock.js';
