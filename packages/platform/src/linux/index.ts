export { LinuxBootError } from './errors.js';
export { buildE820Map, type E820Entry, type E820Range } from './e820.js';
export { parseLinuxKernel, MIN_BOOT_PROTOCOL, type LinuxKernel, type PvhKernel, type BzImageKernel, type KernelSegment } from './image.js';
export * from './structs.js';
export {
  loadLinux,
  bootLinux,
  pvhSpecialRegisters,
  linux64SpecialRegisters,
  LINUX_GDT_GPA,
  LINUX_TSS_GPA,
  PVH_START_INFO_GPA,
  PVH_MODLIST_GPA,
  PVH_MEMMAP_GPA,
  BOOT_PARAMS_GPA,
  LINUX_CMDLINE_GPA,
  LINUX_CMDLINE_MAX,
  LINUX_LOADER_END,
  BZIMAGE_LOAD_GPA,
  STARTUP_64_OFFSET,
  BOOT_CS,
  BOOT_DS,
  BOOT_TSS,
  LOADER_TYPE_UNDEFINED,
  type LinuxBoot,
  type LinuxBootOptions,
} from './boot.js';
export { buildInitramfs, type InitramfsEntry } from './initramfs.js';
