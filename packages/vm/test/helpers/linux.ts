/** What the real-kernel tests (`*.linux.test.ts`, `npm run test:linux`) share: the test kernel, its command line, polling. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const SCRIPT = fileURLToPath(new URL('../../../../scripts/build-test-kernel.sh', import.meta.url));

/** The test kernel (built, or taken from the cache): the vmlinux (PVH) or the bzImage of the same build. */
export function testKernel(image: 'vmlinux' | 'bzImage' = 'vmlinux'): string {
  return execFileSync('bash', image === 'bzImage' ? [SCRIPT, '--bzimage'] : [SCRIPT], { encoding: 'utf8' })
    .trim()
    .split('\n')
    .pop()!;
}

/**
 * The test kernel's command line on this kind of KVM (packages/vm/README.md, measured one
 * parameter at a time): console=ttyS0 and noxsave are needed (the emulator has no XRSTOR);
 * earlyprintk and panic=-1 are for the logs and so that a panic never hangs a test.
 */
export const TEST_CMDLINE_BASE = 'console=ttyS0 earlyprintk=serial,ttyS0 noxsave panic=-1';

/** The kernel source tree build-test-kernel.sh unpacks (tools/hv has the KVP daemon's source). */
export const KERNEL_SOURCE_TREE = join(process.env['HVEMU_KERNEL_CACHE'] ?? join(homedir(), '.cache/hvemu/kernel'), 'src-6.1');

/** Polls `done` every 50 ms until it holds or `timeoutMs` passes. */
export async function until(done: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
}

/**
 * Compiles test/userspace/<name> (a static /init without libc, with nolibc.h) into a temp dir:
 * static, no PIE, integer registers only. The bytes of the program.
 */
export function buildStaticInit(name: string): Uint8Array {
  const source = fileURLToPath(new URL(`../userspace/${name}`, import.meta.url));
  const dir = mkdtempSync(join(tmpdir(), 'hvemu-init-'));
  try {
    const out = join(dir, 'init');
    const flags = ['-O2', '-static', '-nostdlib', '-ffreestanding', '-fno-pic', '-no-pie', '-fno-stack-protector'];
    execFileSync('gcc', [
      ...flags,
      '-fcf-protection=none',
      '-mgeneral-regs-only',
      '-Wall',
      '-Werror',
      '-Wl,--build-id=none',
      '-o',
      out,
      source,
    ]);
    return readFileSync(out);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
