/**
 * Reads an exit out of its slot (decode) and writes a handler's response back (encode).
 * Every field the slot holds came from a vCPU thread that took it from the guest; sizes and
 * counts are checked here too, so a broken slot cannot make TS read outside it.
 */
import { AccelUsageError } from './errors.js';
import type { Exit, ExitResponse, UnrecoverableExit } from './exits.js';
import { AnswerStatus, ExitFlag, ExitKindCode, Off, SLOT_DATA_OFFSET, SLOT_DATA_SIZE, type SlotView } from './native/exit-slot.js';
import { REG_NAMES, type Registers } from './registers.js';

/** KVM exit reasons (linux/kvm.h) that the slot reports as backend codes. */
const KVM_EXIT_IO = 2;
const KVM_EXIT_MMIO = 6;
const KVM_EXIT_FAIL_ENTRY = 9;
const KVM_EXIT_INTERNAL_ERROR = 17;
const KVM_EXIT_SYSTEM_EVENT = 24;
const KVM_INTERNAL_ERROR_EMULATION = 1;

function registersOf(slot: SlotView): Registers | undefined {
  if ((slot.word(Off.flags) & ExitFlag.regsValid) === 0) return undefined;
  const r = {} as Record<keyof Registers, bigint>;
  REG_NAMES.forEach((name, i) => (r[name] = slot.big(Off.regs + i * 8)));
  return r;
}

function insnOf(slot: SlotView): Uint8Array | undefined {
  if ((slot.word(Off.flags) & ExitFlag.insnValid) === 0) return undefined;
  const n = Math.min(slot.word(Off.insnLen), 16);
  return slot.bytes.slice(Off.insnBytes, Off.insnBytes + n);
}

function unrecoverableReason(code: number, detail: bigint): UnrecoverableExit['reason'] {
  if (code === KVM_EXIT_INTERNAL_ERROR) return detail === BigInt(KVM_INTERNAL_ERROR_EMULATION) ? 'emulation-failure' : 'internal-error';
  if (code === KVM_EXIT_FAIL_ENTRY) return 'entry-failure';
  if (code === KVM_EXIT_IO || code === KVM_EXIT_MMIO) return 'bad-io';
  return 'unknown';
}

export function decodeExit(slot: SlotView): Exit {
  const vp = slot.vp;
  const kind = slot.word(Off.kind);
  const flags = slot.word(Off.flags);
  const isWrite = (flags & ExitFlag.write) !== 0;
  switch (kind) {
    case ExitKindCode.io: {
      const size = slot.word(Off.size) as 1 | 2 | 4;
      const count = Math.max(1, Math.min(slot.word(Off.count), SLOT_DATA_SIZE / size));
      const string = (flags & ExitFlag.string) !== 0;
      const bytes = string && isWrite ? slot.bytes.slice(SLOT_DATA_OFFSET, SLOT_DATA_OFFSET + count * size) : new Uint8Array(0);
      return {
        kind: 'io',
        vp,
        port: Number(slot.big(Off.a0)) & 0xffff,
        size,
        isWrite,
        data: Number(slot.big(Off.a1) & 0xffffffffn),
        count,
        bytes,
      };
    }
    case ExitKindCode.mmio:
      return { kind: 'mmio', vp, gpa: Number(slot.big(Off.a0)), size: slot.word(Off.size), isWrite, data: slot.big(Off.a1) };
    case ExitKindCode.msrRead:
      return { kind: 'msr-read', vp, msr: Number(slot.big(Off.a0)) };
    case ExitKindCode.msrWrite:
      return { kind: 'msr-write', vp, msr: Number(slot.big(Off.a0)), value: slot.big(Off.a1) };
    case ExitKindCode.cpuid:
      return { kind: 'cpuid', vp, leaf: Number(slot.big(Off.a0)), subleaf: Number(slot.big(Off.a2)) };
    case ExitKindCode.hypercall:
      return {
        kind: 'hypercall',
        vp,
        control: slot.big(Off.a0),
        input: slot.big(Off.a1),
        output: slot.big(Off.a2),
        xmm: (flags & ExitFlag.xmmValid) !== 0 ? slot.bytes.slice(Off.xmm, Off.xmm + 96) : undefined,
      };
    case ExitKindCode.halt:
      return { kind: 'halt', vp };
    case ExitKindCode.shutdown: {
      const code = Number(slot.big(Off.a3));
      return {
        kind: 'shutdown',
        vp,
        reason: code === KVM_EXIT_SYSTEM_EVENT ? 'system-event' : 'triple-fault',
        backendCode: code,
        detail: slot.big(Off.a1),
        registers: registersOf(slot),
      };
    }
    default: {
      const code = Number(slot.big(Off.a3));
      const detail = slot.big(Off.a1);
      return {
        kind: 'unrecoverable',
        vp,
        reason: unrecoverableReason(code, detail),
        backendCode: code,
        detail,
        registers: registersOf(slot),
        instructionBytes: insnOf(slot),
      };
    }
  }
}

