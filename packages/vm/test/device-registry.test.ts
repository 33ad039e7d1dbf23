/** Devices registered once: replay builds a trace's devices from a DeviceRegistry, whatever they are. */
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { HostUsageError } from '@hvemu/common';
import { readTraceFile } from '@hvemu/trace';
import { IC_DEVICE_KINDS, IC_OFFERS } from '@hvemu/util';
import { DeviceRegistry, isHostCallable, type DeviceKind } from '@hvemu/vmbus';
import { defaultDevices, replayTrace, ReplayError } from '@hvemu/vm';

const SIM = fileURLToPath(new URL('../../../fixtures/traces/sim-ic-demo.hvtrace', import.meta.url));

describe('DeviceRegistry', () => {
  it('registers kinds once, finds them by name, names the known ones when asked for another', () => {
    const r = defaultDevices();
    expect(r.names).toEqual(['heartbeat', 'shutdown', 'timesync', 'kvp']);
    expect(() => r.register(IC_DEVICE_KINDS[0])).toThrow(HostUsageError);
    expect(() => r.require('storvsp')).toThrow('no device kind storvsp (known: heartbeat, shutdown, timesync, kvp)');
    expect(() => new DeviceRegistry().register({ name: '' } as never)).toThrow(HostUsageError);
    const hb = r.require('heartbeat').create({ clock: { now: () => 0n }, logger: console as never, wallClockMs: () => 0 });
    expect(isHostCallable(hb) && hb.hostCalls).toEqual(['beat']);
  });

  it("replay builds the trace's devices from the registry it is given", () => {
    const trace = readTraceFile(SIM);
    expect(replayTrace(trace, { devices: defaultDevices() }).matched).toBe(true);
    // Without a kind for the trace's devices there is nothing to replay them with.
    expect(() => replayTrace(trace, { devices: new DeviceRegistry() })).toThrow(ReplayError);
    // A registry whose 'kvp' is another device: the replay uses it, and so diverges on the KVP channel.
    const silentKvp: DeviceKind = {
      name: 'kvp',
      offer: IC_OFFERS.kvp,
      create: () => ({ offer: IC_OFFERS.kvp, open: () => {}, onSignal: () => {} }),
    };
    const registry = new DeviceRegistry().register(...IC_DEVICE_KINDS.filter((k) => k.name !== 'kvp'), silentKvp);
    let outcome: unknown;
    try {
      outcome = replayTrace(trace, { devices: registry });
    } catch (e) {
      outcome = e;
    }
    // Either a divergence or a refused host call on a device without that host API: not a match.
    expect(outcome instanceof ReplayError || (outcome as { matched: boolean }).matched === false).toBe(true);
    expect(() => replayTrace(trace, { devices: {} as never })).toThrow(HostUsageError);
  });
});
