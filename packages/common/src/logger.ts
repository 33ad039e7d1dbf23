/**
 * The logging seam. hvemu never logs through a global: every component that reports
 * guest misbehaviour takes a Logger (default: silent), so an embedding VMM routes the
 * reports where it wants and tests can assert on them.
 */
export interface Logger {
  debug(message: string, fields?: Readonly<Record<string, unknown>>): void;
  info(message: string, fields?: Readonly<Record<string, unknown>>): void;
  warn(message: string, fields?: Readonly<Record<string, unknown>>): void;
  error(message: string, fields?: Readonly<Record<string, unknown>>): void;
}

const noop = (): void => {};

/** A logger that discards everything. */
export const silentLogger: Logger = Object.freeze({ debug: noop, info: noop, warn: noop, error: noop });

export interface LogRecord {
  level: 'debug' | 'info' | 'warn' | 'error';
  message: string;
  fields?: Readonly<Record<string, unknown>>;
}

/** A logger that keeps every record in memory (tests, the demo timeline). */
export class MemoryLogger implements Logger {
  readonly records: LogRecord[] = [];
  debug(message: string, fields?: Readonly<Record<string, unknown>>): void {
    this.records.push({ level: 'debug', message, fields });
  }
  info(message: string, fields?: Readonly<Record<string, unknown>>): void {
    this.records.push({ level: 'info', message, fields });
  }
  warn(message: string, fields?: Readonly<Record<string, unknown>>): void {
    this.records.push({ level: 'warn', message, fields });
  }
  error(message: string, fields?: Readonly<Record<string, unknown>>): void {
    this.records.push({ level: 'error', message, fields });
  }
}

/** A logger that writes one line per record to a stream (stderr by default). */
export class ConsoleLogger implements Logger {
  constructor(private readonly write: (line: string) => void = (l) => process.stderr.write(l + '\n')) {}
  private emit(level: string, message: string, fields?: Readonly<Record<string, unknown>>): void {
    const suffix = fields ? ' ' + JSON.stringify(fields, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)) : '';
    this.write(`[${level}] ${message}${suffix}`);
  }
  debug(m: string, f?: Readonly<Record<string, unknown>>): void {
    this.emit('debug', m, f);
  }
  info(m: string, f?: Readonly<Record<string, unknown>>): void {
    this.emit('info', m, f);
  }
  warn(m: string, f?: Readonly<Record<string, unknown>>): void {
    this.emit('warn', m, f);
  }
  error(m: string, f?: Readonly<Record<string, unknown>>): void {
    this.emit('error', m, f);
  }
}
