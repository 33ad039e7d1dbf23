/**
 * hvemu's VpSynic as a SynicSystem, with a compliant guest acting on the message page in a
 * small simulated guest memory.
 */
import { GuestMemory, PAGE_SIZE } from '@hvemu/memory';
import {
  HV_MESSAGE_FLAG_PENDING,
  HV_MESSAGE_SIZE,
  HV_SYNIC_SINT_MASKED,
  HV_SYNIC_SINT_POLLING,
  HV_X64_MSR_EOM,
  HV_X64_MSR_SCONTROL,
  HV_X64_MSR_SIMP,
  HV_X64_MSR_SINT0,
  HVMSG_NONE,
} from '@hvemu/hvdef';
import { VpSynic } from '../vp-synic.js';
import type { SlotContent, SynicSystem } from './model.js';

export const TEST_SIMP_GPA = 0x3000;
export const TEST_VECTOR_BASE = 0x40;

export function hvemuSynicSystem(): SynicSystem & { synic: VpSynic; memory: GuestMemory } {
  const memory = GuestMemory.createShared(16 * PAGE_SIZE);
  const counts = new Map<number, number>();
  const synic = new VpSynic(0, memory, { raise: (_vp, vector) => counts.set(vector, (counts.get(vector) ?? 0) + 1) });
  const sintValue = new Array(16).fill(0n).map((_, s) => BigInt(TEST_VECTOR_BASE + s));
  synic.writeMsr(HV_X64_MSR_SCONTROL, 1n);
  synic.writeMsr(HV_X64_MSR_SIMP, BigInt(TEST_SIMP_GPA) | 1n);
  sintValue.forEach((v, s) => synic.writeMsr(HV_X64_MSR_SINT0 + s, v));
  const words = memory.u32Array(TEST_SIMP_GPA, PAGE_SIZE / 4);
  const updateSint = (s: number, set: bigint, on: boolean): void => {
    sintValue[s] = on ? sintValue[s] | set : sintValue[s] & ~set;
    synic.writeMsr(HV_X64_MSR_SINT0 + s, sintValue[s]);
  };
  return {
    synic,
    memory,
    post: (sint, type, payload) => synic.postMessage(sint, { type, payload }),
    readSlot(sint): SlotContent | null {
      const base = (sint * HV_MESSAGE_SIZE) / 4;
      const type = Atomics.load(words, base);
      if (type === HVMSG_NONE) return null;
      const header = Atomics.load(words, base + 1);
      const size = header & 0xff;
      const payload = memory.bytes(TEST_SIMP_GPA + sint * HV_MESSAGE_SIZE + 16, size).slice();
      return { type, payload, pending: ((header >>> 8) & HV_MESSAGE_FLAG_PENDING) !== 0 };
    },
    consumeSlot(sint): boolean {
      // What Linux vmbus_signal_eom does: store HVMSG_NONE, full barrier, read msg_pending, EOM if set.
      const base = (sint * HV_MESSAGE_SIZE) / 4;
      Atomics.store(words, base, HVMSG_NONE);
      const pending = ((Atomics.load(words, base + 1) >>> 8) & HV_MESSAGE_FLAG_PENDING) !== 0;
      if (pending) synic.writeMsr(HV_X64_MSR_EOM, 0n);
      return pending;
    },
    setMasked: (s, masked) => updateSint(s, HV_SYNIC_SINT_MASKED, masked),
    setPolling: (s, polling) => updateSint(s, HV_SYNIC_SINT_POLLING, polling),
    setSimpEnabled: (on) => synic.writeMsr(HV_X64_MSR_SIMP, BigInt(TEST_SIMP_GPA) | (on ? 1n : 0n)),
    spuriousEom: () => synic.writeMsr(HV_X64_MSR_EOM, 0n),
    interrupts: (s) => counts.get(TEST_VECTOR_BASE + s) ?? 0,
  };
}
