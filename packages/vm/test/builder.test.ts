/**
 * buildVm: one composition on every backend. On MSHV and WHPX (their fake layers here) the
 * hypervisor owns the SynIC, so VMBus answers through the partition's port; the guest's
 * HvPostMessage arrives as a hypercall exit and reaches the same dispatcher and VMBus host.
 */
import { describe, expect, it } from 'vitest';
import { HostUsageError } from '@hvemu/common';
import { existsSync } from 'node:fs';
import { HypervisorUnavailableError, KvmPartition, MshvPartition, WhpxPartition, type AccelPartition } from '@hvemu/accel';
import { FakeMshvSys, FakeWhpxApi, mshvExits, whpxCapabilities, whpxExits } from '@hvemu/accel/testing';
import { HV_MESSAGE_HEADER_SIZE, hv_input_post_message } from '@hvemu/hvdef';
import {
  CHANNELMSG_ALLOFFERS_DELIVERED,
  CHANNELMSG_INITIATE_CONTACT,
  CHANNELMSG_OFFERCHANNEL,
  CHANNELMSG_REQUESTOFFERS,
  CHANNELMSG_VERSION_RESPONSE,
  encodeChannelMessage,
  parseChannelMessage,
  VERSION_WIN10_V5_3,
  DeviceRegistry,
  type DeviceKind,
} from '@hvemu/vmbus';
import { IC_OFFERS } from '@hvemu/util';
import { buildVm, defaultDevices, deviceTraceHeader, openPartition } from '@hvemu/vm';

const CONTACT_GPA = 0x2000;
const OFFERS_GPA = 0x3000;
const VMBUS_MESSAGE_CONNECTION_ID_4 = 4;

/** What each backend's fake layer needs to run a guest that makes two HvPostMessage calls. */
interface FakeBackend {
  name: string;
  create(): { partition: AccelPartition; script(control: bigint, input: bigint): void; posted(): Uint8Array[] };
}

const backends: FakeBackend[] = [
  {
    name: 'MSHV (fake /dev/mshv)',
    create() {
      const sys = new FakeMshvSys();
      const partition = MshvPartition.create({ vcpuCount: 1, memory: [{ gpa: 0, size: 0x100000 }] }, sys);
      return {
        partition,
        script: (control, input) => sys.script(0, mshvExits.hypercall(control, input)),
        posted: () => sys.posted.map((p) => p.message.subarray(HV_MESSAGE_HEADER_SIZE)),
      };
    },
  },
  {
    name: 'WHPX (fake WinHvPlatform)',
    create() {
      const api = new FakeWhpxApi({ arch: 'x64', capabilities: whpxCapabilities('x64') });
      const partition = WhpxPartition.create({ arch: 'x64', vcpuCount: 1, memory: [{ gpa: 0, size: 0x100000 }] }, api);
      return {
        partition,
        script: (control, input) => api.script(0, whpxExits.hypercall(control, input)),
        posted: () =>
          api.calls
            .filter((c) => c.fn === 'WHvPostVirtualProcessorSynicMessage')
            .map((c) => (c.args as { message: Uint8Array }).message.subarray(HV_MESSAGE_HEADER_SIZE)),
      };
    },
  },
];

/** The guest's hv_input_post_message for a channel message, at `gpa`. */
function writePost(partition: AccelPartition, gpa: number, message: Uint8Array): void {
  partition.memory.write(
    gpa,
    hv_input_post_message.encodeNew({
      connectionid: VMBUS_MESSAGE_CONNECTION_ID_4,
      message_type: 1,
      payload_size: message.length,
      payload: message,
    }),
  );
}

async function until(done: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !done(); i++) await new Promise((r) => setTimeout(r, 2));
  expect(done()).toBe(true);
}

describe('buildVm on a hypervisor-owned SynIC', () => {
  for (const backend of backends) {
    it(`${backend.name}: the ICs are offered and a guest's contact and REQUESTOFFERS are answered through the hypervisor's port`, async () => {
      const fake = backend.create();
      const vm = buildVm({ partition: fake.partition });
      try {
        expect(vm.backend).toBe(fake.partition.backend);
        expect(vm.hyperv).toBeNull(); // the hypervisor owns the SynIC
        expect(vm.synic).toBe(fake.partition.synic);
        expect([...vm.devices.keys()]).toEqual(defaultDevices().names);
        writePost(
          fake.partition,
          CONTACT_GPA,
          encodeChannelMessage(CHANNELMSG_INITIATE_CONTACT, {
            vmbus_version_requested: VERSION_WIN10_V5_3,
            target_vcpu: 0,
            interrupt_page: 2n, // msg_sint 2: the >= 5.0 view of this union
            monitor_page1: 0n,
            monitor_page2: 0n,
          }),
        );
        writePost(fake.partition, OFFERS_GPA, encodeChannelMessage(CHANNELMSG_REQUESTOFFERS, {}));
        fake.script(0x5cn, BigInt(CONTACT_GPA));
        fake.script(0x5cn, BigInt(OFFERS_GPA));
        const running = fake.partition.run();
        await until(() => fake.posted().length >= 6);
        fake.partition.stop();
        await running;
        const answers = fake.posted().map((bytes) => parseChannelMessage(bytes));
        expect(answers.map((m) => ('msgtype' in m ? m.msgtype : -1))).toEqual([
          CHANNELMSG_VERSION_RESPONSE,
          ...Array(4).fill(CHANNELMSG_OFFERCHANNEL),
          CHANNELMSG_ALLOFFERS_DELIVERED,
        ]);
        const offered = answers.flatMap((m) => ('msgtype' in m && m.msgtype === CHANNELMSG_OFFERCHANNEL ? [m.if_type] : []));
        expect(offered).toEqual([IC_OFFERS.heartbeat, IC_OFFERS.shutdown, IC_OFFERS.timesync, IC_OFFERS.kvp].map((o) => o.interfaceType));
      } finally {
        vm.dispose();
        fake.partition.close();
      }
    });
  }
});

