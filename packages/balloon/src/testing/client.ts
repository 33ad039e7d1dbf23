/**
 * An hv_balloon guest in TypeScript, for tests: it does what Linux drivers/hv/hv_balloon.c
 * does, in its order. Version negotiation WIN10 -> WIN8 -> WIN7 (is_last_attempt on the last),
 * a capabilities report (balloon, hot add, hot_add_alignment), status reports when asked
 * (sendStatus: num_committed = pages in use), and the host's requests: BALLOON_REQUEST
 * allocates from a GuestPageModel (2 MiB aligned runs, then single pages, keeping a floor) and
 * answers with the ranges in messages of at most 510 with more_pages on all but the last;
 * UNBALLOON_REQUEST frees the ranges back and answers after the message without more_pages;
 * MEM_HOT_ADD_REQUEST adds the pages to the pool and answers page_count / result = 1.
 * `sendRaw` sends any bytes (hostile tests).
 */
import { HvemuError } from '@hvemu/common';
import type { GuestMemory } from '@hvemu/memory';
import { VM_PKT_DATA_INBAND, type GuestChannel, type PacketView, type VmbusClient } from '@hvemu/vmbus';
import * as P from '../protocol.js';
import type { GuestPageModel } from './model.js';

export class BalloonClientError extends HvemuError {
  readonly outcome = 'host-error' as const;
}

export interface BalloonClientOptions {
  vmbus: VmbusClient;
  memory: GuestMemory;
  relid: number;
  model: GuestPageModel;
  versions?: readonly number[];
  /** Capabilities reported (default: balloon and hot add, alignment 7 = 128 MiB as Linux on x86_64). */
  balloon?: boolean;
  hotAdd?: boolean;
  hotAddAlignmentLog2?: number;
  /** Pages per balloon allocation before falling back to single pages (Linux: 512, 2 MiB). */
  allocUnit?: number;
  /** Free pages the guest keeps (Linux's balloon floor). Default 0. */
  floor?: number;
  /** Answer hot-add requests with page_count 0, result 0 (a guest whose add_memory fails). */
  refuseHotAdd?: boolean;
  /** Answer hot-add requests (false: a guest that never answers). Default true. */
  answerHotAdd?: boolean;
  /** Answer balloon requests (false: a guest that never answers). Default true. */
  answerBalloon?: boolean;
  ringPages?: number;
  /**
   * Send a status report every this many ms once connected, as Linux does (every second, after
   * pressure_report_delay, 45 s by default). Default: none (sendStatus() by hand).
   */
  statusIntervalMs?: number;
  /** Delay before the first periodic report, ms. Default 0. */
  statusDelayMs?: number;
  /** Event-loop turns to wait for a host answer before giving up. Default 100000. */
  maxWaits?: number;
}

export interface ReceivedHostMessage {
  readonly type: number;
  readonly transId: number;
  readonly bytes: Uint8Array;
}

export class BalloonClient {
  channel: GuestChannel | null = null;
  version = 0;
  /** Every host message received, in order. */
  readonly received: ReceivedHostMessage[] = [];
  /** Max page count from INFO_MESSAGE. */
  maxPageCount: number | null = null;
  /** Counters of what the client did. */
  readonly counts = { balloonRequests: 0, balloonMessages: 0, unballoonRequests: 0, hotAdds: 0, statusReports: 0 };
  private transId = 0;
  private polling = false;
  private stopped = false;
  private unballoonedInTxn = 0;
  private statusTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(private readonly options: BalloonClientOptions) {}

