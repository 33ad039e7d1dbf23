import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '@hvemu/memory';
import {
  CHANNELMSG_ALLOFFERS_DELIVERED,
  CHANNELMSG_CLOSECHANNEL,
  CHANNELMSG_GPADL_CREATED,
  CHANNELMSG_GPADL_TEARDOWN,
  CHANNELMSG_GPADL_TORNDOWN,
  CHANNELMSG_MODIFYCHANNEL,
  CHANNELMSG_MODIFYCHANNEL_RESPONSE,
  CHANNELMSG_OFFERCHANNEL,
  CHANNELMSG_OPENCHANNEL,
  CHANNELMSG_OPENCHANNEL_RESULT,
  CHANNELMSG_RELID_RELEASED,
  CHANNELMSG_REQUESTOFFERS,
  CHANNELMSG_RESCIND_CHANNELOFFER,
  CHANNELMSG_UNLOAD,
  CHANNELMSG_UNLOAD_RESPONSE,
  CHANNELMSG_VERSION_RESPONSE,
  CHANNEL_MESSAGES,
  ChannelProtocolError,
  VERSION_WIN10_V4_1,
  VERSION_WIN10_V5,
  VERSION_WIN10_V5_2,
  VERSION_WIN10_V5_3,
  VERSION_WIN10_V6_0,
  VERSION_WIN7,
  VERSION_WIN8,
  VERSION_WIN8_1,
  VERSION_WS2008,
  VMBUS_CHANNEL_NAMED_PIPE_MODE,
  VMBUS_PIPE_TYPE_MESSAGE,
  VMBUS_VERSIONS,
  VmbusServer,
  channelConnectionId,
  encodeChannelMessage,
  encodeGpadlBody,
  encodeGpadlHeader,
  encodeInitiateContact,
  gpadlMessages,
  parseChannelMessage,
  vmbus_channel_offer_pipe,
  type ChannelMessage,
  type OfferSpec,
  type ServerAction,
} from '@hvemu/vmbus';
import { fuzzRuns } from '../../../test/helpers.js';

const RAM_PAGES = 1024;
const ram = GuestMemory.createShared(RAM_PAGES * 4096);
const VPS = 4;
const KVP = 'a9a0f4e7-5a45-4d96-b827-8a841e8c03e6';
const SCSI = 'ba6163d9-04a1-4d29-b605-72e2ffb1dc7f';
const inst = (n: number): string => `00000000-0000-0000-0000-${n.toString(16).padStart(12, '0')}`;

type Sent = ChannelMessage & { vp: number; size: number };

function sent(actions: readonly ServerAction[]): Sent[] {
  return actions.flatMap((a) => {
    if (a.kind !== 'send') return [];
    const m = parseChannelMessage(a.bytes);
    if (m instanceof ChannelProtocolError) throw m;
    expect(m.msgtype).toBe(a.msgtype);
    return [{ ...m, vp: a.vp, size: a.bytes.length }];
  });
}
const kinds = (actions: readonly ServerAction[]): string[] =>
  actions.filter((a) => a.kind !== 'log' && a.kind !== 'send').map((a) => a.kind);
const warnings = (actions: readonly ServerAction[]): string[] =>
  actions.flatMap((a) => (a.kind === 'log' && a.level === 'warn' ? [String(a.fields?.reason)] : []));

function contact(version: number, extra: Partial<Parameters<typeof encodeInitiateContact>[0]> = {}): Uint8Array {
  const modern = version >= VERSION_WIN10_V5;
  return encodeInitiateContact({
    vmbus_version_requested: version,
    target_vcpu: 1,
    ...(modern ? { msg_sint: 2, msg_vtl: 0 } : { interrupt_page: 0x5000n }),
    ...extra,
  });
}

/** A server with two offers, connected at `version`, offers requested. */
function connected(version = VERSION_WIN10_V5_3, options: Partial<ConstructorParameters<typeof VmbusServer>[0]> = {}) {
  const server = new VmbusServer({ vpCount: VPS, ram, ...options });
  const a = server.addOffer({ interfaceType: KVP, interfaceInstance: inst(1) }).relid;
  const b = server.addOffer({ interfaceType: SCSI, interfaceInstance: inst(2) }).relid;
  const g = (bytes: Uint8Array, vp = 0): ServerAction[] => server.handle({ vp, bytes });
  const r1 = g(contact(version));
  const r2 = g(encodeChannelMessage(CHANNELMSG_REQUESTOFFERS, {}));
  return { server, a, b, g, setup: [...r1, ...r2] };
}

let pfnCursor = 16;
function pages(n: number): number[] {
  if (pfnCursor + n > RAM_PAGES) pfnCursor = 16;
  const out = Array.from({ length: n }, (_, i) => pfnCursor + i);
  pfnCursor += n;
  return out;
}

function createGpadl(g: (b: Uint8Array) => ServerAction[], relid: number, handle: number, pfns: number[]): ServerAction[] {
  return gpadlMessages(relid, handle, pfns, pfns.length * 4096).flatMap((m) => g(m));
}

