/**
 * The testbed @hvemu/net/testing exports, used as a user would to property-test a backend of
 * their own: here a reflector that sends every frame back with its MACs swapped, queueing them
 * and honouring backpressure both ways. Imports only the package's public entry points.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { NetBackend, NetBackendSink } from '@hvemu/net';
import { createNicTestbed, frameArbitrary, TESTBED_GUEST_MAC } from '@hvemu/net/testing';
import { fuzzRuns } from '../../../test/helpers.js';

/** Sends each frame back with source and destination swapped, at most `capacity` queued. */
class Reflector implements NetBackend {
  readonly name = 'reflector';
  private sink: NetBackendSink | null = null;
  private readonly queue: Uint8Array[] = [];
  private scheduled = false;
  private waiting = false;

  constructor(private readonly capacity: number) {}

  attach(sink: NetBackendSink): void {
    this.sink = sink;
  }
  send(segments: readonly Uint8Array[]): boolean {
    const frame = Buffer.concat(segments);
    const swapped = new Uint8Array(frame.length);
    swapped.set(frame.subarray(6, 12), 0);
    swapped.set(frame.subarray(0, 6), 6);
    swapped.set(frame.subarray(12), 12);
    this.queue.push(swapped);
    this.schedule();
    return this.queue.length < this.capacity;
  }
  resume(): void {
    this.waiting = false;
    this.schedule();
  }
  close(): void {
    this.sink = null;
  }
  private schedule(): void {
    if (this.scheduled || this.waiting) return;
    this.scheduled = true;
    setImmediate(() => this.deliver());
  }
  private deliver(): void {
    this.scheduled = false;
    const wasFull = this.queue.length >= this.capacity;
    while (this.sink && this.queue.length > 0) {
      if (!this.sink.receive(this.queue[0])) {
        this.waiting = true; // the NIC calls resume() when the guest has room again
        break;
      }
      this.queue.shift();
    }
    if (wasFull && this.queue.length < this.capacity) this.sink?.writable();
  }
}

describe("createNicTestbed with a backend of the user's own", () => {
  it('property: every frame the guest sends comes back through a reflecting backend, intact and in order', async () => {
    const peerMac = Uint8Array.from([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
    // Frames to the peer from the guest's own MAC: reflected, they come back addressed to it.
    const fromGuest = frameArbitrary(peerMac).map((f) => {
      f.set(TESTBED_GUEST_MAC, 6);
      return f;
    });
    await fc.assert(
      fc.asyncProperty(fc.array(fromGuest, { minLength: 1, maxLength: 40 }), fc.integer({ min: 1, max: 8 }), async (frames, capacity) => {
        const bed = await createNicTestbed({ backend: new Reflector(capacity), guest: { recvBufferBytes: 256 << 10 } });
        await bed.guest.connect();
        for (const f of frames) await bed.guest.until(() => bed.guest.send(f));
        const got = await bed.guest.until(() => (bed.guest.received(0).length === frames.length ? bed.guest.received(0) : undefined));
        for (let i = 0; i < frames.length; i++) {
          const back = got[i].frame;
          expect([...back.subarray(0, 6)]).toEqual([...TESTBED_GUEST_MAC]);
          expect([...back.subarray(6, 12)]).toEqual([...frames[i].subarray(0, 6)]);
          expect(Buffer.from(back.subarray(12)).equals(Buffer.from(frames[i].subarray(12)))).toBe(true);
        }
        expect(bed.nic.stats).toMatchObject({ txFrames: frames.length, rxFrames: frames.length });
      }),
      { numRuns: fuzzRuns(25) },
    );
  });
});
