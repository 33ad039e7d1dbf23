/**
 * VMBus end to end on KVM: a C guest (packages/vm/guests/vmbus, the demo guest) negotiates the version, lists the offers,
 * creates ring GPADLs, opens heartbeat and shutdown, answers heartbeats and a shutdown request;
 * both sides are checked: the guest's serial output and exit code, the host's IC services,
 * VmbusHost and SynIC statistics.
 */
import { describe, expect, it } from 'vitest';
import { VERSION_WIN10_V4_1 } from '@hvemu/vmbus';
import { buildVmbusDemoGuest, KvmVm, type TimelineEvent } from '@hvemu/vm';

const probe = KvmVm.probe();
const describeKvm = probe.ok ? describe : describe.skip;
if (!probe.ok) {
  if (process.env['HVEMU_REQUIRE_KVM'] === '1') throw new Error(`HVEMU_REQUIRE_KVM=1 but KVM is unusable: ${probe.reason}`);
  console.warn(`skipping VMBus KVM tests: ${probe.reason}`);
}

const HEARTBEATS = 3;

describeKvm('VMBus on KVM', () => {
  it('a C guest connects, lists offers, opens heartbeat and shutdown, answers heartbeats and a shutdown request', async () => {
    const image = buildVmbusDemoGuest({ minHeartbeats: HEARTBEATS });
    const events: TimelineEvent[] = [];
    const vm = new KvmVm({ image, onEvent: (e) => events.push(e) });
    try {
      const run = vm.run();
      const host = vm.exerciseIcs({ heartbeats: HEARTBEATS, shutdown: { kind: 'poweroff' }, timeoutMs: 25_000 });
      // A guest that dies early ends run() first; report its output rather than a host timeout.
      const [result, exercise] = await Promise.all([run, host.catch((e: unknown) => e as Error)]);
      const report = `${result.assertions}\nserial:\n${result.serial}`;
      if (exercise instanceof Error) throw new Error(`${exercise.message}\n${report}`);
      expect(result.exitCode, report).toBe(0);

      // Guest side.
      const serial = result.serial;
      expect(serial).toContain('vmbus: version 5.3 accepted');
      expect(serial).toContain('vmbus: 4 offers');
      for (const kind of ['heartbeat', 'shutdown', 'timesync', 'kvp'])
        expect(serial).toMatch(new RegExp(`offer relid \\d+ ${kind} connection`));
      expect(serial).toMatch(/heartbeat: opened relid \d+, status 0/);
      expect(serial).toMatch(/shutdown: opened relid \d+, status 0/);
      expect(serial).toContain('heartbeat: negotiated framework 3.0, service 3.0');
      expect(serial).toContain('shutdown: negotiated framework 3.0, service 3.2');
      expect(serial.match(/heartbeat: sequence \d+, answered \d+/g)).toHaveLength(HEARTBEATS);
      expect(serial).toContain('shutdown: poweroff requested (flags 0x0');
      expect(serial).toContain(`guest: done after ${HEARTBEATS} heartbeats and a shutdown request`);

      // Host side.
      const { heartbeat, shutdown } = vm.ics;
      expect(heartbeat.service.state).toBe('ready');
      expect(shutdown.service.state).toBe('ready');
      expect(heartbeat.service.serviceVersion).toEqual({ major: 3, minor: 0 });
      expect(shutdown.service.serviceVersion).toEqual({ major: 3, minor: 2 });
      expect(exercise.heartbeatAnswers).toEqual([1n, 3n, 5n]);
      expect(heartbeat.service.status).toMatchObject({ lastSequence: 5n, missed: 0, badAnswers: 0 });
      expect(exercise.shutdown).toEqual({ status: 0 });
      expect(vm.ics.timesync.service.state).toBe('closed'); // offered, never opened by this guest
      // INITIATE_CONTACT, REQUESTOFFERS, 2 x (GPADL_HEADER + OPENCHANNEL).
      expect(vm.vmbus.stats).toMatchObject({ messagesIn: 6, messagesLost: 0, spuriousSignals: 0 });
      // VERSION_RESPONSE, 4 offers, ALLOFFERS_DELIVERED, 2 x (GPADL_CREATED + OPENCHANNEL_RESULT).
      expect(vm.vmbus.stats.messagesOut).toBe(10);
      // One guest signal per answer: 2 negotiations, the heartbeats, the shutdown.
      expect(vm.vmbus.stats.guestSignals).toBe(2 + HEARTBEATS + 1);
      expect(vm.hyperv.synic(0).messagesDelivered).toBe(10);
      // Interrupts for back-to-back messages and events may coalesce (13-16 here); each heartbeat
      // and the shutdown come after the previous answer, so each raises its own.
      expect(vm.hyperv.synic(0).interruptsRaised).toBeGreaterThanOrEqual(HEARTBEATS + 1);
      expect(vm.hypercalls.stats.byStatus.get(0)).toBe(vm.hypercalls.stats.calls);

      // The timeline has both sides, in order.
      const lines = events.map((e) => `${e.who}: ${e.what}`);
      const at = (text: string): number => lines.findIndex((l) => l.includes(text));
      expect(at('host: offers heartbeat')).toBeGreaterThanOrEqual(0);
      expect(at('host: VMBus connected at version 5.3')).toBeLessThan(at('guest: vmbus: version 5.3 accepted'));
      expect(at('host: heartbeat 1 sent')).toBeLessThan(at('guest: heartbeat: sequence 0'));
      expect(at('host: guest answered shutdown with status 0x0')).toBeGreaterThan(at('host: shutdown (poweroff) requested'));
      console.info(`VMBus KVM guest run: ${result.elapsedMs.toFixed(0)} ms, ${events.length} timeline events`);
    } finally {
      vm.close();
    }
  });

  it('falls back to an older version the host accepts, and uses the msg_conn_id the host gives', async () => {
    const cases = [
      {
        vmbus: { maxVersion: VERSION_WIN10_V4_1 },
        expected: 'vmbus: version 4.1 accepted (message connection 1)',
        refused: ['5.3', '5.2', '5.1', '5.0'],
      },
      { vmbus: { messageConnectionId: 0x2a }, expected: 'vmbus: version 5.3 accepted (message connection 42)', refused: [] },
    ];
    for (const { vmbus, expected, refused } of cases) {
      const vm = new KvmVm({ image: buildVmbusDemoGuest({ minHeartbeats: 1 }), vmbus });
      try {
        const run = vm.run();
        const host = vm.exerciseIcs({ heartbeats: 1, timeoutMs: 25_000 }).catch((e: unknown) => e as Error);
        const [result, exercise] = await Promise.all([run, host]);
        const report = `${result.assertions}\nserial:\n${result.serial}`;
        if (exercise instanceof Error) throw new Error(`${exercise.message}\n${report}`);
        expect(result.exitCode, report).toBe(0);
        expect(result.serial).toContain(expected);
        for (const v of refused) expect(result.serial).toContain(`vmbus: version ${v} refused`);
        expect(exercise.shutdown).toEqual({ status: 0 });
        expect(vm.vmbus.stats.messagesLost).toBe(0);
      } finally {
        vm.close();
      }
    }
  });
});