function openMsg(relid: number, gpadl: number, split: number, targetVp = 1, openid = relid): Uint8Array {
  return encodeChannelMessage(CHANNELMSG_OPENCHANNEL, {
    child_relid: relid,
    openid,
    ringbuffer_gpadlhandle: gpadl,
    target_vp: targetVp,
    downstream_ringbuffer_pageoffset: split,
    userdata: new Uint8Array([1, 2, 3]),
  });
}

/** GPADL + OPENCHANNEL + device accepts. */
function openChannel(env: ReturnType<typeof connected>, relid: number, handle: number, totalPages = 8, split = 4): ServerAction[] {
  const acts = createGpadl(env.g, relid, handle, pages(totalPages));
  const open = env.g(openMsg(relid, handle, split));
  expect(kinds(open)).toEqual(['open']);
  return [...acts, ...open, ...env.server.completeOpen(relid, true)];
}

describe('version negotiation', () => {
  it.each(VMBUS_VERSIONS.map((v) => [`${v >>> 16}.${v & 0xffff}`, v]))(
    'accepts %s with the answer that version expects',
    (_name, version) => {
      const server = new VmbusServer({ vpCount: VPS, ram });
      const acts = server.handle({ vp: 0, bytes: contact(version, version < VERSION_WIN10_V5 ? { interrupt_page: 0x5000n } : {}) });
      const [resp] = sent(acts);
      expect(resp.msgtype).toBe(CHANNELMSG_VERSION_RESPONSE);
      expect(resp).toMatchObject({ version_supported: 1, msg_conn_id: version >= VERSION_WIN10_V5 ? 1 : 0 });
      // 6.0 answers with supported_features appended; everyone else gets the 16 bytes Linux requires.
      expect(resp.size).toBe(version >= VERSION_WIN10_V6_0 ? 20 : 16);
      // Messages go to target_vcpu from Win8.1 on.
      expect(resp.vp).toBe(version >= VERSION_WIN8_1 ? 1 : 0);
      expect(server.connectionInfo?.version).toBe(version);
      expect(kinds(acts)).toEqual(['connected']);
    },
  );

  it('refuses unknown versions, versions above maxVersion, bad SINT/VTL/target VP with version_supported=0 (16 bytes)', () => {
    const cases: [Uint8Array, string, number?][] = [
      [contact(0x00050004), 'unsupported-version'],
      [contact(0x00070000), 'unsupported-version'],
      [contact(0), 'unsupported-version'],
      [contact(VERSION_WIN10_V5_3, { msg_sint: 3 }), 'bad-sint'],
      [contact(VERSION_WIN10_V5_3, { msg_vtl: 2 }), 'bad-vtl'],
      [contact(VERSION_WIN10_V5_3, { target_vcpu: VPS }), 'bad-target-vp'],
      [contact(VERSION_WIN7, { interrupt_page: 0n }), 'bad-interrupt-page'],
      [contact(VERSION_WIN8, { interrupt_page: BigInt(RAM_PAGES * 4096) }), 'bad-interrupt-page'],
      [contact(VERSION_WS2008, { interrupt_page: 0x5001n }), 'bad-interrupt-page'],
      [contact(VERSION_WIN10_V6_0), 'unsupported-version', VERSION_WIN10_V5_2],
      [contact(VERSION_WIN10_V5_3), 'unsupported-version', VERSION_WIN10_V5_2],
    ];
    for (const [bytes, reason, maxVersion] of cases) {
      const server = new VmbusServer({ vpCount: VPS, ram, maxVersion });
      const acts = server.handle({ vp: 2, bytes });
      const [resp] = sent(acts);
      expect(resp).toMatchObject({ msgtype: CHANNELMSG_VERSION_RESPONSE, version_supported: 0, size: 16 });
      expect(warnings(acts)).toEqual([reason]);
      expect(server.connectionInfo).toBeNull();
    }
  });

  it('a Linux-style fallback from 5.3 lands on the newest version the host allows', () => {
    const server = new VmbusServer({ vpCount: VPS, ram, maxVersion: VERSION_WIN10_V4_1 });
    let accepted = 0;
    for (const v of [VERSION_WIN10_V5_3, VERSION_WIN10_V5_2, 0x00050001, VERSION_WIN10_V5, VERSION_WIN10_V4_1]) {
      const [resp] = sent(server.handle({ vp: 0, bytes: contact(v) }));
      if (resp.msgtype === CHANNELMSG_VERSION_RESPONSE && resp.version_supported) accepted = v;
    }
    expect(accepted).toBe(VERSION_WIN10_V4_1);
  });

  it('answers 6.0 feature flags with the intersection of the request and the host set', () => {
    const server = new VmbusServer({ vpCount: VPS, ram, featureFlags: 0x21 });
    const [resp] = sent(server.handle({ vp: 0, bytes: contact(VERSION_WIN10_V6_0, { feature_flags: 0x25 }) }));
    expect(resp).toMatchObject({ supported_features: 0x21, size: 20 });
  });

  it('records the monitor page GPAs', () => {
    const server = new VmbusServer({ vpCount: VPS, ram });
    server.handle({ vp: 0, bytes: contact(VERSION_WIN10_V5_3, { monitor_page1: 0x7000n, monitor_page2: 0x8000n }) });
    expect(server.connectionInfo).toMatchObject({ monitorPage1: 0x7000n, monitorPage2: 0x8000n });
  });
});

