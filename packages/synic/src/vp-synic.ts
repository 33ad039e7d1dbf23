/**
 * The SynIC of one virtual processor, emulated in user space: SCONTROL, SIMP, SIEFP, EOM and
 * the 16 SINTs, with the message page and event-flags page in guest memory.
 *
 * Message slots follow the TLFS protocol against a guest running on another thread:
 * - a free slot (message_type == HVMSG_NONE) is filled payload first, then message_type is
 *   published with a sequentially consistent store;
 * - a busy slot gets msg_pending set (an atomic OR, a full barrier) and its type is loaded
 *   again: either the guest, which stores HVMSG_NONE, fences and then reads msg_pending, sees
 *   the flag and writes EOM, or this side sees the slot free and delivers at once;
 * - messages wait in a bounded queue per SINT; EOM, unmasking, enabling or moving SIMP retries.
 * Event flags are set with an atomic OR; only a 0 -> 1 transition interrupts.
 * Masked SINTs hold deliveries (messages stay queued, event interrupts are remembered) until
 * unmasked; polling SINTs receive messages and flags but are never interrupted.
 */
import { HostUsageError, silentLogger, type Logger } from '@hvemu/common';
import { PAGE_SIZE, type GuestMemory } from '@hvemu/memory';
import { MsrFault, SynicQueueFull } from './errors.js';
import {
  HV_EVENT_FLAGS_BYTE_COUNT,
  HV_EVENT_FLAGS_COUNT,
  HV_MESSAGE_FLAG_PENDING,
  HV_MESSAGE_PAYLOAD_BYTE_COUNT,
  HV_MESSAGE_SIZE,
  HV_PAGE_ENABLE,
  HV_PAGE_GPA_MASK,
  HV_SYNIC_SINT_AUTO_EOI,
  HV_SYNIC_SINT_COUNT,
  HV_SYNIC_SINT_MASKED,
  HV_SYNIC_SINT_POLLING,
  HV_SYNIC_SINT_RESET,
  HV_SYNIC_SINT_VALID,
  HV_SYNIC_VERSION_1,
  HV_X64_MSR_EOM,
  HV_X64_MSR_SCONTROL,
  HV_X64_MSR_SIEFP,
  HV_X64_MSR_SIMP,
  HV_X64_MSR_SINT0,
  HV_X64_MSR_SINT15,
  HV_X64_MSR_SVERSION,
  HVMSG_NONE,
} from '@hvemu/hvdef';

/** Raises SynIC interrupts in the guest: the accelerator's job (MSI into the LAPIC, or a user-space LAPIC). */
export interface SynicInterruptSink {
  /** Raise `vector` on `vp` as a fixed, edge-triggered interrupt. `autoEoi`: the SINT has AutoEOI set. */
  raise(vp: number, vector: number, autoEoi: boolean): void;
}

/** A message for a SINT's slot. */
export interface SynicMessage {
  /** message_type: HVMSG_* or a guest-visible type such as VMBus's 1. */
  type: number;
  /** At most 240 bytes. */
  payload: Uint8Array;
  /** The sender/port id field. */
  sender?: bigint;
  /**
   * Called with the SynIC's own copy of the payload just before it is written into the slot;
   * it may update it in place (timers stamp DeliveryTime, which the TLFS defines as the time
   * the message is placed in the slot, not when it was first posted).
   */
  beforeWrite?: (payload: Uint8Array) => void;
  /** Called when the message is written into the slot (timers use it to re-arm). */
  onDelivered?: () => void;
}

/** What the SynIC did, as it happened (traces, diagnostics). */
export interface SynicObserver {
  messageDelivered?(vp: number, sint: number, type: number, payload: Uint8Array): void;
  eventFlagSet?(vp: number, sint: number, flag: number): void;
  interruptRaised?(vp: number, vector: number, autoEoi: boolean): void;
  eom?(vp: number): void;
  /** A guest write of a synthetic MSR other than EOM, reported by HyperV before it takes effect (a write refused with #GP too). */
  msrWritten?(vp: number, msr: number, value: bigint): void;
}

