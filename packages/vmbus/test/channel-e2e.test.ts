/**
 * The whole path in simulation: the TypeScript guest client posts channel messages with
 * HvPostMessage (input page in guest memory, HypercallDispatcher), the VmbusHost wiring hands
 * them to the pure server, answers land in real hv_message slots of @hvemu/synic's HyperV, the
 * client reads them from the SIMP page and EOMs; packets cross real rings in guest memory and
 * each side signals the other (HvSignalEvent / SIEFP event flags).
 */
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@hvemu/memory';
import {
  CHANNELMSG_CLOSECHANNEL,
  CHANNELMSG_GPADL_CREATED,
  CHANNELMSG_OPENCHANNEL,
  CHANNELMSG_OPENCHANNEL_RESULT,
  VERSION_WIN10_V5_2,
  VERSION_WIN10_V5_3,
  VERSION_WIN8_1,
  VM_PKT_DATA_INBAND,
  VmbusClientError,
  RingClosedError,
  encodeChannelMessage,
  gpadlMessages,
  type Channel,
  type ChannelHandler,
  type PacketView,
} from '@hvemu/vmbus';
import { HEARTBEAT, NET, partition, SHUTDOWN, VMBUS_VECTOR } from './helpers/sim-partition.js';

/** An echo device: every in-band packet comes back with each byte + 1 (payloads are padded to 8 bytes on the ring). */
function echoDevice(log: string[]): ChannelHandler {
  return {
    onOpen: (ch) => void log.push(`open ${ch.relid} vp ${ch.targetVp} user ${ch.userData[0]}`),
    onSignal: (ch: Channel) => {
      ch.rings.inbound.drain((p: PacketView) => {
        const reply = new Uint8Array(p.payload()).map((b) => b + 1);
        ch.rings.outbound.write({ type: VM_PKT_DATA_INBAND, transactionId: p.transactionId, payload: reply });
      });
    },
    onClose: (ch, reason) => void log.push(`close ${ch.relid} ${reason}`),
    onRetarget: (ch, vp) => void log.push(`retarget ${ch.relid} ${vp}`),
  };
}

