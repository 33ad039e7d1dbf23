/**
 * Frames through netvsp both ways with the TypeScript netvsc guest and the in-process pair:
 * every size from an Ethernet header to the MTU intact and in order per queue, in send-buffer
 * sections, page buffers and batches; backpressure from a full receive buffer, a full ring and
 * a full backend, without losing a completed frame and without deadlock; vRSS over subchannels;
 * the guest's MTU (NDIS config) bounding what it receives.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { VM_PKT_DATA_INBAND } from '@hvemu/vmbus';
import {
  encodeNvsp,
  IEEE_8021Q_INFO,
  NDIS_HASH_IPV4,
  NDIS_HASH_TCP_IPV4,
  nvsp_2_send_ndis_config,
  NVSP_MSG2_TYPE_SEND_NDIS_CONFIG,
  NVSP_STAT_SUCCESS,
  rssHash,
} from '@hvemu/net';
import {
  DEFAULT_RSS_KEY,
  ethernetFrame,
  frameArbitrary,
  NetvscClient,
  rndisDataMessage,
  tcp4Frame,
  tcp4FlowArbitrary,
  withVlanTag,
  type ReceivedFrame,
} from '@hvemu/net/testing';
import { fuzzRuns } from '../../../test/helpers.js';
import { GUEST_MAC, nicSim, PEER_MAC, sameBytes, type NicSim } from './helpers/sim.js';

/** Sends `frames` from the guest as fast as it can (retrying when sections or the ring run out). */
async function guestSends(sim: NicSim, frames: readonly Uint8Array[], via?: 'section' | 'pages', queue = 0): Promise<void> {
  for (const f of frames) await sim.guest.until(() => sim.guest.send(f, { via, queue }));
}

/**
 * Sends `frames` in order on `queue`, as many per ring batch (one signal) as sections, page
 * sets and ring space allow, then polls for completions and goes on.
 */
async function guestSendsBatched(sim: NicSim, frames: readonly Uint8Array[], queue = 0): Promise<void> {
  let next = 0;
  while (next < frames.length) {
    await sim.guest.until(() => {
      const from = next;
      sim.guest.batch(() => {
        while (next < frames.length && sim.guest.send(frames[next], { queue })) next++;
      }, queue);
      return next > from;
    });
  }
}

/** `frame` with an 802.1Q tag's ethertype at bytes 12-13 (the frame carries the tag itself). */
function tagged(frame: Uint8Array): Uint8Array {
  frame[12] = 0x81;
  frame[13] = 0x00;
  return frame;
}

/** A raw NVSP SEND_NDIS_CONFIG on the primary (no completion: the host answers nothing). */
function sendNdisConfig(sim: NicSim, mtu: number): void {
  const payload = encodeNvsp(NVSP_MSG2_TYPE_SEND_NDIS_CONFIG, nvsp_2_send_ndis_config, { mtu, capability: 0n });
  expect(sim.guest.channel(0).rings.outbound.write({ type: VM_PKT_DATA_INBAND, transactionId: 0, payload })).toBe(true);
  sim.guest.poll();
}

/** A received frame as it was on the wire: its tag put back where the host moved it into a PPI. */
const asSent = (r: ReceivedFrame): Uint8Array => (r.vlan === null ? r.frame : withVlanTag(r.frame, r.vlan));

/** Sends `frames` from the peer, waiting for writable (backpressure) when the port says it is full. */
async function peerSends(sim: NicSim, frames: readonly Uint8Array[]): Promise<void> {
  for (const f of frames) {
    if (!sim.peer.send([f])) await sim.guest.until(() => sim.peer.peer.queued < 32);
  }
}

