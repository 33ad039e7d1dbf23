/**
 * A storvsc guest in TypeScript, for tests: it does what Linux hv_storvsc does, in its order
 * (open the primary with 24 zero bytes of user data, BEGIN_INITIALIZATION, QUERY_PROTOCOL_VERSION
 * newest first until one is accepted, QUERY_PROPERTIES, END_INITIALIZATION, CREATE_SUB_CHANNELS
 * and open every subchannel offered), then SRBs: inband without data, GPA-direct with one
 * multi-page range otherwise (the first page at any offset, pages anywhere in guest RAM). Init
 * requests carry VMBUS_RQST_INIT as their transaction id; SRBs small ids from 1.
 *
 * `legacySizes` sends 48-byte packets until a version is agreed, as Linux did before it dropped
 * pre-Win8 hosts (and as Windows 7's storvsc does).
 */
import { HostUsageError, HvemuError } from '@hvemu/common';
import { PAGE_SIZE, type GuestMemory } from '@hvemu/memory';
import {
  encodeGpaDirectHeader,
  VM_PKT_DATA_INBAND,
  VM_PKT_DATA_USING_GPA_DIRECT,
  VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED,
  type GuestChannel,
  type PacketView,
  type PageAllocator,
  type VmbusClient,
} from '@hvemu/vmbus';
import * as P from '../protocol.js';
import * as C from '../scsi/cdb.js';

const O = P.vmscsi_request.offsetOf;

/** Linux's storvsc transaction id for init requests (VMBUS_RQST_INIT). */
export const VMBUS_RQST_INIT = 0xffff_ffff_ffff_fffdn;
/** Linux's versions, newest first (storvsc_drv.c protocol_version[]). */
export const LINUX_STORVSC_VERSIONS: readonly number[] = [
  P.VMSTOR_PROTO_VERSION_WIN10,
  P.VMSTOR_PROTO_VERSION_WIN8_1,
  P.VMSTOR_PROTO_VERSION_WIN8,
];
/** The list older drivers tried, down to Windows Server 2008's 2.0. */
export const LEGACY_STORVSC_VERSIONS: readonly number[] = [
  ...LINUX_STORVSC_VERSIONS,
  P.VMSTOR_PROTO_VERSION_WIN7,
  P.VMSTOR_PROTO_VERSION_WIN6,
];

export class StorvscClientError extends HvemuError {
  readonly outcome = 'host-error' as const;
}

export interface StorvscClientOptions {
  vmbus: VmbusClient;
  memory: GuestMemory;
  /** Where ring and data pages come from. */
  pages: PageAllocator;
  /** The controller's primary relid. */
  relid: number;
  versions?: readonly number[];
  /** Subchannels to ask for (capped by what the host offers). Default 0. */
  subchannels?: number;
  /** Pages per ring direction, control page included. Default 8. */
  ringPages?: number;
  /** Data pages this client hands out to requests. Default 512 (2 MiB). */
  dataPages?: number;
  /** 48-byte packets until a version is agreed. */
  legacySizes?: boolean;
  /** Yields to the host between polls (default: setImmediate). */
  wait?: () => Promise<void>;
  /**
   * How long the host may make no progress before a request is declared unanswered, ms.
   * Time, not a count of polls: a page-cache write can stall for a while under writeback.
   * Default 30000.
   */
  timeoutMs?: number;
}

/** What the guest puts in one SRB. */
export interface SrbSpec {
  readonly cdb: Uint8Array;
  readonly target?: number;
  readonly lun?: number;
  readonly pathId?: number;
  /** Bytes to read into guest pages (data_in = READ_TYPE). */
  readonly readLength?: number;
  /** Bytes to write from guest pages (data_in = WRITE_TYPE). */
  readonly writeData?: Uint8Array;
  /** Offset of the data in its first page. Default 0. */
  readonly pageOffset?: number;
  /** Which channel (0 = primary). Default: round robin. */
  readonly channel?: number;
  /** Raw vmscsi_request fields that override the well-formed ones (hostile tests). */
  readonly override?: Partial<ReturnType<typeof P.vmscsi_request.decode>>;
  /** Name these pages instead of the client's own (hostile tests: PFNs outside RAM, short lists). */
  readonly pfns?: readonly number[];
  /** The range's byte_count when `pfns` is given (default: the data length). */
  readonly rangeBytes?: number;
  /** Leave read data in the guest's pages (a guest uses them in place): `data` comes back empty. */
  readonly inPlace?: boolean;
}

