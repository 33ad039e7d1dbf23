/**
 * Comparing traces event by event: the first place two traces differ, with the events leading
 * up to it. Replay uses it to compare the host's answers with a recording; tests use it to
 * compare a fresh capture with a fixture. Sequence numbers and times are compared only when
 * asked (a replay runs at its own speed).
 */
import { HostUsageError } from '@hvemu/common';
import { describe } from './errors.js';
import type { TraceEvent } from './schema.js';

export interface Divergence {
  /** Index in the compared event lists. */
  index: number;
  expected: TraceEvent | undefined;
  actual: TraceEvent | undefined;
  /** The events before it (expected side), oldest first. */
  context: TraceEvent[];
  /** Dotted paths of the fields that differ (empty when one side has no event). */
  fields: string[];
}

export interface DiffOptions {
  /** Compare reference times too (default false). */
  times?: boolean;
  /** How many earlier events to include as context (default 5). */
  context?: number;
}

/** Field-by-field differences between two events (ignoring seq, and time unless asked). */
export function eventDifferences(a: TraceEvent, b: TraceEvent, options: DiffOptions = {}): string[] {
  const out: string[] = [];
  const skip = new Set(['seq', ...(options.times ? [] : ['time'])]);
  compare(a, b, '', out, skip);
  return out;
}

function compare(a: unknown, b: unknown, path: string, out: string[], skip: Set<string>): void {
  if (a instanceof Uint8Array || b instanceof Uint8Array) {
    if (!(a instanceof Uint8Array && b instanceof Uint8Array) || a.length !== b.length || !a.every((x, i) => x === b[i])) out.push(path);
    return;
  }
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) {
      out.push(path);
      return;
    }
    a.forEach((x, i) => compare(x, b[i], `${path}[${i}]`, out, skip));
    return;
  }
  if (a && b && typeof a === 'object' && typeof b === 'object') {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    for (const k of keys) {
      if (path === '' && skip.has(k)) continue;
      compare((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], path ? `${path}.${k}` : k, out, skip);
    }
    return;
  }
  if (a !== b) out.push(path);
}

/** The first divergence between `expected` and `actual`, or null when they match. */
export function firstDivergence(
  expected: readonly TraceEvent[],
  actual: readonly TraceEvent[],
  options: DiffOptions = {},
): Divergence | null {
  if (!Array.isArray(expected)) throw new HostUsageError(`firstDivergence: expected must be an array of events, got ${describe(expected)}`);
  if (!Array.isArray(actual)) throw new HostUsageError(`firstDivergence: actual must be an array of events, got ${describe(actual)}`);
  const context = options.context ?? 5;
  if (!Number.isInteger(context) || context < 0)
    throw new HostUsageError(`firstDivergence: options.context must be a non-negative integer, got ${describe(context)}`);
  const n = Math.max(expected.length, actual.length);
  for (let i = 0; i < n; i++) {
    const e = expected[i];
    const a = actual[i];
    const fields = e && a ? eventDifferences(e, a, options) : [];
    if (!e || !a || fields.length > 0) {
      return { index: i, expected: e, actual: a, context: expected.slice(Math.max(0, i - context), i), fields };
    }
  }
  return null;
}
