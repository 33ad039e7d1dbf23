/**
 * storvsp: the host end of hv_storvsc (Linux) and storvsc (Windows) as a VmbusDevice. Control
 * packets go through the pure `session` state machine; EXECUTE_SRB packets become SCSI commands
 * on the ScsiController, with the GPA-direct page list as their data buffer, and are completed
 * (VM_PKT_COMP echoing the guest's transaction id) when the disk has finished: a write only
 * after the backend accepted it.
 *
 * Everything in a packet is the guest's: a packet too short to be a request is logged and
 * dropped (there is nothing to answer); every other bad request gets an error completion (an
 * NTSTATUS, or an SRB status with SCSI sense); a broken ring fails only its channel (the device
 * layer's mechanism). Each channel runs at most `maxOutstanding` SRBs at once: beyond that it
 * stops reading its ring, so a flood becomes backpressure on the guest, not host memory.
 */
import { HvemuError, silentLogger, type Logger } from '@hvemu/common';
import { GuestMemoryError } from '@hvemu/memory';
import {
  VM_PKT_COMP,
  VM_PKT_DATA_INBAND,
  VM_PKT_DATA_USING_GPA_DIRECT,
  type ChannelCloseReason,
  type DeviceChannel,
  type GuestData,
  type OfferSpec,
  type PacketView,
  type VmbusDevice,
} from '@hvemu/vmbus';
import type { ScsiController } from './controller.js';
import * as P from './protocol.js';
import type { DataBuffer, DataDirection } from './scsi/disk.js';
import { INITIAL_STATE, replySize, step, subchannelState, type SessionConfig, type SessionState } from './session.js';

export interface StorvspOptions {
  /** The bus the guest sees. */
  controller: ScsiController;
  /** The offer's if_instance (distinct per controller). */
  instanceId?: string;
  /** Subchannels the guest may ask for (Linux asks for min(CPUs - 1, this)). Default 4; 0 disables multi-channel. */
  maxSubchannels?: number;
  /** Largest transfer, reported in QUERY_PROPERTIES and enforced per SRB. Default 2 MiB. */
  maxTransferBytes?: number;
  /** SRBs in flight per channel before the device stops reading that ring. Default 256. */
  maxOutstanding?: number;
  /** Versions accepted (default all, 2.0 to 6.2). */
  versions?: readonly number[];
  logger?: Logger;
}

export const DEFAULT_SCSI_INSTANCE = 'f8b3781b-1e82-4818-a1c3-63d806ec15bb';

/** A request the device refuses before it reaches a disk: the completion it sends. */
class SrbRefusal extends HvemuError {
  readonly outcome = 'request-rejected' as const;
  constructor(
    message: string,
    readonly srbStatus: number,
    readonly status = P.STATUS_INVALID_PARAMETER,
  ) {
    super(message);
  }
}

/** Where each vmscsi_request field is (the hot path reads and patches them by offset). */
const O = P.vmscsi_request.offsetOf;

/**
 * One SRB as the guest sent it: a copy of its vmscsi_request (the ring's bytes are gone once the
 * packet is consumed, and the completion echoes them), read by offset: no object per field.
 */
class Srb {
  readonly bytes = new Uint8Array(P.vmscsi_request.size);
  /** The completion's size: the agreed version's, or before agreement the size the guest sent. */
  readonly replySize: number;
  constructor(
    readonly transactionId: bigint,
    request: P.VstorRequest,
    version: number,
  ) {
    this.replySize =
      version !== 0 ? P.packetSizeFor(version) : request.length >= P.VSTOR_PACKET_SIZE ? P.VSTOR_PACKET_SIZE : P.VSTOR_PACKET_SIZE_PRE_WIN8;
    // Pre-Win8 SRBs lack the extension: those bytes stay zero.
    const size = P.isWin8OrLater(version) ? P.vmscsi_request.size : P.vmscsi_request_pre_win8.size;
    this.bytes.set(request.body.subarray(0, Math.min(size, request.body.length)));
  }
  get pathId(): number {
    return this.bytes[O.path_id];
  }
  get targetId(): number {
    return this.bytes[O.target_id];
  }
  get lun(): number {
    return this.bytes[O.lun];
  }
  get cdbLength(): number {
    return this.bytes[O.cdb_length];
  }
  get senseInfoLength(): number {
    return this.bytes[O.sense_info_length];
  }
  get dataIn(): number {
    return this.bytes[O.data_in];
  }
  get dataTransferLength(): number {
    const b = this.bytes;
    const at = O.data_transfer_length;
    return (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16)) + b[at + 3] * 0x100_0000;
  }
  cdb(): Uint8Array {
    return this.bytes.slice(O.cdb, O.cdb + this.cdbLength);
  }
}

