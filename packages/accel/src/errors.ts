/**
 * Typed errors of the accelerator layer. Host-side setup problems (no /dev/kvm, a missing
 * capability, a bad memory map) are 'host-error': the guest never ran. A guest that stops in a
 * way the platform cannot continue from (triple fault, an instruction the emulator cannot run)
 * is reported as a GuestFatalError with the vCPU's registers.
 */
import { HvemuError } from '@hvemu/common';
import type { Registers } from './registers.js';

/** Base of all accel errors caused by the host environment or API use. */
export abstract class AccelError extends HvemuError {
  readonly outcome = 'host-error' as const;
}

/** /dev/kvm is absent, not accessible, or cannot create a VM. */
export class HypervisorUnavailableError extends AccelError {}

/** KVM_GET_API_VERSION is not 12. */
export class ApiVersionError extends AccelError {}

/** The hypervisor lacks a capability hvemu needs. */
export class MissingCapabilityError extends AccelError {}

/** The requested guest-physical memory map cannot be built. */
export class MemoryMapError extends AccelError {}

/** A call that the partition's or vCPU's current state does not allow, or a bad argument. */
export class AccelUsageError extends AccelError {}

/** An unexpected failure of a host system call. */
export class HostSystemError extends AccelError {
  constructor(
    message: string,
    readonly errno: number | undefined,
  ) {
    super(message);
  }
}

/** The native addon could not be loaded (not built, or built for another Node). */
export class NativeAddonError extends AccelError {}

/** Why a guest stopped for good. */
export type FatalReason =
  'triple-fault' | 'system-event' | 'emulation-failure' | 'internal-error' | 'entry-failure' | 'host-error' | 'unknown';

/**
 * A vCPU stopped because of something the guest did that cannot be continued: a triple
 * fault, an instruction the hypervisor could not run, or a failed VM entry. The guest is
 * dead (its vCPU stopped); other partitions are unaffected.
 */
export class GuestFatalError extends HvemuError {
  readonly outcome = 'host-error' as const;
  constructor(
    message: string,
    readonly vp: number,
    readonly reason: FatalReason,
    readonly registers: Registers | undefined,
    readonly instructionBytes: Uint8Array | undefined,
  ) {
    super(message);
  }
}

/** A handler threw or rejected while answering an exit; the vCPU that made it is stopped. */
export class ExitHandlerError extends HvemuError {
  readonly outcome = 'host-error' as const;
  constructor(
    message: string,
    readonly vp: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Maps an error thrown by the native addon (it carries a `code`) to a typed error. */
export function fromNativeError(e: unknown): unknown {
  if (!(e instanceof Error)) return e;
  const code = (e as { code?: unknown }).code;
  const errno = (e as { errno?: unknown }).errno;
  switch (code) {
    case 'HVEMU_NO_KVM':
      return new HypervisorUnavailableError(e.message, { cause: e });
    case 'HVEMU_KVM_API':
      return new ApiVersionError(e.message, { cause: e });
    case 'HVEMU_CAPABILITY':
      return new MissingCapabilityError(e.message, { cause: e });
    case 'HVEMU_MEMORY_MAP':
      return new MemoryMapError(e.message, { cause: e });
    case 'HVEMU_USAGE':
      return new AccelUsageError(e.message, { cause: e });
    case 'HVEMU_SYSTEM':
      return new HostSystemError(e.message, typeof errno === 'number' ? errno : undefined);
    default:
      return e;
  }
}

/** Runs a native call, rethrowing its errors as typed errors. */
export function native<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw fromNativeError(e);
  }
}
