/**
 * A VM on KVM with the Hyper-V enlightenments, the VMBus host and the integration components:
 * the same host composition as SimulatedVm (HyperV + HypercallDispatcher + VmbusHost +
 * IcDevices), but the guest is a real program (a freestanding ELF entered in 64-bit long mode)
 * that talks to it through CPUID, synthetic MSRs, the hypercall page and the SynIC.
 *
 * The platform is the test-guest one: a serial port (0x3f8, each line becomes a guest timeline
 * event), the debug-exit port (0xf4, the guest's exit code) and the assertion port (0xf6).
 */
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { HostUsageError, MonotonicClock, silentLogger, type Clock, type Logger } from '@hvemu/common';
import { AccelUsageError, KvmPartition, probeGuestCpuid, type AccelPartition, type CpuidProbeResult, type IoDevice } from '@hvemu/accel';
import {
  AssertPort,
  buildFreestandingImage,
  DebugExitPort,
  enterLongMode,
  GUEST_RUNTIME_DIR,
  loadElf64,
  SERIAL_PORT,
} from '@hvemu/platform';
import type { GuestMemory } from '@hvemu/memory';
import type { HypercallDispatcher } from '@hvemu/hypercalls';
import type { HyperV } from '@hvemu/synic';
import { channelMessageName, versionString, type ServerAction, type VmbusHost } from '@hvemu/vmbus';
import type { IcKind, ShutdownAnswer, ShutdownRequest } from '@hvemu/util';
import type { TraceSink } from '@hvemu/trace';
import { IC_KINDS, integrationComponentsOf, type IntegrationComponents } from './ic-devices.js';
import { enlightenedPartitionOptions, type Enlightenments } from './enlighten.js';
import { buildVm, type Vm } from './builder.js';
import type { TimelineEvent } from './sim.js';

export interface KvmVmOptions {
  /** The guest: a 64-bit ELF linked for identity-mapped long mode (buildLongModeGuest / buildVmbusDemoGuest). */
  image: Uint8Array;
  /** Guest RAM from GPA 0 (default 16 MiB). */
  ramBytes?: number;
  /** Reference-time source for HyperV and the timeline (default: MonotonicClock). */
  clock?: Clock;
  logger?: Logger;
  onEvent?(event: TimelineEvent): void;
  /** Where to capture a trace (default: none). */
  trace?: TraceSink;
  /** Host wall clock for timesync samples, Unix ms (default Date.now). */
  wallClockMs?: () => number;
  /** VMBus server settings: newest version offered (default 6.0), msg_conn_id for >= 5.0 (default 1). */
  vmbus?: { maxVersion?: number; messageConnectionId?: number };
}

export interface KvmRunResult {
  /** What the guest wrote to the debug-exit port; null if it stopped otherwise (stop(), error). */
  exitCode: number | null;
  /** Guest assertion failures, one line each ('' when none). */
  assertions: string;
  /** Everything the guest printed. */
  serial: string;
  /** Wall time of the run. */
  elapsedMs: number;
}

export interface IcExercise {
  /** Heartbeats to send, each after the previous one was answered (default 3). */
  heartbeats?: number;
  /** The shutdown request sent after the heartbeats (default: poweroff); null sends none. */
  shutdown?: ShutdownRequest | null;
  /** Per step: how long to wait for the guest (default 20 s). */
  timeoutMs?: number;
}

export interface IcExerciseResult {
  /** The sequence number the guest answered to each heartbeat. */
  heartbeatAnswers: bigint[];
  /** The guest's answer to the shutdown request (null: none sent, or the channel closed first). */
  shutdown: ShutdownAnswer | null;
}

const DEFAULT_RAM = 16 << 20;
const POLL_MS = 2;
/** The demo guest's C sources (packages/vm/guests, shipped with the package), relative to this module (the same from src/ and dist/). */
const DEMO_GUEST_DIR = fileURLToPath(new URL('../guests/vmbus/', import.meta.url));
const DEMO_GUEST_SOURCES = ['hv.c', 'vmbus.c', 'ring.c', 'ic.c', 'main.c'];

