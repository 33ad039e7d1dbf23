/**
 * The reference model of one VMBus ring with both ends, stated in bytes and packets rather
 * than indices, so it is an independent account of the rules in Linux ring_buffer.c:
 *
 * - a packet occupies align8(16 + header + payload) + 8 bytes; the writer writes it only if
 *   free > that (free = size - bytes written and not yet committed by the reader);
 * - publishing makes written packets readable; it signals the reader iff the reader had
 *   committed everything published before (the ring was empty) and interrupt_mask is clear;
 * - the reader's commit signals the writer iff feat_pending_send_sz is set, pending_send_sz
 *   is non-zero, free space was <= pending before the commit and is > pending after it.
 *
 * Users run it against their own ring code with `ringCommands()` (fast-check model-based
 * testing) by implementing `RingSystem`.
 */
import { VMBUS_PKT_TRAILER, VMPACKET_DESCRIPTOR_SIZE } from '../ring/protocol.js';
import type { OutgoingPacket } from '../ring/writer.js';

/** A packet as a reader sees it (payload includes the zero padding to 8 bytes). */
export interface ReceivedPacket {
  type: number;
  flags: number;
  transactionId: bigint;
  header: Uint8Array;
  payload: Uint8Array;
}

interface ModelPacket {
  expected: ReceivedPacket;
  space: number;
}

/** Bytes a packet occupies in the ring. */
export function packetSpace(p: OutgoingPacket): number {
  const header = p.header?.length ?? 0;
  return ((VMPACKET_DESCRIPTOR_SIZE + header + payloadBytes(p).length + 7) & ~7) + VMBUS_PKT_TRAILER;
}

/** What the reader must receive for an outgoing packet. */
export function expectedReception(p: OutgoingPacket): ReceivedPacket {
  const payload = payloadBytes(p);
  const padded = new Uint8Array((payload.length + 7) & ~7);
  padded.set(payload);
  const tid = p.transactionId ?? 0;
  return {
    type: p.type,
    flags: p.flags ?? 0,
    transactionId: typeof tid === 'bigint' ? tid : BigInt(tid),
    header: new Uint8Array(p.header ?? new Uint8Array(0)),
    payload: padded,
  };
}

function payloadBytes(p: OutgoingPacket): Uint8Array {
  const payload = p.payload;
  if (payload === undefined) return new Uint8Array(0);
  if (payload instanceof Uint8Array) return payload;
  const total = payload.reduce((n, part) => n + part.length, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const part of payload) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

export class RingModel {
  /** Published and not yet consumed by the reader. */
  private readable: ModelPacket[] = [];
  /** Consumed by the reader, not yet committed: still occupying space. */
  private consumedBytes = 0;
  /** Published bytes not yet committed (readable + consumed). */
  private publishedBytes = 0;
  /** Written inside a batch, not yet published. */
  private unpublished: ModelPacket[] = [];
  private batching = false;
  private batchStartedEmpty = false;
  interruptMask = false;
  pendingSendSize = 0;
  signalsToReader = 0;
  signalsToWriter = 0;

  constructor(
    readonly dataSize: number,
    readonly pendingSendFeature: boolean,
  ) {}

  private get usedBytes(): number {
    return this.publishedBytes + this.unpublished.reduce((n, p) => n + p.space, 0);
  }

  /** Free space as the writer computes it. */
  get freeBytes(): number {
    return this.dataSize - this.usedBytes;
  }

  get readableCount(): number {
    return this.readable.length;
  }

  /** Returns whether the packet is written. */
  write(p: OutgoingPacket): boolean {
    const space = packetSpace(p);
    if (this.freeBytes <= space) return false;
    const packet = { expected: expectedReception(p), space };
    if (this.batching) {
      this.unpublished.push(packet);
    } else {
      const wasEmpty = this.publishedBytes === 0;
      this.publish([packet], wasEmpty);
    }
    return true;
  }

  beginBatch(): void {
    this.batching = true;
    this.batchStartedEmpty = this.publishedBytes === 0;
  }

  endBatch(): void {
    this.batching = false;
    const batch = this.unpublished;
    this.unpublished = [];
    if (batch.length > 0) this.publish(batch, this.batchStartedEmpty);
  }

  private publish(packets: ModelPacket[], ringWasEmpty: boolean): void {
    for (const p of packets) {
      this.readable.push(p);
      this.publishedBytes += p.space;
    }
    if (ringWasEmpty && !this.interruptMask) this.signalsToReader++;
  }

  peek(): ReceivedPacket | null {
    return this.readable[0]?.expected ?? null;
  }

  /** Reads up to `max` packets and commits. */
  read(max: number): ReceivedPacket[] {
    const out: ReceivedPacket[] = [];
    while (out.length < max && this.readable.length > 0) {
      const p = this.readable.shift()!;
      this.consumedBytes += p.space;
      out.push(p.expected);
    }
    this.commit();
    return out;
  }

  private commit(): void {
    if (this.consumedBytes === 0) return;
    const freed = this.consumedBytes;
    const freeBefore = this.dataSize - this.publishedBytes;
    this.publishedBytes -= freed;
    this.consumedBytes = 0;
    const freeAfter = freeBefore + freed;
    if (!this.pendingSendFeature || this.pendingSendSize === 0) return;
    if (freeBefore <= this.pendingSendSize && freeAfter > this.pendingSendSize) this.signalsToWriter++;
  }

  mask(): void {
    this.interruptMask = true;
  }

  /** Returns whether data is readable after unmasking. */
  unmask(): boolean {
    this.interruptMask = false;
    return this.readable.length > 0;
  }

  /** Returns whether `bytes` are already free (then pending_send_sz stays clear). */
  requestSpace(bytes: number): boolean {
    if (!this.pendingSendFeature) return this.freeBytes > bytes;
    if (this.freeBytes > bytes) {
      this.pendingSendSize = 0;
      return true;
    }
    this.pendingSendSize = bytes;
    return false;
  }

  clearPendingSend(): void {
    this.pendingSendSize = 0;
  }
}
