import { HvemuError } from '@hvemu/common';

/**
 * A guest-physical access outside guest RAM (or a malformed page list). The address came from
 * the guest, so the request that named it is refused; no host memory outside guest RAM is
 * ever touched.
 */
export class GuestMemoryError extends HvemuError {
  readonly outcome = 'request-rejected' as const;
  constructor(
    message: string,
    readonly gpa: number,
    readonly length: number,
  ) {
    super(message);
  }
}