export interface SrbCompletion {
  /** vstor_packet.status. */
  readonly status: number;
  readonly srbStatus: number;
  readonly scsiStatus: number;
  readonly sense: Uint8Array;
  readonly dataTransferLength: number;
  /** For reads: the bytes the host put in the guest's pages (dataTransferLength of them). */
  readonly data: Uint8Array;
}

export interface InitResult {
  readonly version: number;
  readonly properties: ReturnType<typeof P.vmstorage_channel_properties.decode>;
}

interface Pending {
  resolve: (payload: Uint8Array) => void;
  reject: (e: unknown) => void;
}

export class StorvscClient {
  readonly channels: GuestChannel[] = [];
  version = 0;
  properties: InitResult['properties'] | null = null;
  /** Unsolicited ENUMERATE_BUS / REMOVE_DEVICE packets seen (a real guest rescans). */
  rescans = 0;
  /** Packets whose transaction id matched no request (Linux logs "Incorrect transaction ID" and drops them). */
  readonly stray: { transactionId: bigint; payload: Uint8Array }[] = [];
  private readonly pending = new Map<bigint, Pending>();
  private nextId = 1n;
  private nextChannel = 0;
  private polling = false;
  private readonly freePages: number[];
  private readonly wait: () => Promise<void>;

  constructor(private readonly options: StorvscClientOptions) {
    this.freePages = options.pages.allocate(options.dataPages ?? 512);
    this.wait = options.wait ?? (() => new Promise((r) => setImmediate(r)));
  }

  /** The packet size in use: 48 before a version is agreed with legacy sizes, else the agreed one. */
  get packetSize(): number {
    if (this.version !== 0) return P.packetSizeFor(this.version);
    return this.options.legacySizes ? P.VSTOR_PACKET_SIZE_PRE_WIN8 : P.VSTOR_PACKET_SIZE;
  }

  /** Opens the primary and runs the init sequence; then asks for subchannels and opens them. */
  async connect(): Promise<InitResult> {
    await this.open();
    await this.expectSuccess(P.VSTOR_OPERATION_BEGIN_INITIALIZATION);
    await this.negotiate();
    const props = await this.expectSuccess(P.VSTOR_OPERATION_QUERY_PROPERTIES);
    this.properties = P.vmstorage_channel_properties.decode(props, P.VSTOR_PACKET_UNION);
    await this.expectSuccess(P.VSTOR_OPERATION_END_INITIALIZATION);
    const wanted = Math.min(this.options.subchannels ?? 0, this.properties.max_channel_cnt);
    if (wanted > 0 && this.properties.flags & P.STORAGE_CHANNEL_SUPPORTS_MULTI_CHANNEL) await this.openSubchannels(wanted);
    return { version: this.version, properties: this.properties };
  }

  /** Opens the primary channel (vmbus_open with 24 zero bytes of user data), without the init sequence. */
  async open(): Promise<void> {
    if (this.channels.length > 0) return;
    const ringPages = this.options.ringPages ?? 8;
    const primary = await this.options.vmbus.openChannel(this.options.relid, {
      sendPages: ringPages,
      recvPages: ringPages,
      userData: new Uint8Array(P.vmstorage_channel_properties.size),
    });
    this.channels.push(primary);
  }

  /** Sends a control request on the primary and returns the reply packet. */
  async control(operation: number, union?: Uint8Array, size = this.packetSize): Promise<Uint8Array> {
    const out = new Uint8Array(size);
    P.vstor_packet_header.encode({ operation, flags: P.REQUEST_COMPLETION_FLAG }, out);
    if (union) out.set(union.subarray(0, size - P.VSTOR_PACKET_UNION), P.VSTOR_PACKET_UNION);
    return this.request(0, VMBUS_RQST_INIT, { type: VM_PKT_DATA_INBAND, payload: out });
  }

  private async expectSuccess(operation: number, union?: Uint8Array): Promise<Uint8Array> {
    const reply = await this.control(operation, union);
    const h = P.vstor_packet_header.decode(reply);
    if (h.operation !== P.VSTOR_OPERATION_COMPLETE_IO || h.status !== P.STATUS_SUCCESS) {
      throw new StorvscClientError(`${P.operationName(operation)}: operation ${h.operation}, status 0x${h.status.toString(16)}`);
    }
    return reply;
  }

