import { BootImageError } from '../errors.js';

/**
 * A Linux kernel image or boot request that cannot be loaded: not a PVH vmlinux or a 64-bit
 * bzImage, a truncated or inconsistent file, or a layout that does not fit guest RAM. Thrown
 * before anything is written where the check can be made up front.
 */
export class LinuxBootError extends BootImageError {}
