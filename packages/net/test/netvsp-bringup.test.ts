/** The netvsc guest's bring-up against netvsp, in Linux's order, for every NVSP version. */
import { describe, expect, it } from 'vitest';
import {
  NVSP_PROTOCOL_VERSION_1,
  NVSP_PROTOCOL_VERSION_2,
  NVSP_PROTOCOL_VERSION_4,
  NVSP_PROTOCOL_VERSION_5,
  NVSP_PROTOCOL_VERSION_6,
  NVSP_PROTOCOL_VERSION_61,
  NDIS_OFFLOAD_PARAMETERS_REVISION_1,
  NDIS_OFFLOAD_PARAMETERS_REVISION_2,
  NDIS_OFFLOAD_PARAMETERS_REVISION_3,
  RNDIS_STATUS_MEDIA_CONNECT,
  RNDIS_STATUS_MEDIA_DISCONNECT,
} from '@hvemu/net';
import { ethernetFrame } from '@hvemu/net/testing';
import { GUEST_MAC, nicSim, PEER_MAC, sameBytes } from './helpers/sim.js';

describe('netvsp bring-up', () => {
  it('a Linux-order guest negotiates 6.1 and learns the MAC, MTU, link, sections', async () => {
    const sim = await nicSim();
    const info = await sim.guest.connect();
    expect(info.version).toBe(NVSP_PROTOCOL_VERSION_61);
    expect([...info.mac]).toEqual([...GUEST_MAC]);
    expect(info.mtu).toBe(1500);
    expect(info.linkUp).toBe(true);
    expect(info.linkSpeed).toBe(100_000_000); // 10 Gbit/s in 100 bit/s units
    expect(info.recvSectionSize).toBeGreaterThanOrEqual(1514 + 44);
    expect(info.recvSections).toBe(Math.floor((256 << 10) / info.recvSectionSize));
    expect(info.sendSectionSize).toBe(6144);
    expect(info.pktAlignment).toBe(8);
    expect(info.hwcapsRevision).toBe(NDIS_OFFLOAD_PARAMETERS_REVISION_3);
    expect(sim.guest.vfAssociations).toBe(1);
    expect(sim.nic.rndis.packetFilter).toBe(0x0d);
    expect(sim.nic.rndis.offloads.params?.ip_v4_csum).toBe(1);
    expect(sim.nic.stats).toMatchObject({ nvspErrors: 0, rndisErrors: 0 });
  });

  it.each([
    [NVSP_PROTOCOL_VERSION_6, NDIS_OFFLOAD_PARAMETERS_REVISION_3],
    [NVSP_PROTOCOL_VERSION_5, NDIS_OFFLOAD_PARAMETERS_REVISION_3],
    [NVSP_PROTOCOL_VERSION_4, NDIS_OFFLOAD_PARAMETERS_REVISION_2],
    [NVSP_PROTOCOL_VERSION_2, NDIS_OFFLOAD_PARAMETERS_REVISION_1],
    [NVSP_PROTOCOL_VERSION_1, NDIS_OFFLOAD_PARAMETERS_REVISION_1],
  ])('a guest that only speaks %i gets it, and frames pass both ways', async (version, rev) => {
    // The guest tries a version the host does not know first: refused, it falls back.
    const sim = await nicSim({ guest: { versions: [0x7fffffff, version] } });
    const info = await sim.guest.connect();
    expect(info.version).toBe(version);
    expect(info.hwcapsRevision).toBe(rev);
    const out = ethernetFrame(PEER_MAC, GUEST_MAC, 100);
    expect(sim.guest.send(out)).toBe(true);
    await sim.guest.until(() => sim.peerSink.frames.length === 1);
    expect(sameBytes(sim.peerSink.frames[0], out)).toBe(true);
    const back = ethernetFrame(GUEST_MAC, PEER_MAC, 200);
    sim.peer.send([back]);
    const got = await sim.guest.until(() => sim.guest.received(0)[0]);
    expect(sameBytes(got.frame, back)).toBe(true);
  });

  it('link state: disconnect and connect reach the guest as RNDIS indications; frames wait for the link', async () => {
    const sim = await nicSim();
    await sim.guest.connect();
    sim.nic.disconnect();
    await sim.guest.until(() => sim.guest.indications.length === 1);
    expect(sim.guest.indications).toEqual([RNDIS_STATUS_MEDIA_DISCONNECT]);
    expect(sim.guest.info.linkUp).toBe(false);
    sim.peer.send([ethernetFrame(GUEST_MAC, PEER_MAC, 60)]);
    expect(sim.nic.stats.rxNotReady).toBe(1);
    sim.nic.connect();
    await sim.guest.until(() => sim.guest.indications.length === 2);
    expect(sim.guest.indications[1]).toBe(RNDIS_STATUS_MEDIA_CONNECT);
    const link = await sim.guest.query(0x00010114);
    expect([...link.data]).toEqual([0, 0, 0, 0]);
  });
});
