import { HvemuError } from '@hvemu/common';

/** A guest MSR access Hyper-V answers with #GP: a reserved bit, a read-only MSR, an invalid value. */
export class MsrFault extends HvemuError {
  readonly outcome = 'general-protection' as const;
  constructor(
    readonly msr: number,
    readonly value: bigint | null,
    reason: string,
  ) {
    super(`MSR 0x${msr.toString(16)}${value === null ? ' read' : ` write 0x${value.toString(16)}`}: ${reason}`);
  }
}

/** A host post to a SINT whose bounded queue is full; the caller decides (retry later, fail the channel). */
export class SynicQueueFull extends HvemuError {
  readonly outcome = 'host-error' as const;
  constructor(
    readonly vp: number,
    readonly sint: number,
    readonly limit: number,
  ) {
    super(`vp ${vp} SINT ${sint}: ${limit} messages already queued`);
  }
}
