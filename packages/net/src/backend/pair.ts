/**
 * An in-process backend: two connected ports, each a NetBackend. A frame one port sends is
 * copied once (the peer keeps it) and delivered to the peer's sink at once when it takes it,
 * else queued in order. Backpressure both ways: a port whose peer holds `capacity` queued
 * frames answers send() with false and is told writable() when the peer drains below it. A
 * sender that ignores that may queue up to twice the capacity; beyond, frames are dropped and
 * counted (the only loss, and only for a sender breaking the contract).
 */
import { HostUsageError } from '@hvemu/common';
import { gather, type NetBackend, type NetBackendSink } from './backend.js';

export interface PortStats {
  sent: number;
  received: number;
  /** Frames dropped because the sender ignored backpressure past twice the capacity. */
  overflowDrops: number;
  /** Frames sent after close (dropped). */
  closedDrops: number;
}

export class PairPort implements NetBackend {
  peer!: PairPort;
  private sink: NetBackendSink | null = null;
  /** Frames waiting for this port's sink, in order. */
  private readonly inbox: Uint8Array[] = [];
  private inboxHead = 0;
  private paused = false;
  private closed = false;
  /** The peer was refused (send returned false) and waits for writable(). */
  private peerWaiting = false;
  private delivering = false;
  readonly stats: PortStats = { sent: 0, received: 0, overflowDrops: 0, closedDrops: 0 };

  constructor(
    readonly name: string,
    private readonly capacity: number,
  ) {}

  attach(sink: NetBackendSink): void {
    this.sink = sink;
    this.paused = false;
    this.deliver();
  }

  send(segments: readonly Uint8Array[]): boolean {
    if (this.closed || this.peer.closed) {
      this.stats.closedDrops++;
      return true;
    }
    this.stats.sent++;
    // The one copy: the peer keeps the frame beyond this call.
    return this.peer.enqueue(gather(segments, new Uint8Array(sum(segments))));
  }

  resume(): void {
    this.paused = false;
    this.deliver();
  }

  close(): void {
    this.closed = true;
    this.inbox.length = 0;
    this.inboxHead = 0;
  }

  /** Frames queued for this port's sink. */
  get queued(): number {
    return this.inbox.length - this.inboxHead;
  }

  private enqueue(frame: Uint8Array): boolean {
    if (this.queued >= 2 * this.capacity) {
      this.peer.stats.overflowDrops++;
      return false;
    }
    this.inbox.push(frame);
    this.deliver();
    const full = this.queued >= this.capacity;
    if (full) this.peerWaiting = true;
    return !full;
  }

  /** Hands queued frames to the sink until it refuses one or the inbox is empty. */
  private deliver(): void {
    // A sink that sends on its own port from receive() must not re-enter this loop.
    if (this.delivering) return;
    this.delivering = true;
    try {
      while (!this.paused && this.sink && this.inboxHead < this.inbox.length) {
        if (!this.sink.receive(this.inbox[this.inboxHead])) {
          this.paused = true;
          break;
        }
        this.inbox[this.inboxHead++] = EMPTY;
        this.stats.received++;
      }
      if (this.inboxHead === this.inbox.length) {
        this.inbox.length = 0;
        this.inboxHead = 0;
      } else if (this.inboxHead > 1024) {
        // Never fully drained under steady traffic: drop the consumed prefix now and then.
        this.inbox.splice(0, this.inboxHead);
        this.inboxHead = 0;
      }
    } finally {
      this.delivering = false;
    }
    if (this.peerWaiting && this.queued < this.capacity) {
      this.peerWaiting = false;
      this.peer.sink?.writable();
    }
  }
}

const EMPTY = new Uint8Array(0);

function sum(segments: readonly Uint8Array[]): number {
  let n = 0;
  for (const s of segments) n += s.length;
  return n;
}

/** Two connected ports (a VM's NIC on one, a test or a second VM on the other). */
export function createPortPair(options: { capacity?: number; names?: readonly [string, string] } = {}): [PairPort, PairPort] {
  const capacity = options.capacity ?? 256;
  if (!Number.isInteger(capacity) || capacity < 1)
    throw new HostUsageError(`port pair capacity must be a positive integer, got ${capacity}`);
  const [an, bn] = options.names ?? ['pair port a', 'pair port b'];
  const a = new PairPort(an, capacity);
  const b = new PairPort(bn, capacity);
  a.peer = b;
  b.peer = a;
  return [a, b];
}
