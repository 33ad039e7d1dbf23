/** IcDevice.host: the VMM's calls are reported (traces, replay); the service's own calls are not. */
import { describe, expect, it } from 'vitest';
import { ManualClock } from '@hvemu/common';
import { HeartbeatService, IcDevice, IcHostCallError, KVP_POOL_EXTERNAL, KvpService } from '@hvemu/util';

describe('IcDevice host calls', () => {
  it('reports calls made through host, with their arguments, and not calls made on the service itself', async () => {
    const kvp = new IcDevice('kvp', (t) => new KvpService(t));
    const calls: [string, readonly unknown[]][] = [];
    kvp.observeHostCalls((method, args) => calls.push([method, args]));
    await kvp.host.list(KVP_POOL_EXTERNAL, 3); // list enumerates internally: only 'list' is the VMM's call
    await kvp.service.get(KVP_POOL_EXTERNAL, 'direct'); // on the service itself: not reported
    await kvp.host.get(KVP_POOL_EXTERNAL, 'k');
    expect(calls).toEqual([
      ['list', [KVP_POOL_EXTERNAL, 3]],
      ['get', [KVP_POOL_EXTERNAL, 'k']],
    ]);
    // Everything else on host is the service's own (state, status).
    expect(kvp.host.state).toBe('closed');
    expect(kvp.host.queued).toBe(0);
  });

  it('invokeHostCall makes a recorded call by name and refuses names outside the host API', () => {
    const hb = new IcDevice('heartbeat', (t) => new HeartbeatService(t, new ManualClock()));
    const calls: string[] = [];
    hb.observeHostCalls((method) => calls.push(method));
    hb.invokeHostCall('beat', []);
    expect(calls).toEqual(['beat']);
    expect(() => hb.invokeHostCall('open', [])).toThrow(IcHostCallError);
    expect(calls).toEqual(['beat']);
  });
});