export interface VpSynicOptions {
  observer?: SynicObserver;
  /** Messages that may wait per SINT before postMessage throws SynicQueueFull. */
  queueLimit?: number;
  /** A SINT whose queue was full took a message into its slot: it can queue again. */
  onQueueSpace?(sint: number): void;
  logger?: Logger;
}

const SINT_MSR_COUNT = HV_SYNIC_SINT_COUNT;
const SCONTROL_ENABLE = 1n;
const PAGE_RESERVED_BITS = 0xffen; // bits 1..11 of SIMP / SIEFP

export class VpSynic {
  private scontrol = 0n;
  private simp = 0n;
  private siefp = 0n;
  private readonly sints: bigint[] = new Array(SINT_MSR_COUNT).fill(HV_SYNIC_SINT_RESET);
  private readonly queues: SynicMessage[][] = Array.from({ length: SINT_MSR_COUNT }, () => []);
  /** Event flags set while SIEFP or the SynIC was disabled, applied when it is enabled. */
  private readonly heldFlags: Set<number>[] = Array.from({ length: SINT_MSR_COUNT }, () => new Set());
  /** An event interrupt that arrived while the SINT was masked. */
  private readonly heldInterrupt: boolean[] = new Array(SINT_MSR_COUNT).fill(false);
  private messageWords: Uint32Array | null = null;
  private eventWords: Uint32Array | null = null;
  private readonly queueLimit: number;
  private readonly logger: Logger;
  private readonly observer: SynicObserver | undefined;
  private readonly onQueueSpace: ((sint: number) => void) | undefined;
  /** Statistics. */
  messagesDelivered = 0;
  interruptsRaised = 0;

  constructor(
    readonly vp: number,
    private readonly memory: GuestMemory,
    private readonly sink: SynicInterruptSink,
    options: VpSynicOptions = {},
  ) {
    this.queueLimit = options.queueLimit ?? 256;
    this.observer = options.observer;
    this.onQueueSpace = options.onQueueSpace;
    this.logger = options.logger ?? silentLogger;
  }

  /** True for the MSRs this class owns. */
  static owns(msr: number): boolean {
    return (msr >= HV_X64_MSR_SCONTROL && msr <= HV_X64_MSR_EOM) || (msr >= HV_X64_MSR_SINT0 && msr <= HV_X64_MSR_SINT15);
  }

  readMsr(msr: number): bigint {
    switch (msr) {
      case HV_X64_MSR_SCONTROL:
        return this.scontrol;
      case HV_X64_MSR_SVERSION:
        return BigInt(HV_SYNIC_VERSION_1);
      case HV_X64_MSR_SIEFP:
        return this.siefp;
      case HV_X64_MSR_SIMP:
        return this.simp;
      case HV_X64_MSR_EOM:
        return 0n;
      default:
        if (msr >= HV_X64_MSR_SINT0 && msr <= HV_X64_MSR_SINT15) return this.sints[msr - HV_X64_MSR_SINT0];
        throw new MsrFault(msr, null, 'not a SynIC MSR');
    }
  }

  writeMsr(msr: number, value: bigint): void {
    switch (msr) {
      case HV_X64_MSR_SCONTROL:
        if (value & ~SCONTROL_ENABLE) throw new MsrFault(msr, value, 'reserved bits set');
        this.scontrol = value;
        this.retryAll();
        return;
      case HV_X64_MSR_SVERSION:
        throw new MsrFault(msr, value, 'SVERSION is read-only');
      case HV_X64_MSR_SIEFP:
        this.siefp = this.checkPageMsr(msr, value);
        this.eventWords = this.mapPage(this.siefp);
        this.retryAll();
        return;
      case HV_X64_MSR_SIMP:
        this.simp = this.checkPageMsr(msr, value);
        this.messageWords = this.mapPage(this.simp);
        this.retryAll();
        return;
      case HV_X64_MSR_EOM:
        // End of message: the guest freed a slot that had msg_pending set.
        this.observer?.eom?.(this.vp);
        this.retryAll();
        return;
      default:
        if (msr >= HV_X64_MSR_SINT0 && msr <= HV_X64_MSR_SINT15) {
          this.writeSint(msr - HV_X64_MSR_SINT0, msr, value);
          return;
        }
        throw new MsrFault(msr, value, 'not a SynIC MSR');
    }
  }