/**
 * A handler's `value` as the 64-bit answer word: an integer Number or a bigint that fits in
 * 64 bits (negatives as two's complement). Anything else is refused rather than truncated.
 */
function answerValue(exit: Exit, v: unknown): bigint {
  if (v === undefined) return 0n;
  if (typeof v === 'number' && Number.isSafeInteger(v)) return BigInt.asUintN(64, BigInt(v));
  if (typeof v === 'bigint' && v >= -(1n << 63n) && v < 1n << 64n) return BigInt.asUintN(64, v);
  const shown = typeof v === 'bigint' ? `${v}n` : typeof v === 'string' ? JSON.stringify(v) : typeof v === 'number' ? String(v) : typeof v;
  throw new AccelUsageError(`the answer to the ${exit.kind} exit has value ${shown}: it must be an integer or a bigint within 64 bits`);
}

/**
 * Checks a handler's answer the way encodeResponse will use it (for the backends that complete
 * exits in TypeScript): `value` an integer or 64-bit bigint, `bytes` a Uint8Array, `cpuid` four
 * u32 words. Throws AccelUsageError; the caller turns it into the handler's failure.
 */
export function checkExitResponse(exit: Exit, response: unknown): void {
  if (response === undefined || response === null) return;
  if (typeof response !== 'object')
    throw new AccelUsageError(`the answer to the ${exit.kind} exit must be an ExitResponse object, not ${typeof response}`);
  const r = response as ExitResponse;
  answerValue(exit, r.value);
  if (r.bytes !== undefined && !(r.bytes instanceof Uint8Array))
    throw new AccelUsageError(`the answer to the ${exit.kind} exit has bytes that are not a Uint8Array`);
  if (
    r.cpuid !== undefined &&
    (!Array.isArray(r.cpuid) || r.cpuid.length !== 4 || !r.cpuid.every((w) => Number.isInteger(w) && w >= 0 && w <= 0xffffffff))
  ) {
    throw new AccelUsageError(`the answer to the ${exit.kind} exit has cpuid that is not four u32 words`);
  }
}

function isFatal(exit: Exit): boolean {
  return exit.kind === 'shutdown' || exit.kind === 'unrecoverable';
}

/** Writes `response` for `exit` into the slot (not yet published). Returns true when the vCPU stops. */
export function encodeResponse(slot: SlotView, exit: Exit, response: ExitResponse | void): boolean {
  const r = response ?? {};
  // A fatal exit stops unless the handler explicitly repaired state and said stop: false.
  const stop = isFatal(exit) ? r.stop !== false : r.stop === true;
  slot.setWord(Off.answerStatus, stop ? AnswerStatus.stop : r.gp ? AnswerStatus.gp : AnswerStatus.continue);
  if (exit.kind === 'cpuid') {
    const c = r.cpuid ?? [0, 0, 0, 0];
    for (let i = 0; i < 4; i++) slot.setBig(Off.answer0 + 8 * i, BigInt(c[i] >>> 0));
    return stop;
  }
  if (exit.kind === 'io' && !exit.isWrite && exit.count > 1) {
    const n = exit.count * exit.size;
    const src = r.bytes ?? new Uint8Array(n).fill(0xff);
    slot.bytes.set(src.subarray(0, n), SLOT_DATA_OFFSET);
    if (src.length < n) slot.bytes.fill(0xff, SLOT_DATA_OFFSET + src.length, SLOT_DATA_OFFSET + n);
    return stop;
  }
  slot.setBig(Off.answer0, answerValue(exit, r.value));
  return stop;
}
