/**
 * The simulated partition: guest RAM in a SharedArrayBuffer, the same HyperV, hypercall
 * dispatch, VMBus host and IC devices a KVM VM uses, and a guest written in TypeScript that
 * does what Linux hv_vmbus + hv_utils do: enable the SynIC, hypercall through the dispatcher,
 * negotiate VMBus, take the offers, open every IC channel and answer the host's IC messages
 * when its SINT 2 interrupt shows a channel's event flag. Deterministic with a ManualClock.
 */
import {
  HV_X64_MSR_EOM,
  HV_X64_MSR_GUEST_OS_ID,
  HV_X64_MSR_SCONTROL,
  HV_X64_MSR_SIEFP,
  HV_X64_MSR_SIMP,
  HV_X64_MSR_SINT0,
} from '@hvemu/hvdef';
import { HostUsageError, ManualClock, type Clock, type Logger } from '@hvemu/common';
import { PAGE_SIZE, type GuestMemory } from '@hvemu/memory';
import type { HypercallDispatcher } from '@hvemu/hypercalls';
import type { HyperV } from '@hvemu/synic';
import { BumpPageAllocator, simpTransport, VM_PKT_DATA_INBAND, VmbusClient, type GuestChannel, type VmbusHost } from '@hvemu/vmbus';
import {
  GuestIcEndpoint,
  ICMSGTYPE_HEARTBEAT,
  ICMSGTYPE_NEGOTIATE,
  ICMSGTYPE_SHUTDOWN,
  ICMSGTYPE_TIMESYNC,
  ICMSGTYPE_KVPEXCHANGE,
  ICMSG_HDR,
  parseIcMessage,
  versionText,
  IC_OFFERS,
  type IcKind,
} from '@hvemu/util';

import type { TraceSink } from '@hvemu/trace';
import { buildVm, type Vm } from './builder.js';
import { IC_KINDS, integrationComponentsOf, type IntegrationComponents } from './ic-devices.js';

/** The simulated host's wall clock (Unix ms), fixed so runs and replays are reproducible. */
export const SIMULATED_WALL_CLOCK_MS = 1_700_000_000_000;

const VMBUS_SINT = 2;
const VMBUS_VECTOR = 0xf3;
/** Guest-physical layout of the simulated guest's own pages. */
const LAYOUT = { simp: 0x10000, siefp: 0x20000, input: 0x30000, firstFreePfn: 0x40 } as const;

export interface TimelineEvent {
  /** Reference time, 100 ns units. */
  time: bigint;
  who: 'host' | 'guest';
  what: string;
}

export interface SimulatedVmOptions {
  /** Where to capture a trace (default: none). */
  trace?: TraceSink;
  /** Virtual processors, 1 to HV_MAXIMUM_PROCESSORS (default 1; the guest runs on VP 0). */
  vpCount?: number;
  /** Guest RAM, a multiple of 4 KiB from 1 MiB to 4 GiB (default 16 MiB). */
  ramBytes?: number;
  clock?: Clock;
  logger?: Logger;
  onEvent?(event: TimelineEvent): void;
}

export type { IntegrationComponents } from './ic-devices.js';

export class SimulatedVm {
  readonly memory: GuestMemory;
  readonly clock: Clock;
  readonly hyperv: HyperV;
  readonly hypercalls: HypercallDispatcher;
  readonly vmbus: VmbusHost;
  readonly ics: IntegrationComponents;
  readonly guest: SimulatedLinuxGuest;
  private readonly emit: (who: 'host' | 'guest', what: string) => void;

  /** The composition this preset is made of (buildVm with the simulated partition and the ICs). */
  readonly vm: Vm;

