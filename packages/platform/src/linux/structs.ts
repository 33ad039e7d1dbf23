/**
 * The Linux x86 boot structures, declared as data with the kernel's names.
 *
 * - `struct setup_header` and `struct boot_params` (the "zero page"), `struct boot_e820_entry`:
 *   arch/x86/include/uapi/asm/bootparam.h; the protocol in Documentation/arch/x86/boot.rst.
 * - `struct hvm_start_info`, `hvm_modlist_entry`, `hvm_memmap_table_entry` (PVH):
 *   include/xen/interface/hvm/start_info.h.
 *
 * `defineStruct` checks that the rows tile each structure exactly, so a wrong offset fails when
 * the module loads. Sub-structures the loader leaves zero (screen_info, edid_info, efi_info, edd
 * buffers) are byte arrays here.
 */
import { defineStruct } from '@hvemu/common';

/** `struct setup_header` (packed, 0x7b bytes); in the file and in boot_params at 0x1f1. */
export const SETUP_HEADER = defineStruct('setup_header', 0x7b, [
  [0x00, 'setup_sects', 'u8'],
  [0x01, 'root_flags', 'u16'],
  [0x03, 'syssize', 'u32'],
  [0x07, 'ram_size', 'u16'],
  [0x09, 'vid_mode', 'u16'],
  [0x0b, 'root_dev', 'u16'],
  [0x0d, 'boot_flag', 'u16'],
  [0x0f, 'jump', 'u16'],
  [0x11, 'header', 'u32'],
  [0x15, 'version', 'u16'],
  [0x17, 'realmode_swtch', 'u32'],
  [0x1b, 'start_sys_seg', 'u16'],
  [0x1d, 'kernel_version', 'u16'],
  [0x1f, 'type_of_loader', 'u8'],
  [0x20, 'loadflags', 'u8'],
  [0x21, 'setup_move_size', 'u16'],
  [0x23, 'code32_start', 'u32'],
  [0x27, 'ramdisk_image', 'u32'],
  [0x2b, 'ramdisk_size', 'u32'],
  [0x2f, 'bootsect_kludge', 'u32'],
  [0x33, 'heap_end_ptr', 'u16'],
  [0x35, 'ext_loader_ver', 'u8'],
  [0x36, 'ext_loader_type', 'u8'],
  [0x37, 'cmd_line_ptr', 'u32'],
  [0x3b, 'initrd_addr_max', 'u32'],
  [0x3f, 'kernel_alignment', 'u32'],
  [0x43, 'relocatable_kernel', 'u8'],
  [0x44, 'min_alignment', 'u8'],
  [0x45, 'xloadflags', 'u16'],
  [0x47, 'cmdline_size', 'u32'],
  [0x4b, 'hardware_subarch', 'u32'],
  [0x4f, 'hardware_subarch_data', 'u64'],
  [0x57, 'payload_offset', 'u32'],
  [0x5b, 'payload_length', 'u32'],
  [0x5f, 'setup_data', 'u64'],
  [0x67, 'pref_address', 'u64'],
  [0x6f, 'init_size', 'u32'],
  [0x73, 'handover_offset', 'u32'],
  [0x77, 'kernel_info_offset', 'u32'],
] as const);

/** Offset of `hdr` in boot_params and of the setup header in a bzImage file. */
export const SETUP_HEADER_OFFSET = 0x1f1;

/** E820_MAX_ENTRIES_ZEROPAGE. */
export const E820_MAX_ENTRIES_ZEROPAGE = 128;

/** `struct boot_e820_entry` (packed, 20 bytes). */
export const BOOT_E820_ENTRY = defineStruct('boot_e820_entry', 20, [
  [0, 'addr', 'u64'],
  [8, 'size', 'u64'],
  [16, 'type', 'u32'],
] as const);