  private writeSint(sint: number, msr: number, value: bigint): void {
    if (value & ~HV_SYNIC_SINT_VALID) throw new MsrFault(msr, value, 'reserved bits set');
    // An unmasked SINT must name a real interrupt vector (KVM and Hyper-V refuse 0-15).
    if (!(value & HV_SYNIC_SINT_MASKED) && (value & 0xffn) < 16n) throw new MsrFault(msr, value, 'vector below 16');
    this.sints[sint] = value;
    if (!(value & HV_SYNIC_SINT_MASKED)) {
      this.tryDeliver(sint);
      if (this.heldInterrupt[sint]) {
        this.heldInterrupt[sint] = false;
        this.interrupt(sint);
      }
    }
  }

  private checkPageMsr(msr: number, value: bigint): bigint {
    if (value & PAGE_RESERVED_BITS) throw new MsrFault(msr, value, 'reserved bits set');
    if (value & HV_PAGE_ENABLE) {
      const gpa = Number(value & HV_PAGE_GPA_MASK);
      if (!this.memory.contains(gpa, PAGE_SIZE)) throw new MsrFault(msr, value, `page 0x${gpa.toString(16)} is not guest RAM`);
    }
    return value;
  }

  private mapPage(value: bigint): Uint32Array | null {
    if (!(value & HV_PAGE_ENABLE)) return null;
    return this.memory.u32Array(Number(value & HV_PAGE_GPA_MASK), PAGE_SIZE / 4);
  }

  private get enabled(): boolean {
    return (this.scontrol & SCONTROL_ENABLE) !== 0n;
  }

  sintValue(sint: number): bigint {
    return this.sints[sint];
  }

  /** Messages waiting for `sint`'s slot. */
  queuedMessages(sint: number): number {
    return this.queues[sint].length;
  }

  /**
   * Posts a message to `sint`. Returns 'delivered' when it went into the slot now, 'queued'
   * when it waits (slot busy, SINT masked, SIMP or the SynIC disabled). Throws SynicQueueFull
   * when the SINT's queue is full.
   */
  postMessage(sint: number, message: SynicMessage): 'delivered' | 'queued' {
    checkSint(sint);
    if (message.payload.length > HV_MESSAGE_PAYLOAD_BYTE_COUNT) {
      throw new HostUsageError(`SynIC message payload of ${message.payload.length} bytes (max ${HV_MESSAGE_PAYLOAD_BYTE_COUNT})`);
    }
    const queue = this.queues[sint];
    if (queue.length >= this.queueLimit) throw new SynicQueueFull(this.vp, sint, this.queueLimit);
    // The queue keeps its own copy: the caller may reuse its buffer as soon as this returns.
    const entry: SynicMessage = { ...message, payload: message.payload.slice() };
    queue.push(entry);
    this.tryDeliver(sint);
    return queue.includes(entry) ? 'queued' : 'delivered';
  }

  /**
   * Sets event flag `flag` in `sint`'s slot of the event-flags page. Interrupts only when the
   * flag went from 0 to 1. Returns whether it did go 0 -> 1 (or was held for later).
   */
  signalEvent(sint: number, flag: number): boolean {
    checkSint(sint);
    if (!(flag >= 0 && flag < HV_EVENT_FLAGS_COUNT) || flag % 1 !== 0)
      throw new HostUsageError(`event flag ${String(flag)} is not in [0, ${HV_EVENT_FLAGS_COUNT})`);
    const words = this.eventWords;
    if (!this.enabled || words === null) {
      const held = this.heldFlags[sint];
      const isNew = !held.has(flag);
      held.add(flag);
      return isNew;
    }
    return this.setFlag(words, sint, flag);
  }

  private setFlag(words: Uint32Array, sint: number, flag: number): boolean {
    const index = (sint * HV_EVENT_FLAGS_BYTE_COUNT) / 4 + (flag >>> 5);
    const bit = 1 << (flag & 31);
    const old = Atomics.or(words, index, bit);
    if ((old & bit) !== 0) return false;
    this.observer?.eventFlagSet?.(this.vp, sint, flag);
    if (this.sints[sint] & HV_SYNIC_SINT_MASKED) this.heldInterrupt[sint] = true;
    else this.interrupt(sint);
    return true;
  }

