/**
 * Monitored notification: a channel offered with monitor_allocated=1 is signalled by the
 * guest through monitor page 2 alone (no hypercall); the host finds it by scanning.
 */
import { describe, expect, it } from 'vitest';
import { VM_PKT_DATA_INBAND, type ChannelHandler } from '@hvemu/vmbus';
import { createSimulatedBus } from '@hvemu/vm';

const MONITOR_PAGES = [0x4000, 0x5000] as const;

function setup() {
  return createSimulatedBus({ client: { monitorPages: MONITOR_PAGES } });
}

describe('monitored notification (MNF)', () => {
  it('the guest signals through monitor page 2 with no hypercall; a host scan delivers it', async () => {
    const t = setup();
    const received: number[] = [];
    const device: ChannelHandler = {
      onOpen: () => {},
      onSignal: (ch) => void ch.rings.inbound.drain((p) => received.push(p.payload()[0])),
    };
    const mnf = t.host.offerChannel(
      {
        interfaceType: '57164f39-9115-4e78-ab55-382f3bd5422d',
        interfaceInstance: '00000000-0000-0000-0000-000000000001',
        monitorAllocated: true,
        monitorId: 37,
      },
      device,
    );
    await t.client.connect();
    const [offer] = await t.client.requestOffers();
    expect(offer).toMatchObject({ monitor_allocated: 1, monitorid: 37 });
    const ch = await t.client.openChannel(mnf.relid);

    const callsBefore = t.dispatcher.stats.calls;
    ch.rings.outbound.write({ type: VM_PKT_DATA_INBAND, payload: Uint8Array.of(9) });
    expect(t.dispatcher.stats.calls).toBe(callsBefore); // no HvSignalEvent
    expect(t.memory.readU32(MONITOR_PAGES[1] + 8 + 8)).toBe(1 << 5); // group 1, bit 5
    expect(received).toEqual([]);

    expect(t.host.scanMonitorPage()).toBe(1);
    expect(received).toEqual([9]);
    expect(t.memory.readU32(MONITOR_PAGES[1] + 8 + 8)).toBe(0); // taken
    expect(t.host.scanMonitorPage()).toBe(0);
  });

  it('ignores trigger bits that no offer owns', async () => {
    const t = setup();
    t.host.offerChannel(
      {
        interfaceType: '57164f39-9115-4e78-ab55-382f3bd5422d',
        interfaceInstance: '00000000-0000-0000-0000-000000000002',
        monitorAllocated: true,
        monitorId: 1,
      },
      { onOpen: () => {} },
    );
    await t.client.connect();
    t.memory.writeU32(MONITOR_PAGES[1] + 8, 0xffff_fff0); // hostile: bits of monitor ids nobody has
    expect(t.host.scanMonitorPage()).toBe(0);
  });
});
