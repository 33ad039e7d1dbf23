/**
 * Shutdown: the host asks the guest to power off, reboot or hibernate; the guest's answer (a
 * status) is surfaced to the host before the guest acts.
 */
import type { Logger } from '@hvemu/common';
import { ICMSGTYPE_SHUTDOWN, shutdown_msg_data, SHUTDOWN_FLAG_FORCE, SHUTDOWN_FLAG_HIBERNATE, SHUTDOWN_FLAG_REBOOT } from '../protocol.js';
import { IcHostService, type IcTransport } from '../service.js';

export const SHUTDOWN_VERSIONS = {
  frameworks: [
    { major: 1, minor: 0 },
    { major: 3, minor: 0 },
  ],
  services: [
    { major: 1, minor: 0 },
    { major: 3, minor: 0 },
    { major: 3, minor: 1 },
    { major: 3, minor: 2 },
  ],
};

export type ShutdownKind = 'poweroff' | 'reboot' | 'hibernate';

export interface ShutdownRequest {
  kind: ShutdownKind;
  force?: boolean;
  /** SHTDN_REASON_* (default: planned). */
  reasonCode?: number;
  timeoutSeconds?: number;
  message?: string;
}

export interface ShutdownAnswer {
  status: number;
}

/** SHTDN_REASON_FLAG_PLANNED */
export const SHTDN_REASON_FLAG_PLANNED = 0x80000000;

export class ShutdownService extends IcHostService {
  private readonly waiting: ((a: ShutdownAnswer | null) => void)[] = [];

  constructor(transport: IcTransport, logger?: Logger) {
    super('shutdown', ICMSGTYPE_SHUTDOWN, SHUTDOWN_VERSIONS, transport, logger);
  }

  /** Sends the request; resolves with the guest's status, or null if the channel closed first. */
  shutdown(req: ShutdownRequest): Promise<ShutdownAnswer | null> {
    return new Promise((resolve) => {
      const flags =
        (req.kind === 'reboot' ? SHUTDOWN_FLAG_REBOOT : req.kind === 'hibernate' ? SHUTDOWN_FLAG_HIBERNATE : 0) |
        (req.force ? SHUTDOWN_FLAG_FORCE : 0);
      const message = new Uint8Array(2048);
      const text = new TextEncoder().encode(req.message ?? '');
      message.set(text.subarray(0, 2047));
      const body = shutdown_msg_data.encodeNew({
        reason_code: (req.reasonCode ?? SHTDN_REASON_FLAG_PLANNED) >>> 0,
        timeout_seconds: req.timeoutSeconds ?? 0,
        flags,
        display_message: message,
      });
      const sent = this.request(body, (header) => {
        this.waiting.shift();
        resolve({ status: header.status });
      });
      if (!sent) resolve(null);
      else this.waiting.push(resolve);
    });
  }

  protected override abandon(): void {
    this.waiting.shift()?.(null);
  }
}
