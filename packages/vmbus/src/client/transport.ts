/**
 * How the guest-side client reaches the host: HvPostMessage / HvSignalEvent out, the SynIC
 * message slot of SINT 2 in. `simpTransport` is the real thing in simulation: it writes the
 * HvPostMessage input page in guest memory and makes the hypercall through whatever the
 * partition provides, and consumes hv_message slots the way Linux vmbus_on_msg_dpc and
 * vmbus_signal_eom do.
 */
import { HostUsageError } from '@hvemu/common';
import {
  encodeControl,
  HV_MESSAGE_FLAG_PENDING,
  HV_MESSAGE_PAYLOAD_BYTE_COUNT,
  HV_MESSAGE_SIZE,
  hv_input_post_message,
  hv_input_signal_event,
  HVCALL_POST_MESSAGE,
  HVCALL_SIGNAL_EVENT,
  resultStatus,
} from '@hvemu/hvdef';
import type { GuestMemory } from '@hvemu/memory';
import { VMBUS_MESSAGE_SINT, VMBUS_MESSAGE_TYPE } from '../protocol/constants.js';

const POST_MESSAGE = encodeControl({ code: HVCALL_POST_MESSAGE });
const SIGNAL_EVENT_FAST = encodeControl({ code: HVCALL_SIGNAL_EVENT, fast: true });

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
  const input = memory.bytes(options.inputPageGpa, hv_input_post_message.size);
  const signalInput = new Uint8Array(hv_input_signal_event.size);
  return {
    post(connectionId, payload) {
      if (payload.length > HV_MESSAGE_PAYLOAD_BYTE_COUNT)
        throw new HostUsageError(`a channel message of ${payload.length} bytes (max ${HV_MESSAGE_PAYLOAD_BYTE_COUNT})`);
      hv_input_post_message.encode(
        { connectionid: connectionId, reserved: 0, message_type: VMBUS_MESSAGE_TYPE, payload_size: payload.length, payload },
        input,
      );
      return resultStatus(options.hypercall(vp, POST_MESSAGE, BigInt(options.inputPageGpa), 0n));
    },
    signal(connectionId) {
      // Fast HvSignalEvent: the 8-byte hv_input_signal_event in RDX (flag 0).
      hv_input_signal_event.encode({ connectionid: connectionId, flag_number: 0, rsvd_z: 0 }, signalInput);
      const rdx = new DataView(signalInput.buffer).getBigUint64(0, true);
      return resultStatus(options.hypercall(vp, SIGNAL_EVENT_FAST, rdx, 0n));
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
