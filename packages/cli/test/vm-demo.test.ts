import { describe, expect, it } from 'vitest';
import { runVmDemo } from '../src/vm-demo.js';

describe('vm demo (npm start)', () => {
  it('boots the simulated guest, opens every IC and completes each exchange', async () => {
    const lines: string[] = [];
    const r = await runVmDemo((l) => lines.push(l));
    expect(r).toEqual({ heartbeats: 3, shutdownStatus: 0, kvp: 'hvemu-demo' });
    const text = lines.join('\n');
    expect(text).toMatch(/guest +VMBus connected at version 5\.3/);
    for (const ic of ['heartbeat', 'shutdown', 'timesync', 'kvp']) expect(text).toMatch(new RegExp(`host +${ic}: ready`));
    expect(text).toMatch(/guest +kvp: KVP set in pool 0/);
    expect(text).toMatch(/host +shutdown: guest answered 0x0/);
  });
});
