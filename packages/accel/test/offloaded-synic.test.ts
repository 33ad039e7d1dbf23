import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { OffloadedSynicPort, encodeHvMessage, type OffloadedSynicOps } from '../src/backends/offloaded-synic.js';

/** A hypervisor with one slot per (vp, sint) that the test frees at will. */
class FakeHypervisorSynic implements OffloadedSynicOps {
  readonly slots = new Map<string, Uint8Array>();
  readonly delivered: { vp: number; sint: number; type: number; first: number }[] = [];
  readonly requests: { vp: number; mask: number }[] = [];
  post(vp: number, sint: number, message: Uint8Array): 'ok' | 'busy' {
    const key = `${vp}:${sint}`;
    if (this.slots.has(key)) return 'busy';
    this.slots.set(key, message.slice());
    const view = new DataView(message.buffer, message.byteOffset);
    this.delivered.push({ vp, sint, type: view.getUint32(0, true), first: message[16] });
    return 'ok';
  }
  signal(): boolean {
    return true;
  }
  requestDeliverable(vp: number, mask: number): void {
    this.requests.push({ vp, mask });
  }
  consume(vp: number, sint: number): void {
    this.slots.delete(`${vp}:${sint}`);
  }
}

const msg = (type: number, first: number) => ({ type, payload: Uint8Array.of(first, 2, 3) });

describe('OffloadedSynicPort', () => {
  it('encodes hv_message header fields at their TLFS offsets', () => {
    const m = encodeHvMessage({ type: 0x80000010, payload: Uint8Array.of(9, 8, 7) });
    expect(m.length).toBe(256);
    expect(new DataView(m.buffer).getUint32(0, true)).toBe(0x80000010);
    expect(m[4]).toBe(3);
    expect(m[5]).toBe(0);
    expect(Array.from(m.subarray(16, 19))).toEqual([9, 8, 7]);
    expect(() => encodeHvMessage({ type: 1, payload: new Uint8Array(241) })).toThrow(/exceeds 240/);
  });

  it('queues on a busy slot, asks for a deliverable notification, and retries in order', () => {
    const hv = new FakeHypervisorSynic();
    const port = new OffloadedSynicPort(hv, { vpCount: 2 });
    expect(port.postMessage(1, 2, msg(1, 10))).toBe('delivered');
    expect(port.postMessage(1, 2, msg(1, 11))).toBe('queued');
    expect(port.postMessage(1, 2, msg(1, 12))).toBe('queued');
    expect(hv.requests).toEqual([{ vp: 1, mask: 1 << 2 }]);
    hv.consume(1, 2);
    port.onSintDeliverable(1, 1 << 2);
    expect(hv.delivered.map((d) => d.first)).toEqual([10, 11]);
    expect(port.pending(1, 2)).toBe(1);
    expect(hv.requests.at(-1)).toEqual({ vp: 1, mask: 1 << 2 }); // re-armed for the last one
    hv.consume(1, 2);
    port.onSintDeliverable(1, 1 << 2);
    expect(hv.delivered.map((d) => d.first)).toEqual([10, 11, 12]);
    expect(port.pending(1, 2)).toBe(0);
  });

  it('never lets a new post overtake a backlog, even when the slot is free', () => {
    const hv = new FakeHypervisorSynic();
    const port = new OffloadedSynicPort(hv, { vpCount: 1 });
    port.postMessage(0, 0, msg(1, 1));
    port.postMessage(0, 0, msg(1, 2));
    hv.consume(0, 0); // freed, but no notification seen yet
    expect(port.postMessage(0, 0, msg(1, 3))).toBe('queued');
    port.onSintDeliverable(0, 1);
    hv.consume(0, 0);
    port.onSintDeliverable(0, 1);
    expect(hv.delivered.map((d) => d.first)).toEqual([1, 2, 3]);
  });

  it('bounds the backlog and rejects out-of-range vp or sint', () => {
    const hv = new FakeHypervisorSynic();
    const port = new OffloadedSynicPort(hv, { vpCount: 1, queueLimit: 2 });
    const answers = Array.from({ length: 5 }, (_, i) => port.postMessage(0, 3, msg(1, i)));
    expect(port.pending(0, 3)).toBe(2);
    // One in the slot, two held, two refused: 'busy', never silently dropped.
    expect(answers).toEqual(['delivered', 'queued', 'queued', 'busy', 'busy']);
    expect(port.stats.refused).toBe(2);
    expect(() => port.postMessage(1, 0, msg(1, 0))).toThrow(/no vCPU 1/);
    expect(() => port.signalEvent(0, 16, 0)).toThrow(/SINT 16/);
    port.onSintDeliverable(7, 0xffff); // a notification for a vCPU we do not have is ignored
  });

  it('delivers every message exactly once, in per-SINT order, under any interleaving of consumes and notifications', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.record({ op: fc.constant('post' as const), sint: fc.nat(3) }),
            fc.record({ op: fc.constant('consume' as const), sint: fc.nat(3) }),
          ),
        ),
        (ops) => {
          const hv = new FakeHypervisorSynic();
          const port = new OffloadedSynicPort(hv, { vpCount: 1, queueLimit: 1000 });
          const sent: number[][] = [[], [], [], []];
          let n = 0;
          for (const o of ops) {
            if (o.op === 'post') {
              sent[o.sint].push(n & 0xff);
              port.postMessage(0, o.sint, msg(1, n++ & 0xff));
            } else {
              hv.consume(0, o.sint);
              const mask = hv.requests.at(-1)?.mask ?? 0;
              if (mask & (1 << o.sint)) port.onSintDeliverable(0, mask);
            }
          }
          for (let s = 0; s < 4; s++) {
            const got = hv.delivered.filter((d) => d.sint === s).map((d) => d.first);
            expect(got).toEqual(sent[s].slice(0, got.length));
            expect(got.length + port.pending(0, s)).toBe(sent[s].length);
          }
        },
      ),
    );
  });
});

describe('OffloadedSynicPort refusals', () => {
  it("a full backlog answers 'busy' and onPostReady says when that SINT has room again", () => {
    const hv = new FakeHypervisorSynic();
    const port = new OffloadedSynicPort(hv, { vpCount: 1, queueLimit: 1 });
    const ready: string[] = [];
    port.onPostReady((vp, sint) => ready.push(`${vp}:${sint}`));
    expect([port.postMessage(0, 2, msg(1, 1)), port.postMessage(0, 2, msg(1, 2)), port.postMessage(0, 2, msg(1, 3))]).toEqual([
      'delivered',
      'queued',
      'busy',
    ]);
    hv.consume(0, 2);
    port.onSintDeliverable(0, 1 << 2);
    expect(ready).toEqual(['0:2']);
    expect(port.postMessage(0, 2, msg(1, 3))).toBe('queued');
    hv.consume(0, 2);
    port.onSintDeliverable(0, 1 << 2);
    hv.consume(0, 2);
    expect(hv.delivered.map((d) => d.first)).toEqual([1, 2, 3]);
    expect(ready).toEqual(['0:2']); // no refusal since: no second notice
  });
});
