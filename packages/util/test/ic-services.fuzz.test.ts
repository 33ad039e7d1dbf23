import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ManualClock, MemoryLogger } from '@hvemu/common';
import {
  GuestIcEndpoint,
  HeartbeatService,
  HV_E_FAIL,
  HV_S_OK,
  KVP_POOL_AUTO,
  KVP_POOL_EXTERNAL,
  KvpService,
  ShutdownService,
  TimesyncService,
  ICTIMESYNCFLAG_SAMPLE,
  ICTIMESYNCFLAG_SYNC,
  WLTIMEDELTA,
  parseIcMessage,
  buildIcMessage,
  type GuestIcKind,
  type IcHostService,
  type IcTransport,
} from '@hvemu/util';
import { fuzzRuns } from '../../../test/helpers.js';

/** Host service <-> simulated Linux guest, delivering packets synchronously with their transaction ids. */
function loopback<S extends IcHostService>(kind: GuestIcKind, make: (t: IcTransport) => S, tamper?: (p: Uint8Array) => Uint8Array | null) {
  const guest = new GuestIcEndpoint(kind);
  const sent: Uint8Array[] = [];
  // eslint-disable-next-line prefer-const -- assigned below, after the transport that closes over it
  let service: S;
  const transport: IcTransport = {
    send(payload, transactionId) {
      sent.push(payload);
      queueMicrotask(() => {
        const answer = guest.onPacket(payload);
        const delivered = answer && tamper ? tamper(answer) : answer;
        if (delivered) service.onPacket(delivered, transactionId);
      });
      return true;
    },
  };
  service = make(transport);
  return { guest, service, sent };
}

const settle = () => new Promise((r) => setTimeout(r, 0));

describe('IC negotiation', () => {
  it.each([
    ['heartbeat', '3.0', '3.0'],
    ['shutdown', '3.0', '3.2'],
    ['timesync', '3.0', '4.0'],
    ['kvp', '3.0', '4.0'],
  ] as const)('%s: the guest picks its first version the host offers', async (kind, framework, serviceVersion) => {
    const clock = new ManualClock();
    const make = {
      heartbeat: (t: IcTransport) => new HeartbeatService(t, clock),
      shutdown: (t: IcTransport) => new ShutdownService(t),
      timesync: (t: IcTransport) => new TimesyncService(t, clock, () => 0),
      kvp: (t: IcTransport) => new KvpService(t),
    }[kind];
    const { service, guest, sent } = loopback(kind, make);
    service.open();
    await settle();
    expect(service.state).toBe('ready');
    expect(`${service.framework!.major}.${service.framework!.minor}`).toBe(framework);
    expect(`${service.serviceVersion!.major}.${service.serviceVersion!.minor}`).toBe(serviceVersion);
    expect(guest.negotiated).not.toBeNull();
    // The first packet is a NEGOTIATE request with TRANSACTION | REQUEST.
    expect(parseIcMessage(sent[0]).header).toMatchObject({ messageType: 0, flags: 3 });
  });

  it('marks the service unsupported when the guest has no common version', async () => {
    const { service } = loopback(
      'heartbeat',
      (t) => new HeartbeatService(t, new ManualClock()),
      (answer) => {
        // The guest answers with empty lists (counts 0/0): no common version.
        const out = answer.slice();
        out.fill(0, 28, 36);
        return out;
      },
    );
    service.open();
    await settle();
    expect(service.state).toBe('unsupported');
  });
});

describe('heartbeat', () => {
  it('surfaces liveness: each beat answered with sequence + 1, at the reference time', async () => {
    const clock = new ManualClock(500n);
    const { service, guest } = loopback('heartbeat', (t) => new HeartbeatService(t, clock));
    service.open();
    await settle();
    for (let i = 0; i < 3; i++) {
      clock.advance(20_000_000n);
      expect(service.beat()).toBe(true);
      await settle();
    }
    expect(guest.heartbeats).toEqual([0n, 2n, 4n]);
    expect(service.status).toEqual({ lastSequence: 5n, lastAnswer: 60_000_500n, missed: 0, badAnswers: 0 });
  });

  it('counts a beat sent while the last is unanswered as missed', async () => {
    // A guest that negotiates but never answers heartbeats.
    const { service } = loopback(
      'heartbeat',
      (t) => new HeartbeatService(t, new ManualClock()),
      (a) => (parseIcMessage(a).header.messageType === 1 ? null : a),
    );
    service.open();
    await settle();
    expect(service.beat()).toBe(true);
    await settle();
    expect(service.beat()).toBe(false);
    expect(service.beat()).toBe(false);
    expect(service.status.missed).toBe(2);
    expect(service.status.lastSequence).toBeNull();
  });
});

