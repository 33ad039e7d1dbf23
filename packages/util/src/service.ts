/**
 * The host end of one IC channel: negotiation first, then the service's transactions, one
 * outstanding at a time (the guest drivers process one message per callback). Device code
 * extends IcHostService with the service's messages.
 */
import { silentLogger, type Logger } from '@hvemu/common';
import {
  buildIcMessage,
  buildNegotiateRequest,
  chosenVersions,
  HOST_REQUEST_FLAGS,
  IcProtocolError,
  isResponse,
  parseIcMessage,
  versionText,
  type IcHeader,
  type IcVersion,
} from './framework.js';
import { ICMSGTYPE_NEGOTIATE } from './protocol.js';

/** How an IC service sends packets: VM_PKT_DATA_INBAND on the channel's outbound ring. */
export interface IcTransport {
  /** Queues a packet; returns false if the ring is full (the service retries on the next call). */
  send(payload: Uint8Array, transactionId: bigint): boolean;
}

export type IcState = 'closed' | 'negotiating' | 'ready' | 'unsupported';

interface Pending {
  messageType: number;
  icTransactionId: number;
  transactionId: bigint;
  payload: Uint8Array;
  sent: boolean;
  onResponse(header: IcHeader, body: Uint8Array): void;
}

export interface IcVersions {
  frameworks: readonly IcVersion[];
  services: readonly IcVersion[];
}

/** Outstanding and queued transactions per service before requests are refused. */
const MAX_QUEUED = 64;

export abstract class IcHostService {
  state: IcState = 'closed';
  framework: IcVersion | null = null;
  serviceVersion: IcVersion | null = null;
  private readonly queue: Pending[] = [];
  private nextTransaction = 1n;
  protected readonly logger: Logger;

  constructor(
    readonly name: string,
    readonly messageType: number,
    readonly offered: IcVersions,
    private readonly transport: IcTransport,
    logger?: Logger,
  ) {
    this.logger = logger ?? silentLogger;
  }

  /** The channel opened: negotiate. */
  open(): void {
    this.queue.length = 0;
    this.state = 'negotiating';
    this.enqueue(
      ICMSGTYPE_NEGOTIATE,
      (txn) => buildNegotiateRequest(txn, this.offered.frameworks, this.offered.services),
      (_h, body) => this.onNegotiated(body),
    );
  }

  /** The channel closed or was rescinded: outstanding transactions fail. */
  close(): void {
    const pending = this.queue.splice(0);
    this.state = 'closed';
    for (const p of pending) this.abandon(p.messageType);
  }

  /** Transactions waiting or outstanding. */
  get queued(): number {
    return this.queue.length;
  }

  private onNegotiated(body: Uint8Array): void {
    const chosen = chosenVersions(body, this.offered);
    if (!chosen) {
      this.state = 'unsupported';
      this.logger.warn(`${this.name}: the guest supports none of the offered versions`);
      return;
    }
    this.framework = chosen.framework;
    this.serviceVersion = chosen.service;
    this.state = 'ready';
    this.logger.info(`${this.name}: negotiated framework ${versionText(chosen.framework)}, service ${versionText(chosen.service)}`);
    this.onReady();
  }

  /** Called when negotiation succeeds. */
  protected onReady(): void {}

  /** Called for each transaction dropped by close(). */
  protected abandon(_messageType: number): void {}

  /**
   * Sends a service message once the service is ready. `onResponse` gets the guest's header
   * (status) and body. Returns false when the service is not ready or too much is queued.
   */
  protected request(body: Uint8Array, onResponse: (header: IcHeader, body: Uint8Array) => void): boolean {
    if (this.state !== 'ready' || this.queue.length >= MAX_QUEUED) return false;
    const framework = this.framework!;
    const version = this.serviceVersion!;
    this.enqueue(
      this.messageType,
      (txn) =>
        buildIcMessage(
          { framework, messageType: this.messageType, messageVersion: version, status: 0, transactionId: txn, flags: HOST_REQUEST_FLAGS },
          body,
        ),
      onResponse,
    );
    return true;
  }

  private enqueue(messageType: number, build: (icTransactionId: number) => Uint8Array, onResponse: Pending['onResponse']): void {
    const transactionId = this.nextTransaction++;
    const icTransactionId = Number(transactionId & 0xffn);
    this.queue.push({ messageType, icTransactionId, transactionId, payload: build(icTransactionId), sent: false, onResponse });
    this.pump();
  }

  /** Sends the head of the queue if it has not gone out (call again when the ring has room). */
  pump(): void {
    const head = this.queue[0];
    if (!head || head.sent) return;
    head.sent = this.transport.send(head.payload, head.transactionId);
  }

  /** A packet from the guest on this channel. Malformed or unexpected ones are logged and dropped. */
  onPacket(payload: Uint8Array, transactionId: bigint): void {
    try {
      this.handle(payload, transactionId);
    } catch (error) {
      if (!(error instanceof IcProtocolError) && !(error instanceof RangeError) && !((error as Error).name === 'StructBoundsError'))
        throw error;
      this.logger.warn(`${this.name}: dropped a guest message: ${(error as Error).message}`);
    }
  }

  private handle(payload: Uint8Array, transactionId: bigint): void {
    const head = this.queue[0];
    const { header, body } = parseIcMessage(payload);
    if (!head || !head.sent) throw new IcProtocolError(`unsolicited message type ${header.messageType}`);
    if (!isResponse(header.flags))
      throw new IcProtocolError(`message type ${header.messageType} is not a response (flags ${header.flags})`);
    if (transactionId !== head.transactionId || header.transactionId !== head.icTransactionId || header.messageType !== head.messageType) {
      throw new IcProtocolError(
        `response (type ${header.messageType}, transaction ${transactionId}) does not match the request outstanding`,
      );
    }
    this.queue.shift();
    head.onResponse(header, body);
    this.pump();
  }
}
