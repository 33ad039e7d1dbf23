import { HvemuError } from '@hvemu/common';

/** A trace file that is not a trace, or is corrupt or truncated; names the byte offset. */
export class TraceFormatError extends HvemuError {
  readonly outcome = 'host-error' as const;
  constructor(
    readonly offset: number,
    reason: string,
  ) {
    super(`trace corrupt at byte ${offset}: ${reason}`);
  }
}

/** A trace file that cannot be opened or read at all (missing, unreadable, a directory); names the path. */
export class TraceInputError extends HvemuError {
  readonly outcome = 'host-error' as const;
  constructor(
    readonly path: string,
    cause: unknown,
  ) {
    super(`cannot read trace ${path}: ${(cause as Error)?.message ?? String(cause)}`, { cause });
  }
}

/** A trace that cannot be written (the path is unwritable, the disk failed); names the path. */
export class TraceOutputError extends HvemuError {
  readonly outcome = 'host-error' as const;
  constructor(
    readonly path: string,
    cause: unknown,
  ) {
    super(`cannot write trace ${path}: ${(cause as Error)?.message ?? String(cause)}`, { cause });
  }
}

/** A value as an error message names it. */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (value instanceof Uint8Array) return `a ${value.constructor.name}`;
  if (typeof value === 'object') return 'an object';
  if (typeof value === 'string') return `'${value.length > 40 ? `${value.slice(0, 40)}...` : value}'`;
  if (typeof value === 'bigint') return `${value}n`;
  return String(value);
}
