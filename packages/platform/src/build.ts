/**
 * Builds freestanding test guests with the system gcc into a temp directory, cached by a hash
 * of the sources and flags. Used by the tests and the benchmark; binaries are never committed.
 *
 * Two flavours:
 *   - `buildLongModeGuest`: one C file + the runtime in packages/platform/guest (64-bit, linked at
 *     1 MiB, entered in long mode by enterLongMode);
 *   - `buildFreestandingImage`: any list of sources with a caller's link script and machine
 *     flags (the multiboot test kernel: 32-bit entry, linked at 4 MiB).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** packages/platform/guest: the long-mode runtime (start.S, rt.c, rt.h, link.ld). */
export const GUEST_RUNTIME_DIR = fileURLToPath(new URL('../guest/', import.meta.url));
const RUNTIME_FILES = ['start.S', 'rt.c', 'rt.h', 'link.ld'];

/** Flags every freestanding guest gets, whatever its mode. */
export const FREESTANDING_CFLAGS: readonly string[] = [
  '-O2',
  '-g0',
  '-std=gnu11',
  '-Wall',
  '-Wextra',
  '-Werror',
  '-ffreestanding',
  '-nostdlib',
  '-fno-pic',
  '-no-pie',
  '-static',
  // The emulator behind KVM here has gaps in SSE/AVX; keep guest code to integer instructions.
  '-mgeneral-regs-only',
  '-fno-stack-protector',
  '-fcf-protection=none',
  '-fno-asynchronous-unwind-tables',
  '-fno-builtin',
  '-Wl,--build-id=none',
  '-Wl,--no-warn-rwx-segments',
  '-Wl,-z,noexecstack',
  '-Wl,-z,max-page-size=4096',
];

export interface ImageSpec {
  /** Cache name prefix of the output file. */
  readonly name: string;
  /** C and assembler sources, in link order. */
  readonly sources: readonly string[];
  /** Extra files whose contents change the image (headers). */
  readonly dependencies?: readonly string[];
  readonly linkScript: string;
  /** Flags beyond FREESTANDING_CFLAGS (machine mode, include paths). */
  readonly flags?: readonly string[];
}

/** Compiles and links `spec` (cached by content hash); returns the ELF file's bytes. */
export function buildFreestandingImage(spec: ImageSpec): Uint8Array {
  const flags = [...FREESTANDING_CFLAGS, ...(spec.flags ?? [])];
  const hash = createHash('sha256');
  for (const f of [...spec.sources, ...(spec.dependencies ?? []), spec.linkScript]) hash.update(basename(f)).update(readFileSync(f));
  hash.update(flags.join(' '));
  const dir = join(tmpdir(), 'hvemu-accel-guests');
  mkdirSync(dir, { recursive: true });
  const out = join(dir, `${spec.name}-${hash.digest('hex').slice(0, 16)}.elf`);
  if (!existsSync(out)) {
    // Build to a private name and rename: parallel test files may build the same guest.
    const tmp = `${out}.${process.pid}.tmp`;
    execFileSync('gcc', [...flags, '-T', spec.linkScript, '-o', tmp, ...spec.sources], { stdio: ['ignore', 'pipe', 'pipe'] });
    renameSync(tmp, out);
  }
  return new Uint8Array(readFileSync(out));
}

/** A 64-bit test guest: `source` (one C file) linked with the long-mode runtime at 1 MiB. */
export function buildLongModeGuest(source: string): Uint8Array {
  const rt = (f: string): string => join(GUEST_RUNTIME_DIR, f);
  return buildFreestandingImage({
    name: basename(source).replace(/\.c$/, ''),
    sources: [rt('start.S'), rt('rt.c'), source],
    dependencies: RUNTIME_FILES.map(rt),
    linkScript: rt('link.ld'),
    flags: ['-mno-red-zone', `-I${GUEST_RUNTIME_DIR}`],
  });
}