  private async negotiate(): Promise<void> {
    for (const v of this.options.versions ?? LINUX_STORVSC_VERSIONS) {
      const reply = await this.control(
        P.VSTOR_OPERATION_QUERY_PROTOCOL_VERSION,
        P.vmstorage_protocol_version.encodeNew({ major_minor: v }),
      );
      const h = P.vstor_packet_header.decode(reply);
      if (h.operation !== P.VSTOR_OPERATION_COMPLETE_IO) throw new StorvscClientError(`version reply with operation ${h.operation}`);
      if (h.status === P.STATUS_SUCCESS) {
        this.version = v;
        return;
      }
    }
    throw new StorvscClientError('Obsolete Hyper-V version: the host accepted none');
  }

  private async openSubchannels(count: number): Promise<void> {
    const union = new Uint8Array([count & 0xff, count >> 8]);
    await this.expectSuccess(P.VSTOR_OPERATION_CREATE_SUB_CHANNELS, union);
    const instance = this.channels[0].offer.if_instance;
    for (const start = performance.now(); ;) {
      this.options.vmbus.pump();
      const subs = [...this.options.vmbus.offers.values()].filter(
        (o) => !o.rescinded && o.if_instance === instance && o.sub_channel_index > 0,
      );
      if (subs.length >= count) {
        for (const offer of subs.sort((a, b) => a.sub_channel_index - b.sub_channel_index).slice(0, count)) {
          const ringPages = this.options.ringPages ?? 8;
          this.channels.push(await this.options.vmbus.openChannel(offer.child_relid, { sendPages: ringPages, recvPages: ringPages }));
        }
        return;
      }
      if (this.expired(start)) throw new StorvscClientError(`${subs.length} of ${count} subchannels offered`);
      await this.wait();
    }
  }

  // ---- SRBs

  /** Sends one SRB and waits for its completion. */
  async execute(spec: SrbSpec): Promise<SrbCompletion> {
    if (this.version === 0) throw new HostUsageError('connect() first');
    const channel = spec.channel ?? this.nextChannel++ % this.channels.length;
    const dataLength = spec.writeData?.length ?? spec.readLength ?? 0;
    const offset = spec.pageOffset ?? 0;
    const pages = spec.pfns ? [] : this.takePages(Math.ceil((offset + dataLength) / PAGE_SIZE));
    try {
      const pfns = spec.pfns ?? pages;
      if (spec.writeData && !spec.pfns) this.copyToPages(pfns, offset, spec.writeData);
      const payload = this.srbPacket(spec, dataLength);
      const id = this.nextId++;
      const packet =
        dataLength > 0 || spec.pfns
          ? {
              type: VM_PKT_DATA_USING_GPA_DIRECT,
              header: encodeGpaDirectHeader([{ byteCount: spec.rangeBytes ?? dataLength, byteOffset: offset, pfns }]),
              payload,
            }
          : { type: VM_PKT_DATA_INBAND, payload };
      const reply = await this.request(channel, id, packet);
      return this.completion(reply, spec.readLength && !spec.pfns && !spec.inPlace ? pfns : null, offset, spec.readLength ?? 0);
    } finally {
      this.freePages.push(...pages);
    }
  }

  private srbPacket(spec: SrbSpec, dataLength: number): Uint8Array {
    const out = new Uint8Array(this.packetSize);
    const dv = new DataView(out.buffer);
    dv.setUint32(0, P.VSTOR_OPERATION_EXECUTE_SRB, true);
    dv.setUint32(4, P.REQUEST_COMPLETION_FLAG, true);
    const win8 = P.isWin8OrLater(this.version);
    const dataIn = spec.writeData ? P.WRITE_TYPE : spec.readLength ? P.READ_TYPE : P.UNKNOWN_TYPE;
    // Written by offset (what a driver does); `override` goes through the structure's encoder.
    const u = P.VSTOR_PACKET_UNION;
    dv.setUint16(u + O.length, win8 ? P.vmscsi_request.size : P.vmscsi_request_pre_win8.size, true);
    out[u + O.path_id] = spec.pathId ?? 0;
    out[u + O.target_id] = spec.target ?? 0;
    out[u + O.lun] = spec.lun ?? 0;
    out[u + O.cdb_length] = spec.cdb.length;
    out[u + O.sense_info_length] = P.senseSizeFor(this.version);
    out[u + O.data_in] = dataIn;
    dv.setUint32(u + O.data_transfer_length, dataLength, true);
    out.set(spec.cdb.subarray(0, 16), u + O.cdb);
    if (win8) {
      dv.setUint32(u + O.time_out_value, 60, true);
      const direction = dataIn === P.READ_TYPE ? P.SRB_FLAGS_DATA_IN : dataIn === P.WRITE_TYPE ? P.SRB_FLAGS_DATA_OUT : 0;
      dv.setUint32(u + O.srb_flags, P.SRB_FLAGS_DISABLE_SYNCH_TRANSFER | direction, true);
    }
    if (spec.override) {
      const layout = win8 ? P.vmscsi_request : P.vmscsi_request_pre_win8;
      const fields = { ...layout.decode(out, u), ...spec.override } as Parameters<typeof layout.encode>[0];
      layout.encode(fields, out, u);
    }
    return out;
  }