  /** Opens the channel and runs Linux's probe: versions newest first, then the capabilities report. */
  async connect(): Promise<number> {
    const ringPages = this.options.ringPages ?? 5;
    this.channel = await this.options.vmbus.openChannel(this.options.relid, { sendPages: ringPages, recvPages: ringPages });
    const versions = this.options.versions ?? P.LINUX_DM_VERSIONS;
    for (let i = 0; i < versions.length; i++) {
      const last = i === versions.length - 1;
      const req = P.dm_version_request.encodeNew({
        type: P.DM_VERSION_REQUEST,
        size: P.dm_version_request.size,
        trans_id: this.nextTransId(),
        version: versions[i],
        is_last_attempt: last ? 1 : 0,
      });
      this.sendRaw(req);
      const resp = await this.expect(P.DM_VERSION_RESPONSE);
      if ((resp.bytes[8] & 1) === 1) {
        this.version = versions[i];
        break;
      }
      if (last) throw new BalloonClientError('the host accepted no dynamic memory version');
    }
    let caps = 0n;
    if (this.options.balloon ?? true) caps |= P.DM_CAPS_BALLOON;
    if (this.options.hotAdd ?? true) caps |= P.DM_CAPS_HOT_ADD;
    caps |= BigInt(this.options.hotAddAlignmentLog2 ?? 7) << P.DM_CAPS_HOT_ADD_ALIGNMENT_SHIFT;
    this.sendRaw(
      P.dm_capabilities.encodeNew({
        type: P.DM_CAPABILITIES_REPORT,
        size: P.dm_capabilities.size,
        trans_id: this.nextTransId(),
        caps,
        min_page_cnt: 0n,
        max_page_number: 0xffff_ffff_ffff_ffffn,
      }),
    );
    const resp = await this.expect(P.DM_CAPABILITIES_RESPONSE);
    if ((resp.bytes[8] & 1) !== 1) throw new BalloonClientError('the host refused the capabilities');
    this.startPolling();
    if (this.options.statusIntervalMs !== undefined) this.scheduleStatus(this.options.statusDelayMs ?? 0);
    return this.version;
  }

  /** A STATUS_REPORT from the model (num_committed = pages in use, num_avail = free). */
  sendStatus(overrides: Partial<ReturnType<typeof P.dm_status.decode>> = {}): void {
    const m = this.options.model;
    this.counts.statusReports++;
    this.sendRaw(
      P.dm_status.encodeNew({
        type: P.DM_STATUS_REPORT,
        size: P.dm_status.size,
        trans_id: this.nextTransId(),
        num_avail: BigInt(m.free),
        num_committed: BigInt(m.used),
        ...overrides,
      }),
    );
  }

  /** Writes `bytes` as one in-band packet (waiting while the ring is full). */
  sendRaw(bytes: Uint8Array): void {
    const ch = this.requireChannel();
    if (!ch.rings.outbound.write({ type: VM_PKT_DATA_INBAND, transactionId: 0n, payload: bytes })) {
      throw new BalloonClientError('the guest-to-host ring is full');
    }
  }

  /** Takes every host message waiting and acts on it. */
  poll(): void {
    const ch = this.channel;
    if (!ch) return;
    ch.rings.inbound.drain((p) => this.onPacket(p));
  }

  /** Stops polling and periodic reports (the channel stays open). */
  stop(): void {
    this.stopped = true;
    this.clearStatusTimer();
  }

  async close(): Promise<void> {
    this.stopped = true;
    this.clearStatusTimer();
    if (this.channel) await this.options.vmbus.closeChannel(this.channel);
    this.channel = null;
  }

  private onPacket(p: PacketView): void {
    const bytes = p.payload().slice();
    if (bytes.length < 8) return;
    const dv = new DataView(bytes.buffer);
    const type = dv.getUint16(0, true);
    const size = dv.getUint16(2, true);
    const transId = dv.getUint32(4, true);
    const msg = { type, transId, bytes: bytes.subarray(0, Math.min(size, bytes.length)) };
    this.received.push(msg);
    switch (type) {
      case P.DM_BALLOON_REQUEST:
        return this.balloonUp(dv.getUint32(8, true));
      case P.DM_UNBALLOON_REQUEST:
        return this.balloonDown(msg.bytes);
      case P.DM_MEM_HOT_ADD_REQUEST:
        return this.hotAdd(msg.bytes);
      case P.DM_INFO_MESSAGE:
        if (size >= 32 && dv.getUint32(16, true) === P.INFO_TYPE_MAX_PAGE_CNT) this.maxPageCount = Number(dv.getBigUint64(24, true));
        return;
    }
  }