/**
 * Builds the VMBus demo guest (packages/vm/guests/vmbus) with the long-mode runtime;
 * cached by content hash, never committed. `minHeartbeats` is the count it must answer
 * before a shutdown request for exit code 0.
 */
export function buildVmbusDemoGuest(options: { minHeartbeats?: number } = {}): Uint8Array {
  const rt = (f: string): string => join(GUEST_RUNTIME_DIR, f);
  return buildFreestandingImage({
    name: 'vmbus-demo',
    sources: [rt('start.S'), rt('rt.c'), ...DEMO_GUEST_SOURCES.map((f) => join(DEMO_GUEST_DIR, f))],
    dependencies: [rt('rt.h'), join(DEMO_GUEST_DIR, 'vmbus.h'), join(DEMO_GUEST_DIR, '../hv-abi.h')],
    linkScript: rt('link.ld'),
    flags: ['-mno-red-zone', `-I${GUEST_RUNTIME_DIR}`, `-DMIN_HEARTBEATS=${options.minHeartbeats ?? 3}`],
  });
}

/** Serial output split into lines; each complete line is reported. Bounded like SerialPort. */
class LineConsole implements IoDevice {
  readonly port = SERIAL_PORT;
  readonly count = 8;
  private readonly bytes: number[] = [];
  private line: number[] = [];
  private static readonly MAX_BYTES = 1 << 20;
  private static readonly MAX_LINE = 1024;

  constructor(private readonly onLine: (line: string) => void) {}

  read(port: number): number {
    // LSR: transmitter always empty and idle, so a polling guest never waits.
    return port - SERIAL_PORT === 5 ? 0x60 : 0;
  }

  write(port: number, _size: 1 | 2 | 4, value: number): void {
    if (port !== SERIAL_PORT || this.bytes.length >= LineConsole.MAX_BYTES) return;
    const byte = value & 0xff;
    this.bytes.push(byte);
    if (byte === 0x0a || this.line.length >= LineConsole.MAX_LINE) this.flush();
    else if (byte !== 0x0d) this.line.push(byte);
  }

  /** Reports a partial last line (the guest stopped mid-line). */
  flush(): void {
    if (this.line.length === 0) return;
    const text = new TextDecoder().decode(new Uint8Array(this.line));
    this.line = [];
    this.onLine(text);
  }

  text(): string {
    return new TextDecoder().decode(new Uint8Array(this.bytes));
  }
}

export class KvmVm {
  /** Made by KvmPartition.create (this is the KVM preset); used only through AccelPartition. */
  readonly partition: AccelPartition;
  readonly memory: GuestMemory;
  readonly clock: Clock;
  readonly hyperv: HyperV;
  readonly hypercalls: HypercallDispatcher;
  readonly vmbus: VmbusHost;
  readonly ics: IntegrationComponents;
  /** The composition this preset is made of (buildVm on a KvmPartition with the ICs). */
  readonly vm: Vm;
  private readonly enlightenments: Enlightenments;
  private readonly console: LineConsole;
  private readonly debugExit = new DebugExitPort();
  private readonly asserts: AssertPort;
  private readonly emit: (who: 'host' | 'guest', what: string) => void;
  /** Set when a run() has ended: polls give up instead of waiting for a stopped guest. */
  private ended = false;
  private closed = false;

  /** Whether KVM is usable here, with the reason if not. */
  static probe(): { ok: boolean; reason: string } {
    return KvmPartition.probe();
  }

  /**
   * What CPUID a KvmVm's guest really sees on this host against what hvemu programs (a
   * throwaway probe partition; ~30 ms). KVMs of this project's kind pass host values through
   * for some basic leaves: `describeCpuidDifferences(result.differences)` names them.
   */
  static probeCpuid(): Promise<CpuidProbeResult> {
    return probeGuestCpuid(enlightenedPartitionOptions());
  }