  private completion(reply: Uint8Array, readPfns: readonly number[] | null, offset: number, readLength: number): SrbCompletion {
    const u = P.VSTOR_PACKET_UNION;
    const at = (field: number): number => (u + field < reply.length ? reply[u + field] : 0);
    const dv = new DataView(reply.buffer, reply.byteOffset, reply.byteLength);
    const transferred = u + O.data_transfer_length + 4 <= reply.length ? dv.getUint32(u + O.data_transfer_length, true) : 0;
    const senseLength = Math.min(at(O.sense_info_length), P.STORVSC_SENSE_BUFFER_SIZE, Math.max(0, reply.length - u - O.cdb));
    const data = readPfns ? this.copyFromPages(readPfns, offset, Math.min(transferred, readLength)) : new Uint8Array(0);
    return {
      status: reply.length >= 12 ? dv.getUint32(8, true) : 0,
      srbStatus: at(O.srb_status),
      scsiStatus: at(O.scsi_status),
      sense: reply.slice(u + O.cdb, u + O.cdb + senseLength),
      dataTransferLength: transferred,
      data,
    };
  }

  // ---- SCSI helpers (sector-addressed)

  read(
    lba: number,
    blocks: number,
    sectorSize: number,
    at: { target?: number; lun?: number; channel?: number; pageOffset?: number; inPlace?: boolean } = {},
  ) {
    return this.execute({ ...at, cdb: rw16(C.READ_16, 0, lba, blocks), readLength: blocks * sectorSize });
  }

  write(
    lba: number,
    data: Uint8Array,
    sectorSize: number,
    at: { target?: number; lun?: number; channel?: number; fua?: boolean; pageOffset?: number } = {},
  ) {
    return this.execute({ ...at, cdb: rw16(C.WRITE_16, at.fua ? C.CDB_FUA : 0, lba, data.length / sectorSize), writeData: data });
  }

  synchronizeCache(at: { target?: number; lun?: number; channel?: number } = {}) {
    return this.execute({ ...at, cdb: C.sync_cache_10.encodeNew({ opcode: C.SYNCHRONIZE_CACHE_10 }) });
  }

  unmap(ranges: readonly { lba: number; blocks: number }[], at: { target?: number; lun?: number; channel?: number } = {}) {
    const list = new Uint8Array(8 + 16 * ranges.length);
    C.unmap_parameter_header.encode({ data_length: list.length - 2, block_descriptor_data_length: 16 * ranges.length }, list);
    ranges.forEach((r, i) => C.unmap_block_descriptor.encode({ lba: BigInt(r.lba), count: r.blocks }, list, 8 + 16 * i));
    const cdb = C.unmap_cdb.encodeNew({ opcode: C.UNMAP, parameter_list_length: list.length });
    return this.execute({ ...at, cdb, writeData: list });
  }

  inquiry(page: number | null, allocation = 255, at: { target?: number; lun?: number } = {}) {
    const cdb = C.inquiry_cdb.encodeNew({
      opcode: C.INQUIRY,
      flags: page === null ? 0 : C.INQUIRY_EVPD,
      page_code: page ?? 0,
      allocation_length: allocation,
    });
    return this.execute({ ...at, cdb, readLength: allocation });
  }

  readCapacity16(at: { target?: number; lun?: number } = {}) {
    const cdb = C.read_capacity_16_cdb.encodeNew({
      opcode: C.SERVICE_ACTION_IN_16,
      service_action: C.SAI_READ_CAPACITY_16,
      allocation_length: 32,
    });
    return this.execute({ ...at, cdb, readLength: 32 });
  }

  // ---- transport

  /** Closes every channel (subchannels first). */
  async close(): Promise<void> {
    for (const ch of this.channels.splice(0).reverse()) await this.options.vmbus.closeChannel(ch);
    for (const p of this.pending.values()) p.reject(new StorvscClientError('closed'));
    this.pending.clear();
  }