const EMPTY: DataBuffer = {
  length: 0,
  read: () => {},
  write: () => {},
};

export class StorvspDevice implements VmbusDevice {
  readonly offer: OfferSpec;
  readonly controller: ScsiController;
  readonly config: SessionConfig;
  private readonly maxOutstanding: number;
  private readonly logger: Logger;
  private readonly channels = new Map<number, ChannelState>();
  private primary: ChannelState | null = null;
  private idleWaiters: (() => void)[] = [];
  private inFlight = 0;
  /** Counters (tests, diagnostics). */
  readonly stats = { srbs: 0, completions: 0, refused: 0, dropped: 0, rescans: 0, backpressured: 0 };

  constructor(options: StorvspOptions) {
    this.controller = options.controller;
    this.offer = { interfaceType: P.HV_SCSI_GUID, interfaceInstance: options.instanceId ?? DEFAULT_SCSI_INSTANCE };
    this.config = {
      versions: options.versions ?? P.VMSTOR_PROTO_VERSIONS,
      maxSubchannels: options.maxSubchannels ?? 4,
      maxTransferBytes: options.maxTransferBytes ?? 2 << 20,
    };
    this.maxOutstanding = options.maxOutstanding ?? 256;
    this.logger = options.logger ?? silentLogger;
    this.controller.onChange(() => this.notifyRescan());
  }

  /** SRBs in flight over every channel, closed ones included (their backend I/O still runs). */
  get outstanding(): number {
    return this.inFlight;
  }

  /** The open channels (primary first, then subchannels) and the SRBs each has carried: which queues the guest uses. */
  get openChannels(): { relid: number; subchannelIndex: number; srbs: number }[] {
    return [...this.channels.values()]
      .map((s) => ({ relid: s.channel.relid, subchannelIndex: s.channel.subChannelIndex, srbs: s.srbs }))
      .sort((a, b) => a.subchannelIndex - b.subchannelIndex);
  }

  /** The agreed protocol version (0 before negotiation). */
  get version(): number {
    return this.primary?.session.version ?? 0;
  }

  open(channel: DeviceChannel): void {
    const isPrimary = channel.subChannelIndex === 0;
    const session = isPrimary ? INITIAL_STATE : subchannelState(this.primary?.session ?? INITIAL_STATE);
    const state = new ChannelState(channel, session);
    this.channels.set(channel.relid, state);
    if (isPrimary) this.primary = state;
  }

  onSignal(channel: DeviceChannel): void {
    const state = this.channels.get(channel.relid);
    if (state) this.drain(state);
  }

  close(channel: DeviceChannel, reason: ChannelCloseReason): void {
    const state = this.channels.get(channel.relid);
    if (!state) return;
    this.channels.delete(channel.relid);
    if (state === this.primary) this.primary = null;
    this.logger.info('storvsp: channel closed', { relid: channel.relid, reason, outstanding: state.outstanding });
    state.closed = true;
    this.checkIdle();
  }

  /** Closes every disk's backend (the VM is going away; the device layer has no such hook, so the VMM calls it). */
  async closeDisks(): Promise<void> {
    await this.stop();
    for (const { disk } of this.controller.entries()) await disk.backend.close();
  }

  /** The VM is gone (VmbusDevice.dispose): the disks' backends are closed once no SRB is in flight. */
  dispose(): Promise<void> {
    return this.closeDisks();
  }