describe('buildVm', () => {
  it('composes the simulated partition with hvemu SynIC and the named devices only, in order', () => {
    const vm = buildVm({ devices: ['kvp', 'heartbeat'] });
    expect(vm.backend).toBe('simulated');
    expect(vm.synic).toBe(vm.hyperv);
    expect([...vm.devices.entries()].map(([name, d]) => [name, d.channel.relid])).toEqual([
      ['kvp', 1],
      ['heartbeat', 2],
    ]);
  });

  it('refuses unknown or repeated device names, and a spec that is not an object', () => {
    expect(() => buildVm({ devices: ['storvsp'] })).toThrow(HostUsageError);
    expect(() => buildVm({ devices: ['kvp', 'kvp'] })).toThrow('listed twice');
    expect(() => buildVm(null as never)).toThrow(HostUsageError);
  });
});

describe('openPartition', () => {
  const kvm = KvmPartition.probe();

  it("opens KVM by name (or 'auto') where it is usable, and buildVm composes hvemu's SynIC on it", () => {
    if (!kvm.ok) {
      expect(() => openPartition('kvm')).toThrow();
      return;
    }
    for (const choice of ['kvm', 'auto'] as const) {
      const p = openPartition(choice)!;
      try {
        expect(p.backend).toBe('kvm');
        const vm = buildVm({ partition: p, devices: ['heartbeat'] });
        expect(vm.hyperv).not.toBeNull();
        expect(vm.synic).toBe(vm.hyperv);
        vm.dispose();
      } finally {
        p.close();
      }
    }
  });

  it('a named hypervisor that is not here is a HypervisorUnavailableError; simulated is no partition', () => {
    if (!existsSync('/dev/mshv')) expect(() => openPartition('mshv')).toThrow(HypervisorUnavailableError);
    if (process.platform !== 'win32') expect(() => openPartition('whpx')).toThrow(HypervisorUnavailableError);
    expect(openPartition('simulated')).toBeNull();
    expect(() => openPartition('qemu' as never)).toThrow(HostUsageError);
  });
});

describe('buildVm lifecycle and trace headers', () => {
  it('start and stop reach every device that has them, start in offer order', async () => {
    const calls: string[] = [];
    const kind = (name: string): DeviceKind => ({
      name,
      offer: { interfaceType: IC_OFFERS.heartbeat.interfaceType, interfaceInstance: `00000000-0000-0000-0000-00000000000${name.length}` },
      create: () => ({
        offer: IC_OFFERS.heartbeat,
        open: () => {},
        onSignal: () => {},
        start: () => void calls.push(`start ${name}`),
        stop: async () => {
          await new Promise((r) => setTimeout(r, 5));
          calls.push(`stopped ${name}`);
        },
      }),
    });
    const vm = buildVm({ registry: new DeviceRegistry().register(kind('a'), kind('bb')) });
    await vm.start();
    await vm.stop();
    expect(calls.slice(0, 2)).toEqual(['start a', 'start bb']);
    expect(calls.slice(2).sort()).toEqual(['stopped a', 'stopped bb']);
  });

  it('deviceTraceHeader names the devices a VM offers, at relids 1..n', () => {
    const header = deviceTraceHeader('test', { devices: ['kvp', 'heartbeat'], vmbusVersion: 0x50003 });
    expect(header).toEqual({
      vmbusVersion: 0x50003,
      producer: 'test',
      devices: [
        { name: 'kvp', classId: IC_OFFERS.kvp.interfaceType, instanceId: IC_OFFERS.kvp.interfaceInstance, relid: 1 },
        { name: 'heartbeat', classId: IC_OFFERS.heartbeat.interfaceType, instanceId: IC_OFFERS.heartbeat.interfaceInstance, relid: 2 },
      ],
    });
    expect(() => deviceTraceHeader('test', { devices: ['nope'] })).toThrow(HostUsageError);
  });
});
