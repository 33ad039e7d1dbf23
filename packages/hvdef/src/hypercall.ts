/**
 * Hypercall call codes (HVCALL_*), the input control value (RCX) and the result value (RAX),
 * TLFS "Hypercall Inputs"; one codec for the dispatcher, the guest client and the backends.
 */
export const HVCALL_NOTIFY_LONG_SPIN_WAIT = 0x0008;
export const HVCALL_GET_PARTITION_PROPERTY = 0x0044;
export const HVCALL_SET_PARTITION_PROPERTY = 0x0045;
export const HVCALL_INSTALL_INTERCEPT = 0x004d;
export const HVCALL_GET_VP_REGISTERS = 0x0050;
export const HVCALL_SET_VP_REGISTERS = 0x0051;
export const HVCALL_TRANSLATE_VIRTUAL_ADDRESS = 0x0052;
export const HVCALL_POST_MESSAGE = 0x005c;
export const HVCALL_SIGNAL_EVENT = 0x005d;
export const HVCALL_REGISTER_INTERCEPT_RESULT = 0x0091;
export const HVCALL_ASSERT_VIRTUAL_INTERRUPT = 0x0094;
export const HVCALL_SIGNAL_EVENT_DIRECT = 0x00c0;
export const HVCALL_POST_MESSAGE_DIRECT = 0x00c1;

export const HV_HYPERCALL_FAST_BIT = 1n << 16n;
const CODE_MASK = 0xffffn;
const VARHEAD_SHIFT = 17n;
const VARHEAD_MASK = 0x3ffn;
const REP_COUNT_SHIFT = 32n;
const REP_START_SHIFT = 48n;
const REP_MASK = 0xfffn;
/** Every bit that is not a field: 27-31, 44-47, 60-63. */
export const HV_HYPERCALL_RESERVED_BITS =
  ~(CODE_MASK | HV_HYPERCALL_FAST_BIT | (VARHEAD_MASK << VARHEAD_SHIFT) | (REP_MASK << REP_COUNT_SHIFT) | (REP_MASK << REP_START_SHIFT)) &
  0xffff_ffff_ffff_ffffn;

export interface HypercallControl {
  code: number;
  fast: boolean;
  /** Variable header size in 8-byte units. */
  variableHeaderSize: number;
  repCount: number;
  repStart: number;
  /** Reserved bits were set. */
  reservedBitsSet: boolean;
}

export function decodeControl(rcx: bigint): HypercallControl {
  const v = BigInt.asUintN(64, rcx);
  return {
    code: Number(v & CODE_MASK),
    fast: (v & HV_HYPERCALL_FAST_BIT) !== 0n,
    variableHeaderSize: Number((v >> VARHEAD_SHIFT) & VARHEAD_MASK),
    repCount: Number((v >> REP_COUNT_SHIFT) & REP_MASK),
    repStart: Number((v >> REP_START_SHIFT) & REP_MASK),
    reservedBitsSet: (v & HV_HYPERCALL_RESERVED_BITS) !== 0n,
  };
}

export function encodeControl(c: Partial<HypercallControl> & { code: number }): bigint {
  return (
    BigInt(c.code & 0xffff) |
    (c.fast ? HV_HYPERCALL_FAST_BIT : 0n) |
    (BigInt(c.variableHeaderSize ?? 0) << VARHEAD_SHIFT) |
    (BigInt(c.repCount ?? 0) << REP_COUNT_SHIFT) |
    (BigInt(c.repStart ?? 0) << REP_START_SHIFT)
  );
}

/** RAX: status in bits 0-15, reps completed in bits 32-43. */
export function encodeResult(status: number, repsCompleted = 0): bigint {
  return BigInt(status & 0xffff) | (BigInt(repsCompleted & 0xfff) << 32n);
}

export function resultStatus(rax: bigint): number {
  return Number(rax & 0xffffn);
}
