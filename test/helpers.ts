/**
 * How many cases a property runs: a small default for `npm test`, more with
 * HVEMU_FUZZ_RUNS (the fuzz script sets 100000).
 */
export function fuzzRuns(defaultRuns: number): number {
  const fromEnv = Number(process.env.HVEMU_FUZZ_RUNS);
  return Number.isInteger(fromEnv) && fromEnv > 0 ? fromEnv : defaultRuns;
}

/** Byte-array equality that stays fast on large buffers (vitest's deep equality is per element). */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}