/** `struct boot_params`, the zero page (4096 bytes). */
export const BOOT_PARAMS = defineStruct('boot_params', 4096, [
  [0x000, 'screen_info', { bytes: 0x40 }],
  [0x040, 'apm_bios_info', { bytes: 0x14 }],
  [0x054, '_pad2', { bytes: 4 }],
  [0x058, 'tboot_addr', 'u64'],
  [0x060, 'ist_info', { bytes: 0x10 }],
  [0x070, 'acpi_rsdp_addr', 'u64'],
  [0x078, '_pad3', { bytes: 8 }],
  [0x080, 'hd0_info', { bytes: 16 }],
  [0x090, 'hd1_info', { bytes: 16 }],
  [0x0a0, 'sys_desc_table', { bytes: 16 }],
  [0x0b0, 'olpc_ofw_header', { bytes: 16 }],
  [0x0c0, 'ext_ramdisk_image', 'u32'],
  [0x0c4, 'ext_ramdisk_size', 'u32'],
  [0x0c8, 'ext_cmd_line_ptr', 'u32'],
  [0x0cc, '_pad4', { bytes: 116 }],
  [0x140, 'edid_info', { bytes: 0x80 }],
  [0x1c0, 'efi_info', { bytes: 0x20 }],
  [0x1e0, 'alt_mem_k', 'u32'],
  [0x1e4, 'scratch', 'u32'],
  [0x1e8, 'e820_entries', 'u8'],
  [0x1e9, 'eddbuf_entries', 'u8'],
  [0x1ea, 'edd_mbr_sig_buf_entries', 'u8'],
  [0x1eb, 'kbd_status', 'u8'],
  [0x1ec, 'secure_boot', 'u8'],
  [0x1ed, '_pad5', { bytes: 2 }],
  [0x1ef, 'sentinel', 'u8'],
  [0x1f0, '_pad6', { bytes: 1 }],
  [SETUP_HEADER_OFFSET, 'hdr', { bytes: SETUP_HEADER.size }],
  [0x26c, '_pad7', { bytes: 0x290 - 0x26c }],
  [0x290, 'edd_mbr_sig_buffer', { bytes: 16 * 4 }],
  [0x2d0, 'e820_table', { bytes: E820_MAX_ENTRIES_ZEROPAGE * BOOT_E820_ENTRY.size }],
  [0xcd0, '_pad8', { bytes: 48 }],
  [0xd00, 'eddbuf', { bytes: 6 * 82 }],
  [0xeec, '_pad9', { bytes: 276 }],
] as const);

/** Setup header "HdrS" at file offset 0x202; boot_flag 0xAA55 at 0x1fe. */
export const SETUP_HEADER_MAGIC = 0x53726448;
export const BOOT_FLAG = 0xaa55;

/** loadflags bits. */
export const LOADED_HIGH = 1 << 0;
export const KASLR_FLAG = 1 << 1;
export const QUIET_FLAG = 1 << 5;
export const KEEP_SEGMENTS = 1 << 6;
export const CAN_USE_HEAP = 1 << 7;

/** xloadflags bits. */
export const XLF_KERNEL_64 = 1 << 0;
export const XLF_CAN_BE_LOADED_ABOVE_4G = 1 << 1;

/** `struct hvm_start_info` version 1 (56 bytes). */
export const HVM_START_INFO = defineStruct('hvm_start_info', 56, [
  [0, 'magic', 'u32'],
  [4, 'version', 'u32'],
  [8, 'flags', 'u32'],
  [12, 'nr_modules', 'u32'],
  [16, 'modlist_paddr', 'u64'],
  [24, 'cmdline_paddr', 'u64'],
  [32, 'rsdp_paddr', 'u64'],
  [40, 'memmap_paddr', 'u64'],
  [48, 'memmap_entries', 'u32'],
  [52, 'reserved', 'u32'],
] as const);

/** `struct hvm_modlist_entry` (32 bytes). */
export const HVM_MODLIST_ENTRY = defineStruct('hvm_modlist_entry', 32, [
  [0, 'paddr', 'u64'],
  [8, 'size', 'u64'],
  [16, 'cmdline_paddr', 'u64'],
  [24, 'reserved', 'u64'],
] as const);

/** `struct hvm_memmap_table_entry` (24 bytes). */
export const HVM_MEMMAP_TABLE_ENTRY = defineStruct('hvm_memmap_table_entry', 24, [
  [0, 'addr', 'u64'],
  [8, 'size', 'u64'],
  [16, 'type', 'u32'],
  [20, 'reserved', 'u32'],
] as const);

/** XEN_HVM_START_MAGIC_VALUE. */
export const XEN_HVM_START_MAGIC_VALUE = 0x336ec578;
/** XEN_ELFNOTE_PHYS32_ENTRY (include/xen/interface/elfnote.h). */
export const XEN_ELFNOTE_PHYS32_ENTRY = 18;

/** e820 types (arch/x86/include/asm/e820/types.h; the XEN_HVM_MEMMAP_TYPE_* values are the same). */
export const E820_TYPE_RAM = 1;
export const E820_TYPE_RESERVED = 2;
export const E820_TYPE_ACPI = 3;
export const E820_TYPE_NVS = 4;
export const E820_TYPE_UNUSABLE = 5;
export const E820_TYPE_PMEM = 7;

export type SetupHeaderValue = ReturnType<typeof SETUP_HEADER.decode>;
