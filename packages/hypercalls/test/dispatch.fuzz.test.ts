import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  HV_STATUS_INSUFFICIENT_BUFFERS,
  HV_STATUS_INVALID_ALIGNMENT,
  HV_STATUS_INVALID_CONNECTION_ID,
  HV_STATUS_INVALID_HYPERCALL_CODE,
  HV_STATUS_INVALID_HYPERCALL_INPUT,
  HV_STATUS_INVALID_PARAMETER,
  HV_STATUS_SUCCESS,
  decodeControl,
  encodeControl,
  HVCALL_NOTIFY_LONG_SPIN_WAIT,
  HVCALL_POST_MESSAGE,
  HVCALL_SIGNAL_EVENT,
  resultStatus,
} from '@hvemu/hvdef';
import { GuestMemory, PAGE_SIZE } from '@hvemu/memory';
import { HypercallDispatcher } from '@hvemu/hypercalls';
import { fuzzRuns } from '../../../test/helpers.js';

const INPUT = 0x2000;

function setup() {
  const memory = GuestMemory.createShared(8 * PAGE_SIZE);
  const d = new HypercallDispatcher({ memory });
  const posts: { vp: number; type: number; payload: number[] }[] = [];
  const signals: { vp: number; flag: number }[] = [];
  let full = false;
  d.connections.registerMessage(4, {
    onMessage: (vp, type, payload) => {
      if (full) return HV_STATUS_INSUFFICIENT_BUFFERS;
      posts.push({ vp, type, payload: Array.from(payload) });
      return HV_STATUS_SUCCESS;
    },
  });
  d.connections.registerEvent(0x2a, { onSignal: (vp, flag) => (signals.push({ vp, flag }), HV_STATUS_SUCCESS) });
  const writePost = (fields: { connectionId?: number; reserved?: number; type?: number; size?: number; payload?: number[] }) => {
    memory.writeU32(INPUT, fields.connectionId ?? 4);
    memory.writeU32(INPUT + 4, fields.reserved ?? 0);
    memory.writeU32(INPUT + 8, fields.type ?? 1);
    memory.writeU32(INPUT + 12, fields.size ?? fields.payload?.length ?? 0);
    memory.write(INPUT + 16, Uint8Array.from(fields.payload ?? []));
  };
  const call = (code: number, rdx: bigint, opts: { fast?: boolean; rcx?: bigint; vp?: number } = {}) =>
    resultStatus(d.dispatch(opts.vp ?? 0, { rcx: opts.rcx ?? encodeControl({ code, fast: opts.fast }), rdx, r8: 0n }));
  return { memory, d, posts, signals, writePost, call, setFull: (f: boolean) => (full = f) };
}

describe('input control value', () => {
  it('round-trips every field', () => {
    fc.assert(
      fc.property(
        fc.record({
          code: fc.integer({ min: 0, max: 0xffff }),
          fast: fc.boolean(),
          variableHeaderSize: fc.integer({ min: 0, max: 0x3ff }),
          repCount: fc.integer({ min: 0, max: 0xfff }),
          repStart: fc.integer({ min: 0, max: 0xfff }),
        }),
        (c) => {
          expect(decodeControl(encodeControl(c))).toEqual({ ...c, reservedBitsSet: false });
        },
      ),
    );
    expect(decodeControl(1n << 63n).reservedBitsSet).toBe(true);
    expect(decodeControl(1n << 27n).reservedBitsSet).toBe(true);
  });
});

