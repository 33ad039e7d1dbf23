/**
 * SynicPort for backends whose hypervisor owns the SynIC (MSHV, WHPX). The hypervisor has
 * one message slot per SINT and refuses a post while it is occupied (MSHV:
 * HV_STATUS_INSUFFICIENT_BUFFERS from HvCallPostMessageDirect; WHPX: ERROR_HV_OBJECT_IN_USE).
 * Hyper-V does not queue for us, so this class does what the TLFS leaves to the sender:
 * it keeps a bounded FIFO per (vp, sint), asks the hypervisor for a "SINT deliverable"
 * notification for every SINT with a backlog, and retries in order when the notification
 * (an intercept / exit of the backend) arrives. Messages never overtake each other.
 * A post that finds the backlog full is refused with 'busy' (nothing taken, nothing dropped);
 * onPostReady listeners hear when that SINT can take messages again.
 */
import { HvemuError, silentLogger, type Logger } from '@hvemu/common';
import {
  HV_MESSAGE_HEADER_SIZE,
  HV_MESSAGE_PAYLOAD_BYTE_COUNT,
  HV_MESSAGE_SIZE,
  HV_SYNIC_SINT_COUNT,
  type PortMessage,
  type SynicPort,
} from '@hvemu/hvdef';

/** What the backend does with the hypervisor (one hypercall or DLL call each). */
export interface OffloadedSynicOps {
  /** Posts a full 256-byte hv_message to (vp, sint); 'busy' when the slot is occupied. */
  post(vp: number, sint: number, message: Uint8Array): 'ok' | 'busy';
  /** Sets `flag` in vp's SIEFP page for `sint` and raises the SINT; true when the flag was newly set. */
  signal(vp: number, sint: number, flag: number): boolean;
  /** Asks for one notification when any SINT in `sintMask` can take a message (0 cancels). */
  requestDeliverable(vp: number, sintMask: number): void;
}

/** A host caller posted something the SynIC can never carry (bad vp/sint, payload > 240 bytes). */
export class SynicPostError extends HvemuError {
  readonly outcome = 'host-error' as const;
}

export interface OffloadedSynicOptions {
  readonly vpCount: number;
  /** Messages held per (vp, sint) while the slot is busy; beyond it a post is refused ('busy'). Default 64. */
  readonly queueLimit?: number;
  readonly logger?: Logger;
}

/** Encodes an hv_message: message_type @0, payload_size @4, flags @5 (0), sender @8 (0), payload @16. */
export function encodeHvMessage(message: PortMessage): Uint8Array {
  if (message === null || typeof message !== 'object' || !(message.payload instanceof Uint8Array)) {
    throw new SynicPostError('a SynIC message must be { type, payload: Uint8Array }');
  }
  if (!Number.isInteger(message.type) || message.type < 0 || message.type > 0xffffffff) {
    throw new SynicPostError(`SynIC message type ${String(message.type)} is not a u32`);
  }
  if (message.payload.length > HV_MESSAGE_PAYLOAD_BYTE_COUNT) {
    throw new SynicPostError(`SynIC message payload of ${message.payload.length} bytes exceeds ${HV_MESSAGE_PAYLOAD_BYTE_COUNT}`);
  }
  const out = new Uint8Array(HV_MESSAGE_SIZE);
  const view = new DataView(out.buffer);
  view.setUint32(0, message.type >>> 0, true);
  view.setUint8(4, message.payload.length);
  out.set(message.payload, HV_MESSAGE_HEADER_SIZE);
  return out;
}

export class OffloadedSynicPort implements SynicPort {
  /** Backlog per vp, per sint (FIFO of encoded hv_messages). */
  private readonly backlog: Uint8Array[][][];
  private readonly requested: number[];
  private readonly queueLimit: number;
  private readonly logger: Logger;
  readonly stats = { posted: 0, queued: 0, retried: 0, refused: 0 };
  /** Per vp, the SINTs that refused a post since their backlog last drained (bit per SINT). */
  private readonly refusedMask: number[];
  private readonly postReadyListeners = new Set<(vp: number, sint: number) => void>();