  private balloonUp(numPages: number): void {
    this.counts.balloonRequests++;
    if (this.options.answerBalloon === false) return;
    const runs = this.options.model.allocBalloon(numPages, this.options.allocUnit ?? 512, this.options.floor ?? 0);
    const total = runs.length / 2;
    let at = 0;
    do {
      const n = Math.min(P.DM_MAX_RANGES_PER_MESSAGE, total - at);
      const more = at + n < total;
      const out = P.encodeBalloonResponse(this.nextTransId(), more, runs.slice(2 * at, 2 * (at + n)));
      this.sendRaw(out);
      this.counts.balloonMessages++;
      at += n;
    } while (at < total);
  }

  private balloonDown(bytes: Uint8Array): void {
    if (bytes.length < 16) return;
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const more = (dv.getUint32(8, true) & 1) === 1;
    const count = Math.min(dv.getUint32(12, true), (bytes.length - 16) / 8);
    for (let i = 0; i < count; i++) {
      const lo = dv.getUint32(16 + i * 8, true);
      const hi = dv.getUint32(20 + i * 8, true);
      const n = hi >>> 8;
      this.options.model.giveBack(lo + (hi & 0xff) * 0x1_0000_0000, n);
      this.unballoonedInTxn += n;
    }
    if (more) return;
    this.counts.unballoonRequests++;
    this.unballoonedInTxn = 0;
    this.sendRaw(P.dm_unballoon_response.encodeNew({ type: P.DM_UNBALLOON_RESPONSE, size: 8, trans_id: this.nextTransId() }));
  }

  private hotAdd(bytes: Uint8Array): void {
    this.counts.hotAdds++;
    if (this.options.answerHotAdd === false) return;
    const { startPage, pageCount } = P.decodePageRange(
      new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(8, true),
    );
    const added = this.options.hotAdd === false || this.options.refuseHotAdd ? 0 : this.options.model.addPages(startPage, pageCount);
    this.sendRaw(
      P.dm_hot_add_response.encodeNew({
        type: P.DM_MEM_HOT_ADD_RESPONSE,
        size: P.dm_hot_add_response.size,
        trans_id: this.nextTransId(),
        page_count: added,
        result: added > 0 ? 1 : 0,
      }),
    );
  }

  private async expect(type: number): Promise<ReceivedHostMessage> {
    const from = this.received.length;
    for (let waits = 0; ; waits++) {
      this.poll();
      const hit = this.received.slice(from).find((m) => m.type === type);
      if (hit) return hit;
      if (waits > (this.options.maxWaits ?? 100_000)) throw new BalloonClientError(`no ${P.DM_MESSAGE_NAMES[type]} from the host`);
      await new Promise((r) => setImmediate(r));
    }
  }

  private scheduleStatus(delay: number): void {
    this.statusTimer = setTimeout(() => {
      this.statusTimer = null;
      if (this.stopped || !this.channel) return;
      try {
        this.sendStatus();
      } catch {
        // A full ring: this report is skipped, as Linux skips one it cannot post.
      }
      this.scheduleStatus(this.options.statusIntervalMs!);
    }, delay);
    this.statusTimer.unref?.();
  }

  private clearStatusTimer(): void {
    if (this.statusTimer) clearTimeout(this.statusTimer);
    this.statusTimer = null;
  }

  private startPolling(): void {
    if (this.polling) return;
    this.polling = true;
    this.stopped = false;
    const tick = (): void => {
      if (this.stopped || !this.channel) {
        this.polling = false;
        return;
      }
      this.poll();
      setImmediate(tick);
    };
    setImmediate(tick);
  }

  private requireChannel(): GuestChannel {
    if (!this.channel) throw new BalloonClientError('connect() first');
    return this.channel;
  }

  private nextTransId(): number {
    this.transId = (this.transId + 1) >>> 0;
    return this.transId;
  }
}