  constructor(options: KvmVmOptions) {
    checkKvmVmOptions(options);
    const logger = options.logger ?? silentLogger;
    this.clock = options.clock ?? new MonotonicClock();
    this.emit = (who, what) => options.onEvent?.({ time: this.clock.now(), who, what });
    this.partition = KvmPartition.create({
      memory: [{ gpa: 0, size: options.ramBytes ?? DEFAULT_RAM }],
      ...enlightenedPartitionOptions(),
      logger,
    });
    try {
      this.memory = this.partition.memory;
      this.console = new LineConsole((line) => this.emit('guest', line));
      this.asserts = new AssertPort(this.memory);
      for (const device of [this.console, this.debugExit, this.asserts]) this.partition.addIoDevice(device);
      this.vm = buildVm({
        partition: this.partition,
        devices: IC_KINDS,
        clock: this.clock,
        wallClockMs: options.wallClockMs ?? Date.now,
        logger,
        trace: options.trace,
        vmbus: options.vmbus,
        onAction: (action) => this.describe(action),
        onOffer: (name, relid) => this.emit('host', `offers ${name} as relid ${relid}`),
      });
      this.enlightenments = this.vm.enlightenments!;
      this.hyperv = this.vm.hyperv!;
      this.hypercalls = this.vm.hypercalls;
      this.vmbus = this.vm.vmbus;
      this.ics = integrationComponentsOf(this.vm);
      const { entry } = loadElf64(this.memory, options.image);
      enterLongMode(this.partition, entry);
    } catch (error) {
      this.partition.close();
      throw error;
    }
  }

  /** Runs the guest until it exits (debug-exit port), stop() is called, or it fails (rejects). */
  async run(): Promise<KvmRunResult> {
    if (this.closed) throw new AccelUsageError('KvmVm.run: the VM is closed');
    const started = performance.now();
    this.ended = false;
    try {
      await this.partition.run();
    } finally {
      // A guest may signal (a doorbell write, no exit) and stop at once: deliver that signal now
      // (unless close() ended the run: the doorbells went with the partition).
      if (!this.closed) this.enlightenments.drainDoorbells();
      this.ended = true;
      this.console.flush();
    }
    const exitCode = this.debugExit.codes.get(0) ?? null;
    this.emit('host', exitCode === null ? 'guest stopped' : `guest exited with code ${exitCode}`);
    return { exitCode, assertions: this.assertionSummary(), serial: this.console.text(), elapsedMs: performance.now() - started };
  }

  /** Everything the guest printed so far. */
  serialText(): string {
    return this.console.text();
  }

  assertionSummary(): string {
    return this.asserts.failures.map((f) => `vCPU ${f.vp}: ${f.file}:${f.line}: assertion failed: ${f.expression}`).join('\n');
  }

  /** Resolves once every IC in `kinds` has negotiated (state 'ready'). */
  async whenReady(kinds: readonly IcKind[], timeoutMs = 20_000): Promise<void> {
    const given: unknown = kinds;
    if (!Array.isArray(given) || given.some((k) => typeof k !== 'string' || !Object.hasOwn(this.ics, k))) {
      throw new HostUsageError(`KvmVm.whenReady(kinds): kinds must name integration components (${Object.keys(this.ics).join(', ')})`);
    }
    checkTimeout(timeoutMs, 'KvmVm.whenReady: timeoutMs');
    await this.until(() => kinds.every((k) => this.ics[k].service.state === 'ready'), timeoutMs, `${kinds.join(', ')} ready`);
  }

