/** Builds test/guests/<name>.c with the long-mode runtime (@hvemu/platform's buildLongModeGuest). */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildLongModeGuest } from '@hvemu/platform';

const GUESTS_DIR = fileURLToPath(new URL('../guests/', import.meta.url));

/** Returns the ELF image of test/guests/<name>.c linked with the runtime. */
export function buildGuest(name: string): Uint8Array {
  return buildLongModeGuest(join(GUESTS_DIR, `${name}.c`));
}
