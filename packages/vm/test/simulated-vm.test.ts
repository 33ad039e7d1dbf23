import { describe, expect, it } from 'vitest';
import { HV_E_FAIL, HV_S_OK, KVP_POOL_EXTERNAL } from '@hvemu/util';
import { SimulatedVm, type TimelineEvent } from '@hvemu/vm';

describe('simulated VM with the integration components', () => {
  it('the guest connects, gets every offer, opens every IC, and each IC exchange completes', async () => {
    const events: TimelineEvent[] = [];
    const vm = new SimulatedVm({ onEvent: (e) => events.push(e) });
    await vm.guest.boot();
    await vm.settle();
    expect(vm.guest.version).toBe(0x50003);
    expect(vm.guest.opened.size).toBe(4);
    for (const ic of Object.values(vm.ics)) expect(ic.service.state).toBe('ready');

    // Heartbeat
    vm.ics.heartbeat.service.beat();
    await vm.settle();
    expect(vm.ics.heartbeat.service.status.lastSequence).toBe(1n);

    // Shutdown: the guest's answer reaches the host
    const answer = vm.ics.shutdown.service.shutdown({ kind: 'poweroff', message: 'demo' });
    await vm.settle();
    await expect(answer).resolves.toEqual({ status: HV_S_OK });
    expect(vm.guest.endpoint('shutdown').shutdowns).toEqual([{ kind: 'poweroff', force: false, reasonCode: 0x80000000 }]);
    const hibernate = vm.ics.shutdown.service.shutdown({ kind: 'hibernate' });
    await vm.settle();
    await expect(hibernate).resolves.toEqual({ status: HV_E_FAIL });

    // Timesync: the SYNC sample sent on readiness arrived
    expect(vm.guest.endpoint('timesync').timeSamples[0].flags).toBe(1);
    expect(vm.ics.timesync.service.samplesAnswered).toBe(1);

    // KVP
    const set = vm.ics.kvp.service.set(KVP_POOL_EXTERNAL, { key: 'VirtualMachineName', value: 'hvemu' });
    await vm.settle();
    expect((await set)?.status).toBe(HV_S_OK);
    const got = vm.ics.kvp.service.get(KVP_POOL_EXTERNAL, 'VirtualMachineName');
    await vm.settle();
    expect((await got)?.record).toEqual({ key: 'VirtualMachineName', value: 'hvemu' });

    const text = events.map((e) => `${e.who}: ${e.what}`).join('\n');
    expect(text).toContain('guest: VMBus connected at version 5.3');
    expect(text).toContain('guest: heartbeat: negotiated framework 3.0, service 3.0');
    expect(text).toContain('guest: shutdown: shutdown request');
  });
});
