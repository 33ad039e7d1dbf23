/**
 * The Hyper-V enlightenments proven from C guests on KVM, one guest per area as in
 * kvm-unit-tests (hyperv_synic, hyperv_stimer, hyperv_clock, hyperv_connections), plus
 * AutoEOI and the fast-signal doorbell. The host side is the same HyperV / dispatcher the
 * simulated tests use; the guests assert, the tests check exit codes and host counters.
 */
import { HV_STATUS_SUCCESS } from '@hvemu/hvdef';
import { expect, it } from 'vitest';
import { describeKvm, runHvGuest, type HvGuestRun } from './helpers/hv-guest.js';

function expectPassed(run: HvGuestRun, vcpus = 2): void {
  expect(run.error, run.report()).toBeUndefined();
  expect(run.platform.asserts.failures, run.report()).toEqual([]);
  const codes = Object.fromEntries(Array.from({ length: vcpus }, (_, vp) => [vp, 0]));
  expect(Object.fromEntries(run.platform.debugExit.codes), run.report()).toEqual(codes);
}

describeKvm('Hyper-V enlightenments from guests on KVM', () => {
  it('synic: every SINT on both vCPUs gets messages and event flags, targeted; masking and SIMP move hold deliveries', async () => {
    const run = await runHvGuest('synic');
    expectPassed(run);
    // 16 SINTs x (message + event) + masked + moved, per vCPU.
    for (const vp of [0, 1]) expect(run.hv.hyperv.synic(vp).interruptsRaised).toBe(34);
  });
});

describeKvm('Hyper-V timers and reference time from guests on KVM', () => {
  it('stimer: one-shot, periodic, direct and message mode on both vCPUs', async () => {
    const run = await runHvGuest('stimer');
    expectPassed(run);
    for (const vp of [0, 1]) {
      const fired = run.hv.hyperv.stimers(vp).fired;
      expect(fired.filter((e) => e.timer === 0 && e.mode === 'message').length).toBe(2);
      expect(fired.filter((e) => e.timer === 1 && e.mode === 'message').length).toBeGreaterThanOrEqual(3);
      expect(fired.filter((e) => e.mode === 'direct').length).toBeGreaterThanOrEqual(4);
    }
  });

  it('stimer edge cases: busy slot and disabled SIMP retried (not lost), hostile configurations', async () => {
    const run = await runHvGuest('stimer-edge');
    expectPassed(run);
    for (const vp of [0, 1]) {
      const fired = run.hv.hyperv.stimers(vp).fired;
      // timers 0-2 fired once each in message mode; the held ones were not re-fired or dropped
      for (const timer of [0, 1, 2]) expect(fired.filter((e) => e.timer === timer && e.mode === 'message').length).toBe(1);
      expect(run.hv.hyperv.synic(vp).messagesDelivered).toBe(3);
    }
  });

  it('clock: reference TSC page and TIME_REF_COUNT agree, monotonic across reads and vCPUs', async () => {
    const run = await runHvGuest('clock');
    expectPassed(run);
    expect(run.hv.tsc.frequencyHz).toBeGreaterThan(0n);
  });
});

describeKvm('guest to host connections on KVM', () => {
  it('connections: post message and signal event to host connections and back on both vCPUs; doorbell and exit path', async () => {
    const signals: string[] = [];
    const run = await runHvGuest('connections', {
      setup: (r, unregister) => {
        const { hyperv, hypercalls } = r.hv;
        for (const vp of [0, 1]) {
          hypercalls.connections.registerMessage(7 + vp, {
            onMessage: (from, type, payload) => {
              hyperv.postMessage(from, 2, { type, payload });
              return HV_STATUS_SUCCESS;
            },
          });
          // The doorbell does not say which vCPU rang: like VMBus, the connection names the target.
          hypercalls.connections.registerEvent(9 + vp, {
            onSignal: (_from, flag) => {
              signals.push(`${9 + vp}:${flag}`);
              hyperv.signalEvent(vp, 2, 9 + vp);
              return HV_STATUS_SUCCESS;
            },
          });
        }
        unregister.set(11, hypercalls.connections.registerEvent(11, { onSignal: () => HV_STATUS_SUCCESS }));
      },
    });
    expectPassed(run);
    const doorbell = run.hv.doorbell!;
    // Fast flag-0 signals: 9 and 10 once each, 11 once before removal, all without an exit.
    expect(doorbell.doorbellWrites).toBe(3n);
    // Per vCPU an unknown id (0x55 / 0x56) and one beyond 24 bits, plus 11 after its removal, exited.
    expect(doorbell.fallbacks).toBe(5);
    expect(signals.filter((s) => s.endsWith(':0')).length).toBe(2 + 2 * 2); // doorbell + two slow each
    expect(signals.filter((s) => s.endsWith(':1')).length).toBe(2);
  });
});

describeKvm('AutoEOI on KVM', () => {
  it('autoeoi: handlers that never EOI keep receiving every priority class, highest first, on both vCPUs', async () => {
    const run = await runHvGuest('autoeoi');
    expectPassed(run);
    // This KVM's in-kernel LAPIC keeps no in-service bit even inside a handler: nothing to clear.
    expect(run.isrBitsSeen).toEqual([0]);
    for (const vp of [0, 1]) expect(run.hv.hyperv.synic(vp).interruptsRaised).toBe(14 * 8);
  });
});
