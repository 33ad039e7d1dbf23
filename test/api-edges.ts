/** Shared by the API-edge tests: a table of bad calls, each checked for its typed error and message. */
import { expect } from 'vitest';
import { HvemuError } from '@hvemu/common';

export type ErrorClass = abstract new (...args: never[]) => Error;
/** name, the bad call, the error class, what the message must say (the argument's name). */
export type Row<T> = [string, (target: T) => unknown, ErrorClass, RegExp];

/** Runs each bad call on a fresh `target()`: it must throw an HvemuError of the row's class whose message matches. */
export function expectRows<T>(target: () => T, rows: readonly Row<T>[]): void {
  for (const [name, call, cls, message] of rows) {
    let thrown: unknown;
    try {
      call(target());
    } catch (e) {
      thrown = e;
    }
    expect(thrown, `${name}: nothing thrown`).toBeDefined();
    expect(thrown, `${name}: ${String(thrown)}`).toBeInstanceOf(cls);
    expect(thrown, name).toBeInstanceOf(HvemuError);
    expect((thrown as Error).message, name).toMatch(message);
  }
}

/** A segment as a vCPU has it after reset (a 64 KiB read/write data segment at 0), for fake register files. */
export function resetSegment(): {
  base: bigint;
  limit: number;
  selector: number;
  type: number;
  present: boolean;
  dpl: number;
  db: boolean;
  s: boolean;
  l: boolean;
  g: boolean;
  avl: boolean;
  unusable: boolean;
} {
  return {
    base: 0n,
    limit: 0xffff,
    selector: 0,
    type: 3,
    present: true,
    dpl: 0,
    db: false,
    s: true,
    l: false,
    g: false,
    avl: false,
    unusable: false,
  };
}
