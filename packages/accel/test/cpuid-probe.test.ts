import { describe, expect, it } from 'vitest';
import { MemoryLogger } from '@hvemu/common';
import { compareCpuid, cpuidProbeCode, describeCpuidDifferences, probeGuestCpuid, warnCpuidDifferences } from '../src/cpuid-probe.js';
import { hypervisorVendorLeaf, type CpuidEntry } from '../src/cpuid.js';
import { AccelUsageError } from '../src/errors.js';
import { describeKvm, runGuest } from './helpers/harness.js';

const entry = (fn: number, regs: Partial<CpuidEntry> = {}): CpuidEntry => ({
  function: fn,
  index: 0,
  flags: 0,
  eax: 0,
  ebx: 0,
  ecx: 0,
  edx: 0,
  ...regs,
});

describe('CPUID probe (no KVM needed)', () => {
  it('assembles mov eax/ecx, cpuid and four stores per leaf, then the OUT that stops the vCPU', () => {
    const code = cpuidProbeCode([{ function: 0x40000001, index: 2 }]);
    // Hand-assembled 16-bit code, checked against objdump -mi8086 when written.
    expect([...code]).toEqual([
      0x66,
      0xb8,
      0x01,
      0x00,
      0x00,
      0x40, // mov eax, 0x40000001
      0x66,
      0xb9,
      0x02,
      0x00,
      0x00,
      0x00, // mov ecx, 2
      0x0f,
      0xa2, // cpuid
      0x66,
      0xa3,
      0x00,
      0x80, // mov [0x8000], eax
      0x66,
      0x89,
      0x1e,
      0x04,
      0x80, // mov [0x8004], ebx
      0x66,
      0x89,
      0x0e,
      0x08,
      0x80, // mov [0x8008], ecx
      0x66,
      0x89,
      0x16,
      0x0c,
      0x80, // mov [0x800c], edx
      0xe6,
      0xe9,
      0xf4,
      0xeb,
      0xfd, // out 0xe9, al; hlt; jmp hlt
    ]);
  });

  it('refuses more leaves than its result area holds', () => {
    expect(() => cpuidProbeCode(Array.from({ length: 3000 }, (_, i) => ({ function: i, index: 0 })))).toThrow(AccelUsageError);
  });

  it('reports each differing register with the bits added and removed, named where they matter', () => {
    const programmed = [entry(1, { ecx: 0x80202001, edx: 5 }), entry(0x40000000, { eax: 0x40000005 })];
    const seen = [entry(1, { ecx: 0x80a02001 | (1 << 26), edx: 4 }), entry(0x40000000, { eax: 0x40000005 })];
    const d = compareCpuid(programmed, seen);
    expect(d).toEqual([
      {
        function: 1,
        index: 0,
        register: 'ecx',
        programmed: 0x80202001,
        seen: 0x84a02001,
        addedBits: (1 << 23) | (1 << 26),
        removedBits: 0,
      },
      { function: 1, index: 0, register: 'edx', programmed: 5, seen: 4, addedBits: 0, removedBits: 1 },
    ]);
    expect(describeCpuidDifferences(d)).toEqual([
      'leaf 0x1.0 ecx: 0x80202001 programmed, 0x84a02001 seen; +bits 23 (POPCNT), 26 (XSAVE)',
      'leaf 0x1.0 edx: 0x5 programmed, 0x4 seen; -bits 0',
    ]);
    const logger = new MemoryLogger();
    expect(warnCpuidDifferences({ programmed, seen, differences: d }, logger)).toBe(2);
    expect(logger.records.filter((e) => e.level === 'warn')).toHaveLength(1);
    expect(warnCpuidDifferences({ programmed, seen: programmed, differences: [] }, logger)).toBe(0);
  });
});

describeKvm('CPUID probe on KVM', () => {
  const hvLeaves = [hypervisorVendorLeaf('Microsoft Hv', 0x40000001), entry(0x40000001, { eax: 0x31237648 })];

  it('reads back every programmed leaf, and the hypervisor leaves exactly as hvemu set them', async () => {
    const r = await probeGuestCpuid({ hypervisorLeaves: hvLeaves });
    expect(r.seen.map((e) => [e.function, e.index])).toEqual(r.programmed.map((e) => [e.function, e.index]));
    expect(r.differences).toEqual(compareCpuid(r.programmed, r.seen));
    for (const leaf of hvLeaves) {
      expect(r.seen.find((e) => e.function === leaf.function)).toMatchObject({
        eax: leaf.eax,
        ebx: leaf.ebx,
        ecx: leaf.ecx,
        edx: leaf.edx,
      });
    }
    expect(r.differences.filter((d) => d.function >= 0x40000000 && d.function <= 0x400000ff)).toEqual([]);
  });

  it("sees what a long-mode guest sees (the readings are the guest's, not the model echoed)", async () => {
    const probe = await probeGuestCpuid({ hypervisorLeaves: hvLeaves });
    const guest = await runGuest('cpuid', { hypervisorLeaves: [hypervisorVendorLeaf('Microsoft Hv', 0x40000005)] });
    try {
      const text = guest.platform.serial.text();
      const leaf1 = /leaf1 ecx 0x([0-9a-f]+) edx 0x([0-9a-f]+)/.exec(text);
      const leaf0 = /leaf0 eax 0x([0-9a-f]+)/.exec(text);
      expect(leaf1, text).not.toBeNull();
      expect(leaf0, text).not.toBeNull();
      const seen = (fn: number) => probe.seen.find((e) => e.function === fn)!;
      expect(seen(1).ecx).toBe(parseInt(leaf1![1], 16));
      expect(seen(1).edx).toBe(parseInt(leaf1![2], 16));
      expect(seen(0).eax).toBe(parseInt(leaf0![1], 16));
    } finally {
      guest.partition.close();
    }
  });

  it('a customizeCpuid change is probed too', async () => {
    const r = await probeGuestCpuid({
      hypervisorLeaves: hvLeaves,
      customizeCpuid: (entries) => entries.map((e) => (e.function === 0x40000001 ? { ...e, ebx: 0x1234 } : e)),
    });
    expect(r.seen.find((e) => e.function === 0x40000001)?.ebx).toBe(0x1234);
  });
});
