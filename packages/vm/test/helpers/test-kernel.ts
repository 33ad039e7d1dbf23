/**
 * The Linux test kernel (scripts/build-test-kernel.sh: built once, cached outside the repository)
 * and its command line on this kind of KVM. Needed: console=ttyS0 and noxsave (the emulator has
 * no XRSTOR); earlyprintk and panic=-1 are for the logs (packages/vm/README.md, measured).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const SCRIPT = fileURLToPath(new URL('../../../../scripts/build-test-kernel.sh', import.meta.url));

export const TEST_CMDLINE = 'console=ttyS0 earlyprintk=serial,ttyS0 noxsave panic=-1';

/** Builds or reuses the test kernel; returns the vmlinux bytes. */
export function testKernel(): Uint8Array {
  const vmlinux = execFileSync('bash', [SCRIPT], { encoding: 'utf8' }).trim().split('\n').pop()!;
  return readFileSync(vmlinux);
}
