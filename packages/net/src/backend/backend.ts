/**
 * What a network backend is to the netvsp device: frames in both directions, with
 * backpressure both ways and no copies the backend does not need.
 *
 * Guest to network: `send(segments)` takes one frame given as segments (zero-copy views of the
 * guest's send buffer or page buffers, valid during the call only). The backend writes them
 * out or copies them if it must keep them; it returns false when it is full, and the device
 * then stops reading the guest's rings (so the guest's sends wait, completed only once taken)
 * until the backend calls `sink.writable()`.
 *
 * Network to guest: the backend calls `sink.receive(frame)` (a view valid during the call). A
 * false answer means "not taken": the backend keeps that frame and delivers nothing more
 * until the device calls `resume()` (the guest freed receive-buffer sections or ring space).
 */
export interface NetBackendSink {
  /** A frame from the network. False: not taken; keep it and wait for resume(). */
  receive(frame: Uint8Array): boolean;
  /** The backend takes frames again after send() returned false. */
  writable(): void;
}

export interface NetBackend {
  /** For logs and errors ("tap hvemu0", "pair port a"). */
  readonly name: string;
  /** Starts delivering received frames to `sink` (one sink; a second attach replaces the first). */
  attach(sink: NetBackendSink): void;
  /** Takes one frame (its segments in order). False: taken, but the backend is full now. */
  send(segments: readonly Uint8Array[]): boolean;
  /**
   * Optional, the same as send([bytes.subarray(offset, offset + length)]) without making the
   * view: for a frame that is one run of a buffer (the device checked the range is inside it).
   */
  sendFrom?(bytes: Uint8Array, offset: number, length: number): boolean;
  /** The sink takes frames again after refusing one. */
  resume(): void;
  /** Releases the backend (the fd, the peer); frames after this are dropped. */
  close(): void;
}

/** The bytes of `segments` in one buffer (for backends that need one). */
export function gather(segments: readonly Uint8Array[], into?: Uint8Array): Uint8Array {
  if (segments.length === 1 && !into) return segments[0];
  let length = 0;
  for (const s of segments) length += s.length;
  const out = into && into.length >= length ? into.subarray(0, length) : new Uint8Array(length);
  let at = 0;
  for (const s of segments) {
    out.set(s, at);
    at += s.length;
  }
  return out;
}
