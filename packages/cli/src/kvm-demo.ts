/**
 * `npm start` on a machine with a working /dev/kvm: a real KVM guest (a small C program that
 * does what Linux hv_vmbus + hv_utils do) negotiates VMBus with hvemu's host, opens the
 * heartbeat and shutdown channels, answers heartbeats and a shutdown request; both sides are
 * printed as one timeline.
 */
import { HostUsageError, MonotonicClock } from '@hvemu/common';
import { TraceRecorder } from '@hvemu/trace';
import { buildVmbusDemoGuest, describeCpuidDifferences, icTraceHeader, KvmVm } from '@hvemu/vm';

export interface KvmDemoResult {
  exitCode: number | null;
  heartbeats: number;
  shutdownStatus: number | null;
}

function stamp(t: bigint): string {
  return `${(t / 10_000_000n).toString().padStart(3)}.${((t % 10_000_000n) / 10n).toString().padStart(6, '0')}s`;
}

export function kvmAvailable(): { ok: boolean; reason: string } {
  return KvmVm.probe();
}

export async function runKvmDemo(print: (line: string) => void, tracePath?: string): Promise<KvmDemoResult> {
  if (typeof print !== 'function') throw new HostUsageError('runKvmDemo: print must be a function');
  if (tracePath !== undefined && (typeof tracePath !== 'string' || tracePath === ''))
    throw new HostUsageError(`runKvmDemo: tracePath must be a non-empty string, got ${String(tracePath)}`);
  const heartbeats = 3;
  // Say what CPUID the guest really sees where this KVM ignores hvemu's model (a guest kernel
  // would then patch in instructions the emulator may not run).
  const cpuid = await KvmVm.probeCpuid();
  for (const line of describeCpuidDifferences(cpuid.differences)) print(`warning: cpuid: ${line}`);
  const clock = new MonotonicClock();
  const recorder = tracePath ? TraceRecorder.toFile(tracePath, icTraceHeader('hvemu demo (KVM guest)'), { clock }) : undefined;
  const vm = new KvmVm({
    image: buildVmbusDemoGuest({ minHeartbeats: heartbeats }),
    clock,
    trace: recorder,
    onEvent: (e) => print(`${stamp(e.time)}  ${e.who.padEnd(5)}  ${e.what}`),
  });
  try {
    const run = vm.run();
    const host = vm
      .exerciseIcs({ heartbeats, shutdown: { kind: 'poweroff', message: 'demo finished' }, timeoutMs: 60_000 })
      .catch((e: unknown) => e as Error);
    const [result, exercise] = await Promise.all([run, host]);
    if (exercise instanceof Error) {
      print(`host: ${exercise.message}`);
      print(`guest serial:\n${result.serial}${result.assertions}`);
      return { exitCode: result.exitCode, heartbeats: 0, shutdownStatus: null };
    }
    print(`guest exited with code ${result.exitCode} after ${result.elapsedMs.toFixed(0)} ms`);
    return { exitCode: result.exitCode, heartbeats: exercise.heartbeatAnswers.length, shutdownStatus: exercise.shutdown?.status ?? null };
  } finally {
    vm.close();
    if (recorder) {
      await recorder.close();
      print(`trace: ${recorder.eventsRecorded} events written to ${tracePath}`);
    }
  }
}
