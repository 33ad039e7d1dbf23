/** Per-vCPU state the Hyper-V layer needs from KVM: TSC frequency, guest TSC, LAPIC registers. */
import { afterEach, expect, it } from 'vitest';
import { KvmPartition } from '../src/backends/kvm/partition.js';
import { describeKvm } from './helpers/harness.js';

const opened: KvmPartition[] = [];
afterEach(() => {
  for (const p of opened.splice(0)) p.close();
});

describeKvm('vCPU state for enlightenments', () => {
  it('reports the guest TSC frequency, a moving guest TSC and the LAPIC register page', () => {
    const p = KvmPartition.create({ memory: [{ gpa: 0, size: 1 << 20 }], vcpuCount: 2 });
    opened.push(p);
    for (const v of p.vcpus) {
      expect(v.tscKhz()).toBeGreaterThan(0);
      const a = v.guestTsc();
      const b = v.guestTsc();
      expect(b).toBeGreaterThanOrEqual(a);
      const lapic = v.lapicRegisters();
      expect(lapic.length).toBe(1024);
      // APIC ID register (0x20): xAPIC form, id in bits 24-31.
      expect(new DataView(lapic.buffer, lapic.byteOffset).getUint32(0x20, true) >>> 24).toBe(v.index);
    }
  });
});