describe('offers', () => {
  it('REQUESTOFFERS -> one OFFERCHANNEL per channel (196 bytes) -> ALLOFFERS_DELIVERED, on the message VP', () => {
    const { setup, a, b } = connected();
    const msgs = sent(setup).slice(1);
    expect(msgs.map((m) => m.msgtype)).toEqual([CHANNELMSG_OFFERCHANNEL, CHANNELMSG_OFFERCHANNEL, CHANNELMSG_ALLOFFERS_DELIVERED]);
    expect(msgs.every((m) => m.vp === 1)).toBe(true);
    expect(msgs.slice(0, 2).map((m) => m.size)).toEqual([196, 196]);
    expect(msgs.slice(0, 2)).toMatchObject([
      {
        child_relid: a,
        if_type: KVP,
        if_instance: inst(1),
        connection_id: channelConnectionId(a),
        is_dedicated_interrupt: 1,
        sub_channel_index: 0,
      },
      { child_relid: b, if_type: SCSI, if_instance: inst(2), connection_id: channelConnectionId(b) },
    ]);
    expect(msgs[2].size).toBe(8);
  });

  it('carries every offer field', () => {
    const server = new VmbusServer({ vpCount: VPS, ram });
    const spec: OfferSpec = {
      interfaceType: SCSI,
      interfaceInstance: inst(9),
      flags: 0x400,
      mmioMegabytes: 32,
      pipeMode: VMBUS_PIPE_TYPE_MESSAGE,
      userDefined: new Uint8Array([9, 8, 7]),
      monitorAllocated: true,
      monitorId: 77,
      dedicatedInterrupt: false,
    };
    const { relid } = server.addOffer(spec);
    server.handle({ vp: 0, bytes: contact(VERSION_WIN10_V5_3) });
    const [offer] = sent(server.handle({ vp: 0, bytes: encodeChannelMessage(CHANNELMSG_REQUESTOFFERS, {}) }));
    expect(offer).toMatchObject({ child_relid: relid, chn_flags: 0x400 | VMBUS_CHANNEL_NAMED_PIPE_MODE, mmio_megabytes: 32 });
    expect(offer).toMatchObject({ monitorid: 77, monitor_allocated: 1, is_dedicated_interrupt: 0 });
    if (offer.msgtype !== CHANNELMSG_OFFERCHANNEL) throw new Error();
    const pipe = vmbus_channel_offer_pipe.decode(offer.user_def);
    expect(pipe.pipe_mode).toBe(VMBUS_PIPE_TYPE_MESSAGE);
    expect([...pipe.user_def.subarray(0, 4)]).toEqual([9, 8, 7, 0]);
  });

  it('hot-adds an offer while the guest runs; a second REQUESTOFFERS is dropped', () => {
    const env = connected();
    const added = env.server.addOffer({ interfaceType: KVP, interfaceInstance: inst(5) });
    expect(sent(added.actions)).toMatchObject([{ msgtype: CHANNELMSG_OFFERCHANNEL, child_relid: added.relid }]);
    const again = env.g(encodeChannelMessage(CHANNELMSG_REQUESTOFFERS, {}));
    expect(sent(again)).toEqual([]);
    expect(warnings(again)).toEqual(['out-of-order']);
  });

  it('offers subchannels (sub_channel_index 1..n) after the primary, and REQUESTOFFERS orders primaries first', () => {
    const server = new VmbusServer({ vpCount: VPS, ram });
    const p = server.addOffer({ interfaceType: SCSI, interfaceInstance: inst(1) }).relid;
    const other = server.addOffer({ interfaceType: KVP, interfaceInstance: inst(2) }).relid;
    const subs = server.offerSubchannels(p, 2).relids;
    server.handle({ vp: 0, bytes: contact(VERSION_WIN10_V5_3) });
    const offers = sent(server.handle({ vp: 0, bytes: encodeChannelMessage(CHANNELMSG_REQUESTOFFERS, {}) }));
    expect(
      offers.map((o) => ('child_relid' in o ? [o.child_relid, (o as { sub_channel_index: number }).sub_channel_index] : 'end')),
    ).toEqual([[p, 0], [subs[0], 1], [subs[1], 2], [other, 0], 'end']);
    const more = server.offerSubchannels(p, 1);
    expect(sent(more.actions)).toMatchObject([{ msgtype: CHANNELMSG_OFFERCHANNEL, sub_channel_index: 3, if_instance: inst(1) }]);
  });
});

