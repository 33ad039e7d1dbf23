/**
 * Time synchronization: the host sends samples of its UTC time (100 ns since 1601) and, for
 * service version 4.0, the partition reference time they were taken at, with the SYNC flag
 * (set the clock: after boot or restore) or SAMPLE (a hint). Time comes from injected clocks.
 */
import type { Clock, Logger } from '@hvemu/common';
import {
  ICMSGTYPE_TIMESYNC,
  ICTIMESYNCFLAG_SAMPLE,
  ICTIMESYNCFLAG_SYNC,
  ictimesync_data,
  ictimesync_ref_data,
  WLTIMEDELTA,
} from '../protocol.js';
import { IcHostService, type IcTransport } from '../service.js';

export const TIMESYNC_VERSIONS = {
  frameworks: [
    { major: 1, minor: 0 },
    { major: 3, minor: 0 },
  ],
  services: [
    { major: 1, minor: 0 },
    { major: 3, minor: 0 },
    { major: 4, minor: 0 },
  ],
};

/** Host UTC in 100 ns units since 1601-01-01 (Windows FILETIME), from a Unix-ms wall clock. */
export function hostFileTime(unixMs: number): bigint {
  return BigInt(Math.floor(unixMs)) * 10_000n + WLTIMEDELTA;
}

export class TimesyncService extends IcHostService {
  samplesAnswered = 0;

  constructor(
    transport: IcTransport,
    private readonly referenceClock: Clock,
    private readonly wallClockMs: () => number = Date.now,
    logger?: Logger,
  ) {
    super('timesync', ICMSGTYPE_TIMESYNC, TIMESYNC_VERSIONS, transport, logger);
  }

  /** Sends a time sample; `sync` asks the guest to set its clock (first sample after boot). */
  sample(sync = false): boolean {
    if (this.state !== 'ready') return false;
    const flags = sync ? ICTIMESYNCFLAG_SYNC : ICTIMESYNCFLAG_SAMPLE;
    const parenttime = hostFileTime(this.wallClockMs());
    const body =
      this.serviceVersion!.major >= 4
        ? ictimesync_ref_data.encodeNew({ parenttime, vmreferencetime: this.referenceClock.now(), flags })
        : ictimesync_data.encodeNew({ parenttime, flags });
    return this.request(body, () => {
      this.samplesAnswered++;
    });
  }

  protected override onReady(): void {
    this.sample(true);
  }
}
