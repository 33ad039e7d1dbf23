/**
 * No channel message is lost to a guest that does not drain its message slot: the SynIC answers
 * 'busy', the host holds the message, and the guest's own posts get
 * HV_STATUS_INSUFFICIENT_BUFFERS until the backlog is out.
 */
import { describe, expect, it } from 'vitest';
import { HV_X64_MSR_EOM, HV_X64_MSR_SCONTROL, HV_X64_MSR_SIMP, HV_X64_MSR_SINT0 } from '@hvemu/hvdef';
import { ManualClock } from '@hvemu/common';
import { GuestMemory } from '@hvemu/memory';
import { HyperV } from '@hvemu/synic';
import { CHANNELMSG_REQUESTOFFERS, encodeChannelMessage } from '@hvemu/vmbus';
import { HEARTBEAT, partition } from './helpers/sim-partition.js';

const offer = (i: number) => ({
  interfaceType: HEARTBEAT,
  interfaceInstance: `00000000-0000-0000-0000-${i.toString(16).padStart(12, '0')}`,
});
const HV_STATUS_INSUFFICIENT_BUFFERS = 0x13;

describe('HyperV as a SynicPort', () => {
  it("answers 'busy' when a SINT's queue is full, and says when it can take messages again", () => {
    const memory = GuestMemory.createShared(1 << 20);
    const hv = new HyperV({ memory, vpCount: 1, clock: new ManualClock(), queueLimit: 2, sink: { raise: () => {} } });
    hv.writeMsr(0, HV_X64_MSR_SIMP, 0x1000n | 1n);
    hv.writeMsr(0, HV_X64_MSR_SINT0 + 2, 0xf3n);
    hv.writeMsr(0, HV_X64_MSR_SCONTROL, 1n);
    const ready: string[] = [];
    hv.onPostReady((vp, sint) => ready.push(`${vp}:${sint}`));
    const m = { type: 1, payload: new Uint8Array(8) };
    expect([hv.postMessage(0, 2, m), hv.postMessage(0, 2, m), hv.postMessage(0, 2, m), hv.postMessage(0, 2, m)]).toEqual([
      'delivered',
      'queued',
      'queued',
      'busy',
    ]);
    expect(ready).toEqual([]);
    // The guest frees its slot and EOMs: the next queued message goes in, and the queue has room.
    Atomics.store(memory.u32Array(0x1000 + 2 * 256, 1), 0, 0);
    hv.writeMsr(0, HV_X64_MSR_EOM, 0n);
    expect(ready).toEqual(['0:2']);
    expect(hv.postMessage(0, 2, m)).toBe('queued');
  });
});

describe('the VMBus host never loses a channel message', () => {
  for (const hidePostReady of [false, true]) {
    it(`holds what the SynIC cannot take and delivers it in order (${hidePostReady ? 'polling a port without onPostReady' : 'told by onPostReady'})`, async () => {
      const p = partition({ queueLimit: 2, hidePostReady });
      await p.client.connect();
      for (let i = 1; i <= 20; i++) p.host.offerChannel(offer(i), { onOpen: () => {} });
      // REQUESTOFFERS without reading the answers: 20 offers + ALLOFFERS_DELIVERED cannot all fit.
      expect(p.transport.post(1, encodeChannelMessage(CHANNELMSG_REQUESTOFFERS, {}))).toBe(0);
      expect(p.host.heldMessages).toBeGreaterThan(0);
      // More guest messages are refused until the backlog is out; nothing is lost.
      expect(p.transport.post(1, encodeChannelMessage(CHANNELMSG_REQUESTOFFERS, {}))).toBe(HV_STATUS_INSUFFICIENT_BUFFERS);
      expect(p.host.stats.messagesRefused).toBe(1);
      const received: number[] = [];
      for (let spins = 0; received.length < 21 && spins < 1000; spins++) {
        for (let bytes = p.transport.receive(); bytes !== null; bytes = p.transport.receive())
          received.push(new DataView(bytes.buffer, bytes.byteOffset).getUint32(0, true));
        if (hidePostReady) await new Promise((r) => setTimeout(r, 2));
      }
      // OFFERCHANNEL (1) x 20 in relid order, then ALLOFFERS_DELIVERED (4).
      expect(received).toEqual([...Array(20).fill(1), 4]);
      expect(p.host.heldMessages).toBe(0);
      expect(p.host.stats).toMatchObject({ messagesLost: 0 });
      expect(p.host.stats.messagesHeld).toBeGreaterThan(0);
      // And the guest is heard again.
      expect(p.transport.post(1, encodeChannelMessage(CHANNELMSG_REQUESTOFFERS, {}))).toBe(0);
    });
  }

  it('the guest client retries a refused post the way Linux does, draining in between', async () => {
    const p = partition({ queueLimit: 1 });
    await p.client.connect();
    for (let i = 1; i <= 10; i++) p.host.offerChannel(offer(i), { onOpen: () => {} });
    p.transport.post(1, encodeChannelMessage(CHANNELMSG_REQUESTOFFERS, {})); // answers pile up unread
    expect(p.host.heldMessages).toBeGreaterThan(0);
    const offers = await p.client.requestOffers(); // its post is refused first, then retried
    expect(p.host.stats.messagesRefused).toBeGreaterThan(0);
    expect(offers).toHaveLength(10);
    expect(p.host.stats.messagesLost).toBe(0);
  });

  it('beyond maxBacklog a message is lost, counted and logged as an error (a guest that never drains)', async () => {
    const p = partition({ queueLimit: 1, maxBacklog: 3 });
    await p.client.connect();
    for (let i = 1; i <= 10; i++) p.host.offerChannel(offer(i), { onOpen: () => {} });
    p.transport.post(1, encodeChannelMessage(CHANNELMSG_REQUESTOFFERS, {}));
    expect(p.host.heldMessages).toBe(3);
    expect(p.host.stats.messagesLost).toBeGreaterThan(0);
    expect(p.logger.records.some((r) => r.level === 'error' && r.fields?.['reason'] === 'message-backlog-full')).toBe(true);
  });
});
