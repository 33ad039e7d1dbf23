/**
 * One composition for every VM: a partition (any backend) or the simulated one, the SynIC
 * (hvemu's own where the backend has none — KVM, simulation — or the hypervisor's, served by
 * the partition's `synic` port on MSHV and WHPX), the hypercall dispatcher, the VMBus host and
 * the devices, taken by name from a DeviceRegistry. KvmVm and SimulatedVm are presets of it.
 */
import { HostUsageError, ManualClock, silentLogger, type Clock, type Logger } from '@hvemu/common';
import type { SynicPort } from '@hvemu/hvdef';
import { HypercallDispatcher } from '@hvemu/hypercalls';
import { GuestMemory } from '@hvemu/memory';
import { HyperV, type HyperVEvents, type SynicInterruptSink } from '@hvemu/synic';
import { disabledTraceSink, type TraceDevice, type TraceSink } from '@hvemu/trace';
import type { StorageControllerSpec } from '@hvemu/storage';
import {
  attachDevice,
  isHostCallable,
  VmbusHost,
  type AttachedDevice,
  type DeviceRegistry,
  type ServerAction,
  type VmbusHostOptions,
} from '@hvemu/vmbus';
import { HypervisorUnavailableError, KvmPartition, MshvPartition, WhpxPartition, type AccelPartition } from '@hvemu/accel';
import { enlightenedPartitionOptions } from './enlighten.js';
import { attachHyperV, type Enlightenments } from './enlighten.js';
import { defaultDevices } from './ic-devices.js';
import { withNics } from './net-devices.js';
import type { NicSpec } from '@hvemu/net';
import { balloonMemory, type BalloonDevice, type BalloonSpec } from '@hvemu/balloon';
import { recordingEnvironment, traceHooks, type TraceHooks } from './trace-capture.js';

export interface VmSpec {
  /**
   * The partition to compose on (KVM, MSHV, WHPX — fakes included). Absent: the simulated
   * partition (guest RAM in a SharedArrayBuffer, no vCPUs; a TypeScript guest drives it).
   */
  partition?: AccelPartition;
  /** Simulated only: guest RAM bytes (default 16 MiB) and virtual processors (default 1). */
  ramBytes?: number;
  vpCount?: number;
  /** Simulated only: where hvemu's SynIC raises interrupts (the TypeScript guest). */
  interruptSink?: SynicInterruptSink;
  /** Device kinds to offer, by name, in this order (relids 1..n on a fresh bus). Default: every registered kind. */
  devices?: readonly string[];
  /** Where the device kinds come from (default: defaultDevices(), the integration components). */
  registry?: DeviceRegistry;
  /**
   * A SCSI controller and its disks ({ path, readOnly, sectorSize } image files, or backends),
   * offered as device kind 'scsi' after the integration components. Not with `registry`
   * (register storageDeviceKind(spec) on it instead).
   */
  storage?: StorageControllerSpec;
  /**
   * Dynamic memory (hv_balloon's host end), offered as device kind 'balloon' after storage:
   * `true` or its options. Its memory is the VM's: on a partition, released pages go back to the
   * host through `partition.memoryControl` (KVM: a hole punched in the memfd) and hot add maps
   * new memslots; simulated, they are zero-filled. Not with `registry` (register
   * balloonDeviceKind there). `balloonOf(vm)` is the device.
   */
  balloon?: boolean | Omit<BalloonSpec, 'memory'>;
  /** Network adapters (netvsp), offered after `devices` as nic0, nic1, ...: `{ tap: 'tap0', mac }` or `{ backend, mac }`. */
  nics?: readonly NicSpec[];
  clock?: Clock;
  /** Host wall clock for the devices that report it (timesync), Unix ms. */
  wallClockMs?: () => number;
  logger?: Logger;
  /** Trace capture (default: off). */
  trace?: TraceSink;
  /** VMBus host options (versions, limits). */
  vmbus?: Partial<Omit<VmbusHostOptions, 'memory' | 'synic' | 'connections' | 'logger' | 'onAction' | 'onPacket'>>;
  /** Hyper-V events where hvemu owns the SynIC (a guest crash through the crash MSRs, reset, idle). */
  events?: HyperVEvents;
  /** Every VMBus action, after the trace saw it (timelines). */
  onAction?(action: ServerAction): void;
  /** Each device as it is offered. */
  onOffer?(name: string, relid: number): void;
}