  constructor(
    private readonly ops: OffloadedSynicOps,
    opts: OffloadedSynicOptions,
  ) {
    // Checked before the per-VP backlogs are sized by it (Hyper-V partitions have at most 2048 VPs).
    if (!Number.isInteger(opts?.vpCount) || opts.vpCount < 1 || opts.vpCount > 2048) {
      throw new SynicPostError(`OffloadedSynicPort: vpCount must be an integer in 1..2048, not ${String(opts?.vpCount)}`);
    }
    if (opts.queueLimit !== undefined && (!Number.isInteger(opts.queueLimit) || opts.queueLimit < 1)) {
      throw new SynicPostError(`OffloadedSynicPort: queueLimit must be a positive integer, not ${String(opts.queueLimit)}`);
    }
    this.backlog = Array.from({ length: opts.vpCount }, () => Array.from({ length: HV_SYNIC_SINT_COUNT }, () => []));
    this.requested = new Array<number>(opts.vpCount).fill(0);
    this.refusedMask = new Array<number>(opts.vpCount).fill(0);
    this.queueLimit = opts.queueLimit ?? 64;
    this.logger = opts.logger ?? silentLogger;
  }

  postMessage(vp: number, sint: number, message: PortMessage): 'delivered' | 'queued' | 'busy' {
    const queue = this.queueFor(vp, sint);
    const encoded = encodeHvMessage(message);
    if (queue.length === 0 && this.ops.post(vp, sint, encoded) === 'ok') {
      this.stats.posted++;
      return 'delivered';
    }
    if (queue.length >= this.queueLimit) {
      this.stats.refused++;
      if ((this.refusedMask[vp] & (1 << sint)) === 0)
        this.logger.debug('SynIC backlog full; posts refused until it drains', { vp, sint, type: message.type });
      this.refusedMask[vp] |= 1 << sint;
      return 'busy';
    }
    queue.push(encoded);
    this.stats.queued++;
    this.updateRequest(vp);
    return 'queued';
  }

  signalEvent(vp: number, sint: number, flag: number): boolean {
    this.queueFor(vp, sint);
    // An event-flags page holds 2048 flags per SINT (HV_EVENT_FLAGS_COUNT).
    if (!Number.isInteger(flag) || flag < 0 || flag >= 2048) throw new SynicPostError(`event flag ${flag} is out of range 0..2047`);
    return this.ops.signal(vp, sint, flag);
  }

  /** The backend saw a SINT-deliverable notification for `sintMask` on `vp`: retry those backlogs in order. */
  onSintDeliverable(vp: number, sintMask: number): void {
    if (vp < 0 || vp >= this.backlog.length) return;
    this.requested[vp] = 0; // the notification is one-shot
    for (let sint = 0; sint < HV_SYNIC_SINT_COUNT; sint++) {
      if ((sintMask & (1 << sint)) === 0) continue;
      const queue = this.backlog[vp][sint];
      const before = queue.length;
      while (queue.length > 0 && this.ops.post(vp, sint, queue[0]) === 'ok') {
        queue.shift();
        this.stats.retried++;
      }
      if (queue.length < before && (this.refusedMask[vp] & (1 << sint)) !== 0) {
        this.refusedMask[vp] &= ~(1 << sint);
        for (const listener of [...this.postReadyListeners]) listener(vp, sint);
      }
    }
    this.updateRequest(vp);
  }

  /** Calls `listener(vp, sint)` when a SINT that refused a post has room again; returns an unsubscribe. */
  onPostReady(listener: (vp: number, sint: number) => void): () => void {
    this.postReadyListeners.add(listener);
    return () => this.postReadyListeners.delete(listener);
  }

  /** Messages waiting for (vp, sint). */
  pending(vp: number, sint: number): number {
    return this.backlog[vp]?.[sint]?.length ?? 0;
  }

  private queueFor(vp: number, sint: number): Uint8Array[] {
    if (!Number.isInteger(vp) || vp < 0 || vp >= this.backlog.length) throw new SynicPostError(`no vCPU ${vp}`);
    if (!Number.isInteger(sint) || sint < 0 || sint >= HV_SYNIC_SINT_COUNT) throw new SynicPostError(`SINT ${sint} is out of range 0..15`);
    return this.backlog[vp][sint];
  }

  /** Keeps exactly the SINTs with a backlog in the hypervisor's notification mask. */
  private updateRequest(vp: number): void {
    let mask = 0;
    this.backlog[vp].forEach((q, sint) => {
      if (q.length > 0) mask |= 1 << sint;
    });
    if (mask !== this.requested[vp]) {
      this.requested[vp] = mask;
      this.ops.requestDeliverable(vp, mask);
    }
  }
}