describe('GPADLs', () => {
  it('assembles a PFN list over a header and several bodies -> GPADL_CREATED status 0', () => {
    const env = connected();
    const pfns = pages(100);
    const acts = createGpadl(env.g, env.a, 0xe1e10, pfns);
    expect(sent(acts)).toMatchObject([
      { msgtype: CHANNELMSG_GPADL_CREATED, child_relid: env.a, gpadl: 0xe1e10, creation_status: 0, size: 20 },
    ]);
    expect(env.server.gpadl(0xe1e10)?.ranges[0].pfns).toEqual(pfns);
    expect(env.server.gpadlsInProgress).toBe(0);
  });

  it('refuses out-of-RAM PFNs, absurd counts, empty and malformed range lists with a non-zero status', () => {
    const env = connected();
    const refused = (acts: ServerAction[]): void => {
      const m = sent(acts);
      expect(m).toHaveLength(1);
      expect(m[0]).toMatchObject({ msgtype: CHANNELMSG_GPADL_CREATED });
      expect((m[0] as { creation_status: number }).creation_status).not.toBe(0);
    };
    refused(createGpadl(env.g, env.a, 1, [RAM_PAGES + 5]));
    refused(createGpadl(env.g, env.a, 2, [2 ** 45]));
    refused(env.g(encodeGpadlHeader({ child_relid: env.a, gpadl: 3, range_buflen: 16, rangecount: 0 }, new Uint8Array(16))));
    // byte_count 0 (an empty range).
    refused(env.g(encodeGpadlHeader({ child_relid: env.a, gpadl: 4, range_buflen: 16, rangecount: 1 }, new Uint8Array(16))));
    // range_buflen shorter than what the header carries.
    refused(env.g(encodeGpadlHeader({ child_relid: env.a, gpadl: 5, range_buflen: 16, rangecount: 1 }, new Uint8Array(24))));
    // A body with more than the announced bytes.
    const head = encodeGpadlHeader(
      { child_relid: env.a, gpadl: 6, range_buflen: 24, rangecount: 1 },
      new Uint8Array([0, 32, 0, 0, 0, 0, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0]),
    );
    expect(sent(env.g(head))).toEqual([]);
    refused(env.g(encodeGpadlBody({ gpadl: 6 }, new Uint8Array(16))));
    // More pages than the limit.
    const small = connected(VERSION_WIN10_V5_3, { limits: { maxGpadlPages: 8 } });
    refused(createGpadl(small.g, small.a, 7, pages(9)));
    expect(env.server.checkInvariants()).toEqual([]);
  });

  it('bounds GPADLs in progress and refuses duplicate handles', () => {
    const env = connected(VERSION_WIN10_V5_3, { limits: { maxGpadlsInProgress: 2 } });
    const half = (h: number): Uint8Array => gpadlMessages(env.a, h, pages(40), 40 * 4096)[0];
    expect(sent(env.g(half(10)))).toEqual([]);
    expect(sent(env.g(half(11)))).toEqual([]);
    expect(sent(env.g(half(12)))).toMatchObject([{ gpadl: 12, creation_status: 0xc0000001 }]);
    expect(sent(env.g(half(10)))).toMatchObject([{ gpadl: 10, creation_status: 0xc0000001 }]);
    expect(env.server.gpadlsInProgress).toBe(2);
  });

  it('GPADL_TEARDOWN -> GPADL_TORNDOWN; unknown handles and bodies are dropped with a reason', () => {
    const env = connected();
    createGpadl(env.g, env.a, 0x100, pages(3));
    const td = env.g(encodeChannelMessage(CHANNELMSG_GPADL_TEARDOWN, { child_relid: env.a, gpadl: 0x100 }));
    expect(sent(td)).toMatchObject([{ msgtype: CHANNELMSG_GPADL_TORNDOWN, gpadl: 0x100, size: 12 }]);
    expect(kinds(td)).toEqual(['gpadl-torndown']);
    expect(warnings(env.g(encodeChannelMessage(CHANNELMSG_GPADL_TEARDOWN, { child_relid: env.a, gpadl: 0x100 })))).toEqual(['bogus-gpadl']);
    expect(warnings(env.g(encodeGpadlBody({ gpadl: 0x999 }, new Uint8Array(8))))).toEqual(['bogus-gpadl']);
    expect(warnings(env.g(gpadlMessages(999, 5, [20], 4096)[0]))).toEqual(['bogus-relid']);
  });
});