describe('HvPostMessage', () => {
  it('hands the payload to the registered connection', () => {
    const t = setup();
    t.writePost({ type: 1, payload: [1, 2, 3] });
    expect(t.call(HVCALL_POST_MESSAGE, BigInt(INPUT), { vp: 1 })).toBe(HV_STATUS_SUCCESS);
    expect(t.posts).toEqual([{ vp: 1, type: 1, payload: [1, 2, 3] }]);
  });

  it('answers every malformed post with its status and delivers nothing', () => {
    const t = setup();
    const cases: [Parameters<typeof t.writePost>[0], number][] = [
      [{ connectionId: 5 }, HV_STATUS_INVALID_CONNECTION_ID],
      [{ connectionId: 1 << 24 }, HV_STATUS_INVALID_PARAMETER],
      [{ reserved: 1 }, HV_STATUS_INVALID_PARAMETER],
      [{ type: 0 }, HV_STATUS_INVALID_PARAMETER],
      [{ type: 0x80000010 }, HV_STATUS_INVALID_PARAMETER],
      [{ size: 241 }, HV_STATUS_INVALID_PARAMETER],
    ];
    for (const [fields, status] of cases) {
      t.writePost(fields);
      expect(t.call(HVCALL_POST_MESSAGE, BigInt(INPUT))).toBe(status);
    }
    t.writePost({});
    expect(t.call(HVCALL_POST_MESSAGE, BigInt(INPUT + 4))).toBe(HV_STATUS_INVALID_ALIGNMENT);
    expect(t.call(HVCALL_POST_MESSAGE, BigInt(INPUT + PAGE_SIZE - 8))).toBe(HV_STATUS_INVALID_ALIGNMENT); // crosses a page
    expect(t.call(HVCALL_POST_MESSAGE, BigInt(64 * PAGE_SIZE))).toBe(HV_STATUS_INVALID_HYPERCALL_INPUT); // not RAM
    expect(t.call(HVCALL_POST_MESSAGE, BigInt(INPUT), { fast: true })).toBe(HV_STATUS_INVALID_HYPERCALL_INPUT);
    expect(t.call(0, 0n, { rcx: encodeControl({ code: HVCALL_POST_MESSAGE, repCount: 1 }) })).toBe(HV_STATUS_INVALID_HYPERCALL_INPUT);
    expect(t.posts).toEqual([]);
  });

  it('reports a full connection queue as INSUFFICIENT_BUFFERS', () => {
    const t = setup();
    t.setFull(true);
    t.writePost({ payload: [1] });
    expect(t.call(HVCALL_POST_MESSAGE, BigInt(INPUT))).toBe(HV_STATUS_INSUFFICIENT_BUFFERS);
  });
});

describe('HvSignalEvent', () => {
  it('works fast (RDX) and slow (input GPA)', () => {
    const t = setup();
    expect(t.call(HVCALL_SIGNAL_EVENT, 0x2an | (3n << 32n), { fast: true, vp: 1 })).toBe(HV_STATUS_SUCCESS);
    t.memory.writeU32(INPUT, 0x2a);
    t.memory.writeU32(INPUT + 4, 7);
    expect(t.call(HVCALL_SIGNAL_EVENT, BigInt(INPUT))).toBe(HV_STATUS_SUCCESS);
    expect(t.signals).toEqual([
      { vp: 1, flag: 3 },
      { vp: 0, flag: 7 },
    ]);
  });

  it('rejects unknown connections and reserved bits', () => {
    const t = setup();
    expect(t.call(HVCALL_SIGNAL_EVENT, 0x2bn, { fast: true })).toBe(HV_STATUS_INVALID_CONNECTION_ID);
    expect(t.call(HVCALL_SIGNAL_EVENT, 0x2an | (1n << 48n), { fast: true })).toBe(HV_STATUS_INVALID_PARAMETER);
    expect(t.signals).toEqual([]);
  });
});

describe('dispatch', () => {
  it('answers unknown codes with INVALID_HYPERCALL_CODE and NotifyLongSpinWait with SUCCESS', () => {
    const t = setup();
    expect(t.call(0x1234, 0n)).toBe(HV_STATUS_INVALID_HYPERCALL_CODE);
    expect(t.call(HVCALL_NOTIFY_LONG_SPIN_WAIT, 0n, { fast: true })).toBe(HV_STATUS_SUCCESS);
  });

  it('never throws, whatever the registers hold', () => {
    const t = setup();
    const known = new Set([0, 2, 3, 4, 5, 0x12, 0x13]);
    fc.assert(
      fc.property(
        fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
        fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
        fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
        fc.constantFrom(0x5c, 0x5d, 0x08, 0),
        (rcx, rdx, r8, code) => {
          const regs = { rcx: (rcx & ~0xffffn) | BigInt(code), rdx, r8 };
          const status = resultStatus(t.d.dispatch(0, regs));
          expect(known.has(status)).toBe(true);
        },
      ),
      { numRuns: fuzzRuns(2000) },
    );
  });

  it('refuses a second registration of one connection id', () => {
    const t = setup();
    expect(() => t.d.connections.registerMessage(4, { onMessage: () => 0 })).toThrow(/already/);
    expect(() => t.d.connections.registerEvent(1 << 24, { onSignal: () => 0 })).toThrow(/24 bits/);
  });
});
