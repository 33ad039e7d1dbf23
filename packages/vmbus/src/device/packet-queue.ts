/**
 * PacketQueue: a device's view of one open channel's rings. It reads the guest's packets
 * (draining the way Linux does: mask, read, unmask, re-check), hands out the guest data a
 * GPA-direct packet names as bounds-checked GuestData, completes requests by transaction id,
 * and sends with backpressure: a packet that does not fit waits, in order, for the guest to
 * free space (pending_send_sz makes the guest signal then) instead of failing. At close every
 * waiting send rejects with RingClosedError and every GuestData handed out is revoked.
 */
import { HostUsageError, silentLogger, type Logger } from '@hvemu/common';
import { GuestMemoryError, type GuestMemory } from '@hvemu/memory';
import { RingClosedError } from '../ring/errors.js';
import type { RingEndpoint } from '../ring/pair.js';
import { FEAT_PENDING_SEND_SZ, RING_FEATURE_BITS, VM_PKT_COMP, VM_PKT_DATA_USING_GPA_DIRECT } from '../ring/protocol.js';
import type { PacketView } from '../ring/reader.js';
import { RingWriter, type OutgoingPacket } from '../ring/writer.js';
import { GuestData, GuestDataLease } from './guest-data.js';

export interface PacketQueueOptions {
  memory: GuestMemory;
  logger?: Logger;
  /** For log records and errors (e.g. "relid 5"). */
  name?: string;
  /** Bytes of packets that may wait for ring space (they are copied); more is a HostUsageError. Default 4 MiB. */
  maxWaitingBytes?: number;
  /** Most bytes one packet's GPA-direct ranges may name. Default 64 MiB. */
  maxExternalBytes?: number;
  /**
   * How often to retry waiting sends when the guest's ring lacks pending_send_sz (it then never
   * signals for space), in ms. Default 1.
   */
  pollMs?: number;
}

interface WaitingSend {
  readonly packet: OutgoingPacket;
  readonly space: number;
  readonly resolve: () => void;
  readonly reject: (e: unknown) => void;
}

const DEFAULT_MAX_WAITING = 4 << 20;
const DEFAULT_MAX_EXTERNAL = 64 << 20;

export class PacketQueue {
  private readonly waiting: WaitingSend[] = [];
  private waitingBytes = 0;
  private readonly lease = new GuestDataLease();
  private closedBy: RingClosedError | null = null;
  private poll: ReturnType<typeof setTimeout> | null = null;
  private readonly logger: Logger;
  private readonly name: string;
  private readonly completion: OutgoingPacket = { type: VM_PKT_COMP, transactionId: 0n };
  /** Statistics. */
  readonly stats = { packetsRead: 0, packetsSent: 0, sendsWaited: 0 };

  constructor(
    private readonly rings: RingEndpoint,
    private readonly options: PacketQueueOptions,
  ) {
    this.logger = options.logger ?? silentLogger;
    this.name = options.name ?? 'channel';
  }

  /** The lease every GuestData of this open is made under (child leases for GPADL views). */
  get dataLease(): GuestDataLease {
    return this.lease;
  }

  get closed(): boolean {
    return this.closedBy !== null;
  }

  /** Sends waiting for ring space. */
  get waitingSends(): number {
    return this.waiting.length;
  }

  // ---- reading

  /**
   * Calls `fn` for every packet the guest has written, up to `max`, the way Linux drains: with
   * interrupt_mask set, then cleared and checked again. Throws RingCorruptError (the channel
   * must be failed) if the guest broke the ring. The view is valid during the call only.
   *
   * `fn` may return false to stop after that packet (a device that cannot take more now).
   *
   * Stopping at `max`, or at a false, leaves packets in the ring that no signal will announce
   * again (a guest signals only when the ring goes from empty to non-empty): a device that reads
   * with a budget must come back by itself, e.g. on the next event-loop turn, while the result
   * equals `max`, or when it can take packets again.
   */
  read(fn: (packet: PacketView) => boolean | void, max = Infinity): number {
    const inbound = this.rings.inbound;
    let n = 0;
    for (;;) {
      inbound.mask();
      n += inbound.readBatch(fn, max - n);
      if (n >= max || inbound.stopped) {
        // Stopped early: leave the interrupt unmasked so the guest's next write signals.
        inbound.unmask();
        break;
      }
      if (!inbound.unmask()) break;
    }
    this.stats.packetsRead += n;
    return n;
  }

  /**
   * The guest data a VM_PKT_DATA_USING_GPA_DIRECT packet names, in range order. Throws
   * GuestMemoryError for a page outside guest RAM, HostUsageError for a packet of another type
   * or over maxExternalBytes: refuse that request. Revoked when the channel closes.
   */
  externalData(packet: PacketView): GuestData {
    this.checkOpen();
    if (packet.type !== VM_PKT_DATA_USING_GPA_DIRECT) {
      throw new HostUsageError(`${this.name}: packet type ${packet.type} names no GPA-direct data`);
    }
    return GuestData.fromRanges(this.options.memory, packet.gpaRanges(), {
      maxBytes: this.options.maxExternalBytes ?? DEFAULT_MAX_EXTERNAL,
      lease: this.lease,
    });
  }

