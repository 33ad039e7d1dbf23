/**
 * A BalloonDevice on a channel with no rings: `feed(bytes)` hands the device one guest message
 * (as onSignal would), `sent` collects what it sends. For driving the device without a guest:
 * benchmarks, fuzzers, and tests of a VM's balloon wiring (its memory port) where no guest runs.
 */
import { VM_PKT_DATA_INBAND, type DeviceChannel, type OutgoingPacket, type PacketView } from '@hvemu/vmbus';
import type { BalloonDevice } from '../device.js';
import * as P from '../protocol.js';

export interface FakeBalloonChannel {
  readonly channel: DeviceChannel;
  /** Host messages, in order. */
  readonly sent: Uint8Array[];
  /** One guest message (padded to 8 bytes as the ring does). */
  feed(bytes: Uint8Array): void;
  /** VERSION_REQUEST (WIN10) and CAPABILITIES_REPORT (balloon, hot add, alignment log2 `alignment`). */
  handshake(alignment?: number): void;
}

export function fakeBalloonChannel(device: BalloonDevice): FakeBalloonChannel {
  const inbox: Uint8Array[] = [];
  const sent: Uint8Array[] = [];
  const view = { type: VM_PKT_DATA_INBAND, length: 0, bytes: new Uint8Array(0) as Uint8Array, payload: () => view.bytes };
  const channel = {
    relid: 0,
    subChannelIndex: 0,
    queue: {
      closed: false,
      onGuestSignal: () => {},
      read: (fn: (p: PacketView) => void, max = Infinity) => {
        let n = 0;
        while (inbox.length > 0 && n < max) {
          view.bytes = inbox.shift()!;
          view.length = view.bytes.length;
          fn(view as unknown as PacketView);
          n++;
        }
        return n;
      },
      trySend: (p: OutgoingPacket) => (sent.push((p.payload as Uint8Array).slice()), true),
      send: (p: OutgoingPacket) => (sent.push((p.payload as Uint8Array).slice()), Promise.resolve()),
    },
  } as unknown as DeviceChannel;
  device.open(channel);
  const feed = (bytes: Uint8Array): void => {
    const padded = new Uint8Array(Math.ceil(bytes.length / 8) * 8);
    padded.set(bytes);
    inbox.push(padded);
    device.onSignal(channel);
  };
  return {
    channel,
    sent,
    feed,
    handshake(alignment = 7) {
      feed(P.dm_version_request.encodeNew({ type: P.DM_VERSION_REQUEST, size: 16, version: P.DYNMEM_PROTOCOL_VERSION_WIN10 }));
      feed(P.dm_capabilities.encodeNew({ type: P.DM_CAPABILITIES_REPORT, size: 32, caps: 3n | (BigInt(alignment) << 2n) }));
    },
  };
}
