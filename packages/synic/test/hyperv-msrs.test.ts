import { describe, expect, it } from 'vitest';
import {
  HV_X64_MSR_VP_ASSIST_PAGE,
  HV_X64_MSR_APIC_FREQUENCY,
  HV_X64_MSR_CRASH_CTL,
  HV_X64_MSR_CRASH_P0,
  HV_X64_MSR_EOM,
  HV_X64_MSR_GUEST_OS_ID,
  HV_X64_MSR_HYPERCALL,
  HV_X64_MSR_REFERENCE_TSC,
  HV_X64_MSR_SCONTROL,
  HV_X64_MSR_SIEFP,
  HV_X64_MSR_SIMP,
  HV_X64_MSR_SINT0,
  HV_X64_MSR_STIMER0_CONFIG,
  HV_X64_MSR_SVERSION,
  HV_X64_MSR_TIME_REF_COUNT,
  HV_X64_MSR_TSC_FREQUENCY,
  HV_X64_MSR_VP_INDEX,
  ms_hyperv_tsc_page,
} from '@hvemu/hvdef';
import { ManualClock } from '@hvemu/common';
import { GuestMemory, PAGE_SIZE } from '@hvemu/memory';
import { HyperV, hypervCpuidLeaves, MsrFault, referenceTimeFromTsc, tscAtReferenceTime } from '@hvemu/synic';

function partition(vpCount = 2) {
  const memory = GuestMemory.createShared(64 * PAGE_SIZE);
  const clock = new ManualClock(1_000_000n);
  const raised: [number, number, boolean][] = [];
  const crashes: bigint[][] = [];
  const crashMessages: (Uint8Array | undefined)[] = [];
  const installed: number[] = [];
  const hv = new HyperV({
    memory,
    vpCount,
    clock,
    sink: { raise: (vp, vector, autoEoi) => raised.push([vp, vector, autoEoi]) },
    tsc: { frequencyHz: 2_500_000_000n, valueAtReferenceZero: 123_456_789n },
    installHypercallPage: (gpa) => installed.push(gpa),
    events: {
      crash: (_vp, params, _control, message) => {
        crashes.push([...params]);
        crashMessages.push(message);
      },
    },
  });
  return { memory, clock, raised, crashes, crashMessages, installed, hv };
}

const gp = (fn: () => unknown) => expect(fn).toThrow(MsrFault);

