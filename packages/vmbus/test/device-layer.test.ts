/**
 * The device layer end to end in simulation: attachDevice() on a VmbusHost, the TypeScript guest
 * client opening, sending, closing; async open, backpressure, GPADL data and revocation.
 */
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@hvemu/memory';
import {
  attachDevice,
  CHANNELMSG_CLOSECHANNEL,
  encodeChannelMessage,
  GuestDataRevokedError,
  RingClosedError,
  VM_PKT_DATA_INBAND,
  VmbusClientError,
  type DeviceChannel,
  type GuestData,
  type VmbusDevice,
} from '@hvemu/vmbus';
import { HEARTBEAT, partition } from './helpers/sim-partition.js';

const OFFER = { interfaceType: HEARTBEAT, interfaceInstance: '00000000-0000-0000-0000-0000000000aa' };

function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

/** A device whose open waits for `gate`, recording what happens to it. */
function gatedDevice(gate: () => Promise<void>, log: string[]): VmbusDevice & { channels: DeviceChannel[] } {
  const channels: DeviceChannel[] = [];
  return {
    offer: OFFER,
    channels,
    open: async (ch) => {
      log.push(`open ${ch.relid} start`);
      channels.push(ch);
      await gate();
      log.push(`open ${ch.relid} done`);
    },
    onSignal: (ch) => void log.push(`signal ${ch.relid}`),
    close: (ch, reason) => void log.push(`close ${ch.relid} ${reason}`),
  };
}

async function connected(p: ReturnType<typeof partition>): Promise<void> {
  await p.client.connect();
  await p.client.requestOffers();
}