describe('VMBus end to end (simulated partition, real SynIC slots and hypercalls)', () => {
  it('connects, gets every offer, opens, exchanges packets both ways, retargets, closes, tears down, unloads, reconnects', async () => {
    const p = partition();
    const log: string[] = [];
    const hb = p.host.offerChannel(
      { interfaceType: HEARTBEAT, interfaceInstance: '00000000-0000-0000-0000-000000000001' },
      echoDevice(log),
    );
    const sd = p.host.offerChannel({ interfaceType: SHUTDOWN, interfaceInstance: '00000000-0000-0000-0000-000000000002' }, echoDevice(log));

    expect(await p.client.connect()).toBe(VERSION_WIN10_V5_3);
    const offers = await p.client.requestOffers();
    expect(offers.map((o) => [o.child_relid, o.if_type])).toEqual([
      [hb.relid, HEARTBEAT],
      [sd.relid, SHUTDOWN],
    ]);
    expect(p.interrupts.length).toBeGreaterThan(0);
    expect(p.interrupts.every((i) => i === `0:${Number(VMBUS_VECTOR)}`)).toBe(true);

    // A 40-page ring: its GPADL takes a header and a body.
    const ch = await p.client.openChannel(hb.relid, { sendPages: 20, recvPages: 20, targetVp: 1, userData: new Uint8Array([42]) });
    const other = await p.client.openChannel(sd.relid);
    expect(log).toEqual([`open ${hb.relid} vp 1 user 42`, `open ${sd.relid} vp 0 user 0`]);
    expect(hb.isOpen && sd.isOpen).toBe(true);

    // Guest -> host: write a packet; the ring signals (HvSignalEvent on the offer's connection id); the device echoes.
    expect(ch.rings.outbound.write({ type: VM_PKT_DATA_INBAND, transactionId: 7n, payload: new Uint8Array([1, 2, 3, 4, 5]) })).toBe(true);
    expect(hb.guestSignals).toBe(1);
    // Host -> guest: the reply raised relid's event flag on the target VP (1).
    expect(p.takeEvent(1, hb.relid)).toBe(true);
    const replies: number[][] = [];
    ch.rings.inbound.drain((pkt) => replies.push([Number(pkt.transactionId), ...pkt.payload().subarray(0, 5)]));
    expect(replies).toEqual([[7, 2, 3, 4, 5, 6]]);

    // The other channel works independently.
    other.rings.outbound.write({ type: VM_PKT_DATA_INBAND, transactionId: 1n, payload: new Uint8Array([9, 8]) });
    expect(p.takeEvent(0, sd.relid)).toBe(true);

    // MODIFYCHANNEL (5.3 answers) moves host->guest interrupts to VP 0.
    expect(await p.client.modifyChannel(hb.relid, 0)).toBe(0);
    expect(log).toContain(`retarget ${hb.relid} 0`);
    ch.rings.outbound.write({ type: VM_PKT_DATA_INBAND, transactionId: 8n, payload: new Uint8Array([1]) });
    expect(p.takeEvent(0, hb.relid)).toBe(true);

    await p.client.closeChannel(ch);
    await p.client.closeChannel(other);
    expect(log).toContain(`close ${hb.relid} guest`);
    expect(hb.isOpen).toBe(false);
    expect(p.host.server.gpadlsOf(hb.relid)).toEqual([]);

    await p.client.unload();
    expect(p.host.server.connectionInfo).toBeNull();

    // Reconnect (kexec): same offers, channels open again.
    expect(await p.client.connect()).toBe(VERSION_WIN10_V5_3);
    expect((await p.client.requestOffers()).length).toBe(2);
    const again = await p.client.openChannel(hb.relid);
    again.rings.outbound.write({ type: VM_PKT_DATA_INBAND, transactionId: 3n, payload: new Uint8Array([6, 7]) });
    const back: number[][] = [];
    again.rings.inbound.drain((pkt) => back.push([...pkt.payload().subarray(0, 2)]));
    expect(back).toEqual([[7, 8]]);
    expect(p.logger.records.filter((r) => r.level === 'error')).toEqual([]);
    expect(p.host.stats.messagesLost).toBe(0);
  });

  it('a device that kept the rings of a closed channel cannot touch the pages the guest took back', async () => {
    const p = partition();
    let kept: Channel['rings'] | undefined;
    const hb = p.host.offerChannel(
      { interfaceType: HEARTBEAT, interfaceInstance: '00000000-0000-0000-0000-000000000001' },
      {
        onOpen: (ch) => void (kept = ch.rings),
      },
    );
    await p.client.connect();
    await p.client.requestOffers();
    const ch = await p.client.openChannel(hb.relid);
    ch.rings.outbound.write({ type: VM_PKT_DATA_INBAND, transactionId: 1n, payload: new Uint8Array(8) });
    const pfns = p.host.server
      .gpadlsOf(hb.relid)
      .find((g) => g.handle === ch.ringGpadl)!
      .ranges.flatMap((r) => r.pfns);
    await p.client.closeChannel(ch);
    const before = pfns.map((pfn) => new Uint8Array(p.memory.page(pfn)));
    expect(() => kept!.outbound.write({ type: VM_PKT_DATA_INBAND, transactionId: 2n, payload: new Uint8Array(8) })).toThrow(
      RingClosedError,
    );
    expect(() => kept!.inbound.drain(() => {})).toThrow(RingClosedError);
    expect(() => kept!.inbound.commit()).toThrow(RingClosedError);
    expect(() => kept!.outbound.requestSpace(64)).toThrow(RingClosedError);
    expect(pfns.map((pfn) => new Uint8Array(p.memory.page(pfn)))).toEqual(before);
    // The guest's own ends are retired too.
    expect(() => ch.rings.outbound.write({ type: VM_PKT_DATA_INBAND, transactionId: 3n, payload: new Uint8Array(8) })).toThrow(
      RingClosedError,
    );
  });

  it('falls back version by version when the host is older', async () => {
    const p = partition({ maxVersion: VERSION_WIN8_1 });
    expect(await p.client.connect()).toBe(VERSION_WIN8_1);
    const q = partition({ maxVersion: VERSION_WIN10_V5_2 });
    expect(await q.client.connect()).toBe(VERSION_WIN10_V5_2);
  });

  it('hot add and rescind while the guest runs; RELID_RELEASED frees the relid for reuse', async () => {
    const p = partition();
    const log: string[] = [];
    p.host.offerChannel({ interfaceType: HEARTBEAT, interfaceInstance: '00000000-0000-0000-0000-000000000001' }, echoDevice(log));
    await p.client.connect();
    await p.client.requestOffers();
    const nic = p.host.offerChannel({ interfaceType: NET, interfaceInstance: '00000000-0000-0000-0000-000000000003' }, echoDevice(log));
    const subs = p.host.offerSubchannels(nic, 2, () => echoDevice(log));
    p.client.pump();
    expect([...p.client.offers.values()].map((o) => o.sub_channel_index)).toEqual([0, 0, 1, 2]);
    const open = await p.client.openChannel(subs[0].relid);
    p.host.rescind(nic);
    p.client.pump();
    expect(log).toContain(`close ${subs[0].relid} rescind`);
    // The guest lets go of the open subchannel: RELID_RELEASED; the others were released on receipt.
    await p.client.closeChannel(open);
    expect(p.host.channel(nic.relid)).toBeUndefined();
    expect(p.host.server.allChannels().map((c) => c.relid)).toEqual([1]);
    const reused = p.host.offerChannel({ interfaceType: NET, interfaceInstance: '00000000-0000-0000-0000-000000000004' }, echoDevice(log));
    expect(reused.relid).toBe(nic.relid);
  });

  it('hostile guest over the real path: bad GPADLs, ring split beyond the GPADL, double open, broken ring; other channels keep working', async () => {
    const p = partition();
    const log: string[] = [];
    const a = p.host.offerChannel({ interfaceType: HEARTBEAT, interfaceInstance: '00000000-0000-0000-0000-000000000001' }, echoDevice(log));
    const b = p.host.offerChannel({ interfaceType: SHUTDOWN, interfaceInstance: '00000000-0000-0000-0000-000000000002' }, echoDevice(log));
    await p.client.connect();
    await p.client.requestOffers();
    const good = await p.client.openChannel(b.relid);

    // A GPADL naming a page past the end of RAM is refused.
    await expect(p.client.createGpadl(a.relid, [(8 << 20) / PAGE_SIZE + 3])).rejects.toBeInstanceOf(VmbusClientError);
    // A ring split beyond the GPADL: OPENCHANNEL_RESULT with a failure status.
    const gpadl = await p.client.createGpadl(a.relid, [0x700, 0x701, 0x702, 0x703]);
    p.client.post(
      encodeChannelMessage(CHANNELMSG_OPENCHANNEL, {
        child_relid: a.relid,
        openid: 9,
        ringbuffer_gpadlhandle: gpadl,
        downstream_ringbuffer_pageoffset: 9,
      }),
    );
    expect(p.client.takeUnclaimed()).toMatchObject([{ msgtype: CHANNELMSG_OPENCHANNEL_RESULT, openid: 9, status: 0xc0000001 }]);
    // Double open of the good channel: refused, the channel stays open.
    p.client.post(
      encodeChannelMessage(CHANNELMSG_OPENCHANNEL, {
        child_relid: b.relid,
        openid: 10,
        ringbuffer_gpadlhandle: good.ringGpadl,
        downstream_ringbuffer_pageoffset: 4,
      }),
    );
    expect(p.client.takeUnclaimed()).toMatchObject([{ msgtype: CHANNELMSG_OPENCHANNEL_RESULT, openid: 10, status: 0xc0000001 }]);
    // Garbage and a GPADL body for nobody: dropped.
    p.client.post(new Uint8Array([99, 0, 0, 0, 0, 0, 0, 0]));
    p.client.post(
      gpadlMessages(
        a.relid,
        0x5555,
        Array.from({ length: 40 }, (_, i) => 0x710 + i),
        40 * PAGE_SIZE,
      )[1],
    );
    p.client.post(encodeChannelMessage(CHANNELMSG_CLOSECHANNEL, { child_relid: 999 }));
    expect(p.client.takeUnclaimed()).toEqual([]);
    const reasons = p.logger.records.filter((r) => r.level === 'warn').map((r) => r.fields?.reason);
    expect(reasons).toEqual(
      expect.arrayContaining(['bad-gpadl', 'bad-ring-split', 'double-open', 'unknown-type', 'bogus-gpadl', 'bogus-relid']),
    );

    // Now open `a` properly, then the guest corrupts its ring: only `a` fails.
    const ring = await p.client.openChannel(a.relid);
    Atomics.store(p.memory.u32Array(ring.pfns[0] * PAGE_SIZE, 1), 0, 0xfffffff0); // write_index out of range
    ring.signalHost();
    expect(log).toContain(`close ${a.relid} failed`);
    good.rings.outbound.write({ type: VM_PKT_DATA_INBAND, transactionId: 1n, payload: new Uint8Array([1, 2]) });
    const echoed: number[][] = [];
    good.rings.inbound.drain((pkt) => echoed.push([...pkt.payload().subarray(0, 2)]));
    expect(echoed).toEqual([[2, 3]]);
    expect(p.client.received.some((m) => m.msgtype === CHANNELMSG_GPADL_CREATED)).toBe(true);
  });
});
