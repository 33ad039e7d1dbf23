/**
 * Guest to network: the RNDIS messages one SEND_RNDIS_PKT names, walked and checked, their
 * frames handed to the backend. netvsp finds the bytes (a send-buffer section, page buffers,
 * or both); this walks them and answers the NVSP status for the send's completion.
 *
 * Every length, offset and PPI is the guest's: each is checked before it is used, and a frame
 * goes out only once every message of its send proved well formed, so a guest that retries a
 * send completed with an error never duplicates a frame. Fields are read once (the guest may
 * rewrite them meanwhile: only the values read are used).
 */
import type { Logger } from '@hvemu/common';
import type { GuestData } from '@hvemu/vmbus';
import type { NetBackend } from './backend/backend.js';
import { TxSource } from './buffers.js';
import { ETH_HLEN, isVlanEthertype, VLAN_HLEN, vlanTci, writeCtag } from './ethernet.js';
import { NVSP_STAT_INVALID_RNDIS_PKT, NVSP_STAT_SUCCESS } from './nvsp.js';
import {
  readU32le,
  forEachPpi,
  IEEE_8021Q_INFO,
  parseRndisPacket,
  RNDIS_HEADER_SIZE,
  RNDIS_MSG_PACKET,
  RNDIS_PACKET_HEADER_SIZE,
  RndisPacketLayout,
  RndisProtocolError,
  TCP_LARGESEND_PKTINFO,
  TCPIP_CHKSUM_PKTINFO,
} from './rndis.js';
import type { RndisControl } from './rndis-control.js';

/** Control messages longer than this are refused (Linux's are a few hundred bytes). */
export const MAX_CONTROL_MESSAGE = 4096;
/** A data message's PPIs longer than this are refused (Linux sends at most a few dozen bytes). */
const MAX_PPI_BYTES = 512;

/** The counters the tx walk keeps (NetvspStats is one). */
export interface RndisTxStats {
  txFrames: number;
  txBytes: number;
  txBadSize: number;
  txVlanTagged: number;
  txChecksumRequests: number;
  txLsoRequests: number;
  rndisErrors: number;
}

export interface RndisTxContext {
  readonly stats: RndisTxStats;
  readonly rndis: RndisControl;
  readonly backend: NetBackend;
  readonly logger: Logger;
  /** Largest untagged frame (mtu + 14); a frame carrying its own tag may be 4 bytes longer. */
  readonly hostFrame: number;
  /** An RNDIS control answer, for the guest's receive buffer. */
  sendControl(answer: Uint8Array): void;
}

export class RndisTx {
  /** Set when the backend said it is full; the device stops reading rings until writable(). */
  backendFull = false;
  private readonly source = new TxSource();
  private readonly layout = new RndisPacketLayout();
  private readonly scratch = new Uint8Array(MAX_CONTROL_MESSAGE);
  /**
   * The frames of the send being walked (offset, length, VLAN per frame), transmitted only once
   * every message of it proved well formed (found by the 100k-run fuzz).
   */
  private readonly pendingFrames: number[] = [];
  /** Entries used in pendingFrames: a count, not .length, on the per-frame path. */
  private pendingCount = 0;
  private readonly segments: Uint8Array[] = [];
  /** One-segment frames (the common case) go to the backend in this reused array. */
  private readonly oneSegment: Uint8Array[] = [new Uint8Array(0)];
  /** The PPI walk's state (onPpi is made once: no closure per frame; the PPIs are in scratch). */
  private ppiVlan = -1;
  private readonly onPpi = (type: number, internal: boolean, at: number, length: number): void => {
    if (internal || length < 4) return;
    const value = readU32le(this.scratch, at);
    if (type === TCPIP_CHKSUM_PKTINFO && value !== 0) this.ctx.stats.txChecksumRequests++;
    else if (type === TCP_LARGESEND_PKTINFO && value !== 0) this.ctx.stats.txLsoRequests++;
    else if (type === IEEE_8021Q_INFO) this.ppiVlan = value;
  };

  constructor(private readonly ctx: RndisTxContext) {}

  /**
   * The messages in [start, start + length) of `bytes`, a plain view (a section of a send
   * buffer contiguous in host memory): headers are read in place. The caller checked the range.
   */
  sendFlat(bytes: Uint8Array, start: number, length: number, queue: number): number {
    this.source.resetFlat(bytes, start, length);
    return this.walk(queue);
  }

  /** The messages in `section` then `external` (page buffers), either may be null. */
  sendParts(section: GuestData | null, external: GuestData | null, queue: number): number {
    this.source.reset(section, external);
    return this.walk(queue);
  }

  /** Walks the source's messages (several when the guest batched them), then sends their frames. */
  private walk(queue: number): number {
    const src = this.source;
    if (src.length === 0) return this.fault('short'); // a send that names no message at all
    this.pendingCount = 0;
    const flat = src.flatView;
    const head = flat ?? this.scratch;
    const base = src.flatBase;
    let at = 0;
    while (at < src.length) {
      if (src.length - at < RNDIS_HEADER_SIZE) return this.fault('short');
      if (!flat) src.read(at, this.scratch, RNDIS_HEADER_SIZE);
      const type = readU32le(head, flat ? base + at : 0);
      const msgLen = readU32le(head, flat ? base + at + 4 : 4);
      if (msgLen < RNDIS_HEADER_SIZE || msgLen > src.length - at) return this.fault('bad-length');
      const status = type === RNDIS_MSG_PACKET ? this.dataMessage(at, msgLen) : this.controlMessage(queue, at, msgLen);
      if (status !== NVSP_STAT_SUCCESS) return status;
      at += msgLen;
    }
    const frames = this.pendingFrames;
    const count = this.pendingCount;
    this.pendingCount = 0;
    for (let i = 0; i < count; i += 3) this.transmit(frames[i], frames[i + 1], frames[i + 2]);
    return NVSP_STAT_SUCCESS;
  }

