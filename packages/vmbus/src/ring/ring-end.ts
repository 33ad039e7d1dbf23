/**
 * What a ring's two ends share: the ring, a name for log records, the state that stops every
 * later call (broken by the other end, or closed with its channel), and the check of an index
 * read from the guest-writable control page.
 */
import { silentLogger, type Logger } from '@hvemu/common';
import { RingClosedError, RingCorruptError, type RingFault } from './errors.js';
import type { PacketView } from './reader.js';
import type { RingBuffer } from './ring-buffer.js';
import type { OutgoingPacket } from './writer.js';

export interface RingEndOptions {
  /** Raise the other end's interrupt (the channel's signal). */
  signal: () => void;
  /** Where protocol violations are reported. */
  logger?: Logger;
  /** A name for log records (e.g. "relid 5 outbound"). */
  name?: string;
  /** Sees every packet this end writes (writer) or reads (reader): traces. Off by default. */
  tap?: RingTap;
}

/** Packet taps for traces: the packet as written, or the view as read (valid during the call). */
export interface RingTap {
  written?(packet: OutgoingPacket): void;
  read?(packet: PacketView): void;
}

export abstract class RingEnd {
  readonly ring: RingBuffer;
  protected readonly control: Uint32Array;
  /** Bytes in the data area. */
  protected readonly size: number;
  protected readonly logger: Logger;
  protected readonly name: string;
  protected readonly tap: RingTap | undefined;
  protected brokenBy: RingCorruptError | null = null;
  protected closedBy: RingClosedError | null = null;

  constructor(ring: RingBuffer, options: RingEndOptions) {
    this.ring = ring;
    this.control = ring.control;
    this.size = ring.dataSize;
    this.logger = options.logger ?? silentLogger;
    this.name = options.name ?? 'ring';
    this.tap = options.tap;
  }

  /** The error that broke this ring, if any. */
  get broken(): RingCorruptError | null {
    return this.brokenBy;
  }

  /** True once close() was called: every later operation throws RingClosedError. */
  get closed(): boolean {
    return this.closedBy !== null;
  }

  /**
   * Retires this end: its ring's pages are no longer the channel's (closed, rescinded), so no
   * later call may touch them. The first reason is kept.
   */
  close(reason = 'the ring was closed'): void {
    this.closedBy ??= new RingClosedError(`${this.name}: ${reason}`);
  }

  /** Throws if the ring is broken or closed. */
  protected checkUsable(): void {
    if (this.brokenBy !== null || this.closedBy !== null) throw this.brokenBy ?? this.closedBy!;
  }

  /** An index from the control page must be an 8-aligned offset inside the data area. */
  protected checkIndex(index: number, fault: RingFault): void {
    if (index >= this.size || index % 8 !== 0) {
      this.fail(fault, `index ${index} is not an 8-aligned offset below ${this.size}`, index);
    }
  }

  /** The other end broke the protocol: this end stays broken, the fault is logged once. */
  protected fail(fault: RingFault, detail: string, at: number): never {
    this.brokenBy = new RingCorruptError(fault, detail, at);
    this.logger.warn(`${this.name}: ${this.brokenBy.message}`, { fault, ring: this.name });
    throw this.brokenBy;
  }
}