  /**
   * The host half of the demo: waits for heartbeat and shutdown to be ready, beats the heartbeat
   * `heartbeats` times (each after the previous answer), then sends the shutdown request.
   */
  async exerciseIcs(options: IcExercise = {}): Promise<IcExerciseResult> {
    const timeoutMs = options.timeoutMs ?? 20_000;
    checkTimeout(timeoutMs, 'KvmVm.exerciseIcs: options.timeoutMs');
    const heartbeats = options.heartbeats ?? 3;
    if (!Number.isSafeInteger(heartbeats) || heartbeats < 0)
      throw new HostUsageError(`KvmVm.exerciseIcs: options.heartbeats must be a non-negative integer, not ${String(heartbeats)}`);
    const heartbeat = this.ics.heartbeat.host;
    await this.whenReady(['heartbeat', 'shutdown'], timeoutMs);
    this.emit('host', `heartbeat and shutdown ready (framework ${versionOf(heartbeat.framework)})`);
    const heartbeatAnswers: bigint[] = [];
    for (let i = 0; i < heartbeats; i++) {
      const before = heartbeat.status.lastSequence;
      if (!heartbeat.beat()) throw new Error('heartbeat: the service refused to send a beat');
      this.emit('host', `heartbeat ${i + 1} sent`);
      await this.until(
        () => heartbeat.status.lastSequence !== before || heartbeat.status.badAnswers > 0,
        timeoutMs,
        `heartbeat ${i + 1} answer`,
      );
      if (heartbeat.status.lastSequence === before) throw new Error(`heartbeat: bad answer (${heartbeat.status.badAnswers} so far)`);
      heartbeatAnswers.push(heartbeat.status.lastSequence!);
      this.emit('host', `guest answered heartbeat with ${heartbeat.status.lastSequence}`);
    }
    const request = options.shutdown === undefined ? ({ kind: 'poweroff' } as const) : options.shutdown;
    if (request === null) return { heartbeatAnswers, shutdown: null };
    this.emit('host', `shutdown (${request.kind}) requested`);
    const shutdown = await withTimeout(this.ics.shutdown.host.shutdown(request), timeoutMs, 'shutdown answer');
    this.emit(
      'host',
      shutdown ? `guest answered shutdown with status 0x${shutdown.status.toString(16)}` : 'shutdown channel closed unanswered',
    );
    return { heartbeatAnswers, shutdown };
  }

  /** Asks the vCPU to stop; run() resolves once it has. */
  stop(): void {
    if (!this.closed) this.partition.stop();
  }

  /** Stops the guest and releases the VM, timers and connections. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    void this.vm.dispose(); // the ICs hold nothing outside guest memory
    this.partition.close();
  }

  /** Polls `done` on the event loop (the vCPU runs on its own thread); fails on timeout or guest exit. */
  private async until(done: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    while (!done()) {
      if (this.closed || this.ended) throw new Error(`waiting for ${what}: the guest has stopped`);
      if (performance.now() > deadline) throw new Error(`waiting for ${what}: timed out after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }

  /** Host timeline lines for the VMBus server's actions. */
  private describe(action: ServerAction): void {
    switch (action.kind) {
      case 'send':
        return this.emit('host', `sends ${channelMessageName(action.msgtype)} to VP ${action.vp}`);
      case 'connected':
        return this.emit('host', `VMBus connected at version ${versionString(action.version)}`);
      case 'open':
        return this.emit(
          'host',
          `opens relid ${action.request.relid} (${action.request.pfns.length} ring pages, split at ${action.request.downstreamPageOffset})`,
        );
      case 'gpadl-created':
        return this.emit('host', `GPADL 0x${action.gpadl.toString(16)} created for relid ${action.relid}`);
      case 'log':
        if (action.level === 'warn' || action.level === 'error') this.emit('host', `vmbus ${action.level}: ${action.message}`);
        return;
      default:
        return;
    }
  }
}

/** The options' shape: the guest image and RAM size are checked here, the rest by the layers that use them. */
function checkKvmVmOptions(options: unknown): asserts options is KvmVmOptions {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new HostUsageError(
      `new KvmVm(options): options must be an object with a guest image, not ${options === null ? 'null' : typeof options}`,
    );
  }
  const o = options as Partial<KvmVmOptions>;
  if (!(o.image instanceof Uint8Array))
    throw new HostUsageError('new KvmVm(options): options.image must be a Uint8Array (a 64-bit ELF guest)');
  const ram = o.ramBytes;
  if (ram !== undefined && (typeof ram !== 'number' || !Number.isSafeInteger(ram) || ram <= 0 || ram % 4096 !== 0)) {
    throw new HostUsageError(`new KvmVm(options): options.ramBytes must be a positive multiple of 4096, not ${String(ram)}`);
  }
}

/** A wait's timeout: NaN would never expire (the comparison with it is always false). */
function checkTimeout(ms: unknown, what: string): void {
  if (typeof ms !== 'number' || !(ms >= 0) || ms === Infinity)
    throw new HostUsageError(`${what} must be a finite number of ms >= 0, not ${String(ms)}`);
}

function versionOf(v: { major: number; minor: number } | null): string {
  return v ? `${v.major}.${v.minor}` : 'none';
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`waiting for ${what}: timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
