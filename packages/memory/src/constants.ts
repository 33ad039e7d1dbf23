import { HV_HYP_PAGE_SHIFT, HV_HYP_PAGE_SIZE } from '@hvemu/hvdef';

/** Hyper-V pages (HV_HYP_PAGE_SIZE), the unit of every PFN and GPADL: GuestMemory's page. */
export const PAGE_SHIFT = HV_HYP_PAGE_SHIFT;
export const PAGE_SIZE = HV_HYP_PAGE_SIZE;
/** Guest physical addresses are kept in JS numbers; 2^52 covers every x86-64/arm64 GPA width. */
export const MAX_GPA = 2 ** 52;