describe('open, close, modify', () => {
  it('OPENCHANNEL -> open action -> completeOpen -> OPENCHANNEL_RESULT status 0', () => {
    const env = connected();
    const acts = openChannel(env, env.a, 0x200);
    const open = acts.find((x) => x.kind === 'open');
    expect(open).toMatchObject({ request: { relid: env.a, gpadl: 0x200, downstreamPageOffset: 4, targetVp: 1 } });
    expect(sent(acts).at(-1)).toMatchObject({
      msgtype: CHANNELMSG_OPENCHANNEL_RESULT,
      child_relid: env.a,
      openid: env.a,
      status: 0,
      size: 20,
    });
    expect(env.server.channel(env.a)?.state).toBe('open');
    expect(env.server.signalTarget(env.a)).toEqual({ vp: 1, sint: 2, flag: env.a, interruptPage: 0 });
  });

  it('refuses double open, bad splits, bad target VP, foreign GPADLs with a failure status; the open channel is untouched', () => {
    const env = connected();
    openChannel(env, env.a, 0x200);
    createGpadl(env.g, env.b, 0x300, pages(8));
    createGpadl(env.g, env.b, 0x301, pages(2));
    const refused = (bytes: Uint8Array, reason: string): void => {
      const acts = env.g(bytes);
      expect(sent(acts)).toMatchObject([{ msgtype: CHANNELMSG_OPENCHANNEL_RESULT, status: 0xc0000001 }]);
      expect(warnings(acts)).toEqual([reason]);
    };
    refused(openMsg(env.a, 0x200, 4), 'double-open');
    refused(openMsg(env.b, 0x300, 7), 'bad-ring-split');
    refused(openMsg(env.b, 0x300, 1), 'bad-ring-split');
    refused(openMsg(env.b, 0x300, 100), 'bad-ring-split');
    refused(openMsg(env.b, 0x301, 1), 'bad-ring-split');
    refused(openMsg(env.b, 0x300, 4, VPS), 'bad-target-vp');
    refused(openMsg(env.b, 0x200, 4), 'bad-ring-gpadl');
    refused(openMsg(env.b, 0x999, 4), 'bad-ring-gpadl');
    expect(warnings(env.g(openMsg(77, 0x300, 4)))).toEqual(['bogus-relid']);
    expect(env.server.channel(env.a)?.state).toBe('open');
    expect(env.server.channel(env.b)?.state).toBe('closed');
    // And b still opens.
    expect(kinds(env.g(openMsg(env.b, 0x300, 4)))).toEqual(['open']);
  });

  it('a device refusing the open answers a failure status', () => {
    const env = connected();
    createGpadl(env.g, env.a, 0x200, pages(8));
    env.g(openMsg(env.a, 0x200, 4));
    expect(sent(env.server.completeOpen(env.a, false))).toMatchObject([{ msgtype: CHANNELMSG_OPENCHANNEL_RESULT, status: 0xc0000001 }]);
    expect(env.server.channel(env.a)?.state).toBe('closed');
  });

  it('CLOSECHANNEL closes (no answer); a double close is dropped with a reason', () => {
    const env = connected();
    openChannel(env, env.a, 0x200);
    const close = env.g(encodeChannelMessage(CHANNELMSG_CLOSECHANNEL, { child_relid: env.a }));
    expect(sent(close)).toEqual([]);
    expect(close.filter((x) => x.kind === 'close')).toMatchObject([{ relid: env.a, reason: 'guest' }]);
    expect(warnings(env.g(encodeChannelMessage(CHANNELMSG_CLOSECHANNEL, { child_relid: env.a })))).toEqual(['double-close']);
    expect(warnings(env.g(encodeChannelMessage(CHANNELMSG_CLOSECHANNEL, { child_relid: 1234 })))).toEqual(['bogus-relid']);
  });

  it('a teardown of the ring GPADL of an open channel waits for the close', () => {
    const env = connected();
    openChannel(env, env.a, 0x200);
    const td = env.g(encodeChannelMessage(CHANNELMSG_GPADL_TEARDOWN, { child_relid: env.a, gpadl: 0x200 }));
    expect(sent(td)).toEqual([]);
    expect(warnings(td)).toEqual(['gpadl-in-use']);
    const close = env.g(encodeChannelMessage(CHANNELMSG_CLOSECHANNEL, { child_relid: env.a }));
    expect(sent(close)).toMatchObject([{ msgtype: CHANNELMSG_GPADL_TORNDOWN, gpadl: 0x200 }]);
  });

  it('a close during opening abandons the open; the late completion is ignored', () => {
    const env = connected();
    createGpadl(env.g, env.a, 0x200, pages(8));
    env.g(openMsg(env.a, 0x200, 4));
    const gen = env.server.openGeneration(env.a);
    env.g(encodeChannelMessage(CHANNELMSG_CLOSECHANNEL, { child_relid: env.a }));
    expect(sent(env.server.completeOpen(env.a, true, gen))).toEqual([]);
    expect(env.server.channel(env.a)?.state).toBe('closed');
  });

  it('MODIFYCHANNEL retargets; 5.3 answers MODIFYCHANNEL_RESPONSE, 4.1 does not, older drops it', () => {
    for (const version of [VERSION_WIN10_V5_3, VERSION_WIN10_V4_1, VERSION_WIN10_V5_2]) {
      const env = connected(version);
      openChannel(env, env.a, 0x200);
      const acts = env.g(encodeChannelMessage(CHANNELMSG_MODIFYCHANNEL, { child_relid: env.a, target_vp: 3 }));
      expect(acts.filter((x) => x.kind === 'retarget')).toMatchObject([{ relid: env.a, targetVp: 3 }]);
      expect(sent(acts)).toMatchObject(
        version >= VERSION_WIN10_V5_3 ? [{ msgtype: CHANNELMSG_MODIFYCHANNEL_RESPONSE, status: 0, size: 16 }] : [],
      );
      expect(env.server.signalTarget(env.a)?.vp).toBe(3);
      const bad = env.g(encodeChannelMessage(CHANNELMSG_MODIFYCHANNEL, { child_relid: env.b, target_vp: 1 }));
      expect(warnings(bad)).toEqual(['not-open']);
    }
    const old = connected(VERSION_WIN10_V5 - 0x10000);
    expect(warnings(old.g(encodeChannelMessage(CHANNELMSG_MODIFYCHANNEL, { child_relid: old.a, target_vp: 1 })))).toEqual(['version']);
  });
});

