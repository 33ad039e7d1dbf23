/**
 * Before Win8 (VMBus < 2.4) there is no per-channel event connection in use: the guest sets
 * its relid's bit in the send half of the shared interrupt page and signals event connection
 * 2; the host sets the relid's bit in the receive half before raising the SINT. And the channel
 * a device wrote to in onOpen gets its signal once the open completes.
 */
import { describe, expect, it } from 'vitest';
import { VERSION_WIN7, VM_PKT_DATA_INBAND, VMBUS_EVENT_CONNECTION_ID, type ChannelHandler } from '@hvemu/vmbus';
import { createSimulatedBus } from '@hvemu/vm';

const INTERRUPT_PAGE = 0x6000;

function setup(versions?: number[]) {
  const flags: number[] = [];
  const bus = createSimulatedBus({
    client: { versions, interruptPage: INTERRUPT_PAGE },
    observer: { eventFlagSet: (_vp, _sint, flag) => flags.push(flag) },
  });
  return { ...bus, flags };
}

describe('pre-Win8 shared interrupt page', () => {
  it('guest -> host through the send half and event connection 2; host -> guest through the receive half', async () => {
    const t = setup([VERSION_WIN7]);
    const received: number[] = [];
    const device: ChannelHandler = {
      onOpen: () => {},
      onSignal: (ch) => {
        ch.rings.inbound.drain((p) => received.push(p.payload()[0]));
        ch.rings.outbound.write({ type: VM_PKT_DATA_INBAND, payload: Uint8Array.of(7) });
      },
    };
    const channel = t.host.offerChannel(
      {
        interfaceType: '57164f39-9115-4e78-ab55-382f3bd5422d',
        interfaceInstance: '00000000-0000-0000-0000-000000000009',
        dedicatedInterrupt: false,
      },
      device,
    );
    expect(await t.client.connect()).toBe(VERSION_WIN7);
    await t.client.requestOffers();
    const ch = await t.client.openChannel(channel.relid);

    // The guest writes a packet, sets its relid bit in the send half, and signals connection 2.
    ch.rings.outbound.write({ type: VM_PKT_DATA_INBAND, payload: Uint8Array.of(5) });
    const sendHalf = t.memory.u32Array(INTERRUPT_PAGE + 2048, 64);
    Atomics.or(sendHalf, channel.relid >>> 5, 1 << (channel.relid & 31));
    t.dispatcher.dispatch(0, { rcx: 0x5dn | (1n << 16n), rdx: BigInt(VMBUS_EVENT_CONNECTION_ID), r8: 0n });
    expect(received).toEqual([5]);
    expect(Atomics.load(sendHalf, channel.relid >>> 5)).toBe(0); // the host took the bit

    // The device's answer set the relid bit in the receive half.
    const receiveHalf = t.memory.u32Array(INTERRUPT_PAGE, 64);
    expect(Atomics.load(receiveHalf, channel.relid >>> 5) & (1 << (channel.relid & 31))).not.toBe(0);
  });

  it('a packet a device writes in onOpen reaches the guest with a signal once the open completes', async () => {
    const t = setup();
    const channel = t.host.offerChannel(
      { interfaceType: '57164f39-9115-4e78-ab55-382f3bd5422d', interfaceInstance: '00000000-0000-0000-0000-00000000000a' },
      { onOpen: (ch) => void ch.rings.outbound.write({ type: VM_PKT_DATA_INBAND, payload: Uint8Array.of(1) }) },
    );
    await t.client.connect();
    await t.client.requestOffers();
    t.flags.length = 0;
    await t.client.openChannel(channel.relid);
    expect(t.flags).toContain(channel.relid);
  });
});
