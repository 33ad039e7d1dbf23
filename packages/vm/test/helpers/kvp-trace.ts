/**
 * A large, replayable trace for the streaming tests: the simulated VM with the ICs, then
 * `exchanges` KVP sets (each a ~2.7 KB message each way), captured with the recorder into
 * `path`. 2000 exchanges make ~30 MB and ~14,000 events.
 */
import { ManualClock } from '@hvemu/common';
import { TraceRecorder } from '@hvemu/trace';
import { KVP_POOL_EXTERNAL } from '@hvemu/util';
import { icTraceHeader } from '../../src/ic-devices.js';
import { SimulatedVm } from '../../src/sim.js';

export async function writeKvpTrace(path: string, exchanges: number): Promise<{ events: bigint }> {
  const clock = new ManualClock();
  // Nothing may be dropped: the whole capture may wait for the disk.
  const recorder = TraceRecorder.toFile(path, icTraceHeader('kvp-trace test helper', 0x50003), { clock, maxBufferedBytes: 1 << 30 });
  const vm = new SimulatedVm({ clock, trace: recorder });
  await vm.guest.boot();
  await vm.settle();
  for (let i = 0; i < exchanges; i++) {
    clock.advance(1000n);
    const set = vm.ics.kvp.host.set(KVP_POOL_EXTERNAL, { key: `key${i % 50}`, value: `value ${i}` });
    await vm.settle();
    if ((await set)?.status !== 0) throw new Error(`KVP set ${i} failed`);
  }
  await recorder.close();
  if (recorder.eventsDropped !== 0n) throw new Error(`${recorder.eventsDropped} events dropped`);
  return { events: recorder.eventsRecorded };
}
