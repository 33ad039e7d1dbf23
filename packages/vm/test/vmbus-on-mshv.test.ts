/**
 * vmbus on a hypervisor-owned SynIC: the same VmbusHost and HypercallDispatcher as on KVM,
 * composed on the MSHV backend (fake /dev/mshv). The guest's HvPostMessage arrives as a
 * hypercall intercept, the dispatcher reads its input page from the partition's memory, and
 * the host's answer leaves through the partition's SynicPort as HvCallPostMessageDirect.
 */
import { describe, expect, it } from 'vitest';
import { MshvPartition } from '@hvemu/accel';
import { FakeMshvSys } from '@hvemu/accel/testing';
import { HypercallDispatcher } from '@hvemu/hypercalls';
import {
  CHANNELMSG_INITIATE_CONTACT,
  CHANNELMSG_VERSION_RESPONSE,
  encodeChannelMessage,
  parseChannelMessage,
  VmbusHost,
} from '@hvemu/vmbus';
import { createIntegrationComponents, offerIntegrationComponents } from '../src/ic-devices.js';
import { SIMULATED_WALL_CLOCK_MS } from '../src/sim.js';
import { ManualClock, silentLogger } from '@hvemu/common';

const INPUT_GPA = 0x2000;
const VMBUS_MESSAGE_CONNECTION = 4; // VMBUS_MESSAGE_CONNECTION_ID_4 (Linux, version >= 5.0)

/** HVMSG_HYPERCALL_INTERCEPT with RCX/RDX/R8 at their offsets in the 256-byte RUN_VP buffer. */
function hypercallIntercept(control: bigint, input: bigint, rip: bigint): Uint8Array {
  const buf = new Uint8Array(256);
  const v = new DataView(buf.buffer);
  v.setUint32(0, 0x80000050, true);
  v.setUint8(4, 196);
  v.setUint8(20, 3);
  v.setUint16(22, 0x14, true);
  v.setUint16(38, 0xa09b, true);
  v.setBigUint64(40, rip, true);
  v.setBigUint64(72, control, true);
  v.setBigUint64(80, input, true);
  return buf;
}

async function until(done: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !done(); i++) await new Promise((r) => setTimeout(r, 2));
  expect(done()).toBe(true);
}

describe('VMBus over the MSHV backend (fake /dev/mshv)', () => {
  it('answers a guest INITIATE_CONTACT through HvCallPostMessageDirect, as the same VmbusHost does on KVM', async () => {
    const sys = new FakeMshvSys();
    const p = MshvPartition.create({ vcpuCount: 1, memory: [{ gpa: 0, size: 0x100000 }] }, sys);
    const hypercalls = new HypercallDispatcher({ memory: p.memory });
    p.onHypercall((h) => ({ value: hypercalls.dispatch(h.vp, { rcx: h.control, rdx: h.input, r8: h.output }) }));
    const vmbus = new VmbusHost({ memory: p.memory, synic: p.synic, connections: hypercalls.connections, vpCount: 1 });
    const ics = createIntegrationComponents({ clock: new ManualClock(), logger: silentLogger, wallClockMs: () => SIMULATED_WALL_CLOCK_MS });
    offerIntegrationComponents(vmbus, ics);

    // The guest's hv_input_post_message: connection id, message type 1, size, INITIATE_CONTACT for 5.0.
    const contact = encodeChannelMessage(CHANNELMSG_INITIATE_CONTACT, {
      vmbus_version_requested: 0x50000,
      target_vcpu: 0,
      interrupt_page: 2n,
      monitor_page1: 0n,
      monitor_page2: 0n,
    });
    const input = new Uint8Array(16 + contact.length);
    const view = new DataView(input.buffer);
    view.setUint32(0, VMBUS_MESSAGE_CONNECTION, true);
    view.setUint32(8, 1, true);
    view.setUint32(12, contact.length, true);
    input.set(contact, 16);
    p.memory.write(INPUT_GPA, input);
    sys.script(0, hypercallIntercept(0x5cn, BigInt(INPUT_GPA), 0x1000n));

    const running = p.run();
    await until(() => sys.posted.length > 0);
    p.stop();
    await running;
    vmbus.dispose();
    p.close();

    const posted = sys.posted[0];
    expect(posted).toMatchObject({ vp: 0, sint: 2 });
    const header = new DataView(posted.message.buffer, posted.message.byteOffset);
    expect(header.getUint32(0, true)).toBe(1); // hv_message type: VMBus
    const reply = parseChannelMessage(posted.message.subarray(16, 16 + posted.message[4]));
    expect(reply).toMatchObject({ msgtype: CHANNELMSG_VERSION_RESPONSE, version_supported: 1 });
    // The hypercall completed with HV_STATUS_SUCCESS in RAX and RIP past the 3-byte call.
    expect(sys.regs(0).get(0x20000)).toBe(0n);
    expect(sys.regs(0).get(0x20010)).toBe(0x1003n);
  });
});