  /**
   * The bytes a VM_PKT_DATA_USING_XFER_PAGES packet names in its transfer page set `set` (the
   * GuestData of the GPADL the device registered as that set), one slice per range. A range
   * outside the set is the guest's error: GuestMemoryError (refuse that request).
   */
  transferData(packet: PacketView, set: GuestData): GuestData[] {
    this.checkOpen();
    const xfer = packet.transferPages();
    if (!xfer) throw new HostUsageError(`${this.name}: packet type ${packet.type} names no transfer pages`);
    return xfer.ranges.map((r) => {
      if (r.byteOffset + r.byteCount > set.length) {
        throw new GuestMemoryError(
          `${this.name}: transfer range [${r.byteOffset}, +${r.byteCount}) outside a ${set.length}-byte page set`,
          NaN,
          r.byteCount,
        );
      }
      return set.slice(r.byteOffset, r.byteCount);
    });
  }

  // ---- writing

  /** Writes `packet` now if it fits and no earlier send is waiting; false otherwise (nothing written). */
  trySend(packet: OutgoingPacket): boolean {
    this.checkOpen();
    if (this.waiting.length > 0 || !this.rings.outbound.write(packet)) return false;
    this.stats.packetsSent++;
    return true;
  }

  /**
   * Writes `packet`, waiting in order behind earlier sends until the guest frees enough ring
   * space. The packet is copied if it must wait, so the caller may reuse its buffers at once.
   * Rejects with RingClosedError if the channel closes first.
   */
  send(packet: OutgoingPacket): Promise<void> {
    try {
      if (this.trySend(packet)) return Promise.resolve();
    } catch (error) {
      // Closed, broken, or a packet that can never fit: the promise says so, nothing waits.
      return Promise.reject(error);
    }
    const copy = copyPacket(packet);
    const space = RingWriter.ringSpace(copy.header!.length, (copy.payload as Uint8Array).length);
    const max = this.options.maxWaitingBytes ?? DEFAULT_MAX_WAITING;
    if (this.waitingBytes + space > max) {
      return Promise.reject(new HostUsageError(`${this.name}: more than ${max} bytes of packets waiting for ring space`));
    }
    return new Promise<void>((resolve, reject) => {
      this.waiting.push({ packet: copy, space, resolve, reject });
      this.waitingBytes += space;
      this.stats.sendsWaited++;
      if (this.waiting.length === 1) this.waitForSpace();
    });
  }

  /** VM_PKT_COMP for the guest's request `transactionId`, carrying `payload`. */
  complete(transactionId: bigint | number, payload?: Uint8Array): Promise<void> {
    this.completion.transactionId = transactionId;
    this.completion.payload = payload;
    return this.send(this.completion);
  }

  /** The guest signalled (data or space): writes whatever waits and now fits. The wiring calls it. */
  onGuestSignal(): void {
    if (this.closedBy === null && this.waiting.length > 0) this.flush();
  }

  /** The channel closed: waiting sends reject, GuestData is revoked, nothing more is read or written. */
  close(reason = 'the channel closed'): void {
    if (this.closedBy) return;
    this.closedBy = new RingClosedError(`${this.name}: ${reason}`);
    this.lease.revoke(reason);
    if (this.poll) clearTimeout(this.poll);
    this.poll = null;
    for (const w of this.waiting.splice(0)) w.reject(this.closedBy);
    this.waitingBytes = 0;
  }

  private checkOpen(): void {
    if (this.closedBy) throw this.closedBy;
  }

  /** Writes waiting packets in order while they fit; then asks for space for the next one. */
  private flush(): void {
    const outbound = this.rings.outbound;
    try {
      while (this.waiting.length > 0) {
        const head = this.waiting[0];
        if (!outbound.write(head.packet)) return this.waitForSpace();
        this.waiting.shift();
        this.waitingBytes -= head.space;
        this.stats.packetsSent++;
        head.resolve();
      }
      outbound.clearPendingSend();
    } catch (error) {
      // A broken or closed ring: nothing waiting can be sent any more.
      for (const w of this.waiting.splice(0)) w.reject(error);
      this.waitingBytes = 0;
    }
  }

  /**
   * Sets pending_send_sz for the head packet so the guest signals when it fits (re-checking
   * the race with a guest that drained meanwhile). A guest ring without pending_send_sz never
   * signals for space: poll it.
   */
  private waitForSpace(): void {
    const head = this.waiting[0];
    if (!head) return;
    const outbound = this.rings.outbound;
    if (outbound.requestSpace(head.space)) return this.flush();
    const hasPendingSend = (Atomics.load(outbound.ring.control, RING_FEATURE_BITS) & FEAT_PENDING_SEND_SZ) !== 0;
    if (!hasPendingSend && this.poll === null) {
      this.poll = setTimeout(() => {
        this.poll = null;
        this.onGuestSignal();
      }, this.options.pollMs ?? 1);
      this.poll.unref?.();
    }
  }
}

/** A packet whose header and payload are copies (one payload buffer), safe to keep while it waits. */
function copyPacket(p: OutgoingPacket): OutgoingPacket {
  const parts = p.payload === undefined ? [] : p.payload instanceof Uint8Array ? [p.payload] : p.payload;
  const payload = new Uint8Array(parts.reduce((n, b) => n + b.length, 0));
  let at = 0;
  for (const b of parts) {
    payload.set(b, at);
    at += b.length;
  }
  return { type: p.type, flags: p.flags, transactionId: p.transactionId, header: p.header ? p.header.slice() : new Uint8Array(0), payload };
}