describe('shutdown', () => {
  it('delivers the request and surfaces the guest answer', async () => {
    const { service, guest } = loopback('shutdown', (t) => new ShutdownService(t));
    service.open();
    await settle();
    await expect(service.shutdown({ kind: 'reboot', force: true, message: 'maintenance' })).resolves.toEqual({ status: HV_S_OK });
    expect(guest.shutdowns).toEqual([{ kind: 'reboot', force: true, reasonCode: 0x80000000 }]);
    // Linux refuses hibernation when it cannot hibernate.
    await expect(service.shutdown({ kind: 'hibernate' })).resolves.toEqual({ status: HV_E_FAIL });
  });

  it('fails pending requests with null when the channel closes', async () => {
    const { service } = loopback(
      'shutdown',
      (t) => new ShutdownService(t),
      (a) => (parseIcMessage(a).header.messageType === 3 ? null : a),
    );
    service.open();
    await settle();
    const answer = service.shutdown({ kind: 'poweroff' });
    service.close();
    await expect(answer).resolves.toBeNull();
  });
});

describe('timesync', () => {
  it('sends a SYNC sample on readiness and SAMPLEs after, with host UTC and reference time', async () => {
    const clock = new ManualClock(1234n);
    const { service, guest } = loopback('timesync', (t) => new TimesyncService(t, clock, () => 1_000));
    service.open();
    await settle();
    clock.advance(10n);
    service.sample();
    await settle();
    expect(guest.timeSamples).toEqual([
      { parenttime: WLTIMEDELTA + 10_000_000n, vmreferencetime: 1234n, flags: ICTIMESYNCFLAG_SYNC },
      { parenttime: WLTIMEDELTA + 10_000_000n, vmreferencetime: 1244n, flags: ICTIMESYNCFLAG_SAMPLE },
    ]);
    expect(service.samplesAnswered).toBe(2);
  });
});

describe('KVP', () => {
  it('sets, gets, enumerates and deletes records in guest pools', async () => {
    const { service, guest } = loopback('kvp', (t) => new KvpService(t));
    service.open();
    await settle();
    expect((await service.set(KVP_POOL_EXTERNAL, { key: 'VirtualMachineName', value: 'hvemu-demo' }))?.status).toBe(HV_S_OK);
    expect((await service.set(KVP_POOL_EXTERNAL, { key: 'Cores', value: { u32: 2 } }))?.status).toBe(HV_S_OK);
    expect(await service.get(KVP_POOL_EXTERNAL, 'VirtualMachineName')).toEqual({
      status: HV_S_OK,
      record: { key: 'VirtualMachineName', value: 'hvemu-demo' },
    });
    expect((await service.get(KVP_POOL_EXTERNAL, 'missing'))?.status).toBe(HV_E_FAIL);
    expect(await service.list(KVP_POOL_EXTERNAL)).toEqual([
      { key: 'VirtualMachineName', value: 'hvemu-demo' },
      { key: 'Cores', value: { u32: 2 } },
    ]);
    expect((await service.delete(KVP_POOL_EXTERNAL, 'Cores'))?.status).toBe(HV_S_OK);
    expect([...guest.pools.get(KVP_POOL_EXTERNAL)!.keys()]).toEqual(['VirtualMachineName']);
    guest.pools.set(KVP_POOL_AUTO, new Map([['OSName', { key: 'OSName', value: 'Linux' }]]));
    expect(await service.list(KVP_POOL_AUTO)).toEqual([{ key: 'OSName', value: 'Linux' }]);
  });
});

describe('hostile guest answers', () => {
  it('drops malformed, unsolicited and mismatched answers with a logged reason, and keeps working', async () => {
    const logger = new MemoryLogger();
    const clock = new ManualClock();
    const guest = new GuestIcEndpoint('heartbeat');
    const out: { payload: Uint8Array; txn: bigint }[] = [];
    const service = new HeartbeatService({ send: (payload, txn) => (out.push({ payload, txn }), true) }, clock, logger);
    service.onPacket(new Uint8Array(10), 1n); // truncated, unsolicited
    service.open();
    const negotiate = out[0];
    const answer = guest.onPacket(negotiate.payload)!;
    service.onPacket(answer, negotiate.txn + 5n); // wrong transaction id
    service.onPacket(negotiate.payload, negotiate.txn); // a request, not a response
    expect(service.state).toBe('negotiating');
    service.onPacket(answer, negotiate.txn);
    expect(service.state).toBe('ready');
    expect(logger.records.filter((r) => r.level === 'warn').length).toBe(3);
    // Random bytes never throw out of onPacket.
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.bigInt({ min: 0n, max: 10n }), (bytes, txn) => {
        service.onPacket(bytes, txn);
      }),
      { numRuns: fuzzRuns(500) },
    );
    expect(service.beat()).toBe(true);
  });

  it('rejects a negotiate answer choosing a version the host never offered', async () => {
    const logger = new MemoryLogger();
    const out: { payload: Uint8Array; txn: bigint }[] = [];
    const service = new HeartbeatService({ send: (payload, txn) => (out.push({ payload, txn }), true) }, new ManualClock(), logger);
    service.open();
    const bogus = buildIcMessage(
      { framework: { major: 1, minor: 0 }, messageType: 0, messageVersion: { major: 1, minor: 0 }, status: 0, transactionId: 1, flags: 5 },
      Uint8Array.of(1, 0, 1, 0, 0, 0, 0, 0, 9, 0, 9, 0, 9, 0, 9, 0),
    );
    service.onPacket(bogus, out[0].txn);
    expect(service.state).toBe('negotiating');
    expect(logger.records.some((r) => /did not offer/.test(r.message))).toBe(true);
  });
});