describe('Hyper-V MSRs', () => {
  it('answers the identity and frequency MSRs, and faults writes to read-only ones', () => {
    const { hv } = partition();
    expect(hv.readMsr(1, HV_X64_MSR_VP_INDEX)).toBe(1n);
    expect(hv.readMsr(0, HV_X64_MSR_SVERSION)).toBe(1n);
    expect(hv.readMsr(0, HV_X64_MSR_TSC_FREQUENCY)).toBe(2_500_000_000n);
    expect(hv.readMsr(0, HV_X64_MSR_APIC_FREQUENCY)).toBe(1_000_000_000n);
    for (const msr of [HV_X64_MSR_VP_INDEX, HV_X64_MSR_SVERSION, HV_X64_MSR_TIME_REF_COUNT, HV_X64_MSR_TSC_FREQUENCY]) {
      gp(() => hv.writeMsr(0, msr, 1n));
    }
    gp(() => hv.readMsr(0, 0x40000199)); // unimplemented
    const fault = (() => {
      try {
        hv.writeMsr(0, HV_X64_MSR_VP_INDEX, 5n);
      } catch (e) {
        return e as MsrFault;
      }
    })();
    expect(fault?.outcome).toBe('general-protection');
  });

  it('refuses reserved bits and out-of-RAM pages with #GP', () => {
    const { hv } = partition();
    gp(() => hv.writeMsr(0, HV_X64_MSR_SCONTROL, 2n));
    gp(() => hv.writeMsr(0, HV_X64_MSR_SIMP, 0x5000n | 2n));
    gp(() => hv.writeMsr(0, HV_X64_MSR_SIMP, (1n << 40n) | 1n)); // beyond guest RAM
    gp(() => hv.writeMsr(0, HV_X64_MSR_SIEFP, BigInt(64 * PAGE_SIZE) | 1n));
    gp(() => hv.writeMsr(0, HV_X64_MSR_SINT0, 1n << 20n));
    gp(() => hv.writeMsr(0, HV_X64_MSR_SINT0, 0x0fn)); // unmasked vector < 16
    hv.writeMsr(0, HV_X64_MSR_SINT0, 0x0fn | (1n << 16n)); // masked: allowed
    gp(() => hv.writeMsr(0, HV_X64_MSR_STIMER0_CONFIG, 1n << 13n));
    gp(() => hv.writeMsr(0, HV_X64_MSR_CRASH_CTL, 1n));
    expect(hv.readMsr(0, HV_X64_MSR_EOM)).toBe(0n);
  });

  it('holds the VP assist page per VP (Linux writes it on every CPU, unchecked); reserved bits and out-of-RAM pages #GP', () => {
    const { hv } = partition();
    hv.writeMsr(0, HV_X64_MSR_VP_ASSIST_PAGE, 0x7000n | 1n);
    hv.writeMsr(1, HV_X64_MSR_VP_ASSIST_PAGE, 0x8000n | 1n);
    expect([hv.readMsr(0, HV_X64_MSR_VP_ASSIST_PAGE), hv.readMsr(1, HV_X64_MSR_VP_ASSIST_PAGE)]).toEqual([0x7001n, 0x8001n]);
    gp(() => hv.writeMsr(0, HV_X64_MSR_VP_ASSIST_PAGE, 0x7000n | 2n));
    gp(() => hv.writeMsr(0, HV_X64_MSR_VP_ASSIST_PAGE, (1n << 40n) | 1n));
    hv.writeMsr(0, HV_X64_MSR_VP_ASSIST_PAGE, 0n); // disabled: any page number is fine
    expect(hv.readMsr(0, HV_X64_MSR_VP_ASSIST_PAGE)).toBe(0n);
  });

  it('enables the hypercall page only after GUEST_OS_ID, installs it, honours the lock', () => {
    const { hv, installed } = partition();
    gp(() => hv.writeMsr(0, HV_X64_MSR_HYPERCALL, 0x8000n | 1n));
    hv.writeMsr(0, HV_X64_MSR_GUEST_OS_ID, 0x8100n << 48n);
    gp(() => hv.writeMsr(0, HV_X64_MSR_HYPERCALL, (1n << 45n) | 1n));
    hv.writeMsr(0, HV_X64_MSR_HYPERCALL, 0x8000n | 1n);
    expect(installed).toEqual([0x8000]);
    expect(hv.readMsr(0, HV_X64_MSR_HYPERCALL)).toBe(0x8001n);
    hv.writeMsr(0, HV_X64_MSR_HYPERCALL, 0x9000n | 3n); // enable + locked
    hv.writeMsr(0, HV_X64_MSR_HYPERCALL, 0n); // ignored
    expect(hv.readMsr(0, HV_X64_MSR_HYPERCALL)).toBe(0x9003n);
    hv.writeMsr(0, HV_X64_MSR_GUEST_OS_ID, 0n);
    expect(hv.readMsr(0, HV_X64_MSR_HYPERCALL) & 1n).toBe(0n);
  });

  it('reports a guest crash with the five parameters', () => {
    const { hv, crashes } = partition();
    for (let i = 0; i < 5; i++) hv.writeMsr(0, HV_X64_MSR_CRASH_P0 + i, BigInt(0x10 + i));
    hv.writeMsr(0, HV_X64_MSR_CRASH_CTL, 1n << 63n);
    expect(crashes).toEqual([[0x10n, 0x11n, 0x12n, 0x13n, 0x14n]]);
  });

  it("offers CrashNotifyMsg and hands over the guest's crash message (P3 = GPA, P4 = length), at most a page, only from RAM", () => {
    const { hv, memory, crashMessages } = partition();
    expect(hv.readMsr(0, HV_X64_MSR_CRASH_CTL)).toBe((1n << 63n) | (1n << 62n));
    const text = new TextEncoder().encode('Kernel panic - not syncing: VFS: Unable to mount root fs');
    memory.write(0x3000, text);
    const notifyMsg = (gpa: bigint, length: bigint) => {
      hv.writeMsr(0, HV_X64_MSR_CRASH_P0 + 3, gpa);
      hv.writeMsr(0, HV_X64_MSR_CRASH_P0 + 4, length);
      hv.writeMsr(0, HV_X64_MSR_CRASH_CTL, 1n << 62n); // what Linux's kmsg dumper writes
    };
    notifyMsg(0x3000n, BigInt(text.length));
    expect(new TextDecoder().decode(crashMessages[0])).toBe(new TextDecoder().decode(text));
    notifyMsg(0x3000n, 1n << 40n); // absurd length: one page
    expect(crashMessages[1]?.length).toBe(4096);
    notifyMsg(63n * 4096n + 100n, 4096n); // runs past the end of RAM
    notifyMsg(1n << 60n, 16n); // nowhere near RAM
    expect(crashMessages.slice(2)).toEqual([undefined, undefined]);
    gp(() => hv.writeMsr(0, HV_X64_MSR_CRASH_CTL, 1n << 61n));
  });

  it('publishes a reference TSC page consistent with TIME_REF_COUNT', () => {
    const { hv, memory, clock } = partition();
    hv.writeMsr(0, HV_X64_MSR_REFERENCE_TSC, 0x6000n | 1n);
    const page = ms_hyperv_tsc_page.decode(memory.bytes(0x6000, 4096));
    expect(page.tsc_sequence).not.toBe(0);
    expect(page.tsc_sequence).not.toBe(0xffffffff);
    const params = { scale: page.tsc_scale, offset: BigInt.asIntN(64, page.tsc_offset) };
    const model = { frequencyHz: 2_500_000_000n, valueAtReferenceZero: 123_456_789n };
    for (const t of [0n, 1n, 10_000_000n, 36_000_000_000n]) {
      clock.set(t > clock.now() ? t : clock.now());
      const now = hv.readMsr(0, HV_X64_MSR_TIME_REF_COUNT);
      const fromPage = referenceTimeFromTsc(tscAtReferenceTime(now, model), params);
      // The page and the MSR agree to within one 100 ns tick (integer truncation).
      expect(fromPage - now).toBeGreaterThanOrEqual(-1n);
      expect(fromPage - now).toBeLessThanOrEqual(1n);
    }
    // Re-enabling bumps the sequence.
    hv.writeMsr(0, HV_X64_MSR_REFERENCE_TSC, 0x6000n | 1n);
    expect(memory.readU32(0x6000)).toBe(page.tsc_sequence + 1);
  });
});

