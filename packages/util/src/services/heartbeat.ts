/**
 * Heartbeat: the host sends an incrementing sequence number; the guest answers with it plus
 * one. The host surfaces liveness: the last answered sequence, when, and beats missed.
 */
import type { Clock, Logger } from '@hvemu/common';
import { HV_S_OK, heartbeat_msg_data, ICMSGTYPE_HEARTBEAT } from '../protocol.js';
import { IcHostService, type IcTransport } from '../service.js';

export const HEARTBEAT_VERSIONS = {
  frameworks: [
    { major: 1, minor: 0 },
    { major: 3, minor: 0 },
  ],
  services: [
    { major: 1, minor: 0 },
    { major: 3, minor: 0 },
  ],
};

export interface HeartbeatStatus {
  /** The last sequence number the guest answered correctly. */
  lastSequence: bigint | null;
  /** Reference time of that answer. */
  lastAnswer: bigint | null;
  /** Beats sent while the previous one was unanswered. */
  missed: number;
  /** Answers with the wrong sequence or a failure status. */
  badAnswers: number;
}

export class HeartbeatService extends IcHostService {
  private sequence = 0n;
  private outstanding = false;
  readonly status: HeartbeatStatus = { lastSequence: null, lastAnswer: null, missed: 0, badAnswers: 0 };

  constructor(
    transport: IcTransport,
    private readonly clock: Clock,
    logger?: Logger,
  ) {
    super('heartbeat', ICMSGTYPE_HEARTBEAT, HEARTBEAT_VERSIONS, transport, logger);
  }

  /** Sends one heartbeat (the host does this every few seconds). */
  beat(): boolean {
    if (this.state !== 'ready') return false;
    if (this.outstanding) {
      this.status.missed++;
      return false;
    }
    const seq = this.sequence;
    const sent = this.request(heartbeat_msg_data.encodeNew({ seq_num: seq }), (header, body) => {
      this.outstanding = false;
      const answer = heartbeat_msg_data.decode(padTo(body, heartbeat_msg_data.size)).seq_num;
      if (header.status !== HV_S_OK || answer !== seq + 1n) {
        this.status.badAnswers++;
        this.logger.warn(`heartbeat: guest answered ${answer} (status 0x${header.status.toString(16)}) to ${seq}`);
        return;
      }
      this.status.lastSequence = answer;
      this.status.lastAnswer = this.clock.now();
    });
    if (sent) {
      this.outstanding = true;
      this.sequence += 2n; // the guest adds one; the next beat starts past it
    }
    return sent;
  }

  protected override abandon(): void {
    this.outstanding = false;
  }
}

/** Guests may answer with only the sequence number (Linux requires 8 bytes): zero-extend. */
export function padTo(body: Uint8Array, size: number): Uint8Array {
  if (body.length >= size) return body;
  const out = new Uint8Array(size);
  out.set(body);
  return out;
}
