/**
 * LinuxVm: an unmodified Linux kernel on hvemu. The composition is buildVm's (the partition,
 * hvemu's SynIC where the backend has none, VMBus and the devices by name); this preset adds
 * what the kernel's boot path needs: the kernel and initrd loaded by @hvemu/platform's Linux
 * loader (PVH vmlinux or bzImage), ACPI tables (the VMBus device, _S5, the vCPUs, the IOAPIC)
 * with their range reserved in e820, the console UART, empty COM2-4 and PCI configuration
 * ports, and the FADT power registers. run() says how the guest ended.
 */
import { HostUsageError, MonotonicClock, silentLogger, type Clock, type Logger } from '@hvemu/common';
import { GuestFatalError, probeGuestCpuid, type AccelPartition, type CpuidProbeResult } from '@hvemu/accel';
import { describeServerAction } from '@hvemu/vmbus';
import {
  AbsentPorts,
  AcpiPmDevice,
  bootLinux,
  CmosRtc,
  COM1_PORT,
  EmptyPciConfig,
  Uart16550,
  writeAcpiTables,
  type LinuxBoot,
} from '@hvemu/platform';
import type { NicSpec } from '@hvemu/net';
import type { StorageControllerSpec } from '@hvemu/storage';
import type { BalloonDevice, BalloonSpec } from '@hvemu/balloon';
import type { TraceSink } from '@hvemu/trace';
import { balloonOf, buildVm, openPartition, type Vm } from './builder.js';
import { enlightenedPartitionOptions } from './enlighten.js';

/** Where the ACPI tables go: the legacy RSDP scan area, so a kernel that ignores the boot pointer finds them too. */
const ACPI_BASE = 0xe0000;
const E820_ACPI = 3;
const COM2_4 = [0x2f8, 0x3e8, 0x2e8];
/** COM1's ISA IRQ 4 as an IOAPIC input (identity-mapped ISA IRQs, no interrupt source override). */
const COM1_GSI = 4;

export interface LinuxVmOptions {
  /** An uncompressed vmlinux (PVH entry) or a bzImage. */
  kernel: Uint8Array;
  commandLine?: string;
  initrd?: Uint8Array;
  /** Guest RAM (default 256 MiB) and vCPUs (default 1), for the partition this preset opens. */
  ramBytes?: number;
  cpus?: number;
  /** A partition made by the caller (default: KVM with the enlightened CPUID). */
  partition?: AccelPartition;
  /** VMBus device kinds to offer (default: the integration components, and `scsi` when `storage` is given). */
  devices?: readonly string[];
  /** A synthetic SCSI controller (storvsp) with these disks, offered as `scsi` after the ICs. */
  storage?: StorageControllerSpec;
  /** Synthetic NICs (netvsp), offered as `nic0`, `nic1`, ... after the other devices: a TAP by name, or a backend object. */
  nics?: readonly NicSpec[];
  /**
   * Dynamic memory (hv_balloon), offered as `balloon` after the other devices: `true` or its
   * options; `balloonOf(vm.vm)` / `linuxVm.balloon` is the host controller.
   */
  balloon?: boolean | Omit<BalloonSpec, 'memory'>;
  /** Each byte the guest writes to its console (COM1). */
  console?: (byte: number) => void;
  clock?: Clock;
  /** The host's wall clock, Unix ms (default Date.now): the guest's RTC and timesync read it. */
  wallClockMs?: () => number;
  logger?: Logger;
  trace?: TraceSink;
  /** The host-side event log: offers, every VMBus action, the guest's end (ms since the VM was built). */
  onEvent?: (event: LinuxVmEvent) => void;
}

export interface LinuxVmEvent {
  readonly timeMs: number;
  readonly text: string;
}

/** How the guest ended. */
export type LinuxVmEnd =
  | { kind: 'poweroff' }
  | { kind: 'reset' }
  /** The Hyper-V crash MSRs: P0-P4, and the text the guest left in its message page (Linux: the panic log) if it gave one. */
  | { kind: 'crash'; params: readonly bigint[]; message?: string }
  /** A vCPU shut down (x86 triple fault): the registers are in the error. */
  | { kind: 'triple-fault'; error: GuestFatalError }
  /** An instruction the hypervisor could not run: registers and instruction bytes are in the error. */
  | { kind: 'emulation-failure'; error: GuestFatalError }
  | { kind: 'timeout' }
  /** The host stopped it (LinuxVm.stop). */
  | { kind: 'stopped' }
  | { kind: 'error'; error: Error };

/** An edge on an IOAPIC input, where the partition has IOAPIC inputs (KVM's in-kernel one). */
function irqEdge(partition: AccelPartition, gsi: number): (() => void) | undefined {
  const p = partition as AccelPartition & { setIrqLine?: (gsi: number, level: boolean) => void };
  if (typeof p.setIrqLine !== 'function') return undefined;
  return () => {
    p.setIrqLine!(gsi, true);
    p.setIrqLine!(gsi, false);
  };
}

export class LinuxVm {
  readonly vm: Vm;
  readonly partition: AccelPartition;
  readonly boot: LinuxBoot;
  private ended: LinuxVmEnd | undefined;

  /** The dynamic memory host controller (options.balloon), or null. */
  get balloon(): BalloonDevice | null {
    return balloonOf(this.vm);
  }