describe('CPUID leaves', () => {
  it('advertise Microsoft Hv, Hv#1, the implemented MSRs and the recommendations', () => {
    const leaves = new Map(hypervCpuidLeaves({ maxVps: 4 }).map((l) => [l.function, l]));
    const vendor = leaves.get(0x40000000)!;
    const text = Buffer.alloc(12);
    text.writeUInt32LE(vendor.ebx, 0);
    text.writeUInt32LE(vendor.ecx, 4);
    text.writeUInt32LE(vendor.edx, 8);
    expect(text.toString('latin1')).toBe('Microsoft Hv');
    expect(vendor.eax).toBe(0x4000000a);
    expect(Buffer.from(Uint32Array.of(leaves.get(0x40000001)!.eax).buffer).toString('latin1')).toBe('Hv#1');
    const features = leaves.get(0x40000003)!;
    expect(features.eax & (1 << 5)).not.toBe(0); // hypercall MSRs: Linux requires these two
    expect(features.eax & (1 << 6)).not.toBe(0); // VP index
    expect(features.ebx & 0x30).toBe(0x30); // PostMessages, SignalEvents
    expect(features.edx & (1 << 19)).not.toBe(0); // direct-mode stimers
    expect(leaves.get(0x40000004)!.eax & (1 << 9)).not.toBe(0); // deprecating AutoEOI
    expect(leaves.get(0x40000005)!.eax).toBe(4);
    expect(
      hypervCpuidLeaves({ deprecateAutoEoi: false, directStimers: false }).find((l) => l.function === 0x40000004)!.eax & (1 << 9),
    ).toBe(0);
  });
});
