/**
 * Builds a freestanding test guest (one C file + the runtime in packages/accel/guest) with the
 * system gcc into a temp directory, cached by a hash of the sources and flags. Binaries are
 * never committed.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const RUNTIME_DIR = fileURLToPath(new URL('../../guest/', import.meta.url));
const GUESTS_DIR = fileURLToPath(new URL('../guests/', import.meta.url));
const RUNTIME_FILES = ['start.S', 'rt.c', 'rt.h', 'link.ld'];

const CFLAGS = [
  '-O2', '-g0', '-std=gnu11', '-Wall', '-Wextra', '-Werror',
  '-ffreestanding', '-nostdlib', '-fno-pic', '-no-pie', '-static', '-mno-red-zone',
  // The emulator behind KVM here has gaps in SSE/AVX; keep guest code to integer instructions.
  '-mgeneral-regs-only', '-fno-stack-protector', '-fcf-protection=none',
  '-fno-asynchronous-unwind-tables', '-fno-builtin',
  '-Wl,--build-id=none', '-Wl,--no-warn-rwx-segments', '-Wl,-z,noexecstack', '-Wl,-z,max-page-size=4096',
];

/** Returns the ELF image of test/guests/<name>.c linked with the runtime. */
export function buildGuest(name: string): Uint8Array {
  const source = join(GUESTS_DIR, `${name}.c`);
  const hash = createHash('sha256');
  for (const f of RUNTIME_FILES) hash.update(readFileSync(join(RUNTIME_DIR, f)));
  hash.update(readFileSync(source)).update(CFLAGS.join(' '));
  const dir = join(tmpdir(), 'hvemu-accel-guests');
  mkdirSync(dir, { recursive: true });
  const out = join(dir, `${name}-${hash.digest('hex').slice(0, 16)}.elf`);
  if (!existsSync(out)) {
    // Build to a private name and rename: parallel test files may build the same guest.
    const tmp = `${out}.${process.pid}.tmp`;
    execFileSync('gcc', [
      ...CFLAGS, `-I${RUNTIME_DIR}`, '-T', join(RUNTIME_DIR, 'link.ld'), '-o', tmp,
      join(RUNTIME_DIR, 'start.S'), join(RUNTIME_DIR, 'rt.c'), source,
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    renameSync(tmp, out);
  }
  return new Uint8Array(readFileSync(out));
}
