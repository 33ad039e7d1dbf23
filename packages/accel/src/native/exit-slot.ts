/**
 * TypeScript mirror of native/src/exit_slot.h: the per-vCPU exit slot that a vCPU thread fills
 * and the JS thread answers. Keep the two in step.
 */
export const HEADER_SIZE = 4096;
export const SLOT_SIZE = 8192;
export const SLOT_DATA_OFFSET = 4096;
export const SLOT_DATA_SIZE = 4096;

/** Header u32 word indices. */
export const HDR_JS_POLLING = 0;

/** Slot byte offsets. */
export const Off = {
  state: 0,
  sleeping: 4,
  kind: 8,
  flags: 12,
  size: 16,
  count: 20,
  a0: 24,
  a1: 32,
  a2: 40,
  a3: 48,
  answerStatus: 56,
  answer0: 64,
  seq: 96,
  wakeGen: 100,
  a4: 104,
  statWaitNs: 112,
  statRunNs: 120,
  regs: 128,
  sregs: 272,
  insnLen: 328,
  insnBytes: 332,
  xmm: 352,
} as const;

export const SlotState = { running: 0, posted: 1, answered: 2, exited: 3 } as const;

export const ExitKindCode = {
  io: 1,
  mmio: 2,
  msrRead: 3,
  msrWrite: 4,
  cpuid: 5,
  hypercall: 6,
  halt: 7,
  shutdown: 8,
  unrecoverable: 9,
} as const;

export const ExitFlag = { write: 1, string: 2, regsValid: 4, insnValid: 8, xmmValid: 16 } as const;

export const AnswerStatus = { continue: 0, gp: 1, stop: 2 } as const;

export const ExitCause = { stopRequested: 1, handlerStop: 2, hostError: 3 } as const;

/** Typed views over one slot. Word indices are byte offsets / 4 (or / 8). */
export class SlotView {
  readonly u32: Uint32Array;
  readonly i32: Int32Array;
  readonly u64: BigUint64Array;
  readonly bytes: Uint8Array;

  constructor(
    buffer: ArrayBuffer,
    readonly vp: number,
  ) {
    const base = HEADER_SIZE + vp * SLOT_SIZE;
    this.u32 = new Uint32Array(buffer, base, SLOT_SIZE / 4);
    this.i32 = new Int32Array(buffer, base, SLOT_SIZE / 4);
    this.u64 = new BigUint64Array(buffer, base, SLOT_SIZE / 8);
    this.bytes = new Uint8Array(buffer, base, SLOT_SIZE);
  }

  state(): number {
    return Atomics.load(this.i32, Off.state / 4);
  }
  word(off: number): number {
    return this.u32[off / 4];
  }
  big(off: number): bigint {
    return this.u64[off / 8];
  }
  setWord(off: number, v: number): void {
    this.u32[off / 4] = v;
  }
  setBig(off: number, v: bigint): void {
    this.u64[off / 8] = v;
  }
  /**
   * Publishes the answer (a full barrier, see exit_channel.h) and says whether to wake.
   * Only POSTED becomes ANSWERED: a vCPU thread asked to stop while its exit was being handled
   * (e.g. by that very handler) gives up waiting and publishes EXITED, which must survive so
   * that the scan reports the vCPU as ended.
   */
  publishAnswer(): boolean {
    const previous = Atomics.compareExchange(this.i32, Off.state / 4, SlotState.posted, SlotState.answered);
    if (previous !== SlotState.posted) return false;
    return Atomics.load(this.i32, Off.sleeping / 4) !== 0;
  }
}