  constructor(options: LinuxVmOptions) {
    if (typeof options !== 'object' || options === null || !(options.kernel instanceof Uint8Array)) {
      throw new HostUsageError('LinuxVm: options.kernel must be the kernel image bytes (Uint8Array)');
    }
    const logger = options.logger ?? silentLogger;
    const cpus = options.cpus ?? 1;
    const started = performance.now();
    const event = (text: string): void => options.onEvent?.({ timeMs: performance.now() - started, text });
    this.partition = options.partition ?? openPartition('kvm', { ramBytes: options.ramBytes ?? 256 << 20, vcpus: cpus, logger })!;
    try {
      const end = (e: LinuxVmEnd): void => {
        if (!this.ended) event(`guest ended: ${e.kind}`);
        this.ended ??= e;
        this.partition.stop();
      };
      this.partition.addIoDevice(new Uart16550(COM1_PORT, options.console, irqEdge(this.partition, COM1_GSI)));
      for (const port of COM2_4) this.partition.addIoDevice(new AbsentPorts(port, 8));
      this.partition.addIoDevice(new EmptyPciConfig());
      this.partition.addIoDevice(new CmosRtc(options.wallClockMs));
      this.partition.addIoDevice(new AcpiPmDevice((kind) => end({ kind })));
      this.vm = buildVm({
        partition: this.partition,
        devices: options.devices,
        storage: options.storage,
        nics: options.nics,
        balloon: options.balloon,
        wallClockMs: options.wallClockMs,
        clock: options.clock ?? new MonotonicClock(),
        logger,
        trace: options.trace,
        events: {
          crash: (vp, params, _control, message) => {
            event(`vp ${vp}: crash MSRs written (P0-P4 ${params.map((p) => `0x${p.toString(16)}`).join(' ')})`);
            end({ kind: 'crash', params, ...(message ? { message: crashText(message) } : {}) });
          },
        },
        onOffer: (name, relid) => event(`offered ${name} as relid ${relid}`),
        onAction: options.onEvent ? (action) => event(`vmbus ${describeServerAction(action)}`) : undefined,
      });
      // COM1 in the DSDT with its ISA IRQ as GSI 4: the kernel's tty on it needs a working IRQ
      // (platform README, "ACPI"); the UART raises it through the IOAPIC.
      const acpi = writeAcpiTables(this.partition.memory, ACPI_BASE, {
        cpus: this.partition.vcpus.length,
        uarts: [{ port: COM1_PORT, gsi: COM1_GSI }],
      });
      this.boot = bootLinux(this.partition, options.kernel, {
        commandLine: options.commandLine,
        initrd: options.initrd,
        acpiRsdp: acpi.rsdp,
        reserved: [{ gpa: ACPI_BASE, size: acpi.end - ACPI_BASE, type: E820_ACPI }],
      });
    } catch (error) {
      // A kernel the loader refuses after the devices were built: their files are released too.
      void (this as { vm?: Vm }).vm?.dispose();
      if (!options.partition) this.partition.close();
      throw error;
    }
  }

  /** Runs the guest until it powers off, resets, crashes or fails, or `timeoutMs` passes. */
  async run(timeoutMs = 600_000): Promise<LinuxVmEnd> {
    if (!(Number.isFinite(timeoutMs) && timeoutMs > 0))
      throw new HostUsageError(`LinuxVm.run: timeoutMs must be a positive number, not ${String(timeoutMs)}`);
    const timer = setTimeout(() => {
      this.ended ??= { kind: 'timeout' };
      this.partition.stop();
    }, timeoutMs);
    try {
      await this.vm.start();
      const outcomes = await this.partition.run();
      const failed = outcomes.find((o) => o.error);
      if (!this.ended && failed?.error) this.ended = endFromError(failed.error);
    } catch (error) {
      this.ended ??= endFromError(error as Error);
    } finally {
      clearTimeout(timer);
    }
    return this.ended ?? { kind: 'error', error: new Error('every vCPU stopped without powering off') };
  }

  /** Stops the guest now (run() resolves with 'stopped'), unless it already ended. */
  stop(): void {
    this.ended ??= { kind: 'stopped' };
    this.partition.stop();
  }

  /**
   * What CPUID this preset's guest really sees on this host against what hvemu programs (a
   * throwaway probe partition, ~30 ms): `describeCpuidDifferences(result.differences)` names
   * the registers this KVM passes through from the host.
   */
  static probeCpuid(): Promise<CpuidProbeResult> {
    return probeGuestCpuid(enlightenedPartitionOptions());
  }

  /** Stops and releases everything: the partition at once; the promise resolves when the devices released their files. */
  close(): Promise<void> {
    const released = this.vm.dispose();
    this.partition.close();
    return released;
  }
}

/** A vCPU's fatal error as the end it is: triple fault and emulation failure by name. */
function endFromError(error: Error): LinuxVmEnd {
  if (error instanceof GuestFatalError && error.reason === 'triple-fault') return { kind: 'triple-fault', error };
  if (error instanceof GuestFatalError && error.reason === 'emulation-failure') return { kind: 'emulation-failure', error };
  return { kind: 'error', error };
}

/** The crash message as text: Linux's kmsg dump is ASCII lines; anything else is shown escaped. */
function crashText(message: Uint8Array): string {
  let text = '';
  for (const b of message) text += b === 0x0a || (b >= 0x20 && b < 0x7f) ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`;
  return text;
}
