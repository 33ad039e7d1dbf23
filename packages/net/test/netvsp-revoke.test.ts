/**
 * NVSP's buffer revokes (Linux netvsc_revoke_recv_buf / _send_buf, sent before the GPADLs go)
 * and the offload PPIs a guest may put on its frames.
 */
import { describe, expect, it } from 'vitest';
import { VM_PKT_DATA_INBAND } from '@hvemu/vmbus';
import {
  encodeNvsp,
  NETVSC_RECEIVE_BUFFER_ID,
  NETVSC_SEND_BUFFER_ID,
  nvsp_1_message_revoke_receive_buffer,
  nvsp_1_message_revoke_send_buffer,
  NVSP_MSG1_TYPE_REVOKE_RECV_BUF,
  NVSP_MSG1_TYPE_REVOKE_SEND_BUF,
  TCP_LARGESEND_PKTINFO,
  TCPIP_CHKSUM_PKTINFO,
} from '@hvemu/net';
import { ethernetFrame } from '@hvemu/net/testing';
import { GUEST_MAC, nicSim, PEER_MAC, sameBytes, type NicSim } from './helpers/sim.js';

function revoke(sim: NicSim, which: 'receive' | 'send', id: number): void {
  const payload =
    which === 'receive'
      ? encodeNvsp(NVSP_MSG1_TYPE_REVOKE_RECV_BUF, nvsp_1_message_revoke_receive_buffer, { id })
      : encodeNvsp(NVSP_MSG1_TYPE_REVOKE_SEND_BUF, nvsp_1_message_revoke_send_buffer, { id });
  expect(sim.guest.channel(0).rings.outbound.write({ type: VM_PKT_DATA_INBAND, transactionId: 0, payload })).toBe(true);
  sim.guest.poll();
}

/** One frame from the peer: whether the guest got it intact within a few turns. */
async function peerFrameReaches(sim: NicSim, size: number): Promise<boolean> {
  const had = sim.guest.received(0).length;
  const frame = ethernetFrame(GUEST_MAC, PEER_MAC, size, (i) => (i + size) & 0xff);
  sim.peer.send([frame]);
  for (let turn = 0; turn < 20; turn++) {
    sim.guest.poll();
    await new Promise((r) => setImmediate(r));
    const got = sim.guest.received(0)[had];
    if (got) return sameBytes(got.frame, frame);
  }
  return false;
}

describe('NVSP buffer revokes', () => {
  it('REVOKE_RECV_BUF: frames stop reaching the receive buffer (rxNotReady); a wrong id or a second revoke changes nothing, counted', async () => {
    const sim = await nicSim();
    await sim.guest.connect();
    revoke(sim, 'receive', NETVSC_RECEIVE_BUFFER_ID + 1);
    expect(sim.nic.stats.nvspErrors).toBe(1);
    expect(await peerFrameReaches(sim, 100)).toBe(true);
    revoke(sim, 'receive', NETVSC_RECEIVE_BUFFER_ID);
    const notReady = sim.nic.stats.rxNotReady;
    expect(await peerFrameReaches(sim, 101)).toBe(false);
    expect(sim.nic.stats.rxNotReady).toBe(notReady + 1);
    revoke(sim, 'receive', NETVSC_RECEIVE_BUFFER_ID);
    expect(sim.nic.stats.nvspErrors).toBe(2);
    // Guest to host still works: the send buffer is another buffer.
    await sim.guest.until(() => sim.guest.send(ethernetFrame(PEER_MAC, GUEST_MAC, 90)));
    await sim.guest.until(() => sim.peerSink.frames.length === 1);
  });

  it('REVOKE_SEND_BUF: sends naming a section are refused (badSections), page-buffer sends still go out', async () => {
    const sim = await nicSim();
    await sim.guest.connect();
    revoke(sim, 'send', NETVSC_SEND_BUFFER_ID + 1);
    expect(sim.nic.stats.nvspErrors).toBe(1);
    revoke(sim, 'send', NETVSC_SEND_BUFFER_ID);
    await sim.guest.until(() => sim.guest.send(ethernetFrame(PEER_MAC, GUEST_MAC, 80), { via: 'section' }));
    await sim.guest.until(() => sim.nic.stats.badSections === 1);
    const viaPages = ethernetFrame(PEER_MAC, GUEST_MAC, 81, () => 0x3c);
    await sim.guest.until(() => sim.guest.send(viaPages, { via: 'pages' }));
    const got = await sim.guest.until(() => sim.peerSink.frames[0]);
    expect(sameBytes(got, viaPages)).toBe(true);
    expect(sim.peerSink.frames.length).toBe(1);
    revoke(sim, 'send', NETVSC_SEND_BUFFER_ID);
    expect(sim.nic.stats.nvspErrors).toBe(2);
  });
});

describe('offload PPIs on guest frames', () => {
  it('checksum and LSO requests are counted (the host offers neither: frames go out as the guest built them)', async () => {
    const sim = await nicSim();
    await sim.guest.connect();
    const frames = [0, 1, 2, 3].map((k) => ethernetFrame(PEER_MAC, GUEST_MAC, 120 + k, (i) => (i * k) & 0xff));
    await sim.guest.until(() => sim.guest.send(frames[0], { ppis: [TCPIP_CHKSUM_PKTINFO, 0x15] }));
    await sim.guest.until(() => sim.guest.send(frames[1], { ppis: [TCP_LARGESEND_PKTINFO, 0x80005a0] }));
    // A zero value asks for nothing.
    await sim.guest.until(() => sim.guest.send(frames[2], { ppis: [TCPIP_CHKSUM_PKTINFO, 0, TCP_LARGESEND_PKTINFO, 0] }));
    await sim.guest.until(() => sim.guest.send(frames[3], { ppis: [TCPIP_CHKSUM_PKTINFO, 1, TCP_LARGESEND_PKTINFO, 1] }));
    await sim.guest.until(() => sim.peerSink.frames.length === 4);
    expect(sim.peerSink.frames.every((f, i) => sameBytes(f, frames[i]))).toBe(true);
    expect(sim.nic.stats).toMatchObject({ txChecksumRequests: 2, txLsoRequests: 2 });
  });
});
