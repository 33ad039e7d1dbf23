export { PAGE_SHIFT, PAGE_SIZE, MAX_GPA } from './constants.js';
export { GuestMemoryError } from './errors.js';
export { FlatGuestBuffer, PagedGuestBuffer, type GuestBuffer } from './buffer.js';
export { GuestMemory, type RamChange, type RamRegion, type RamRegionSpec } from './guest-memory.js';
