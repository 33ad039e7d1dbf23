export { BootImageError } from './errors.js';
export { loadElf, loadElf64, type LoadedElf } from './elf.js';
export {
  bootMultiboot,
  parseMultibootHeader,
  writeMultibootInfo,
  multibootSpecialRegisters,
  MultibootPlatform,
  FwCfg,
  IsaDebugExit,
  MULTIBOOT_HEADER_MAGIC,
  MULTIBOOT_BOOTLOADER_MAGIC,
  MULTIBOOT_INFO_GPA,
  MAX_COMMAND_LINE,
  FW_CFG_PORT,
  FW_CFG_SIGNATURE,
  FW_CFG_ID,
  FW_CFG_RAM_SIZE,
  FW_CFG_NB_CPUS,
  FW_CFG_MAX_CPUS,
  ISA_DEBUG_EXIT_PORT,
  type MultibootBoot,
  type MultibootHeader,
  type MultibootOptions,
} from './multiboot.js';
export {
  enterLongMode,
  writeLongModeTables,
  writeIdentityPageTables,
  longModeSpecialRegisters,
  LOADER_RESERVED_END,
  type LoadablePartition,
} from './long-mode.js';
export {
  TestPlatform,
  SerialPort,
  DebugExitPort,
  AssertPort,
  SERIAL_PORT,
  DEBUG_EXIT_PORT,
  ASSERT_PORT,
  type GuestAssertion,
} from './platform.js';
export { buildFreestandingImage, buildLongModeGuest, FREESTANDING_CFLAGS, GUEST_RUNTIME_DIR, type ImageSpec } from './build.js';
export * from './linux/index.js';
