/** KvmVm.probeCpuid: what the guest sees of the enlightened VM's CPUID model, measured. */
import { expect, it } from 'vitest';
import { describeCpuidDifferences, enlightenedPartitionOptions, KvmVm } from '@hvemu/vm';
import { describeKvm } from './helpers/hv-guest.js';

describeKvm('CPUID of a KvmVm guest', () => {
  it("reads back every leaf of the VM's model; the Hyper-V leaves are seen exactly as programmed", async () => {
    const r = await KvmVm.probeCpuid();
    const hvLeaves = enlightenedPartitionOptions().hypervisorLeaves;
    for (const leaf of hvLeaves) {
      expect(r.seen.find((e) => e.function === leaf.function && e.index === leaf.index)).toMatchObject({
        eax: leaf.eax,
        ebx: leaf.ebx,
        ecx: leaf.ecx,
        edx: leaf.edx,
      });
    }
    expect(r.differences.filter((d) => d.function >= 0x40000000 && d.function <= 0x400000ff)).toEqual([]);
    // Whatever this host passes through, each difference is named once, in order.
    expect(describeCpuidDifferences(r.differences)).toHaveLength(r.differences.length);
  });
});
