/**
 * Runs an IC over a channel's ring pair: host packets go out as VM_PKT_DATA_INBAND with the
 * service's transaction id; guest answers come back as in-band packets on the inbound ring.
 * `onSignal()` is what the channel calls when the guest signals; a full outbound ring is
 * retried when the guest signals for space (pending_send_sz) or on the next signal.
 */
import type { RingEndpoint, PacketView } from '@hvemu/vmbus';
import { VM_PKT_DATA_INBAND } from '@hvemu/vmbus';
import type { IcHostService, IcTransport } from './service.js';
import { IC_MAX_MESSAGE_SIZE } from './protocol.js';

export interface IcRingBinding {
  /** The channel was signalled by the guest: drain answers, retry blocked sends. */
  onSignal(): void;
}

export function icRingTransport(endpoint: RingEndpoint): IcTransport {
  const packet: { type: number; transactionId: bigint; payload: Uint8Array } = { type: VM_PKT_DATA_INBAND, transactionId: 0n, payload: new Uint8Array(0) };
  return {
    send(payload, transactionId) {
      packet.transactionId = transactionId;
      packet.payload = payload;
      if (endpoint.outbound.write(packet)) return true;
      // Ask the guest to signal when the packet fits; the service retries in onSignal.
      endpoint.outbound.requestSpace(RingSpace(payload.length));
      return false;
    },
  };
}

function RingSpace(payloadLength: number): number {
  return ((16 + payloadLength + 7) & ~7) + 8;
}

/** Connects `service` to the host end of a channel's rings. */
export function bindIcToRings(service: IcHostService, endpoint: RingEndpoint): IcRingBinding {
  const handle = (p: PacketView): void => {
    // Only in-band packets of sane size carry IC messages; anything else is dropped (logged by the service's parser).
    if (p.type !== VM_PKT_DATA_INBAND || p.payloadLength > IC_MAX_MESSAGE_SIZE) return;
    service.onPacket(new Uint8Array(p.payload()), p.transactionId);
  };
  return {
    onSignal() {
      endpoint.inbound.drain(handle);
      endpoint.outbound.clearPendingSend();
      service.pump();
    },
  };
}