  /** Retries every SINT: after EOM, SCONTROL/SIMP/SIEFP changes. */
  private retryAll(): void {
    for (let sint = 0; sint < SINT_MSR_COUNT; sint++) {
      this.tryDeliver(sint);
      this.applyHeldFlags(sint);
    }
  }

  private applyHeldFlags(sint: number): void {
    const held = this.heldFlags[sint];
    const words = this.eventWords;
    if (held.size === 0 || !this.enabled || words === null) return;
    for (const flag of held) this.setFlag(words, sint, flag);
    held.clear();
  }

  /** Moves queued messages into `sint`'s slot while it is free. */
  private tryDeliver(sint: number): void {
    const queue = this.queues[sint];
    const words = this.messageWords;
    if (queue.length === 0 || words === null || !this.enabled) return;
    if (this.sints[sint] & HV_SYNIC_SINT_MASKED) return;
    const base = (sint * HV_MESSAGE_SIZE) / 4;
    if (Atomics.load(words, base) !== HVMSG_NONE) {
      // Busy: ask for an EOM, then look again (see the class comment for why this is race-free).
      Atomics.or(words, base + 1, HV_MESSAGE_FLAG_PENDING << 8);
      if (Atomics.load(words, base) !== HVMSG_NONE) return;
    }
    const wasFull = queue.length >= this.queueLimit;
    const message = queue.shift()!;
    message.beforeWrite?.(message.payload);
    this.writeSlot(words, sint, message, queue.length > 0);
    this.messagesDelivered++;
    this.observer?.messageDelivered?.(this.vp, sint, message.type, message.payload);
    message.onDelivered?.();
    if (!(this.sints[sint] & HV_SYNIC_SINT_POLLING)) this.interrupt(sint);
    if (wasFull) this.onQueueSpace?.(sint);
  }

  private writeSlot(words: Uint32Array, sint: number, message: SynicMessage, morePending: boolean): void {
    const base = (sint * HV_MESSAGE_SIZE) / 4;
    const bytes = new Uint8Array(words.buffer, words.byteOffset + sint * HV_MESSAGE_SIZE, HV_MESSAGE_SIZE);
    bytes.set(message.payload, 16);
    const sender = message.sender ?? 0n;
    Atomics.store(words, base + 2, Number(sender & 0xffff_ffffn));
    Atomics.store(words, base + 3, Number((sender >> 32n) & 0xffff_ffffn));
    const flags = morePending ? HV_MESSAGE_FLAG_PENDING : 0;
    Atomics.store(words, base + 1, message.payload.length | (flags << 8));
    // Publish last: the guest reads the type first and everything else after it.
    Atomics.store(words, base, message.type >>> 0);
  }

  private interrupt(sint: number): void {
    const value = this.sints[sint];
    if (value & (HV_SYNIC_SINT_MASKED | HV_SYNIC_SINT_POLLING)) return;
    this.interruptsRaised++;
    this.observer?.interruptRaised?.(this.vp, Number(value & 0xffn), (value & HV_SYNIC_SINT_AUTO_EOI) !== 0n);
    this.sink.raise(this.vp, Number(value & 0xffn), (value & HV_SYNIC_SINT_AUTO_EOI) !== 0n);
  }

  /** Resets to the power-on state (masked SINTs, everything disabled); queued messages are dropped. */
  reset(): void {
    this.scontrol = this.simp = this.siefp = 0n;
    this.sints.fill(HV_SYNIC_SINT_RESET);
    for (const q of this.queues) q.length = 0;
    for (const h of this.heldFlags) h.clear();
    this.heldInterrupt.fill(false);
    this.messageWords = this.eventWords = null;
    this.logger.debug(`vp ${this.vp}: SynIC reset`);
  }
}

function checkSint(sint: number): void {
  if (!(sint >= 0 && sint < HV_SYNIC_SINT_COUNT) || sint % 1 !== 0)
    throw new HostUsageError(`SINT ${String(sint)} is not in [0, ${HV_SYNIC_SINT_COUNT})`);
}
