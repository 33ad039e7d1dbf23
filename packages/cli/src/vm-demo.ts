/**
 * The main job until the KVM VMBus guest exists: a simulated partition with the integration
 * components, a guest that behaves like Linux hv_vmbus + hv_utils, and the exchanges a VMM
 * has with it (heartbeats, a time sample, KVP, a shutdown request), printed as a timeline.
 */
import { HostUsageError, ManualClock } from '@hvemu/common';
import { TraceRecorder } from '@hvemu/trace';
import { KVP_POOL_EXTERNAL } from '@hvemu/util';
import { icTraceHeader, SimulatedVm } from '@hvemu/vm';

export interface VmDemoResult {
  heartbeats: number;
  shutdownStatus: number | null;
  kvp: string | null;
}

/** Reference time as seconds.micro. */
function stamp(t: bigint): string {
  return `${(t / 10_000_000n).toString().padStart(3)}.${((t % 10_000_000n) / 10n).toString().padStart(6, '0')}s`;
}

export async function runVmDemo(print: (line: string) => void, tracePath?: string): Promise<VmDemoResult> {
  if (typeof print !== 'function') throw new HostUsageError('runVmDemo: print must be a function');
  if (tracePath !== undefined && (typeof tracePath !== 'string' || tracePath === ''))
    throw new HostUsageError(`runVmDemo: tracePath must be a non-empty string, got ${String(tracePath)}`);
  const clock = new ManualClock();
  const recorder = tracePath
    ? TraceRecorder.toFile(tracePath, icTraceHeader('hvemu demo (simulated partition)', 0x50003), { clock })
    : undefined;
  const vm = new SimulatedVm({ clock, trace: recorder, onEvent: (e) => print(`${stamp(e.time)}  ${e.who.padEnd(5)}  ${e.what}`) });
  const host = (what: string): void => vm.hostEvent(what);
  await vm.guest.boot();
  await vm.settle();
  for (const ic of Object.values(vm.ics)) host(`${ic.kind}: ${ic.service.state}`);

  for (let i = 0; i < 3; i++) {
    clock.advance(20_000_000n); // Hyper-V beats about every 2 s
    vm.ics.heartbeat.host.beat();
    await vm.settle();
    host(`heartbeat: guest alive, last sequence ${vm.ics.heartbeat.service.status.lastSequence}`);
  }

  clock.advance(5_000_000n);
  vm.ics.timesync.host.sample();
  await vm.settle();
  host(`timesync: ${vm.ics.timesync.service.samplesAnswered} samples acknowledged`);

  const set = vm.ics.kvp.host.set(KVP_POOL_EXTERNAL, { key: 'VirtualMachineName', value: 'hvemu-demo' });
  await vm.settle();
  const got = vm.ics.kvp.host.get(KVP_POOL_EXTERNAL, 'VirtualMachineName');
  await vm.settle();
  const record = (await got)?.record;
  host(`kvp: set status 0x${((await set)?.status ?? -1).toString(16)}, read back ${JSON.stringify(record)}`);

  clock.advance(10_000_000n);
  const shutdown = vm.ics.shutdown.host.shutdown({ kind: 'poweroff', message: 'demo finished' });
  await vm.settle();
  const answer = await shutdown;
  host(`shutdown: guest answered 0x${(answer?.status ?? -1).toString(16)}${answer?.status === 0 ? ' (S_OK): powering off' : ''}`);
  if (recorder) {
    await recorder.close();
    print(`trace: ${recorder.eventsRecorded} events written to ${tracePath}`);
  }
  return {
    heartbeats: vm.guest.endpoint('heartbeat').heartbeats.length,
    shutdownStatus: answer?.status ?? null,
    kvp: typeof record?.value === 'string' ? record.value : null,
  };
}