describe('device layer', () => {
  it('an async open answers the guest only when the device is ready', async () => {
    const p = partition({ waitForAnswers: true });
    const log: string[] = [];
    const gate = deferred();
    const dev = attachDevice(
      p.host,
      gatedDevice(() => gate.promise, log),
    );
    await connected(p);
    let opened = false;
    const guestOpen = p.client.openChannel(dev.channel.relid).then((ch) => ((opened = true), ch));
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    expect(log).toEqual([`open ${dev.channel.relid} start`]);
    expect(opened).toBe(false);
    gate.resolve();
    const ch = await guestOpen;
    expect(log).toEqual([`open ${dev.channel.relid} start`, `open ${dev.channel.relid} done`]);
    expect(dev.openChannels()).toHaveLength(1);
    ch.rings.outbound.write({ type: VM_PKT_DATA_INBAND, transactionId: 1n, payload: new Uint8Array(8) });
    expect(log).toContain(`signal ${dev.channel.relid}`);
  });

  it('a rejected async open refuses the guest, revokes the queue, and a later open works', async () => {
    const p = partition({ waitForAnswers: true });
    const log: string[] = [];
    let refuse = true;
    const dev = attachDevice(
      p.host,
      gatedDevice(async () => (refuse ? Promise.reject(new Error('backend missing')) : undefined), log),
    );
    await connected(p);
    await expect(p.client.openChannel(dev.channel.relid)).rejects.toBeInstanceOf(VmbusClientError);
    expect(dev.openChannels()).toEqual([]);
    const first = (dev.device as ReturnType<typeof gatedDevice>).channels[0];
    await expect(first.queue.send({ type: VM_PKT_DATA_INBAND, payload: new Uint8Array(8) })).rejects.toBeInstanceOf(RingClosedError);
    expect(p.logger.records.some((r) => r.message.includes('open refused'))).toBe(true);
    refuse = false;
    await p.client.openChannel(dev.channel.relid);
    expect(dev.openChannels()).toHaveLength(1);
  });

  it('a guest close while the open is pending wins: the late answer is ignored, close is told once', async () => {
    const p = partition({ waitForAnswers: true });
    const log: string[] = [];
    const gate = deferred();
    const dev = attachDevice(
      p.host,
      gatedDevice(() => gate.promise, log),
    );
    await connected(p);
    const relid = dev.channel.relid;
    const guestOpen = p.client.openChannel(relid).catch((e: unknown) => e);
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    // The guest gives up: CLOSECHANNEL while the device is still opening.
    p.client.post(encodeChannelMessage(CHANNELMSG_CLOSECHANNEL, { child_relid: relid }));
    expect(log).toEqual([`open ${relid} start`, `close ${relid} guest`]);
    const sentBefore = p.host.stats.messagesOut;
    gate.resolve();
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    expect(dev.openChannels()).toEqual([]);
    expect(log.filter((l) => l.startsWith('close'))).toHaveLength(1);
    // No OPENCHANNEL_RESULT went out for the abandoned open: the guest's wait runs out unanswered.
    expect(p.host.stats.messagesOut).toBe(sentBefore);
    expect(await guestOpen).toMatchObject({ message: 'the host never answered' });
    expect(p.logger.records.filter((r) => r.level === 'error')).toEqual([]);
  });

  it('echoes 200 packets through a small ring with backpressure, in order, nothing lost', async () => {
    const p = partition({ waitForAnswers: true });
    const echo: VmbusDevice = {
      offer: OFFER,
      open: () => {},
      onSignal: (ch) => {
        ch.queue.read((pkt) => {
          const reply = new Uint8Array(pkt.payload()).map((b) => b ^ 0xff);
          void ch.queue.send({ type: VM_PKT_DATA_INBAND, transactionId: pkt.transactionId, payload: reply });
        });
      },
    };
    const dev = attachDevice(p.host, echo);
    await connected(p);
    const ch = await p.client.openChannel(dev.channel.relid, { sendPages: 2, recvPages: 2 });
    const replies: number[] = [];
    let next = 0;
    while (replies.length < 200) {
      // The guest writes what fits, reads what came back (signalling the host for space as Linux does).
      while (
        next < 200 &&
        ch.rings.outbound.write({ type: VM_PKT_DATA_INBAND, transactionId: BigInt(next), payload: new Uint8Array(600).fill(next & 0xff) })
      )
        next++;
      ch.rings.inbound.drain((pkt) => {
        expect(pkt.payload()[0]).toBe((Number(pkt.transactionId) & 0xff) ^ 0xff);
        replies.push(Number(pkt.transactionId));
      });
      await new Promise((r) => setImmediate(r));
    }
    expect(replies).toEqual(Array.from({ length: 200 }, (_, i) => i));
    const queue = dev.openChannels()[0].queue;
    expect(queue.stats.sendsWaited).toBeGreaterThan(0); // the ring really was full at times
    expect(queue.waitingSends).toBe(0);
  });

  it('GPADL buffers as GuestData: the device writes, the guest sees it; teardown and close revoke', async () => {
    const p = partition({ waitForAnswers: true });
    let device: DeviceChannel | undefined;
    const dev = attachDevice(p.host, { offer: OFFER, open: (ch) => void (device = ch), onSignal: () => {} });
    await connected(p);
    const ch = await p.client.openChannel(dev.channel.relid);
    const pfns = [0x700, 0x702, 0x701];
    const gpadl = await p.client.createGpadl(ch.relid, pfns, 2 * PAGE_SIZE, 100);
    expect(device!.gpadlHandles()).toContain(gpadl);
    const data: GuestData = device!.gpadl(gpadl);
    expect(data.length).toBe(2 * PAGE_SIZE);
    data.write(PAGE_SIZE - 110, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]));
    // byte PAGE_SIZE-110 of the buffer is at 100 + PAGE_SIZE - 110 = page 0, offset 4086: 10 bytes there, the rest on pfns[1]
    expect([...p.memory.bytes(pfns[0] * PAGE_SIZE + 4086, 10)]).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect([...p.memory.bytes(pfns[1] * PAGE_SIZE, 10)]).toEqual([11, 12, 13, 14, 15, 16, 17, 18, 19, 20]);
    expect(() => device!.gpadl(0xdead)).toThrow();
    await p.client.teardownGpadl(ch.relid, gpadl);
    expect(() => data.write(0, new Uint8Array(1))).toThrow(GuestDataRevokedError);
    const again = await p.client.createGpadl(ch.relid, pfns, 3 * PAGE_SIZE);
    const second = device!.gpadl(again);
    await p.client.closeChannel(ch);
    expect(() => second.toBytes(0, 1)).toThrow(GuestDataRevokedError);
  });

  it('a device offers its own subchannels from its primary (a guest request), not from a subchannel', async () => {
    const p = partition({ waitForAnswers: true });
    const opened: DeviceChannel[] = [];
    const dev = attachDevice(p.host, { offer: OFFER, open: (ch) => void opened.push(ch), onSignal: () => {} });
    await connected(p);
    await p.client.openChannel(dev.channel.relid);
    const relids = opened[0].offerSubchannels(2);
    expect(relids).toHaveLength(2);
    p.client.pump();
    expect(relids.map((r) => p.client.offers.get(r)?.sub_channel_index)).toEqual([1, 2]);
    await p.client.openChannel(relids[0]);
    expect(opened.map((c) => c.subChannelIndex)).toEqual([0, 1]);
    expect(() => opened[1].offerSubchannels(1)).toThrow(/only a primary/);
    expect(dev.openChannels()).toHaveLength(2);
  });

  it('a device fails its channel for a fault found outside onSignal: close follows once, other channels go on', async () => {
    const p = partition({ waitForAnswers: true });
    const log: string[] = [];
    const dev = attachDevice(
      p.host,
      gatedDevice(async () => {}, log),
    );
    const other = attachDevice(p.host, {
      ...gatedDevice(async () => {}, log),
      offer: { ...OFFER, interfaceInstance: '00000000-0000-0000-0000-0000000000bb' },
    });
    await connected(p);
    await p.client.openChannel(dev.channel.relid);
    const ch2 = await p.client.openChannel(other.channel.relid);
    const victim = dev.openChannels()[0];
    victim.fail(new Error('deferred read found a broken ring'));
    victim.fail(new Error('again'));
    expect(log.filter((l) => l.startsWith('close'))).toEqual([`close ${dev.channel.relid} failed`]);
    expect(dev.openChannels()).toEqual([]);
    expect(p.logger.records.some((r) => r.message.includes(`relid ${dev.channel.relid} failed`))).toBe(true);
    ch2.rings.outbound.write({ type: VM_PKT_DATA_INBAND, transactionId: 1n, payload: new Uint8Array(8) });
    expect(log).toContain(`signal ${other.channel.relid}`);
  });
});
