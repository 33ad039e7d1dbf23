/**
 * Typed errors of the boot and platform layer. A bad argument to a loader or device is the
 * accelerator layer's AccelUsageError (the loaders program a partition through its API); a boot
 * image that cannot be loaded is a BootImageError, one of those.
 */
import { AccelUsageError } from '@hvemu/accel';

/** A boot image (multiboot kernel) that cannot be loaded: no header, unsupported flags, bad ELF, no room. */
export class BootImageError extends AccelUsageError {}

/** ACPI tables that cannot be built or placed: bad option, no vCPU, a base address outside RAM. */
export class AcpiTableError extends AccelUsageError {}
