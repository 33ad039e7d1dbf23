/**
 * The control path's sequence, fuzzed: the pure state machine against a small model of its
 * rules, and random vstor packets (any operation, body, length, packet type) on a live channel,
 * after which the guest's proper init still works.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fuzzRuns } from '../../../test/helpers.js';
import {
  INITIAL_STATE,
  step,
  STATUS_INVALID_DEVICE_STATE,
  STATUS_REVISION_MISMATCH,
  STATUS_SUCCESS,
  subchannelState,
  VMSTOR_PROTO_VERSIONS,
  VSTOR_OPERATION_BEGIN_INITIALIZATION,
  VSTOR_OPERATION_CREATE_SUB_CHANNELS,
  VSTOR_OPERATION_END_INITIALIZATION,
  VSTOR_OPERATION_EXECUTE_SRB,
  VSTOR_OPERATION_QUERY_PROPERTIES,
  VSTOR_OPERATION_QUERY_PROTOCOL_VERSION,
  VSTOR_PACKET_SIZE,
  vstor_packet_header,
  type SessionState,
} from '@hvemu/storage';
import {
  VM_PKT_DATA_INBAND,
  VM_PKT_DATA_USING_GPA_DIRECT,
  VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED,
  encodeGpaDirectHeader,
} from '@hvemu/vmbus';
import { storageSim, settle } from './helpers/sim.mjs';

const CONFIG = { versions: [0x0602, 0x0600, 0x0501], maxSubchannels: 3, maxTransferBytes: 1 << 20 };

const request = fc.record({
  operation: fc.oneof(fc.integer({ min: 0, max: 15 }), fc.constantFrom(7, 8, 9, 10, 13), fc.integer({ min: 0, max: 0xffffffff })),
  flags: fc.integer({ min: 0, max: 0xffffffff }),
  body: fc.oneof(
    fc.uint8Array({ minLength: 36, maxLength: 52 }),
    fc
      .constantFrom(...VMSTOR_PROTO_VERSIONS, 0x0100, 0x0a00)
      .map((v) => new Uint8Array(Array.from({ length: 52 }, (_, i) => (i === 0 ? v & 0xff : i === 1 ? v >> 8 : 0)))),
  ),
});

describe('storvsp control sequence', () => {
  it('follows its rules for any sequence: transitions, versions, subchannel counts, subchannels take SRBs only', () => {
    fc.assert(
      fc.property(fc.array(request, { maxLength: 40 }), fc.boolean(), (requests, sub) => {
        let state: SessionState = sub ? subchannelState({ ...INITIAL_STATE, version: 0x0602, phase: 'ready' }) : INITIAL_STATE;
        for (const r of requests) {
          const before = state;
          const out = step(state, { ...r, length: 64 }, CONFIG);
          state = out.state;
          const op = r.operation;
          const version = r.body[0] | (r.body[1] << 8);
          if (before.sub) {
            expect(out.state).toBe(before);
            expect(out.status).not.toBe(STATUS_SUCCESS);
            continue;
          }
          if (op === VSTOR_OPERATION_BEGIN_INITIALIZATION) expect(out.state).toMatchObject({ phase: 'negotiating', version: 0 });
          else if (op === VSTOR_OPERATION_QUERY_PROTOCOL_VERSION) {
            if (before.phase !== 'negotiating') expect(out.status).toBe(STATUS_INVALID_DEVICE_STATE);
            else if (CONFIG.versions.includes(version)) expect(out.state).toMatchObject({ phase: 'versioned', version });
            else expect(out.status).toBe(STATUS_REVISION_MISMATCH);
          } else if (op === VSTOR_OPERATION_END_INITIALIZATION) {
            expect(out.status === STATUS_SUCCESS).toBe(before.phase === 'versioned');
          } else if (op === VSTOR_OPERATION_QUERY_PROPERTIES) {
            expect(out.status === STATUS_SUCCESS).toBe(before.phase === 'versioned');
          } else if (op === VSTOR_OPERATION_CREATE_SUB_CHANNELS) {
            if (out.status === STATUS_SUCCESS) expect(out.offerSubchannels).toBe(version);
            else expect(out.offerSubchannels).toBeUndefined();
          } else if (out.status !== STATUS_SUCCESS) expect(out.state).toBe(before);
          // Invariants of every state.
          expect(out.state.version === 0 || CONFIG.versions.includes(out.state.version)).toBe(true);
          expect(out.state.phase === 'versioned' || out.state.phase === 'ready' ? out.state.version !== 0 : out.state.version === 0).toBe(
            true,
          );
          expect(out.state.subchannels).toBeLessThanOrEqual(CONFIG.maxSubchannels);
          if (out.status !== STATUS_SUCCESS) expect(out.fault).toBeTruthy();
        }
      }),
      { numRuns: fuzzRuns(500) },
    );
  });

  it('a live channel answers every request-sized packet once, in any order of anything, and the proper init works afterwards', async () => {
    const packet = fc.record({
      operation: fc.oneof(fc.integer({ min: 0, max: 14 }), fc.constant(VSTOR_OPERATION_EXECUTE_SRB)),
      length: fc.oneof(fc.constantFrom(48, 64), fc.integer({ min: 0, max: 96 })),
      body: fc.uint8Array({ minLength: 84, maxLength: 84 }),
      gpaDirect: fc.boolean(),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(packet, { maxLength: 24 }), async (packets) => {
        const sim = storageSim();
        await sim.vmbus.connect();
        await sim.vmbus.requestOffers();
        const ch = await sim.vmbus.openChannel(sim.attached.channel.relid, { sendPages: 8, recvPages: 8 });
        const answered = new Map<bigint, number>();
        let expected = 0;
        packets.forEach((p, i) => {
          const payload = new Uint8Array(p.length);
          payload.set(p.body.subarray(0, p.length));
          if (p.length >= 4) new DataView(payload.buffer).setUint32(0, p.operation, true);
          const id = BigInt(i + 1);
          const header = p.gpaDirect ? encodeGpaDirectHeader([{ byteCount: 512, byteOffset: 0, pfns: [0x900] }]) : undefined;
          ch.rings.outbound.write({
            type: p.gpaDirect ? VM_PKT_DATA_USING_GPA_DIRECT : VM_PKT_DATA_INBAND,
            flags: VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED,
            transactionId: id,
            header,
            payload,
          });
          // The ring pads a payload to 8 bytes: that is the length the host sees.
          if (Math.ceil(p.length / 8) * 8 >= 48) expected++;
        });
        await settle(30);
        ch.rings.inbound.drain((r) => answered.set(r.transactionId, (answered.get(r.transactionId) ?? 0) + 1));
        expect(answered.size).toBe(expected);
        expect([...answered.values()].every((n) => n === 1)).toBe(true);
        // Then Linux's init on the same channel: BEGIN starts over.
        const client = sim.makeClient();
        // The client opens its own primary: close the raw one first.
        await sim.vmbus.closeChannel(ch);
        const init = await client.connect();
        expect(init.version).toBe(0x0602);
        expect((await client.read(0, 1, 512)).srbStatus).toBe(1);
        expect(sim.logger.records.filter((r) => r.level === 'error')).toEqual([]);
      }),
      { numRuns: fuzzRuns(40) },
    );
  });

  it('answers in 48 bytes before a version when asked in 48, and in 64 after a Win8+ agreement', async () => {
    const sim = storageSim();
    await sim.vmbus.connect();
    await sim.vmbus.requestOffers();
    const client = sim.makeClient({ legacySizes: true });
    await client.open();
    const begin = await client.control(VSTOR_OPERATION_BEGIN_INITIALIZATION);
    expect(begin.length).toBe(48);
    expect(vstor_packet_header.decode(begin).status).toBe(STATUS_SUCCESS);
    const modern = await client.control(VSTOR_OPERATION_BEGIN_INITIALIZATION, undefined, VSTOR_PACKET_SIZE);
    expect(modern.length).toBe(64);
    await client.control(VSTOR_OPERATION_QUERY_PROTOCOL_VERSION, Uint8Array.of(0x02, 0x06), 48);
    // Agreed on 6.2: every answer is 64 bytes now, whatever size the guest used.
    expect((await client.control(VSTOR_OPERATION_QUERY_PROPERTIES, undefined, 48)).length).toBe(64);
  });
});
