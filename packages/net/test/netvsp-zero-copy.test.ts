/**
 * "Frames are not copied more than the backend requires": netvsp hands a guest's frame to the
 * backend as views of guest RAM (its send-buffer section or its page buffers), never a copy of
 * its own, with the bytes the guest wrote; the only copies are the ones a backend makes itself.
 */
import { describe, expect, it } from 'vitest';
import type { NetBackend, NetBackendSink } from '@hvemu/net';
import { ethernetFrame } from '@hvemu/net/testing';
import { GUEST_MAC, nicSim, PEER_MAC, sameBytes } from './helpers/sim.js';

/** What the backend was handed for one frame: the buffers it was given and the bytes they held then. */
interface Handed {
  buffers: ArrayBufferLike[];
  bytes: Uint8Array;
}

/** A backend that records what it is handed (copying only to compare afterwards). */
class RecordingBackend implements NetBackend {
  readonly name = 'recording';
  readonly handed: Handed[] = [];
  private sink: NetBackendSink | null = null;

  constructor(withSendFrom: boolean) {
    if (!withSendFrom) this.sendFrom = undefined;
  }

  attach(sink: NetBackendSink): void {
    this.sink = sink;
  }
  send(segments: readonly Uint8Array[]): boolean {
    const length = segments.reduce((n, s) => n + s.length, 0);
    const bytes = new Uint8Array(length);
    let at = 0;
    for (const s of segments) {
      bytes.set(s, at);
      at += s.length;
    }
    this.handed.push({ buffers: segments.map((s) => s.buffer), bytes });
    return true;
  }
  sendFrom?: (bytes: Uint8Array, offset: number, length: number) => boolean = (bytes, offset, length) => {
    this.handed.push({ buffers: [bytes.buffer], bytes: bytes.slice(offset, offset + length) });
    return true;
  };
  resume(): void {}
  close(): void {
    this.sink = null;
  }
  get attached(): boolean {
    return this.sink !== null;
  }
}

describe('netvsp hands guest frames to the backend without copying them', () => {
  for (const withSendFrom of [true, false]) {
    it(`section and page-buffer sends arrive as views of guest RAM (backend ${withSendFrom ? 'with' : 'without'} sendFrom)`, async () => {
      const backend = new RecordingBackend(withSendFrom);
      const sim = await nicSim({ backend });
      await sim.guest.connect();
      expect(backend.attached).toBe(true);
      // The RAM every guest view is made over (the simulated partition's one region).
      const ram = sim.memory.bytes(0, 4096)!.buffer;
      const frames = [60, 1514, 200, 1514].map((size, k) => ethernetFrame(PEER_MAC, GUEST_MAC, size, (i) => (i * 7 + k) & 0xff));
      const vias = ['section', 'pages', 'section', 'pages'] as const;
      for (let k = 0; k < frames.length; k++) await sim.guest.until(() => sim.guest.send(frames[k], { via: vias[k] }));
      await sim.guest.until(() => backend.handed.length === frames.length);
      for (let k = 0; k < frames.length; k++) {
        const h = backend.handed[k];
        expect(sameBytes(h.bytes, frames[k])).toBe(true);
        for (const b of h.buffers) expect(b).toBe(ram);
      }
    });
  }
});
