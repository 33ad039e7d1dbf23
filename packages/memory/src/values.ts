/**
 * Argument checks shared by GuestMemory and the GuestBuffers. A host caller that passes a value
 * a typed array would silently wrap (2**40 into a u32, a negative, a fraction, a number where a
 * u64 wants a bigint) or an address that is not an integer gets a HostUsageError naming it:
 * such a call is a bug in the caller, never something the guest did. The checks are one or two
 * comparisons, so they stay on the hot paths.
 */
import { HostUsageError } from '@hvemu/common';

const LIMITS = { 8: 0x100, 16: 0x1_0000, 32: 0x1_0000_0000 } as const;
const U64_END = 1n << 64n;

/** Throws unless `value` is an integer in [0, 2^bits). */
export function checkUint(value: number, bits: 8 | 16 | 32, what: string): void {
  if (!(value >= 0 && value < LIMITS[bits]) || value % 1 !== 0) {
    throw new HostUsageError(`${what}: value ${describe(value)} is not a u${bits} (an integer in [0, 2^${bits}))`);
  }
}

/** Throws unless `value` is a bigint in [0, 2^64). */
export function checkU64(value: bigint, what: string): void {
  if (typeof value !== 'bigint' || value < 0n || value >= U64_END) {
    throw new HostUsageError(`${what}: value ${describe(value)} is not a u64 (a bigint in [0, 2^64))`);
  }
}

/** True when `n` can be a guest-physical address or a byte count: a non-negative safe integer. */
export function isAddressLike(n: number): boolean {
  return Number.isSafeInteger(n) && n >= 0;
}

/** The HostUsageError for an address or length that is not a non-negative safe integer. */
export function badAddress(what: string, n: unknown): HostUsageError {
  return new HostUsageError(`${what} ${describe(n)} is not a non-negative integer`);
}

/** A value as a caller would recognise it in a message (strings quoted, bigints with n). */
export function describe(v: unknown): string {
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number') return String(v);
  return v === null ? 'null' : typeof v === 'object' ? 'an object' : String(v);
}

/** Throws unless `v` is a Uint8Array (the only byte container the copy APIs take). */
export function checkBytes(v: unknown, what: string): void {
  if (!(v instanceof Uint8Array)) throw new HostUsageError(`${what} must be a Uint8Array, got ${describe(v)}`);
}