describe('netvsp data path', () => {
  it('every frame size from 14 to MTU + 14 passes intact both ways, in order', async () => {
    const sim = await nicSim();
    await sim.guest.connect();
    const sizes = Array.from({ length: 1500 + 1 }, (_, i) => 14 + i);
    const out = sizes.map((n) => ethernetFrame(PEER_MAC, GUEST_MAC, n, (i) => (i + n) & 0xff));
    // Small ones in sections, every other one through page buffers.
    for (const [i, f] of out.entries()) await sim.guest.until(() => sim.guest.send(f, { via: i % 2 ? 'pages' : 'section' }));
    await sim.guest.until(() => sim.peerSink.frames.length === out.length);
    expect(sim.peerSink.frames.every((f, i) => sameBytes(f, out[i]))).toBe(true);

    const back = sizes.map((n) => ethernetFrame(GUEST_MAC, PEER_MAC, n, (i) => (i * 7 + n) & 0xff));
    const sending = peerSends(sim, back);
    await sim.guest.until(() => sim.guest.received(0).length === back.length);
    await sending;
    expect(sim.guest.received(0).every((r, i) => sameBytes(r.frame, back[i]))).toBe(true);
    expect(sim.nic.stats).toMatchObject({
      txFrames: out.length,
      rxFrames: back.length,
      txBadSize: 0,
      rxBadSize: 0,
      nvspErrors: 0,
      rndisErrors: 0,
    });
  });

  it('onFrame: frames reach the guest as views of its receive buffer (no copy), in order, and nothing is kept', async () => {
    const seen: { bytes: Uint8Array; inRecvBuffer: boolean; queue: number }[] = [];
    let sim: NicSim | null = null;
    sim = await nicSim({
      guest: {
        onFrame: (frame, _hash, queue) => {
          // A view of guest RAM (the receive buffer), not a fresh copy; copied here only to check it later.
          seen.push({ bytes: frame.slice(), inRecvBuffer: frame.buffer === sim!.memory.bytes(0, 1).buffer, queue });
        },
      },
    });
    await sim.guest.connect();
    const back = [60, 61, 1514, 200].map((n) => ethernetFrame(GUEST_MAC, PEER_MAC, n, (i) => (i * 5 + n) & 0xff));
    await peerSends(sim, back);
    await sim.guest.until(() => seen.length === back.length);
    expect(seen.every((r, i) => sameBytes(r.bytes, back[i]) && r.inRecvBuffer && r.queue === 0)).toBe(true);
    expect(sim.guest.received(0)).toHaveLength(0);
  });

  it('jumbo frames (MTU 9000): every size from 14 to 9014 both ways, intact and in order; one byte more is dropped and counted', async () => {
    const sim = await nicSim({
      nic: { mtu: 9000 },
      guest: { mtu: 9000, recvBufferBytes: 2 << 20, sendBufferBytes: 1 << 20 },
      capacity: 256,
      ramMiB: 64,
    });
    const info = await sim.guest.connect();
    expect(info.mtu).toBe(9000);
    expect(info.recvSectionSize).toBeGreaterThanOrEqual(9018 + 44);
    expect(sim.nic.rxFrameLimit).toBe(9014);
    const sizes = Array.from({ length: 9014 - 14 + 1 }, (_, i) => 14 + i);
    // Up to ~6 KiB in send sections, larger ones through page buffers (as Linux splits them).
    const out = sizes.map((n) => ethernetFrame(PEER_MAC, GUEST_MAC, n, (i) => (i * 3 + n) & 0xff));
    await guestSendsBatched(sim, out);
    await sim.guest.until(() => sim.peerSink.frames.length === out.length);
    expect(sim.peerSink.frames.map((f) => f.length)).toEqual(sizes);
    expect(sim.peerSink.frames.every((f, i) => sameBytes(f, out[i]))).toBe(true);

    const back = sizes.map((n) => ethernetFrame(GUEST_MAC, PEER_MAC, n, (i) => (i * 5 + n) & 0xff));
    const sending = peerSends(sim, back);
    await sim.guest.until(() => sim.guest.received(0).length === back.length);
    await sending;
    expect(sim.guest.received(0).map((r) => r.frame.length)).toEqual(sizes);
    expect(sim.guest.received(0).every((r, i) => sameBytes(r.frame, back[i]))).toBe(true);
    expect(sim.nic.stats).toMatchObject({ txFrames: sizes.length, rxFrames: sizes.length, txBadSize: 0, rxBadSize: 0, rxOverMtu: 0 });

    // MTU + 15 untagged, and a tagged frame past MTU + 18: dropped and counted both ways.
    const over = ethernetFrame(PEER_MAC, GUEST_MAC, 9015);
    expect(await sim.guest.sendRaw(rndisDataMessage(over))).toBe(NVSP_STAT_SUCCESS);
    expect(await sim.guest.sendRaw(rndisDataMessage(tagged(ethernetFrame(PEER_MAC, GUEST_MAC, 9019))))).toBe(NVSP_STAT_SUCCESS);
    expect(sim.nic.stats.txBadSize).toBe(2);
    expect(sim.peer.send([ethernetFrame(GUEST_MAC, PEER_MAC, 9015)])).toBe(true);
    expect(sim.peer.send([tagged(ethernetFrame(GUEST_MAC, PEER_MAC, 9019))])).toBe(true);
    expect(sim.nic.stats.rxBadSize).toBe(2);
    // A frame carrying its own 802.1Q tag may be 4 bytes longer: 9018 passes both ways.
    const tagOut = tagged(ethernetFrame(PEER_MAC, GUEST_MAC, 9018));
    expect(await sim.guest.sendRaw(rndisDataMessage(tagOut))).toBe(NVSP_STAT_SUCCESS);
    const tagBack = tagged(ethernetFrame(GUEST_MAC, PEER_MAC, 9018));
    sim.peer.send([tagBack]);
    await sim.guest.until(() => sim.guest.received(0).length === back.length + 1);
    expect(sameBytes(asSent(sim.guest.received(0)[back.length]), tagBack)).toBe(true);
    await sim.guest.until(() => sim.peerSink.frames.length === out.length + 1);
    expect(sameBytes(sim.peerSink.frames[out.length], tagOut)).toBe(true);
    expect(sim.nic.stats).toMatchObject({ txBadSize: 2, rxBadSize: 2, rxOverMtu: 0 });
  });

  it("the guest's MTU (NDIS config: MTU + 14) bounds what it receives; larger frames are dropped, counted rxOverMtu", async () => {
    // The host allows 9000; the guest says 1500 (Linux sends ndev->mtu + ETH_HLEN).
    const sim = await nicSim({ nic: { mtu: 9000 }, guest: { mtu: 1500, recvBufferBytes: 1 << 20 } });
    await sim.guest.connect();
    expect(sim.nic.rxFrameLimit).toBe(1514);
    const fits = [
      ethernetFrame(GUEST_MAC, PEER_MAC, 60),
      ethernetFrame(GUEST_MAC, PEER_MAC, 1514, () => 1),
      tagged(ethernetFrame(GUEST_MAC, PEER_MAC, 1518, () => 2)),
    ];
    const tooBig = [
      ethernetFrame(GUEST_MAC, PEER_MAC, 1515),
      ethernetFrame(GUEST_MAC, PEER_MAC, 1518),
      tagged(ethernetFrame(GUEST_MAC, PEER_MAC, 1519)),
      ethernetFrame(GUEST_MAC, PEER_MAC, 9014),
    ];
    // Interleaved: each dropped frame leaves the ones around it in order.
    await peerSends(sim, [fits[0], tooBig[0], fits[1], tooBig[1], tooBig[2], fits[2], tooBig[3]]);
    await sim.guest.until(() => sim.guest.received(0).length === fits.length);
    sim.guest.poll();
    expect(sim.guest.received(0).map((r) => asSent(r).length)).toEqual([60, 1514, 1518]);
    expect(sim.guest.received(0).every((r, i) => sameBytes(asSent(r), fits[i]))).toBe(true);
    expect(sim.nic.stats).toMatchObject({ rxFrames: 3, rxOverMtu: 4, rxBadSize: 0 });
    // The guest's MTU limits what it is sent, not what it sends: the host's MTU applies to tx.
    await guestSends(sim, [ethernetFrame(PEER_MAC, GUEST_MAC, 9014)]);
    await sim.guest.until(() => sim.peerSink.frames.length === 1);
    expect(sim.nic.stats.txBadSize).toBe(0);
  });

  it('NDIS config values no guest sends: 0 and below 68 + 14 ignored (nvspErrors), above the host MTU clamped to it', async () => {
    const sim = await nicSim({ nic: { mtu: 9000 }, guest: { mtu: 1500, recvBufferBytes: 1 << 20 } });
    await sim.guest.connect();
    expect(sim.nic.rxFrameLimit).toBe(1514);
    sendNdisConfig(sim, 0);
    sendNdisConfig(sim, 81);
    expect(sim.nic.stats.nvspErrors).toBe(2);
    expect(sim.nic.rxFrameLimit).toBe(1514); // the guest's last valid value stays
    // The smallest a guest may say (MTU 68): frames of 82 bytes pass, 83 do not.
    sendNdisConfig(sim, 82);
    expect(sim.nic.rxFrameLimit).toBe(82);
    await peerSends(sim, [ethernetFrame(GUEST_MAC, PEER_MAC, 83), ethernetFrame(GUEST_MAC, PEER_MAC, 82)]);
    await sim.guest.until(() => sim.guest.received(0).length === 1);
    expect(sim.guest.received(0)[0].frame.length).toBe(82);
    expect(sim.nic.stats.rxOverMtu).toBe(1);
    // Past the host's frame size (and past any u16): the host's 9014 applies.
    for (const huge of [9015, 65535, 0xffffffff]) {
      sendNdisConfig(sim, huge);
      expect(sim.nic.rxFrameLimit).toBe(9014);
    }
    await peerSends(sim, [ethernetFrame(GUEST_MAC, PEER_MAC, 9015), ethernetFrame(GUEST_MAC, PEER_MAC, 9014)]);
    await sim.guest.until(() => sim.guest.received(0).length === 2);
    expect(sim.guest.received(0)[1].frame.length).toBe(9014);
    expect(sim.nic.stats).toMatchObject({ rxBadSize: 1, rxOverMtu: 1, nvspErrors: 2 });
  });

  it("an MTU change (Linux reopens the NIC and sends its NDIS config again) moves the guest's limit", async () => {
    const sim = await nicSim({ nic: { mtu: 9000 }, guest: { mtu: 1500, recvBufferBytes: 1 << 20 } });
    await sim.guest.connect();
    expect(sim.nic.rxFrameLimit).toBe(1514);
    await sim.guest.close();
    sim.guest = new NetvscClient({ vmbus: sim.vmbus, memory: sim.memory, pages: sim.pages, relid: sim.attached.channel.relid, mtu: 4000 });
    await sim.guest.connect();
    expect(sim.nic.rxFrameLimit).toBe(4014);
    await peerSends(sim, [ethernetFrame(GUEST_MAC, PEER_MAC, 4015), ethernetFrame(GUEST_MAC, PEER_MAC, 4014)]);
    await sim.guest.until(() => sim.guest.received(0).length === 1);
    expect(sim.guest.received(0)[0].frame.length).toBe(4014);
    expect(sim.nic.stats.rxOverMtu).toBe(1);
  });

  it('property: any frame sequence, any mix of sections, page buffers and batches, arrives in order', async () => {
    const sim = await nicSim();
    await sim.guest.connect();
    let sent = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(frameArbitrary(PEER_MAC), fc.constantFrom('section', 'pages', 'batch')), { minLength: 1, maxLength: 12 }),
        async (items) => {
          const before = sim.peerSink.frames.length;
          for (let i = 0; i < items.length; i++) {
            const [frame, via] = items[i];
            if (via === 'batch' && i + 1 < items.length && frame.length + items[i + 1][0].length < 5000) {
              await sim.guest.until(() => sim.guest.sendBatch([frame, items[i + 1][0]]));
              i++;
            } else await guestSends(sim, [frame], via === 'pages' ? 'pages' : undefined);
          }
          await sim.guest.until(() => sim.peerSink.frames.length === before + items.length);
          const got = sim.peerSink.frames.slice(before);
          expect(got.every((f, i) => sameBytes(f, items[i][0]))).toBe(true);
          sent += items.length;
        },
      ),
      { numRuns: fuzzRuns(40) },
    );
    expect(sim.nic.stats.txFrames).toBe(sent);
  });

  it('property: any frame sequence from the network, in bursts of any size, reaches the guest intact and in order', async () => {
    // A small receive buffer (32 sections): long bursts run it out, and the backend waits for completions.
    const sim = await nicSim({ guest: { recvBufferBytes: 32 * 1664 } });
    await sim.guest.connect();
    // One burst longer than the buffer first, so running out is always part of the test.
    const first = Array.from({ length: 40 }, (_, k) => ethernetFrame(GUEST_MAC, PEER_MAC, 60 + k));
    for (const f of first) expect(sim.peer.send([f])).toBe(true);
    await sim.guest.until(() => sim.guest.received(0).length === first.length);
    expect(sim.guest.received(0).every((r, i) => sameBytes(r.frame, first[i]))).toBe(true);
    expect(sim.nic.stats.rxBackpressure).toBeGreaterThan(0);
    let delivered = first.length;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.array(frameArbitrary(GUEST_MAC), { minLength: 1, maxLength: 48 }), { minLength: 1, maxLength: 4 }),
        async (bursts) => {
          const before = sim.guest.received(0).length;
          const frames = bursts.flat();
          for (const burst of bursts) await peerSends(sim, burst);
          await sim.guest.until(() => sim.guest.received(0).length === before + frames.length);
          const got = sim.guest.received(0).slice(before);
          expect(got.every((r, i) => sameBytes(r.frame, frames[i]))).toBe(true);
          delivered += frames.length;
        },
      ),
      { numRuns: fuzzRuns(30) },
    );
    expect(sim.nic.stats.rxFrames).toBe(delivered);
  });

  it('frames arriving together reach the guest in one transfer-page packet; its completion frees every section', async () => {
    const sim = await nicSim();
    const info = await sim.guest.connect();
    sim.guest.holdCompletions = true;
    const burst = Array.from({ length: 10 }, (_, i) => ethernetFrame(GUEST_MAC, PEER_MAC, 100 + i));
    for (const f of burst) sim.peer.send([f]);
    await sim.guest.until(() => sim.guest.received(0).length === 10);
    expect(sim.nic.receivesInFlight).toBe(1);
    expect(sim.nic.receiveSectionsFree).toBe(info.recvSections - 10);
    const held = sim.guest.takeHeld();
    expect(held).toHaveLength(1);
    sim.guest.channel(0).rings.outbound.write({ type: 0xb, transactionId: held[0], payload: new Uint8Array(8) });
    sim.guest.poll();
    expect(sim.nic.receiveSectionsFree).toBe(info.recvSections);
    expect(sim.nic.receivesInFlight).toBe(0);
    expect(sim.guest.received(0).map((r) => r.frame.length)).toEqual(burst.map((f) => f.length));
  });

  it("Linux's cp_partial: batched messages and the next one's header in a section, its frame in page buffers", async () => {
    const sim = await nicSim();
    await sim.guest.connect();
    await fc.assert(
      fc.asyncProperty(frameArbitrary(PEER_MAC, { mtu: 1000 }), frameArbitrary(PEER_MAC), async (first, second) => {
        const before = sim.peerSink.frames.length;
        await sim.guest.until(() => sim.guest.sendPartial(first, second));
        await sim.guest.until(() => sim.peerSink.frames.length === before + 2);
        expect(sameBytes(sim.peerSink.frames[before], first) && sameBytes(sim.peerSink.frames[before + 1], second)).toBe(true);
      }),
      { numRuns: fuzzRuns(30) },
    );
    expect(sim.nic.stats.rndisErrors).toBe(0);
  });

  it('a VLAN PPI becomes an 802.1Q tag in the frame the backend gets', async () => {
    const sim = await nicSim();
    await sim.guest.connect();
    const f = ethernetFrame(PEER_MAC, GUEST_MAC, 64);
    // pri 5, cfi 0, vlan 0x123 (Linux's ndis_pkt_8021q_info bit layout)
    await sim.guest.until(() => sim.guest.send(f, { ppis: [IEEE_8021Q_INFO, 5 | (0x123 << 4)] }));
    const got = await sim.guest.until(() => sim.peerSink.frames[0]);
    expect([...got.subarray(12, 16)]).toEqual([0x81, 0x00, 0xa1, 0x23]);
    expect(sameBytes(got.subarray(0, 12), f.subarray(0, 12)) && sameBytes(got.subarray(16), f.subarray(12))).toBe(true);
    expect(sim.nic.stats.txVlanTagged).toBe(1);
  });

  it('rx VLAN offload: an 802.1Q-tagged frame reaches the guest untagged with its tag in an IEEE_8021Q_INFO PPI', async () => {
    const sim = await nicSim();
    await sim.guest.connect();
    // TCI pri 5, cfi 1, vid 0x123; an 802.1ad (0x88a8) frame and an untagged one around it.
    const ctag = tagged(ethernetFrame(GUEST_MAC, PEER_MAC, 100, (i) => (i * 3) & 0xff));
    ctag.set([0xb1, 0x23], 14);
    const stag = ethernetFrame(GUEST_MAC, PEER_MAC, 100);
    stag.set([0x88, 0xa8, 0x00, 0x07], 12);
    const plain = ethernetFrame(GUEST_MAC, PEER_MAC, 80);
    await peerSends(sim, [ctag, stag, plain]);
    const got = await sim.guest.until(() => (sim.guest.received(0).length === 3 ? sim.guest.received(0) : undefined));
    // ndis_pkt_8021q_info: pri bits 0-2, cfi 3, vlanid 4-15.
    expect(got[0].vlan).toBe(5 | (1 << 3) | (0x123 << 4));
    expect(got[0].frame.length).toBe(96);
    expect(sameBytes(got[0].frame.subarray(0, 12), ctag.subarray(0, 12)) && sameBytes(got[0].frame.subarray(12), ctag.subarray(16))).toBe(
      true,
    );
    expect(sameBytes(withVlanTag(got[0].frame, got[0].vlan!), ctag)).toBe(true);
    // A service tag is not what the PPI carries: it stays in the frame.
    expect(got[1].vlan).toBeNull();
    expect(sameBytes(got[1].frame, stag)).toBe(true);
    expect(got[2].vlan).toBeNull();
    expect(sim.nic.stats.rxVlanOffloaded).toBe(1);
  });

  it('rx VLAN offload is off for a guest whose NDIS config does not announce ieee8021q, and with rxVlanOffload: false', async () => {
    const frame = tagged(ethernetFrame(GUEST_MAC, PEER_MAC, 90, (i) => (i * 5) & 0xff));
    const off = await nicSim({ nic: { rxVlanOffload: false } });
    await off.guest.connect();
    const plainGuest = await nicSim();
    await plainGuest.guest.connect();
    sendNdisConfig(plainGuest, 1514); // capability 0: no ieee8021q
    for (const sim of [off, plainGuest]) {
      await peerSends(sim, [frame]);
      const r = await sim.guest.until(() => sim.guest.received(0)[0]);
      expect(r.vlan).toBeNull();
      expect(sameBytes(r.frame, frame)).toBe(true);
      expect(sim.nic.stats.rxVlanOffloaded).toBe(0);
    }
  });

  it('a guest frame past MTU + 14 goes out only when it carries its own tag (not with a VLAN PPI adding a second)', async () => {
    const sim = await nicSim();
    await sim.guest.connect();
    const own = tagged(ethernetFrame(PEER_MAC, GUEST_MAC, 1518, () => 7));
    // In send sections: the tag is read in place in the send buffer.
    await guestSends(sim, [ethernetFrame(PEER_MAC, GUEST_MAC, 1515), own], 'section');
    await sim.guest.until(() => sim.guest.send(tagged(ethernetFrame(PEER_MAC, GUEST_MAC, 1518)), { ppis: [IEEE_8021Q_INFO, 0x10] }));
    await guestSends(sim, [ethernetFrame(PEER_MAC, GUEST_MAC, 60)]);
    await sim.guest.until(() => sim.peerSink.frames.length === 2);
    expect(sim.peerSink.frames.map((f) => f.length)).toEqual([1518, 60]);
    expect(sameBytes(sim.peerSink.frames[0], own)).toBe(true);
    expect(sim.nic.stats.txBadSize).toBe(2);
  });

  it('an exhausted receive buffer holds frames back (backend paused) and loses none once the guest completes', async () => {
    // 16 KiB receive buffer: ~10 sections of ~1.6 KiB.
    const sim = await nicSim({ guest: { recvBufferBytes: 16 << 10 }, capacity: 8 });
    const info = await sim.guest.connect();
    sim.guest.holdCompletions = true;
    const frames = Array.from({ length: 60 }, (_, i) => ethernetFrame(GUEST_MAC, PEER_MAC, 1000, (j) => (i + j) & 0xff));
    let refused = 0;
    let sent = 0;
    // The peer sends until the port says it is full: the NIC refused frames for want of sections.
    while (sent < frames.length && sim.peer.send([frames[sent]])) sent++;
    if (sent < frames.length) {
      sent++; // the refused frame was taken into the port's queue all the same
      refused++;
    }
    // The frames written go out together (one transfer-page packet) once the burst is over.
    await sim.guest.until(() => sim.guest.received(0).length === info.recvSections);
    expect(sim.nic.stats.rxBackpressure).toBeGreaterThan(0);
    expect(refused).toBe(1);
    // The guest completes: sections come back, the NIC resumes the port, the rest flows.
    sim.guest.holdCompletions = false;
    const rest = peerSends(sim, frames.slice(sent));
    await sim.guest.until(() => sim.guest.received(0).length === frames.length);
    await rest;
    expect(sim.guest.received(0).every((r, i) => sameBytes(r.frame, frames[i]))).toBe(true);
    expect(sim.peer.stats.overflowDrops).toBe(0);
  });

  it('a full guest ring (small ring, guest not polling) waits, then everything arrives in order', async () => {
    // One burst of 2000 frames: 32 transfer-page packets of up to 64 ranges, far more than a 4 KiB ring holds.
    const sim = await nicSim({ guest: { ringPages: 2, recvBufferBytes: 4 << 20 }, capacity: 4096 });
    await sim.guest.connect();
    const frames = Array.from({ length: 2000 }, (_, i) => ethernetFrame(GUEST_MAC, PEER_MAC, 60 + (i % 50), () => i & 0xff));
    for (const f of frames) sim.peer.send([f]);
    await sim.guest.until(() => sim.guest.received(0).length === frames.length);
    expect(sim.guest.received(0).every((r, i) => sameBytes(r.frame, frames[i]))).toBe(true);
    expect(sim.attached.openChannels()[0].queue.stats.sendsWaited).toBeGreaterThan(0);
    expect(sim.nic.stats.rxBackpressure).toBeGreaterThan(0);
  });

  it('a backend that stops taking frames stops the guest (sends stay uncompleted), then all of them go out', async () => {
    const sim = await nicSim({ capacity: 4 });
    await sim.guest.connect();
    sim.peerSink.accept = false;
    const frames = Array.from({ length: 100 }, (_, i) => ethernetFrame(PEER_MAC, GUEST_MAC, 200, () => i & 0xff));
    let queued = 0;
    for (; queued < frames.length; queued++) {
      sim.guest.poll();
      if (!sim.guest.send(frames[queued])) break;
    }
    // The send sections ran out: the host stopped completing because the backend is full.
    expect(queued).toBeLessThan(frames.length);
    expect(sim.peer.queued).toBeGreaterThanOrEqual(4);
    sim.peerSink.accept = true;
    sim.peer.resume();
    await guestSends(sim, frames.slice(queued));
    await sim.guest.until(() => sim.peerSink.frames.length === frames.length);
    expect(sim.peerSink.frames.every((f, i) => sameBytes(f, frames[i]))).toBe(true);
  });

  it('vRSS: subchannels on request, the send table, each flow on the queue its Toeplitz hash picks, with the hash', async () => {
    const sim = await nicSim({ nic: { maxQueues: 4 }, guest: { queues: 4 } });
    const info = await sim.guest.connect();
    expect(info.queues).toBe(4);
    expect(sim.nic.openQueues).toBe(4);
    expect(sim.guest.sendTable).toEqual(Array.from({ length: 16 }, (_, i) => i % 4));
    const flows = fc.sample(tcp4FlowArbitrary(), { numRuns: 64, seed: 7 });
    const frames = flows.map((flow) => tcp4Frame(GUEST_MAC, flow, 10));
    await peerSends(sim, frames);
    await sim.guest.until(() => [0, 1, 2, 3].reduce((n, q) => n + sim.guest.received(q).length, 0) === frames.length);
    const expected: Uint8Array[][] = [[], [], [], []];
    for (const f of frames) {
      const hash = rssHash(DEFAULT_RSS_KEY, NDIS_HASH_IPV4 | NDIS_HASH_TCP_IPV4, f)!;
      expected[(hash % 128) % 4].push(f); // Linux's table: entry i -> queue i % 4
    }
    for (let q = 0; q < 4; q++) {
      const got = sim.guest.received(q);
      expect(got.map((r) => Buffer.from(r.frame).toString('hex'))).toEqual(expected[q].map((f) => Buffer.from(f).toString('hex')));
      for (const r of got) expect(r.hash).toBe(rssHash(DEFAULT_RSS_KEY, NDIS_HASH_IPV4 | NDIS_HASH_TCP_IPV4, r.frame));
    }
    expect(expected.filter((e) => e.length > 0).length).toBeGreaterThan(1);
    // Guest frames on a subchannel go out too.
    await guestSends(sim, [ethernetFrame(PEER_MAC, GUEST_MAC, 80)], undefined, 2);
    await sim.guest.until(() => sim.peerSink.frames.length === 1);
  });

  it('guest to host on 4 queues: 200 frames each, interleaved, reach the backend in order per queue, none lost or doubled', async () => {
    const sim = await nicSim({ nic: { maxQueues: 4 }, guest: { queues: 4, sendBufferBytes: 256 << 10 }, capacity: 1024 });
    expect((await sim.guest.connect()).queues).toBe(4);
    const perQueue = 200;
    // Payload: queue, sequence (u16), then bytes derived from both; sizes vary, some go through page buffers.
    const frameFor = (q: number, seq: number): Uint8Array => {
      const f = ethernetFrame(PEER_MAC, GUEST_MAC, 60 + ((seq * 37 + q * 11) % 1400), (i) => (i * q + seq) & 0xff);
      f[14] = q;
      f[15] = seq >> 8;
      f[16] = seq & 0xff;
      return f;
    };
    const next = [0, 0, 0, 0];
    // Round robin over the queues, a few frames each turn, so the host has all four rings busy at once.
    while (next.some((n) => n < perQueue)) {
      await sim.guest.until(() => {
        let sent = 0;
        for (let q = 0; q < 4; q++) {
          sim.guest.batch(() => {
            for (let k = 0; k < 8 && next[q] < perQueue; k++, next[q]++, sent++) {
              const seq = next[q];
              if (!sim.guest.send(frameFor(q, seq), { queue: q, via: seq % 5 === 4 ? 'pages' : undefined })) break;
            }
          }, q);
        }
        return sent > 0 || next.every((n) => n >= perQueue);
      });
    }
    await sim.guest.until(() => sim.peerSink.frames.length >= 4 * perQueue);
    sim.guest.poll();
    expect(sim.peerSink.frames).toHaveLength(4 * perQueue);
    const seen: number[][] = [[], [], [], []];
    for (const f of sim.peerSink.frames) {
      const q = f[14];
      const seq = (f[15] << 8) | f[16];
      expect(sameBytes(f, frameFor(q, seq))).toBe(true);
      seen[q].push(seq);
    }
    const inOrder = Array.from({ length: perQueue }, (_, i) => i);
    for (let q = 0; q < 4; q++) expect(seen[q]).toEqual(inOrder);
    // The queues really interleaved at the backend (not one queue after another).
    const firstQueues = sim.peerSink.frames.slice(0, 64).map((f) => f[14]);
    expect(new Set(firstQueues).size).toBeGreaterThan(1);
    expect(sim.nic.stats).toMatchObject({ txFrames: 4 * perQueue, txBadSize: 0, rndisErrors: 0, nvspErrors: 0 });
  });

  it('the packet filter: nothing before the guest sets it, then directed and broadcast only', async () => {
    const sim = await nicSim();
    await sim.guest.connect();
    await sim.guest.setPacketFilter(0);
    sim.peer.send([ethernetFrame(GUEST_MAC, PEER_MAC, 60)]);
    expect(sim.nic.stats.rxNotReady).toBe(1);
    await sim.guest.setPacketFilter(0x9); // DIRECTED | BROADCAST
    const other = ethernetFrame(Uint8Array.from([2, 9, 9, 9, 9, 9]), PEER_MAC, 60);
    const multicast = ethernetFrame(Uint8Array.from([1, 0, 0x5e, 0, 0, 1]), PEER_MAC, 60);
    const broadcast = ethernetFrame(new Uint8Array(6).fill(0xff), PEER_MAC, 60);
    const mine = ethernetFrame(GUEST_MAC, PEER_MAC, 60);
    sim.peer.send([other]);
    sim.peer.send([multicast]);
    sim.peer.send([broadcast]);
    sim.peer.send([mine]);
    await sim.guest.until(() => sim.guest.received(0).length === 2);
    expect(sim.guest.received(0).map((r) => r.frame[0])).toEqual([0xff, GUEST_MAC[0]]);
    expect(sim.nic.stats.rxFiltered).toBe(2);
  });
});

describe('netvsp sessions', () => {
  it('a second session (the guest closes and reopens, as Linux does for an MTU change) gets fresh subchannels 1..n', async () => {
    const sim = await nicSim({ nic: { maxQueues: 3 }, guest: { queues: 3 } });
    expect((await sim.guest.connect()).queues).toBe(3);
    await sim.guest.close();
    // The old subchannels were rescinded; the guest released them.
    await sim.guest.until(() => [...sim.vmbus.offers.values()].filter((o) => o.sub_channel_index > 0 && !o.rescinded).length === 0);
    sim.guest = new NetvscClient({ vmbus: sim.vmbus, memory: sim.memory, pages: sim.pages, relid: sim.attached.channel.relid, queues: 3 });
    const info = await sim.guest.connect();
    expect(info.queues).toBe(3);
    const live = [...sim.vmbus.offers.values()].filter((o) => o.sub_channel_index > 0 && !o.rescinded).map((o) => o.sub_channel_index);
    expect(live.sort()).toEqual([1, 2]);
    for (const q of [0, 1, 2]) await guestSends(sim, [ethernetFrame(PEER_MAC, GUEST_MAC, 60 + q)], undefined, q);
    await sim.guest.until(() => sim.peerSink.frames.length === 3);
  });
});
