/**
 * The IC demo scenario (negotiate, offers, GPADLs, open, heartbeats, shutdown) through buildVm
 * on the MSHV and WHPX compositions, on their fake layers. The hypervisor owns the SynIC there:
 * every channel message and event the host sends leaves through the partition's SynicPort as
 * the hypervisor call it makes (HvCallPostMessageDirect / WHvPostVirtualProcessorSynicMessage,
 * and their signal twins), where this test's guest picks it up as the hypervisor would deliver
 * it; the guest's HvPostMessage / HvSignalEvent reach the composition's dispatcher with the
 * registers a hypercall exit carries. Rings and GPADL pages are the partition's guest RAM.
 */
import { describe, expect, it } from 'vitest';
import { MshvPartition, WhpxPartition, type AccelPartition } from '@hvemu/accel';
import { FakeMshvSys, FakeWhpxApi, whpxCapabilities } from '@hvemu/accel/testing';
import {
  encodeControl,
  HV_MESSAGE_HEADER_SIZE,
  hv_input_post_message,
  HVCALL_POST_MESSAGE,
  HVCALL_SIGNAL_EVENT,
  resultStatus,
} from '@hvemu/hvdef';
import { GuestIcEndpoint, IC_OFFERS, type IcKind } from '@hvemu/util';
import { BumpPageAllocator, VM_PKT_DATA_INBAND, VmbusClient, type GuestChannel, type GuestTransport } from '@hvemu/vmbus';
import { buildVm, integrationComponentsOf, type Vm } from '@hvemu/vm';

const INPUT_GPA = 0x1000;

interface Offloaded {
  partition: AccelPartition;
  /** Channel messages the hypervisor was asked to deliver, oldest first (payloads). */
  posted(): Uint8Array[];
}

const backends: { name: string; create(): Offloaded }[] = [
  {
    name: 'MSHV (fake /dev/mshv)',
    create() {
      const sys = new FakeMshvSys();
      const partition = MshvPartition.create({ vcpuCount: 1, memory: [{ gpa: 0, size: 4 << 20 }] }, sys);
      return { partition, posted: () => sys.posted.map((p) => p.message) };
    },
  },
  {
    name: 'WHPX (fake WinHvPlatform)',
    create() {
      const api = new FakeWhpxApi({ arch: 'x64', capabilities: whpxCapabilities('x64') });
      const partition = WhpxPartition.create({ arch: 'x64', vcpuCount: 1, memory: [{ gpa: 0, size: 4 << 20 }] }, api);
      const posted = () =>
        api.calls.filter((c) => c.fn === 'WHvPostVirtualProcessorSynicMessage').map((c) => (c.args as { message: Uint8Array }).message);
      return { partition, posted };
    },
  },
];

/** The guest's side of the hypervisor: hypercalls as exits would carry them, messages as the SIMP would show them. */
function offloadedTransport(vm: Vm, fake: Offloaded): GuestTransport {
  let taken = 0;
  const call = (rcx: bigint, rdx: bigint): number => resultStatus(BigInt(vm.hypercalls.dispatch(0, { rcx, rdx, r8: 0n })));
  return {
    post(connectionId, payload) {
      vm.memory.write(
        INPUT_GPA,
        hv_input_post_message.encodeNew({ connectionid: connectionId, message_type: 1, payload_size: payload.length, payload }),
      );
      return call(encodeControl({ code: HVCALL_POST_MESSAGE }), BigInt(INPUT_GPA));
    },
    signal(connectionId) {
      return call(encodeControl({ code: HVCALL_SIGNAL_EVENT, fast: true }), BigInt(connectionId));
    },
    receive() {
      const all = fake.posted();
      if (taken >= all.length) return null;
      const message = all[taken++];
      const size = message[4];
      return message.slice(HV_MESSAGE_HEADER_SIZE, HV_MESSAGE_HEADER_SIZE + size);
    },
    wait: () => new Promise((r) => setImmediate(r)),
  };
}

/** What Linux hv_utils does with an open IC channel: answer each host request in its ring. */
function answerIcs(channels: Map<IcKind, { channel: GuestChannel; endpoint: GuestIcEndpoint }>): void {
  for (const { channel, endpoint } of channels.values()) {
    channel.rings.inbound.drain((p) => {
      const answer = endpoint.onPacket(new Uint8Array(p.payload()));
      if (answer) channel.rings.outbound.write({ type: VM_PKT_DATA_INBAND, transactionId: p.transactionId, payload: answer });
    });
  }
}

async function until(what: string, done: () => boolean, pump: () => void): Promise<void> {
  for (let i = 0; i < 2000 && !done(); i++) {
    pump();
    await new Promise((r) => setImmediate(r));
  }
  if (!done()) throw new Error(`timed out waiting for ${what}`);
}

describe('the IC demo scenario on the hypervisor-owned SynIC compositions', () => {
  for (const backend of backends) {
    it(`${backend.name}: negotiate, offers, GPADLs, open, three heartbeats and a shutdown`, async () => {
      const fake = backend.create();
      const vm = buildVm({ partition: fake.partition, wallClockMs: () => 0 });
      const ics = integrationComponentsOf(vm);
      try {
        const client = new VmbusClient({
          transport: offloadedTransport(vm, fake),
          memory: vm.memory,
          pages: new BumpPageAllocator(0x100, 512),
          vp: 0,
        });
        expect(await client.connect()).toBeGreaterThan(0);
        const offers = await client.requestOffers();
        const open = new Map<IcKind, { channel: GuestChannel; endpoint: GuestIcEndpoint }>();
        for (const kind of ['heartbeat', 'shutdown'] as const) {
          const offer = offers.find((o) => o.if_type === IC_OFFERS[kind].interfaceType)!;
          open.set(kind, {
            channel: await client.openChannel(offer.child_relid, { sendPages: 3, recvPages: 3 }),
            endpoint: new GuestIcEndpoint(kind),
          });
        }
        const pump = () => answerIcs(open);
        await until(
          'heartbeat and shutdown ready',
          () => ics.heartbeat.service.state === 'ready' && ics.shutdown.service.state === 'ready',
          pump,
        );
        for (let i = 1; i <= 3; i++) {
          expect(ics.heartbeat.host.beat()).toBe(true);
          await until(`heartbeat ${i}`, () => open.get('heartbeat')!.endpoint.heartbeats.length === i, pump);
        }
        const answer = ics.shutdown.host.shutdown({ kind: 'poweroff', message: 'scenario done' });
        let status: number | null | undefined;
        void answer.then((a) => (status = a?.status ?? null));
        await until('shutdown answer', () => status !== undefined, pump);
        expect(status).toBe(0);
        expect(open.get('shutdown')!.endpoint.shutdowns).toHaveLength(1);
        expect(vm.vmbus.stats.messagesLost).toBe(0);
        // Everything the host sent went through the hypervisor's port: the version, the four
        // offers, ALLOFFERS_DELIVERED, two GPADL_CREATED and two OPENCHANNEL_RESULTs as
        // messages; the IC requests' ring signals as event flags.
        expect(fake.posted().length).toBeGreaterThanOrEqual(10);
        expect(vm.synic).toBe(fake.partition.synic);
        for (const { channel } of open.values()) expect(vm.vmbus.channel(channel.relid)!.hostSignals).toBeGreaterThan(0);
      } finally {
        vm.dispose();
        fake.partition.close();
      }
    });
  }
});
