/**
 * Runs an IC over a channel's PacketQueue: host packets go out as VM_PKT_DATA_INBAND with the
 * service's transaction id; guest answers come back as in-band packets. A packet that does not
 * fit waits in the queue (in order, written when the guest frees space), so the service's
 * request is never refused for a full ring.
 */
import { VM_PKT_DATA_INBAND, type OutgoingPacket, type PacketQueue, type PacketView } from '@hvemu/vmbus';
import type { IcHostService, IcTransport } from './service.js';
import { IC_MAX_MESSAGE_SIZE } from './protocol.js';

export interface IcQueueBinding {
  /** The guest signalled the channel: retry waiting sends, read answers, send what is next. */
  onSignal(): void;
}

export function icQueueTransport(queue: PacketQueue): IcTransport {
  // One reused packet object: trySend writes it at once; a send that must wait copies it.
  const packet: OutgoingPacket = { type: VM_PKT_DATA_INBAND, transactionId: 0n, payload: new Uint8Array(0) };
  return {
    send(payload, transactionId) {
      packet.transactionId = transactionId;
      packet.payload = payload;
      if (queue.trySend(packet)) return true;
      // A close rejects the waiting packet; the service's close() abandons its transaction then.
      queue.send(packet).catch(() => {});
      return true;
    },
  };
}

/** Connects `service` to a channel's queue. */
export function bindIcToQueue(service: IcHostService, queue: PacketQueue): IcQueueBinding {
  const handle = (p: PacketView): void => {
    // Only in-band packets of sane size carry IC messages; anything else is dropped (logged by the service's parser).
    if (p.type !== VM_PKT_DATA_INBAND || p.payloadLength > IC_MAX_MESSAGE_SIZE) return;
    service.onPacket(new Uint8Array(p.payload()), p.transactionId);
  };
  return {
    onSignal() {
      queue.onGuestSignal();
      queue.read(handle);
      service.pump();
    },
  };
}