describe('rescind, release, unload, reconnect', () => {
  it('rescinds an open channel (close first), keeps the relid until RELID_RELEASED, then reuses it', () => {
    const env = connected();
    openChannel(env, env.a, 0x200);
    const acts = env.server.rescindOffer(env.a);
    expect(kinds(acts)).toEqual(['close']);
    expect(sent(acts)).toMatchObject([{ msgtype: CHANNELMSG_RESCIND_CHANNELOFFER, child_relid: env.a, size: 12 }]);
    // Not reused yet.
    const c = env.server.addOffer({ interfaceType: KVP, interfaceInstance: inst(7) }).relid;
    expect(c).not.toBe(env.a);
    // Opening a rescinded channel fails.
    expect(sent(env.g(openMsg(env.a, 0x200, 4)))).toMatchObject([{ status: 0xc0000001 }]);
    const rel = env.g(encodeChannelMessage(CHANNELMSG_RELID_RELEASED, { child_relid: env.a }));
    expect(kinds(rel)).toEqual(['gpadl-torndown', 'channel-freed']);
    expect(env.server.addOffer({ interfaceType: KVP, interfaceInstance: inst(8) }).relid).toBe(env.a);
    expect(warnings(env.g(encodeChannelMessage(CHANNELMSG_RELID_RELEASED, { child_relid: env.b })))).toEqual(['out-of-order']);
  });

  it('rescinding a primary rescinds its subchannels first; an offer the guest never saw just goes away', () => {
    const env = connected();
    const subs = env.server.offerSubchannels(env.b, 2).relids;
    const acts = env.server.rescindOffer(env.b);
    expect(sent(acts).map((m) => (m as { child_relid: number }).child_relid)).toEqual([subs[1], subs[0], env.b]);
    const server = new VmbusServer({ vpCount: VPS, ram });
    const { relid } = server.addOffer({ interfaceType: KVP, interfaceInstance: inst(1) });
    expect(kinds(server.rescindOffer(relid))).toEqual(['channel-freed']);
  });

  it('UNLOAD -> UNLOAD_RESPONSE, closes everything; a second INITIATE_CONTACT starts over with fresh GPADLs', () => {
    const env = connected();
    openChannel(env, env.a, 0x200);
    env.server.rescindOffer(env.b);
    const unload = env.g(encodeChannelMessage(CHANNELMSG_UNLOAD, {}));
    expect(sent(unload)).toMatchObject([{ msgtype: CHANNELMSG_UNLOAD_RESPONSE, size: 8, vp: 1 }]);
    expect(kinds(unload)).toEqual(['close', 'channel-freed', 'gpadl-torndown', 'disconnected']);
    expect(env.server.connectionInfo).toBeNull();
    expect(env.server.checkInvariants()).toEqual([]);
    // Reconnect: offers again (only the live one), the same GPADL handle is fine again.
    env.g(contact(VERSION_WIN10_V5_3));
    const offers = sent(env.g(encodeChannelMessage(CHANNELMSG_REQUESTOFFERS, {})));
    expect(offers.map((m) => m.msgtype)).toEqual([CHANNELMSG_OFFERCHANNEL, CHANNELMSG_ALLOFFERS_DELIVERED]);
    expect(sent(openChannel(env, env.a, 0x200)).at(-1)).toMatchObject({ status: 0 });
  });

  it('INITIATE_CONTACT while connected resets the old connection first', () => {
    const env = connected();
    openChannel(env, env.a, 0x200);
    const acts = env.g(contact(VERSION_WIN10_V5_2));
    expect(kinds(acts)).toEqual(['close', 'gpadl-torndown', 'disconnected', 'connected']);
    expect(env.server.connectionInfo?.offersRequested).toBe(false);
  });
});

