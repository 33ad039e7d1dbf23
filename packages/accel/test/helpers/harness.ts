/** Runs a test guest on a fresh KVM partition with the test platform attached. */
import { describe } from 'vitest';
import { KvmPartition, type KvmPartitionOptions, type VcpuOutcome } from '../../src/backends/kvm/partition.js';
import { enterLongMode, loadElf64, TestPlatform } from '@hvemu/platform';
import { buildGuest } from './guest-build.js';
import { loadAddon } from '../../src/native/addon.js';

// A missing or broken addon is a build failure, not "no KVM": load it unguarded so the test
// file fails instead of skipping.
loadAddon();
export const KVM = KvmPartition.probe();

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

export const MiB = 1 << 20;

export interface GuestRun {
  partition: KvmPartition;
  platform: TestPlatform;
  outcomes: VcpuOutcome[] | undefined;
  error: unknown;
}

export interface RunOptions extends Partial<KvmPartitionOptions> {
  /** Called after the image is loaded, before the vCPUs start. */
  setup?: (partition: KvmPartition, platform: TestPlatform) => void;
  timeoutMs?: number;
}

/**
 * Builds and runs guest `name`; resolves when every vCPU has stopped (or the timeout stopped
 * them). Never rejects: failures are in `error`. The caller closes the partition.
 */
export async function runGuest(name: string, opts: RunOptions = {}): Promise<GuestRun> {
  const image = buildGuest(name);
  const partition = KvmPartition.create({ memory: [{ gpa: 0, size: 16 * MiB }], ...opts });
  const platform = new TestPlatform(partition);
  const { entry } = loadElf64(partition.memory, image);
  enterLongMode(partition, entry);
  opts.setup?.(partition, platform);
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      partition.stop();
      reject(new Error(`guest ${name} timed out; serial so far:\n${platform.serial.text()}`));
    }, opts.timeoutMs ?? 20_000);
  });
  try {
    const outcomes = await Promise.race([partition.run(), timeout]);
    return { partition, platform, outcomes, error: undefined };
  } catch (error) {
    return { partition, platform, outcomes: undefined, error };
  } finally {
    clearTimeout(timer);
  }
}

/** Exit codes by vCPU plus a readable failure text for expect messages. */
export function summary(run: GuestRun): string {
  const parts = [
    `exit codes: ${JSON.stringify(Object.fromEntries(run.platform.debugExit.codes))}`,
    run.platform.assertionSummary(),
    run.error ? `error: ${(run.error as Error).message}` : '',
    `serial: ${run.platform.serial.text()}`,
  ];
  return parts.filter(Boolean).join('\n');
}