  /** Requests in flight. */
  get inFlight(): number {
    return this.pending.size;
  }

  private request(channel: number, id: bigint, packet: { type: number; header?: Uint8Array; payload: Uint8Array }): Promise<Uint8Array> {
    const ch = this.channels[channel];
    if (!ch) return Promise.reject(new HostUsageError(`no channel ${channel}`));
    if (this.pending.has(id)) return Promise.reject(new HostUsageError(`transaction ${id} is in flight`));
    const done = new Promise<Uint8Array>((resolve, reject) => this.pending.set(id, { resolve, reject }));
    void this.sendWhenRoom(ch, { ...packet, flags: VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED, transactionId: id }).catch((e: unknown) => {
      this.pending.get(id)?.reject(e);
      this.pending.delete(id);
    });
    this.startPolling();
    return done;
  }

  /** Writes `packet`, waiting while the host has not made room (as Linux's ring-full retry). */
  private async sendWhenRoom(ch: GuestChannel, packet: Parameters<GuestChannel['rings']['outbound']['write']>[0]): Promise<void> {
    for (const start = performance.now(); !ch.rings.outbound.write(packet);) {
      if (this.expired(start)) throw new StorvscClientError('the host never made ring space');
      this.poll();
      await this.wait();
    }
  }

  /** Takes every completion waiting in every channel's ring. */
  poll(): void {
    for (const ch of this.channels) ch.rings.inbound.drain((p) => this.onPacket(p));
  }

  private onPacket(p: PacketView): void {
    const id = p.transactionId;
    const payload = p.payload().slice();
    if (id === 0n) {
      const op = payload.length >= 4 ? payload[0] | (payload[1] << 8) : 0;
      if (op === P.VSTOR_OPERATION_ENUMERATE_BUS || op === P.VSTOR_OPERATION_REMOVE_DEVICE) this.rescans++;
      return;
    }
    const waiter = this.pending.get(id);
    if (!waiter) {
      this.stray.push({ transactionId: id, payload });
      return;
    }
    this.pending.delete(id);
    waiter.resolve(payload);
  }

  private startPolling(): void {
    if (this.polling) return;
    this.polling = true;
    void (async () => {
      let progress = performance.now();
      while (this.pending.size > 0) {
        const before = this.pending.size;
        this.poll();
        if (this.pending.size !== before) progress = performance.now();
        else if (this.expired(progress)) {
          for (const p of this.pending.values()) p.reject(new StorvscClientError('the host never answered'));
          this.pending.clear();
          break;
        }
        if (this.pending.size > 0) await this.wait();
      }
      this.polling = false;
    })();
  }

  private expired(since: number): boolean {
    return performance.now() - since > (this.options.timeoutMs ?? 30_000);
  }

  // ---- data pages

  private takePages(count: number): number[] {
    if (count > this.freePages.length) throw new StorvscClientError(`${count} data pages wanted, ${this.freePages.length} free`);
    // From the end: pages come back in another order than they left, so page lists are scattered.
    return this.freePages.splice(this.freePages.length - count, count);
  }

  private copyToPages(pfns: readonly number[], offset: number, data: Uint8Array): void {
    for (let done = 0, page = 0, at = offset; done < data.length; page++, at = 0) {
      const n = Math.min(PAGE_SIZE - at, data.length - done);
      this.options.memory.write(pfns[page] * PAGE_SIZE + at, data.subarray(done, done + n));
      done += n;
    }
  }

  private copyFromPages(pfns: readonly number[], offset: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    for (let done = 0, page = 0, at = offset; done < length; page++, at = 0) {
      const n = Math.min(PAGE_SIZE - at, length - done);
      this.options.memory.read(pfns[page] * PAGE_SIZE + at, out.subarray(done, done + n));
      done += n;
    }
    return out;
  }
}

/** A READ (16) / WRITE (16) CDB, written by offset (the I/O helpers' hot path). */
function rw16(opcode: number, flags: number, lba: number, blocks: number): Uint8Array {
  const cdb = new Uint8Array(C.read_write_16.size);
  const dv = new DataView(cdb.buffer);
  const o = C.read_write_16.offsetOf;
  cdb[o.opcode] = opcode;
  cdb[o.flags] = flags;
  dv.setBigUint64(o.lba, BigInt(lba), false);
  dv.setUint32(o.transfer_length, blocks, false);
  return cdb;
}
