import { describe, expect, it } from 'vitest';
import { ManualClock } from '@hvemu/common';
import { GuestMemory, PAGE_SIZE } from '@hvemu/memory';
import { openRingEndpoint, PacketQueue, ringPairFromPages, VM_PKT_DATA_INBAND } from '@hvemu/vmbus';
import {
  bindIcToQueue,
  GuestIcEndpoint,
  HeartbeatService,
  HV_S_OK,
  icQueueTransport,
  ShutdownService,
  type GuestIcKind,
  type IcHostService,
  type IcTransport,
} from '@hvemu/util';

/** One IC channel: 4-page rings each way (util channels use 3 data pages), host and simulated guest ends. */
function icChannel<S extends IcHostService>(kind: GuestIcKind, make: (t: IcTransport) => S) {
  const memory = GuestMemory.createShared(32 * PAGE_SIZE);
  const pfns = [3, 4, 5, 6, 10, 11, 12, 13];
  const layout = ringPairFromPages(memory, pfns, 4);
  layout.guestToHost.initialize();
  layout.hostToGuest.initialize();
  const guestIc = new GuestIcEndpoint(kind);
  let hostSignals = 0;
  let guestSignals = 0;
  const host = openRingEndpoint(layout, 'host', () => {
    guestSignals++;
    queueMicrotask(guestRun);
  });
  const guest = openRingEndpoint(layout, 'guest', () => {
    hostSignals++;
    queueMicrotask(() => binding.onSignal());
  });
  const queue = new PacketQueue(host, { memory });
  const service = make(icQueueTransport(queue));
  const binding = bindIcToQueue(service, queue);
  // The guest driver: drain, answer each request in the same length with the same transaction id.
  function guestRun(): void {
    guest.inbound.drain((p) => {
      const answer = guestIc.onPacket(new Uint8Array(p.payload()));
      if (answer) guest.outbound.write({ type: VM_PKT_DATA_INBAND, transactionId: p.transactionId, payload: answer });
    });
  }
  return { service, guestIc, counts: () => ({ hostSignals, guestSignals }) };
}

const settle = async () => {
  for (let i = 0; i < 10; i++) await new Promise((r) => setTimeout(r, 0));
};

describe('ICs over VMBus rings', () => {
  it('negotiates, then heartbeats flow as ring packets with signals both ways', async () => {
    const clock = new ManualClock();
    const ch = icChannel('heartbeat', (t) => new HeartbeatService(t, clock));
    ch.service.open();
    await settle();
    expect(ch.service.state).toBe('ready');
    for (let i = 0; i < 5; i++) {
      ch.service.beat();
      await settle();
    }
    expect(ch.guestIc.heartbeats).toEqual([0n, 2n, 4n, 6n, 8n]);
    expect(ch.service.status.lastSequence).toBe(9n);
    expect(ch.counts().guestSignals).toBeGreaterThanOrEqual(6);
    expect(ch.counts().hostSignals).toBeGreaterThanOrEqual(6);
  });

  it('carries a 2 KiB shutdown request and the guest answer', async () => {
    const ch = icChannel('shutdown', (t) => new ShutdownService(t));
    ch.service.open();
    await settle();
    const answer = ch.service.shutdown({ kind: 'poweroff', message: 'bye' });
    await settle();
    await expect(answer).resolves.toEqual({ status: HV_S_OK });
    expect(ch.guestIc.shutdowns).toEqual([{ kind: 'poweroff', force: false, reasonCode: 0x80000000 }]);
  });
});
