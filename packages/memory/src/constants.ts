/** Hyper-V pages are always 4 KiB (HV_HYP_PAGE_SIZE), whatever the host's page size. */
export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 1 << PAGE_SHIFT;
/** Guest physical addresses are kept in JS numbers; 2^52 covers every x86-64/arm64 GPA width. */
export const MAX_GPA = 2 ** 52;
