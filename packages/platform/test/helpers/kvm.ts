/** KVM availability for the platform tests that boot guests (the same rule as accel's harness). */
import { describe } from 'vitest';
import { KvmPartition } from '@hvemu/accel';

export const KVM = KvmPartition.probe();
export const MiB = 1 << 20;

/**
 * `describe` that skips, saying why, where /dev/kvm is missing or unusable. With
 * HVEMU_REQUIRE_KVM=1 (CI on machines that have KVM) a missing KVM fails instead.
 */
export function describeKvm(name: string, fn: () => void): void {
  if (!KVM.ok && process.env['HVEMU_REQUIRE_KVM'] === '1') {
    throw new Error(`HVEMU_REQUIRE_KVM=1 but KVM is not usable here: ${KVM.reason}`);
  }
  if (!KVM.ok) {
    console.warn(`skipping "${name}": KVM is not usable here (${KVM.reason})`);
    describe.skip(`${name} [skipped: KVM unavailable: ${KVM.reason}]`, fn);
    return;
  }
  describe(name, fn);
}