  constructor(options: SimulatedVmOptions = {}) {
    checkSimulatedVmOptions(options);
    this.clock = options.clock ?? new ManualClock();
    this.emit = (who, what) => options.onEvent?.({ time: this.clock.now(), who, what });
    this.vm = buildVm({
      ramBytes: options.ramBytes,
      vpCount: options.vpCount,
      interruptSink: { raise: (vp) => queueMicrotask(() => this.guest.onInterrupt(vp)) },
      devices: IC_KINDS,
      clock: this.clock,
      wallClockMs: () => SIMULATED_WALL_CLOCK_MS,
      logger: options.logger,
      trace: options.trace,
      onOffer: (name, relid) => this.emit('host', `offers ${name} as relid ${relid}`),
    });
    this.memory = this.vm.memory;
    this.hyperv = this.vm.hyperv!;
    this.hypercalls = this.vm.hypercalls;
    this.vmbus = this.vm.vmbus;
    this.ics = integrationComponentsOf(this.vm);
    this.guest = new SimulatedLinuxGuest(this, (what) => this.emit('guest', what));
  }

  /** Runs queued work (interrupts, answers) until nothing is left. */
  async settle(): Promise<void> {
    for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
  }

  hostEvent(what: string): void {
    this.emit('host', what);
  }
}

/** The simulated guest's own pages need the first MiB; RAM is one SharedArrayBuffer. */
const MIN_SIMULATED_RAM = 1 << 20;
const MAX_SIMULATED_RAM = 4 * 2 ** 30;

function checkSimulatedVmOptions(options: SimulatedVmOptions): void {
  if (typeof options !== 'object' || options === null) throw new HostUsageError('SimulatedVm options must be an object');
  const { ramBytes, clock, logger, onEvent } = options;
  if (
    ramBytes !== undefined &&
    !(Number.isSafeInteger(ramBytes) && ramBytes >= MIN_SIMULATED_RAM && ramBytes <= MAX_SIMULATED_RAM && ramBytes % PAGE_SIZE === 0)
  ) {
    throw new HostUsageError(
      `SimulatedVm: ramBytes ${String(ramBytes)} is not a multiple of ${PAGE_SIZE} from ${MIN_SIMULATED_RAM} to ${MAX_SIMULATED_RAM}`,
    );
  }
  if (clock !== undefined && typeof clock?.now !== 'function') throw new HostUsageError('SimulatedVm: clock must have a now() method');
  if (logger !== undefined && typeof logger?.warn !== 'function') throw new HostUsageError('SimulatedVm: logger must implement Logger');
  if (onEvent !== undefined && typeof onEvent !== 'function') throw new HostUsageError('SimulatedVm: onEvent must be a function');
  // vpCount is checked by HyperV, with the Hyper-V limit.
}

const KVP_OPERATIONS = ['get', 'set', 'delete', 'enumerate', 'get IP info', 'set IP info'];

interface OpenIc {
  kind: IcKind;
  channel: GuestChannel;
  endpoint: GuestIcEndpoint;
}

/** What Linux hv_vmbus + hv_utils do, in TypeScript, on VP 0. */
export class SimulatedLinuxGuest {
  readonly client: VmbusClient;
  readonly opened = new Map<number, OpenIc>();
  version = 0;
  private readonly vm: SimulatedVm;

  constructor(
    vm: SimulatedVm,
    private readonly log: (what: string) => void,
  ) {
    this.vm = vm;
    const { memory, hyperv, hypercalls } = vm;
    const transport = simpTransport({
      memory,
      vp: 0,
      simpGpa: LAYOUT.simp,
      inputPageGpa: LAYOUT.input,
      hypercall: (vp, rcx, rdx, r8) => hypercalls.dispatch(vp, { rcx, rdx, r8 }),
      writeEom: (vp) => hyperv.writeMsr(vp, HV_X64_MSR_EOM, 0n),
    });
    const pages = new BumpPageAllocator(LAYOUT.firstFreePfn, memory.ramSize / PAGE_SIZE - LAYOUT.firstFreePfn);
    this.client = new VmbusClient({ transport, memory, pages, vp: 0 });
  }