  /** Resolves when no SRB is in flight (the VM stops). */
  stop(): Promise<void> {
    if (this.outstanding === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  // ---- reading

  /** Reads what the guest sent, up to the channel's free SRB slots; re-entered when a slot frees. */
  private drain(state: ChannelState): void {
    if (state.draining || state.closed) return;
    state.draining = true;
    try {
      for (;;) {
        const room = this.maxOutstanding - state.outstanding;
        if (room <= 0) {
          this.stats.backpressured++;
          break;
        }
        const n = state.channel.queue.read((p) => this.handlePacket(state, p), room);
        if (n < room) break;
      }
    } catch (error) {
      // A broken ring: the device layer fails this channel; the others go on.
      this.logger.error('storvsp: ring failed', { relid: state.channel.relid, error: String(error) });
      throw error;
    } finally {
      state.draining = false;
    }
  }

  private handlePacket(state: ChannelState, p: PacketView): void {
    if (p.type === VM_PKT_COMP) return; // the guest completing an unsolicited ENUMERATE_BUS
    if (p.type !== VM_PKT_DATA_INBAND && p.type !== VM_PKT_DATA_USING_GPA_DIRECT) return this.drop(state, `packet type ${p.type}`);
    const request = P.parseVstorPacket(p.payload());
    if (request instanceof P.StorvspProtocolError) return this.drop(state, request.message);
    if (request.operation === P.VSTOR_OPERATION_EXECUTE_SRB) return this.executeSrb(state, p, request);
    if (p.type !== VM_PKT_DATA_INBAND) return this.reply(state, p.transactionId, request.length, P.STATUS_INVALID_PARAMETER);
    const result = step(state.session, request, this.config);
    if (result.fault)
      this.logger.warn('storvsp: request refused', {
        relid: state.channel.relid,
        op: P.operationName(request.operation),
        fault: result.fault,
      });
    const size = replySize(result.state, request.length);
    state.session = result.state;
    this.reply(state, p.transactionId, size, result.status, result.union);
    if (result.offerSubchannels) this.offerSubchannels(state, result.offerSubchannels);
  }

  private drop(state: ChannelState, why: string): void {
    this.stats.dropped++;
    this.logger.warn('storvsp: packet dropped', { relid: state.channel.relid, why });
  }

  private offerSubchannels(state: ChannelState, count: number): void {
    try {
      const relids = state.channel.offerSubchannels(count);
      this.logger.info('storvsp: subchannels offered', { relids });
    } catch (error) {
      // The VMBus server's limit (or a VMBus version without subchannels): the guest keeps one queue.
      this.logger.warn('storvsp: subchannels not offered', { error: String(error) });
    }
  }

  // ---- SRBs

  private executeSrb(state: ChannelState, p: PacketView, request: P.VstorRequest): void {
    this.stats.srbs++;
    state.srbs++;
    const transactionId = p.transactionId;
    const version = state.session.version;
    const srb = new Srb(transactionId, request, version);
    try {
      if (state.session.phase !== 'ready')
        throw new SrbRefusal('SRB before END_INITIALIZATION', P.SRB_STATUS_INVALID_REQUEST, P.STATUS_INVALID_DEVICE_STATE);
      const data = this.dataBuffer(state, p, srb);
      const direction: DataDirection = srb.dataIn === P.READ_TYPE ? 'in' : srb.dataIn === P.WRITE_TYPE ? 'out' : 'none';
      state.outstanding++;
      this.inFlight++;
      this.controller
        .execute(srb.pathId, srb.targetId, srb.lun, { cdb: srb.cdb(), data, direction })
        .then(
          (r) => {
            const srbStatus = r.invalidRequest
              ? P.SRB_STATUS_INVALID_REQUEST
              : r.invalidLun
                ? P.SRB_STATUS_INVALID_LUN | P.SRB_STATUS_AUTOSENSE_VALID
                : r.sense
                  ? P.SRB_STATUS_ERROR | P.SRB_STATUS_AUTOSENSE_VALID
                  : P.SRB_STATUS_SUCCESS;
            if (r.invalidRequest) this.logger.warn('storvsp: invalid SRB', { relid: state.channel.relid, why: r.invalidRequest });
            this.completeSrb(state, srb, P.STATUS_SUCCESS, srbStatus, r.status, r.invalidRequest ? null : r.sense, r.transferred);
          },
          (error: unknown) => {
            // The channel closed under the request (its pages were revoked): nobody to answer.
            if (state.closed)
              return this.logger.debug('storvsp: SRB ended with its channel', { relid: state.channel.relid, error: String(error) });
            // Not guest-caused (guest errors are results): log it, fail this request only.
            this.logger.error('storvsp: SRB failed', { relid: state.channel.relid, error: String(error) });
            this.completeSrb(state, srb, P.STATUS_UNSUCCESSFUL, P.SRB_STATUS_ERROR, 0, null, 0);
          },
        )
        .finally(() => this.srbDone(state));
    } catch (error) {
      if (!(error instanceof SrbRefusal)) throw error;
      this.stats.refused++;
      this.logger.warn('storvsp: SRB refused', { relid: state.channel.relid, why: error.message });
      this.completeSrb(state, srb, error.status, error.srbStatus, 0, null, 0);
    }
  }

  /** The SRB's data buffer: its GPA-direct pages, cut to data_transfer_length. SrbRefusal when they cannot carry it. */
  private dataBuffer(state: ChannelState, p: PacketView, srb: Srb): DataBuffer {
    if (srb.cdbLength === 0 || srb.cdbLength > P.STORVSC_MAX_CMD_LEN)
      throw new SrbRefusal(`cdb_length ${srb.cdbLength}`, P.SRB_STATUS_INVALID_REQUEST);
    if (srb.dataIn > P.UNKNOWN_TYPE) throw new SrbRefusal(`data_in ${srb.dataIn}`, P.SRB_STATUS_INVALID_REQUEST);
    const length = srb.dataTransferLength;
    if (length > this.config.maxTransferBytes) throw new SrbRefusal(`a ${length}-byte transfer`, P.SRB_STATUS_INVALID_REQUEST);
    if (p.type !== VM_PKT_DATA_USING_GPA_DIRECT) {
      if (length !== 0) throw new SrbRefusal(`a ${length}-byte transfer without pages`, P.SRB_STATUS_INVALID_REQUEST);
      return EMPTY;
    }
    let data: GuestData;
    try {
      data = state.channel.queue.externalData(p);
    } catch (error) {
      if (error instanceof GuestMemoryError || error instanceof HvemuError) {
        throw new SrbRefusal(`page list refused: ${error.message}`, P.SRB_STATUS_INVALID_REQUEST);
      }
      throw error;
    }
    if (length > data.length) throw new SrbRefusal(`${length} bytes in a ${data.length}-byte page list`, P.SRB_STATUS_INVALID_REQUEST);
    return data.slice(0, length);
  }

  private completeSrb(
    state: ChannelState,
    srb: Srb,
    status: number,
    srbStatus: number,
    scsiStatus: number,
    sense: Uint8Array | null,
    transferred: number,
  ): void {
    if (state.closed) return;
    const version = state.session.version;
    const size = srb.replySize;
    const out = new Uint8Array(size);
    const dv = new DataView(out.buffer);
    dv.setUint32(0, P.VSTOR_OPERATION_COMPLETE_IO, true);
    dv.setUint32(8, status, true);
    // The guest's vmscsi_request echoed (addressing, cdb_length, data_in, the win8 extension), then the results.
    const u = P.VSTOR_PACKET_UNION;
    out.set(srb.bytes.subarray(0, size - u), u);
    const senseLength = sense ? Math.min(sense.length, P.senseSizeFor(version), srb.senseInfoLength) : 0;
    // Autosense is valid only if the guest left room for it (sense_info_length is the guest's).
    if (senseLength === 0) srbStatus &= ~P.SRB_STATUS_AUTOSENSE_VALID;
    dv.setUint16(u + O.length, size - u, true);
    out[u + O.srb_status] = srbStatus;
    out[u + O.scsi_status] = scsiStatus;
    out[u + O.sense_info_length] = senseLength;
    dv.setUint32(u + O.data_transfer_length, transferred, true);
    out.fill(0, u + O.cdb, u + O.cdb + P.STORVSC_MAX_BUF_LEN_WITH_PADDING);
    if (sense && senseLength > 0) out.set(sense.subarray(0, senseLength), u + O.cdb);
    this.stats.completions++;
    this.send(state, srb.transactionId, out);
  }

  private srbDone(state: ChannelState): void {
    state.outstanding--;
    this.inFlight--;
    this.checkIdle();
    // The ring may hold requests the device stopped reading (the guest will not signal again).
    if (!state.closed && state.outstanding < this.maxOutstanding) this.drainLater(state);
  }

  private drainLater(state: ChannelState): void {
    if (state.drainScheduled) return;
    state.drainScheduled = true;
    queueMicrotask(() => {
      state.drainScheduled = false;
      try {
        this.drain(state);
      } catch (error) {
        // Not inside the guest's signal, so nobody catches this for the device layer: fail the channel here.
        state.channel.fail(error);
      }
    });
  }

  // ---- replies and notifications

  private reply(state: ChannelState, transactionId: bigint, size: number, status: number, union?: Uint8Array): void {
    this.send(state, transactionId, P.encodeVstorReply(size, status, union));
  }

  private send(state: ChannelState, transactionId: bigint, payload: Uint8Array): void {
    state.channel.queue.complete(transactionId, payload).catch((error: unknown) => {
      // Closed under us (the guest went away): nothing to tell.
      this.logger.debug('storvsp: completion not sent', { relid: state.channel.relid, error: String(error) });
    });
  }

  /** A LUN came or went: ENUMERATE_BUS (unsolicited, transaction id 0) makes the guest rescan. */
  private notifyRescan(): void {
    const primary = this.primary;
    if (!primary || primary.closed || primary.session.phase !== 'ready') return;
    const out = new Uint8Array(P.packetSizeFor(primary.session.version));
    P.vstor_packet_header.encode({ operation: P.VSTOR_OPERATION_ENUMERATE_BUS }, out);
    this.stats.rescans++;
    primary.channel.queue.send({ type: VM_PKT_DATA_INBAND, transactionId: 0n, payload: out }).catch((error: unknown) => {
      this.logger.debug('storvsp: rescan not sent', { error: String(error) });
    });
  }

  private checkIdle(): void {
    if (this.outstanding !== 0) return;
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }
}

class ChannelState {
  outstanding = 0;
  srbs = 0;
  draining = false;
  drainScheduled = false;
  closed = false;
  constructor(
    readonly channel: DeviceChannel,
    public session: SessionState,
  ) {}
}
