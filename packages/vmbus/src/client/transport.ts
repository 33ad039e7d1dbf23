/**
 * How the guest-side client reaches the host: HvPostMessage / HvSignalEvent out, the SynIC
 * message slot of SINT 2 in. `simpTransport` is the real thing in simulation: it writes the
 * HvPostMessage input page in guest memory and makes the hypercall through whatever the
 * partition provides, and consumes hv_message slots the way Linux vmbus_on_msg_dpc and
 * vmbus_signal_eom do.
 */
import { HostUsageError } from '@hvemu/common';
import type { GuestMemory } from '@hvemu/memory';
import { HV_MESSAGE_PAYLOAD_BYTE_COUNT, VMBUS_MESSAGE_SINT, VMBUS_MESSAGE_TYPE } from '../protocol/constants.js';

export interface GuestTransport {
  /** HvPostMessage(connectionId, message type 1, payload). Returns the HV_STATUS. */
  post(connectionId: number, payload: Uint8Array): number;
  /** HvSignalEvent(connectionId, flag 0). Returns the HV_STATUS. */
  signal(connectionId: number): number;
  /** The next channel message delivered to the guest, or null if none is waiting. */
  receive(): Uint8Array | null;
  /**
   * Called when the client waits for an answer and receive() has none: resolve once more
   * may have arrived. Absent: the host answers synchronously, so nothing more will come.
   */
  wait?(): Promise<void>;
}

/** HvPostMessage / HvSignalEvent call codes and the fast-call bit (TLFS). */
const HVCALL_POST_MESSAGE = 0x5cn;
const HVCALL_SIGNAL_EVENT = 0x5dn;
const HV_HYPERCALL_FAST_BIT = 1n << 16n;
const HV_MESSAGE_SIZE = 256;
const HV_MESSAGE_FLAG_PENDING = 1;

export interface SimpTransportOptions {
  memory: GuestMemory;
  /** The VP the guest runs this on (VMBUS_CONNECT_CPU's VP index). */
  vp: number;
  /** This VP's SIMP page. */
  simpGpa: number;
  /** An 8-byte aligned page of guest RAM for the HvPostMessage input block. */
  inputPageGpa: number;
  /** Makes a hypercall on `vp`: RCX, RDX, R8 in; RAX out. */
  hypercall(vp: number, rcx: bigint, rdx: bigint, r8: bigint): bigint;
  /** Writes HV_X64_MSR_EOM on `vp`. */
  writeEom(vp: number): void;
  /** How to wait for an answer the host gives later (GuestTransport.wait); absent: answers are synchronous. */
  wait?(): Promise<void>;
}

export function simpTransport(options: SimpTransportOptions): GuestTransport {
  const { memory, vp } = options;
  const slotGpa = options.simpGpa + VMBUS_MESSAGE_SINT * HV_MESSAGE_SIZE;
  const slot = memory.u32Array(slotGpa, 2);
  const input = memory.bytes(options.inputPageGpa, 16 + HV_MESSAGE_PAYLOAD_BYTE_COUNT);
  const inputView = new DataView(input.buffer, input.byteOffset, input.byteLength);
  return {
    post(connectionId, payload) {
      if (payload.length > HV_MESSAGE_PAYLOAD_BYTE_COUNT) throw new HostUsageError(`a channel message of ${payload.length} bytes (max ${HV_MESSAGE_PAYLOAD_BYTE_COUNT})`);
      inputView.setUint32(0, connectionId, true);
      inputView.setUint32(4, 0, true);
      inputView.setUint32(8, VMBUS_MESSAGE_TYPE, true);
      inputView.setUint32(12, payload.length, true);
      input.fill(0, 16);
      input.set(payload, 16);
      const rax = options.hypercall(vp, HVCALL_POST_MESSAGE, BigInt(options.inputPageGpa), 0n);
      return Number(rax & 0xffffn);
    },
    signal(connectionId) {
      const rax = options.hypercall(vp, HVCALL_SIGNAL_EVENT | HV_HYPERCALL_FAST_BIT, BigInt(connectionId), 0n);
      return Number(rax & 0xffffn);
    },
    wait: options.wait,
    receive() {
      const type = Atomics.load(slot, 0);
      if (type === 0) return null;
      const header = Atomics.load(slot, 1);
      const size = Math.min(header & 0xff, HV_MESSAGE_PAYLOAD_BYTE_COUNT);
      const payload = memory.bytes(slotGpa + 16, size).slice();
      // Linux vmbus_signal_eom: free the slot, full barrier, then EOM only if the host has more queued.
      Atomics.store(slot, 0, 0);
      if (((Atomics.load(slot, 1) >>> 8) & HV_MESSAGE_FLAG_PENDING) !== 0) options.writeEom(vp);
      return payload;
    },
  };
}