  private fault(fault: string): number {
    this.ctx.stats.rndisErrors++;
    this.ctx.logger.debug(`netvsp: RNDIS message refused (${fault})`);
    return NVSP_STAT_INVALID_RNDIS_PKT;
  }

  /** One RNDIS_MSG_PACKET: validated, its PPIs read, its frame queued for transmit(). */
  private dataMessage(at: number, msgLen: number): number {
    const src = this.source;
    if (this.ctx.rndis.state !== 'initialized') return this.fault('not initialized');
    if (msgLen < RNDIS_PACKET_HEADER_SIZE) return this.fault('short');
    const flat = src.flatView;
    if (!flat) src.read(at, this.scratch, RNDIS_PACKET_HEADER_SIZE);
    const fault = flat
      ? parseRndisPacket(flat, msgLen, this.layout, src.flatBase + at)
      : parseRndisPacket(this.scratch, msgLen, this.layout);
    if (fault) return this.fault(fault);
    const { dataOffset, dataLength, ppiOffset, ppiLength } = this.layout;
    let vlan = -1;
    if (ppiLength > 0) {
      if (ppiLength > MAX_PPI_BYTES) return this.fault('bad-ppi-length');
      src.read(at + ppiOffset, this.scratch, ppiLength);
      this.ppiVlan = -1;
      const ppiFault = forEachPpi(this.scratch, this.onPpi, ppiLength);
      if (ppiFault) return this.fault(ppiFault);
      vlan = this.ppiVlan;
    }
    if (dataLength < ETH_HLEN || (dataLength > this.ctx.hostFrame && !this.tagFits(at + dataOffset, dataLength, vlan))) {
      this.ctx.stats.txBadSize++;
      return NVSP_STAT_SUCCESS; // a defined drop: the message was well formed, the frame is not sendable
    }
    const frames = this.pendingFrames;
    const n = this.pendingCount;
    frames[n] = at + dataOffset;
    frames[n + 1] = dataLength;
    frames[n + 2] = vlan;
    this.pendingCount = n + 3;
    return NVSP_STAT_SUCCESS;
  }

  /**
   * A guest frame past mtu + 14 passes only with its own 802.1Q / 802.1ad tag, and no VLAN PPI
   * (that adds a second tag). Read once here: a guest rewriting it later changes only its own frame.
   */
  private tagFits(offset: number, length: number, vlan: number): boolean {
    if (vlan >= 0 || length > this.ctx.hostFrame + VLAN_HLEN) return false;
    const flat = this.source.flatView;
    if (flat) return isVlanEthertype(flat[this.source.flatBase + offset + 12], flat[this.source.flatBase + offset + 13]);
    this.source.read(offset + 12, this.scratch, 2);
    return isVlanEthertype(this.scratch[0], this.scratch[1]);
  }

  /** Hands the frame to the backend: zero-copy views, or one copy when a VLAN tag must go in. */
  private transmit(offset: number, length: number, vlan: number): void {
    const { stats, backend } = this.ctx;
    const src = this.source;
    const flat = src.flatView;
    if (flat && vlan < 0 && backend.sendFrom) {
      // The backend copies the bytes straight from the section: no view, no segment list.
      stats.txFrames++;
      stats.txBytes += length;
      if (!backend.sendFrom(flat, src.flatBase + offset, length)) this.backendFull = true;
      return;
    }
    // One contiguous view (a section of a contiguous send buffer): no segment list to build.
    const view = vlan < 0 ? src.view(offset, length) : null;
    let segments: Uint8Array[];
    if (view) {
      segments = this.oneSegment;
      segments[0] = view;
    } else {
      segments = this.segments;
      segments.length = 0;
      if (vlan >= 0) {
        stats.txVlanTagged++;
        segments.push(insertVlanTag(src, offset, length, vlan));
      } else src.views(offset, length, segments);
    }
    stats.txFrames++;
    stats.txBytes += length;
    if (!backend.send(segments)) this.backendFull = true;
  }

  /** A control message (INIT, QUERY, SET, ...): the primary's; its answer goes through the receive buffer. */
  private controlMessage(queue: number, at: number, msgLen: number): number {
    if (queue !== 0) return this.fault('control message on a subchannel');
    if (msgLen > MAX_CONTROL_MESSAGE) return this.fault('bad-length');
    const msg = new Uint8Array(msgLen);
    this.source.read(at, msg, msgLen);
    let answer: Uint8Array | null;
    try {
      answer = this.ctx.rndis.handle(msg);
    } catch (error) {
      if (!(error instanceof RndisProtocolError)) throw error;
      return this.fault(error.fault);
    }
    if (answer) this.ctx.sendControl(answer);
    return NVSP_STAT_SUCCESS;
  }
}

/** The frame with an 802.1Q tag (from the guest's IEEE_8021Q_INFO PPI) after the MACs. */
function insertVlanTag(src: TxSource, offset: number, length: number, info: number): Uint8Array {
  const out = new Uint8Array(length + VLAN_HLEN);
  src.read(offset, out, 12);
  writeCtag(out, 12, vlanTci(info));
  const rest = new Uint8Array(length - 12);
  src.read(offset + 12, rest, length - 12);
  out.set(rest, 16);
  return out;
}
