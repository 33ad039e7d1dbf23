/**
 * The enlightenments on a real KVM guest: a C guest uses CPUID, the hypercall page, the SynIC
 * message and event pages, HvPostMessage and HvSignalEvent; this side answers through the
 * same HyperV / HypercallDispatcher objects the simulated tests use.
 */
import { describe, expect, it } from 'vitest';
import { HV_STATUS_SUCCESS } from '@hvemu/hvdef';
import { KvmPartition } from '@hvemu/accel';
import { enterLongMode, loadElf64, TestPlatform } from '@hvemu/platform';
import { attachHyperV, enlightenedPartitionOptions } from '@hvemu/vm';
import { buildHvGuest } from './helpers/hv-guest.js';

const probe = KvmPartition.probe();
const describeKvm = probe.ok ? describe : describe.skip;
if (!probe.ok) {
  if (process.env['HVEMU_REQUIRE_KVM'] === '1') throw new Error(`HVEMU_REQUIRE_KVM=1 but KVM is unusable: ${probe.reason}`);
  console.warn(`skipping KVM enlightenment tests: ${probe.reason}`);
}

describeKvm('Hyper-V enlightenments on KVM', () => {
  it('CPUID, hypercall page, SynIC messages and events, post/signal, #GP on reserved bits', async () => {
    const image = buildHvGuest('synic-basic');
    const partition = KvmPartition.create({ memory: [{ gpa: 0, size: 16 << 20 }], ...enlightenedPartitionOptions() });
    try {
      const platform = new TestPlatform(partition);
      const { hyperv, hypercalls, dispose } = attachHyperV(partition);
      const posts: string[] = [];
      hypercalls.connections.registerMessage(7, {
        onMessage: (vp, _type, payload) => {
          posts.push(new TextDecoder().decode(payload));
          hyperv.postMessage(vp, 2, { type: 1, payload: new TextEncoder().encode('pong') });
          return HV_STATUS_SUCCESS;
        },
      });
      hypercalls.connections.registerEvent(9, {
        onSignal: (vp) => {
          hyperv.signalEvent(vp, 2, 3);
          return HV_STATUS_SUCCESS;
        },
      });
      const { entry } = loadElf64(partition.memory, image);
      enterLongMode(partition, entry);
      const run = partition.run();
      const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${platform.serial.text()}`)), 30_000));
      await Promise.race([run, timeout]).finally(dispose);
      const report = `${platform.assertionSummary()}\nserial: ${platform.serial.text()}`;
      expect(platform.debugExit.codes.get(0), report).toBe(0);
      expect(platform.serial.text()).toContain('synic-basic ok');
      expect(posts).toEqual(['ping']);
      expect(hyperv.synic(0).messagesDelivered).toBe(1);
      expect(hypercalls.stats.byStatus.get(0x12)).toBe(1); // the unknown connection
    } finally {
      partition.close();
    }
  });
});