describe('hostile guest', () => {
  it('drops messages before contact, host-to-guest types, unknown and truncated messages, each with a reason', () => {
    const server = new VmbusServer({ vpCount: VPS, ram });
    expect(warnings(server.handle({ vp: 0, bytes: encodeChannelMessage(CHANNELMSG_REQUESTOFFERS, {}) }))).toEqual(['not-connected']);
    const env = connected();
    const t = (bytes: Uint8Array): string[] => warnings(env.g(bytes));
    expect(t(encodeChannelMessage(CHANNELMSG_OFFERCHANNEL, {}))).toEqual(['wrong-direction']);
    expect(t(encodeChannelMessage(CHANNELMSG_VERSION_RESPONSE, {}))).toEqual(['wrong-direction']);
    expect(t(new Uint8Array([19, 0, 0, 0, 0, 0, 0, 0]))).toEqual(['unknown-type']);
    expect(t(new Uint8Array(3))).toEqual(['truncated-header']);
    expect(t(openMsg(env.a, 1, 4).subarray(0, 100))).toEqual(['truncated']);
    expect(t(new Uint8Array(300))).toEqual(['oversized']);
    // And the connection still works.
    expect(sent(openChannel(env, env.a, 0x200)).at(-1)).toMatchObject({ status: 0 });
  });

  /** Messages a hostile guest might send: mostly well-formed with small ids so they hit real state, some raw noise. */
  // Mostly the relids that exist, sometimes bogus ones.
  const relidArb = fc.oneof({ weight: 3, arbitrary: fc.constantFrom(1, 2) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 4 }) });
  const handleArb = fc.integer({ min: 0x10, max: 0x12 });
  // Contacts, UNLOAD and REQUESTOFFERS reset or restart the connection: rarer, so runs get deep.
  const guestMessage = fc.oneof(
    {
      weight: 1,
      arbitrary: fc
        .constantFrom(...VMBUS_VERSIONS, 0x00050004)
        .chain((v) =>
          fc
            .record({ vcpu: fc.integer({ min: 0, max: 5 }), sint: fc.constantFrom(2, 3), page: fc.constantFrom(0n, 0x5000n, 0x5001n) })
            .map((r) =>
              contact(
                v,
                v >= VERSION_WIN10_V5 ? { target_vcpu: r.vcpu, msg_sint: r.sint } : { target_vcpu: r.vcpu, interrupt_page: r.page },
              ),
            ),
        ),
    },
    { weight: 1, arbitrary: fc.constant(encodeChannelMessage(CHANNELMSG_REQUESTOFFERS, {})) },
    { weight: 1, arbitrary: fc.constant(encodeChannelMessage(CHANNELMSG_UNLOAD, {})) },
    {
      weight: 4,
      arbitrary: fc
        .tuple(relidArb, handleArb, fc.oneof(fc.integer({ min: 4, max: 8 }), fc.integer({ min: 1, max: 60 })), fc.boolean())
        .map(([r, h, n, bad]) => gpadlMessages(r, h, bad ? [RAM_PAGES + n] : Array.from({ length: n }, (_, i) => 16 + i), n * 4096)),
    },
    {
      weight: 4,
      arbitrary: fc.tuple(handleArb, fc.integer({ min: 1, max: 28 })).map(([h, n]) => encodeGpadlBody({ gpadl: h }, new Uint8Array(8 * n))),
    },
    // A ring GPADL and the OPENCHANNEL that uses it, as a guest opens (split and VP possibly bad).
    {
      weight: 4,
      arbitrary: fc
        .tuple(relidArb, handleArb, fc.integer({ min: 2, max: 10 }), fc.integer({ min: 0, max: 10 }), fc.integer({ min: 0, max: 4 }))
        .map(([r, h, n, split, vp]) => [
          ...gpadlMessages(
            r,
            h,
            Array.from({ length: n }, (_, i) => 16 + i),
            n * 4096,
          ),
          openMsg(r, h, split, vp),
        ]),
    },
    {
      weight: 4,
      arbitrary: fc
        .tuple(relidArb, handleArb, fc.integer({ min: 0, max: 6 }), fc.integer({ min: 0, max: 4 }))
        .map(([r, h, s, vp]) => openMsg(r, h, s, vp)),
    },
    { weight: 4, arbitrary: relidArb.map((r) => encodeChannelMessage(CHANNELMSG_CLOSECHANNEL, { child_relid: r })) },
    {
      weight: 4,
      arbitrary: fc
        .tuple(relidArb, handleArb)
        .map(([r, h]) => encodeChannelMessage(CHANNELMSG_GPADL_TEARDOWN, { child_relid: r, gpadl: h })),
    },
    { weight: 4, arbitrary: relidArb.map((r) => encodeChannelMessage(CHANNELMSG_RELID_RELEASED, { child_relid: r })) },
    {
      weight: 4,
      arbitrary: fc
        .tuple(relidArb, fc.integer({ min: 0, max: 5 }))
        .map(([r, vp]) => encodeChannelMessage(CHANNELMSG_MODIFYCHANNEL, { child_relid: r, target_vp: vp })),
    },
    { weight: 4, arbitrary: fc.uint8Array({ maxLength: 250 }) },
    {
      weight: 4,
      arbitrary: fc
        .tuple(fc.integer({ min: 0, max: 30 }), fc.uint8Array({ minLength: 240, maxLength: 240 }), fc.nat(240))
        .map(([t, b, n]) => {
          const bytes = b.slice(0, n);
          if (n >= 4) new DataView(bytes.buffer).setUint32(0, t, true);
          return bytes;
        }),
    },
  );
  type Step =
    { guest: Uint8Array | Uint8Array[]; vp: number } | { host: 'add' | 'rescind' | 'sub' | 'complete-ok' | 'complete-no'; n: number };
  const step: fc.Arbitrary<Step> = fc.oneof(
    { weight: 8, arbitrary: fc.record({ guest: guestMessage, vp: fc.integer({ min: 0, max: VPS - 1 }) }) },
    {
      weight: 2,
      arbitrary: fc.record({
        host: fc.constantFrom('add', 'rescind', 'sub', 'complete-ok', 'complete-ok', 'complete-no'),
        n: fc.integer({ min: 1, max: 4 }),
      }),
    },
  );

  it('fuzz: random message sequences never throw, every reply is well-formed and sized, invariants hold', () => {
    const seen = new Set<string>();
    const deepStates = [
      'open',
      'close',
      'retarget',
      'gpadl-created',
      'gpadl-torndown',
      'channel-freed',
      'disconnected',
      `send ${CHANNELMSG_OPENCHANNEL_RESULT}`,
      `send ${CHANNELMSG_GPADL_TORNDOWN}`,
      `send ${CHANNELMSG_MODIFYCHANNEL_RESPONSE}`,
    ];
    // Random seeds each time; a rare run of 300 sequences misses a deep state (MODIFYCHANNEL needs
    // connect + GPADL + open + modify in order), so more batches run until all were reached.
    for (let batch = 0; batch < 10 && !deepStates.every((k) => seen.has(k)); batch++)
      fc.assert(
        fc.property(fc.boolean(), fc.boolean(), fc.array(step, { maxLength: 60, size: 'max' }), (handshake, autoAccept, steps) => {
          if (handshake) {
            // Most runs start connected, so the sequence explores channel and GPADL states.
            steps = [
              { guest: contact(VERSION_WIN10_V5_3), vp: 0 },
              { guest: encodeChannelMessage(CHANNELMSG_REQUESTOFFERS, {}), vp: 0 },
              ...steps,
            ];
          }
          const server = new VmbusServer({ vpCount: VPS, ram, limits: { maxGpadlsInProgress: 3, maxGpadls: 6 } });
          server.addOffer({ interfaceType: KVP, interfaceInstance: inst(1) });
          server.addOffer({ interfaceType: SCSI, interfaceInstance: inst(2) });
          let offers = 2;
          for (const s of steps) {
            let actions: ServerAction[] = [];
            if ('guest' in s) {
              for (const bytes of Array.isArray(s.guest) ? s.guest : [s.guest]) actions.push(...server.handle({ vp: s.vp, bytes }));
              // Half the runs have a device that accepts every open at once, as the wiring does.
              const opened = autoAccept ? actions.flatMap((a) => (a.kind === 'open' ? [a.request.relid] : [])) : [];
              for (const relid of opened) actions.push(...server.completeOpen(relid, true));
            } else if (s.host === 'add' && offers < 12) {
              offers++;
              actions = server.addOffer({ interfaceType: KVP, interfaceInstance: inst(10 + offers) }).actions;
            } else if (s.host === 'rescind' && server.channel(s.n) && server.channel(s.n)!.state !== 'rescinded') {
              actions = server.rescindOffer(s.n);
            } else if (s.host === 'sub' && server.channel(s.n)?.subChannelIndex === 0 && offers < 12) {
              offers++;
              actions = server.offerSubchannels(s.n, 1).actions;
            } else if (s.host.startsWith('complete')) {
              // The device answers one of the opens in flight (or a stale relid when there is none).
              const opening = server.allChannels().filter((c) => c.state === 'opening');
              const relid = opening.length > 0 ? opening[s.n % opening.length].relid : s.n;
              actions = server.completeOpen(relid, s.host === 'complete-ok');
            }
            for (const a of actions) {
              seen.add(a.kind === 'send' ? `send ${a.msgtype}` : a.kind);
              expect(a.kind === 'log' && a.level === 'error').toBe(false);
              if (a.kind !== 'send') continue;
              expect(a.vp).toBeGreaterThanOrEqual(0);
              expect(a.vp).toBeLessThan(VPS);
              expect(a.sint).toBe(2);
              expect(a.bytes.length).toBeLessThanOrEqual(240);
              const m = parseChannelMessage(a.bytes);
              expect(m).not.toBeInstanceOf(ChannelProtocolError);
              const expected =
                a.msgtype === CHANNELMSG_VERSION_RESPONSE &&
                server.connectionInfo?.version === VERSION_WIN10_V6_0 &&
                (m as { version_supported: number }).version_supported
                  ? 20
                  : CHANNEL_MESSAGES[a.msgtype as keyof typeof CHANNEL_MESSAGES].layout.size;
              expect(a.bytes.length).toBe(expected);
              expect(CHANNEL_MESSAGES[a.msgtype as keyof typeof CHANNEL_MESSAGES].from).toBe('host');
            }
            expect(server.checkInvariants()).toEqual([]);
          }
        }),
        { numRuns: fuzzRuns(300) },
      );
    // The sequences reach deep states, not just the parser's refusals.
    for (const k of deepStates) expect([k, seen.has(k)]).toEqual([k, true]);
  });
});