export interface Vm {
  /** Which backend: the partition's, or 'simulated'. */
  readonly backend: AccelPartition['backend'] | 'simulated';
  readonly partition: AccelPartition | null;
  readonly memory: GuestMemory;
  readonly clock: Clock;
  /** hvemu's SynIC, timers and Hyper-V MSRs, where hvemu owns them (KVM, simulated); null where the hypervisor does. */
  readonly hyperv: HyperV | null;
  /** The KVM enlightenments (hypercall page, doorbell), where hvemu attached them. */
  readonly enlightenments: Enlightenments | null;
  /** What VMBus posts and signals through: hvemu's SynIC or the hypervisor's. */
  readonly synic: SynicPort;
  readonly hypercalls: HypercallDispatcher;
  readonly vmbus: VmbusHost;
  /** The offered devices by name. */
  readonly devices: ReadonlyMap<string, AttachedDevice>;
  readonly traceHooks: TraceHooks;
  /** Tells every device the VM starts running (their `start`, in offer order). */
  start(): Promise<void>;
  /** Tells every device the VM stops; resolves when each has no request in flight (their `stop`). */
  stop(): Promise<void>;
  /**
   * Stops hvemu's timers and doorbells and unregisters the VMBus host's connections at once
   * (the partition, if any, is the caller's to close); the promise resolves when every device
   * has released what it holds outside guest memory (its `dispose`: image files, ...).
   */
  dispose(): Promise<void>;
}

/** Composes a VM from `spec`. */
export function buildVm(spec: VmSpec = {}): Vm {
  if (typeof spec !== 'object' || spec === null) throw new HostUsageError('buildVm: spec must be an object');
  const logger = spec.logger ?? silentLogger;
  const clock = spec.clock ?? new ManualClock();
  const partition = spec.partition ?? null;
  const memory = partition ? partition.memory : GuestMemory.createShared(spec.ramBytes ?? 16 << 20);
  // The trace hooks read the server's GPADLs; the host they belong to is made below.
  const made: { vmbus?: VmbusHost } = {};
  const hooks = traceHooks(spec.trace ?? disabledTraceSink, memory, () => made.vmbus?.server);
  const side = partition ? partitionSide(partition, clock, logger, hooks, spec.events) : simulatedSide(spec, memory, clock, logger, hooks);
  const vmbus = (made.vmbus = new VmbusHost({
    memory,
    synic: side.synic,
    connections: side.hypercalls.connections,
    vpCount: partition ? partition.vcpus.length : (spec.vpCount ?? 1),
    ...spec.vmbus,
    logger,
    onAction: (action) => {
      hooks.onAction(action);
      spec.onAction?.(action);
    },
    onPacket: hooks.onPacket,
  }));
  const balloon = spec.balloon
    ? { ...(spec.balloon === true ? {} : spec.balloon), memory: () => balloonMemory(memory, partition?.memoryControl) }
    : undefined;
  const devices = offerDevices(vmbus, spec, balloon, { clock, logger, wallClockMs: spec.wallClockMs ?? Date.now }, hooks);
  return {
    backend: partition ? partition.backend : 'simulated',
    partition,
    memory,
    clock,
    hyperv: side.hyperv,
    enlightenments: side.enlightenments,
    synic: side.synic,
    hypercalls: side.hypercalls,
    vmbus,
    devices,
    traceHooks: hooks,
    start: async () => {
      for (const d of devices.values()) await d.device.start?.();
    },
    stop: async () => {
      await Promise.all([...devices.values()].map((d) => d.device.stop?.()));
    },
    dispose: () => {
      // The timers' host timer and the doorbells first: nothing may reach a partition being closed.
      side.enlightenments?.dispose();
      vmbus.dispose();
      // Then what the devices hold outside guest memory (image files, ...), released in the background: the promise says when.
      return Promise.all([...devices.values()].map(async (d) => d.device.dispose?.())).then(() => undefined);
    },
  };
}

interface SynicSide {
  synic: SynicPort;
  hyperv: HyperV | null;
  enlightenments: Enlightenments | null;
  hypercalls: HypercallDispatcher;
}

/** A real partition: the hypervisor's SynIC where it has one, else hvemu's attached to it. */
function partitionSide(partition: AccelPartition, clock: Clock, logger: Logger, hooks: TraceHooks, events?: HyperVEvents): SynicSide {
  const offloaded = partition.synic;
  if (offloaded) {
    const hypercalls = new HypercallDispatcher({ memory: partition.memory, logger, onCall: hooks.onCall, onResult: hooks.onResult });
    partition.onHypercall((h) => ({ value: hypercalls.dispatch(h.vp, { rcx: h.control, rdx: h.input, r8: h.output }) }));
    return { synic: offloaded, hyperv: null, enlightenments: null, hypercalls };
  }
  const enlightenments = attachHyperV(partition, { clock, logger, trace: hooks, events });
  return { synic: enlightenments.hyperv, hyperv: enlightenments.hyperv, enlightenments, hypercalls: enlightenments.hypercalls };
}

/** The simulated partition: hvemu's SynIC over shared memory, interrupts to the TypeScript guest. */
function simulatedSide(spec: VmSpec, memory: GuestMemory, clock: Clock, logger: Logger, hooks: TraceHooks): SynicSide {
  const hyperv = new HyperV({
    memory,
    vpCount: spec.vpCount ?? 1,
    clock,
    logger,
    events: spec.events,
    observer: hooks.synic,
    sink: spec.interruptSink ?? { raise: () => {} },
  });
  const hypercalls = new HypercallDispatcher({ memory, logger, onCall: hooks.onCall, onResult: hooks.onResult });
  return { synic: hyperv, hyperv, enlightenments: null, hypercalls };
}

