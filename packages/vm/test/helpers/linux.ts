/** What the real-kernel tests (`*.linux.test.ts`, `npm run test:linux`) share: the test kernel, its command line, polling. */
import { execFileSync } from 'node:child_process';
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
 * What this KVM needs (KVM-NOTES.md): no XSAVE state, no legacy PTY scan, the serial console;
 * panic=-1 turns a panic into a reset so a test never hangs on one.
 */
export const TEST_CMDLINE_BASE = 'console=ttyS0 earlyprintk=serial,ttyS0 noxsave pty.legacy_count=0 panic=-1 no_timer_check';

/** Polls `done` every 50 ms until it holds or `timeoutMs` passes. */
export async function until(done: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
}