  /** Boot: SynIC on, VMBus connect, offers, open every IC. */
  async boot(): Promise<void> {
    const hv = this.vm.hyperv;
    hv.writeMsr(0, HV_X64_MSR_GUEST_OS_ID, 0x8100n << 48n);
    hv.writeMsr(0, HV_X64_MSR_SIMP, BigInt(LAYOUT.simp) | 1n);
    hv.writeMsr(0, HV_X64_MSR_SIEFP, BigInt(LAYOUT.siefp) | 1n);
    hv.writeMsr(0, HV_X64_MSR_SINT0 + VMBUS_SINT, BigInt(VMBUS_VECTOR));
    hv.writeMsr(0, HV_X64_MSR_SCONTROL, 1n);
    this.log('SynIC enabled on VP 0 (SIMP, SIEFP, SINT2 -> vector 0xf3)');
    this.version = await this.client.connect();
    this.log(`VMBus connected at version ${this.version >>> 16}.${this.version & 0xffff}`);
    const offers = await this.client.requestOffers();
    this.log(`${offers.length} offers: ${offers.map((o) => `relid ${o.child_relid}`).join(', ')}`);
    for (const offer of offers) {
      const kind = (Object.keys(IC_OFFERS) as IcKind[]).find((k) => IC_OFFERS[k].interfaceType === offer.if_type);
      if (!kind) continue;
      const channel = await this.client.openChannel(offer.child_relid, { sendPages: 3, recvPages: 3 });
      this.opened.set(channel.relid, { kind, channel, endpoint: new GuestIcEndpoint(kind) });
      this.log(`opened ${kind} (relid ${channel.relid}, ring GPADL 0x${channel.ringGpadl.toString(16)})`);
      // Linux sets the channel callback before OPENCHANNEL; an event that raced the open is seen now.
      this.onInterrupt(0);
    }
  }

  endpoint(kind: IcKind): GuestIcEndpoint {
    for (const ic of this.opened.values()) if (ic.kind === kind) return ic.endpoint;
    throw new HostUsageError(`the simulated guest has no open ${kind} channel`);
  }

  /** SINT 2 fired: channel messages via the client, then every channel whose event flag is set. */
  onInterrupt(vp: number): void {
    this.client.pump();
    const flags = this.vm.memory.u32Array(LAYOUT.siefp + VMBUS_SINT * 256, 64);
    for (const ic of this.opened.values()) {
      const bit = 1 << (ic.channel.relid & 31);
      if ((Atomics.and(flags, ic.channel.relid >>> 5, ~bit) & bit) === 0 || vp !== 0) continue;
      this.serve(ic);
    }
  }

  private serve(ic: OpenIc): void {
    ic.channel.rings.inbound.drain((p) => {
      const answer = ic.endpoint.onPacket(new Uint8Array(p.payload()));
      if (!answer) return;
      this.describe(ic, answer);
      ic.channel.rings.outbound.write({ type: VM_PKT_DATA_INBAND, transactionId: p.transactionId, payload: answer });
    });
  }

  private describe(ic: OpenIc, answer: Uint8Array): void {
    const e = ic.endpoint;
    const type = parseIcMessage(answer).header.messageType;
    const what =
      type === ICMSGTYPE_NEGOTIATE
        ? e.negotiated
          ? `negotiated framework ${versionText(e.negotiated.framework)}, service ${versionText(e.negotiated.service)}`
          : 'no common version'
        : type === ICMSGTYPE_HEARTBEAT
          ? `heartbeat ${e.heartbeats[e.heartbeats.length - 1]}, answered with +1`
          : type === ICMSGTYPE_SHUTDOWN
            ? `shutdown request ${JSON.stringify(e.shutdowns[e.shutdowns.length - 1] ?? 'refused')}`
            : type === ICMSGTYPE_TIMESYNC
              ? `time sample (flags ${e.timeSamples[e.timeSamples.length - 1]?.flags})`
              : type === ICMSGTYPE_KVPEXCHANGE
                ? `KVP ${KVP_OPERATIONS[answer[ICMSG_HDR]] ?? 'operation ' + answer[ICMSG_HDR]} in pool ${answer[ICMSG_HDR + 1]}`
                : `message type ${type}`;
    this.log(`${ic.kind}: ${what}`);
  }
}