/** The VM's dynamic memory device (VmSpec.balloon), or null when it has none. */
export function balloonOf(vm: Pick<Vm, 'devices'>): BalloonDevice | null {
  return (vm.devices.get('balloon')?.device as BalloonDevice | undefined) ?? null;
}

/** Offers the named device kinds in order; host-API calls of each are traced with their relid. */
function offerDevices(
  vmbus: VmbusHost,
  spec: VmSpec,
  balloon: BalloonSpec | undefined,
  env: { clock: Clock; logger: Logger; wallClockMs: () => number },
  hooks: TraceHooks,
): Map<string, AttachedDevice> {
  if (spec.registry && spec.storage)
    throw new HostUsageError('buildVm: give storage in the registry (storageDeviceKind) or as spec.storage, not both');
  if (spec.registry && balloon)
    throw new HostUsageError('buildVm: give the balloon in the registry (balloonDeviceKind) or as spec.balloon, not both');
  const base = spec.registry ?? defaultDevices({ storage: spec.storage, balloon });
  const listed = spec.devices ?? base.names;
  if (!Array.isArray(listed)) throw new HostUsageError('buildVm: devices must be a list of device kind names');
  const { registry, names: nics } = withNics(base, spec.nics ?? []);
  const names = [...listed, ...nics];
  const devices = new Map<string, AttachedDevice>();
  for (const name of names) {
    if (devices.has(name)) throw new HostUsageError(`buildVm: device ${name} is listed twice`);
    let relid = 0;
    const device = registry.require(name).create(recordingEnvironment(env, name, () => relid, hooks));
    const attached = attachDevice(vmbus, device, { logger: env.logger });
    relid = attached.channel.relid;
    if (isHostCallable(device)) device.observeHostCalls((method, args) => hooks.onHostCall(relid, name, method, args));
    spec.onOffer?.(name, relid);
    devices.set(name, attached);
  }
  return devices;
}

/** A backend by name; 'auto' takes the first usable of KVM, MSHV and WHPX, else the simulated partition. */
export type BackendChoice = 'auto' | 'kvm' | 'mshv' | 'whpx' | 'simulated';

export interface PartitionSpec {
  /** Guest RAM from GPA 0 (default 16 MiB). */
  ramBytes?: number;
  /** Virtual processors (default 1). */
  vcpus?: number;
  logger?: Logger;
}

const BACKEND_CHOICES: readonly BackendChoice[] = ['auto', 'kvm', 'mshv', 'whpx', 'simulated'];

/**
 * Opens the named backend's partition with the enlightened defaults (on KVM: the Hyper-V CPUID
 * leaves and hypercall port hvemu's SynIC needs; on MSHV and WHPX the hypervisor provides them),
 * for buildVm. Returns null for 'simulated', and for 'auto' when no hypervisor is usable here.
 * A named backend that is not usable here is a HypervisorUnavailableError saying why.
 */
export function openPartition(choice: BackendChoice = 'auto', spec: PartitionSpec = {}): AccelPartition | null {
  if (!BACKEND_CHOICES.includes(choice))
    throw new HostUsageError(`openPartition: backend ${String(choice)} is not one of ${BACKEND_CHOICES.join(', ')}`);
  const memory = [{ gpa: 0, size: spec.ramBytes ?? 16 << 20 }];
  const vcpuCount = spec.vcpus ?? 1;
  const open: Record<Exclude<BackendChoice, 'auto' | 'simulated'>, () => AccelPartition> = {
    kvm: () => KvmPartition.create({ memory, vcpuCount, ...enlightenedPartitionOptions(), logger: spec.logger }),
    mshv: () => MshvPartition.create({ memory, vcpuCount, logger: spec.logger }),
    whpx: () => WhpxPartition.create({ memory, vcpuCount, logger: spec.logger }),
  };
  if (choice === 'simulated') return null;
  if (choice !== 'auto') return open[choice]();
  for (const name of ['kvm', 'mshv', 'whpx'] as const) {
    if (name === 'kvm' && !KvmPartition.probe().ok) continue;
    try {
      return open[name]();
    } catch (error) {
      if (!(error instanceof HypervisorUnavailableError)) throw error;
    }
  }
  return null;
}

/**
 * The trace header of a VM that offers `devices` (kind names, in order) on a fresh bus, so at
 * relids 1..n: written before the VM runs, as a recorder needs it.
 */
export function deviceTraceHeader(
  producer: string,
  options: { devices?: readonly string[]; registry?: DeviceRegistry; vmbusVersion?: number } = {},
): { vmbusVersion: number; devices: TraceDevice[]; producer: string } {
  const registry = options.registry ?? defaultDevices();
  const names = options.devices ?? registry.names;
  return {
    vmbusVersion: options.vmbusVersion ?? 0,
    devices: names.map((name, i) => {
      const { offer } = registry.require(name);
      return { name, classId: offer.interfaceType, instanceId: offer.interfaceInstance, relid: i + 1 };
    }),
    producer,
  };
}
