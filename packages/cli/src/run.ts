/**
 * `hvemu run`: an unmodified Linux kernel (PVH vmlinux or bzImage) on hvemu, its serial console
 * on stdout, and an exit status that says how it ended.
 */
import { readFileSync } from 'node:fs';
import { HvemuError, MonotonicClock } from '@hvemu/common';
import { TraceRecorder } from '@hvemu/trace';
import { startControlServer } from './control.js';
import type { IcDevice, ShutdownService } from '@hvemu/util';
import { defaultDevices, deviceTraceHeader, describeCpuidDifferences, LinuxVm, nicsOf, type LinuxVmEnd, type NicSpec } from '@hvemu/vm';

/** A file named on the command line that cannot be read. */
export class RunInputError extends HvemuError {
  readonly outcome = 'host-error' as const;
}

/** Exit statuses: how the guest ended. */
export const RUN_EXIT = {
  poweroff: 0,
  error: 1,
  reset: 3,
  crash: 4,
  timeout: 5,
  'triple-fault': 6,
  'emulation-failure': 7,
  stopped: 8,
} as const;

export interface RunOptions {
  kernel: string;
  commandLine?: string;
  initrd?: string;
  memoryBytes: number;
  cpus: number;
  timeoutSeconds: number;
  /** VMBus device kinds to offer (default: the registry's, the integration components). */
  devices?: readonly string[];
  /** Raw images on the synthetic SCSI controller, in target order. */
  disks?: readonly { path: string; readOnly: boolean; sectorSize: 512 | 4096 }[];
  /** Synthetic NICs (eth0, eth1, ...): a TAP by name, or (tests, embedders) a backend object. */
  nics?: readonly NicSpec[];
  /** Offer dynamic memory (hv_balloon); the control socket changes its target. */
  balloon?: boolean;
  /** A Unix socket for control commands while the VM runs (control.ts). */
  control?: string;
  /** Record the session here for `hvemu replay`. */
  trace?: string;
  /** Log the host's side (offers, VMBus actions, the end) through `log`. */
  events?: boolean;
  /** Where the host's stop requests come from (default: this process's SIGINT and SIGTERM). */
  signals?: NodeJS.EventEmitter;
  console: (bytes: Uint8Array) => void;
  log: (line: string) => void;
}

const UNITS: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

/** A QEMU-style size: `256M`, `8G`, `65536` (bytes); null when it is not one. */
export function parseSize(text: string): number | null {
  const m = /^(\d+)([KMGT]?)(i?B)?$/i.exec(text.trim());
  if (!m) return null;
  const bytes = Number(m[1]) * UNITS[m[2].toUpperCase()];
  return Number.isSafeInteger(bytes) ? bytes : null;
}

function readInput(what: string, path: string): Uint8Array {
  try {
    return readFileSync(path);
  } catch (error) {
    throw new RunInputError(`cannot read ${what} ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
}

/** Boots the kernel, runs it to its end, and returns the exit status (RUN_EXIT). */
export async function runLinux(o: RunOptions): Promise<number> {
  const kernel = readInput('--kernel', o.kernel);
  const initrd = o.initrd === undefined ? undefined : readInput('--initrd', o.initrd);
  const clock = new MonotonicClock();
  // The disks on the one controller, LUN 0, 1, ... (Linux names them sda, sdb, ... in that order).
  const storage = o.disks?.length ? { disks: o.disks } : undefined;
  const header = deviceTraceHeader('hvemu run (Linux)', { devices: o.devices, registry: defaultDevices({ storage }) });
  const recorder = o.trace ? TraceRecorder.toFile(o.trace, header, { clock }) : undefined;
  let vm: LinuxVm;
  try {
    vm = new LinuxVm({
      kernel,
      initrd,
      devices: o.devices,
      storage,
      nics: o.nics,
      balloon: o.balloon,
      clock,
      trace: recorder,
      onEvent: o.events ? (e) => o.log(`[host ${(e.timeMs / 1000).toFixed(3).padStart(9)}] ${e.text}`) : undefined,
      commandLine: o.commandLine,
      ramBytes: o.memoryBytes,
      cpus: o.cpus,
      console: (byte) => o.console(Uint8Array.of(byte)),
    });
  } catch (error) {
    // A disk image that cannot be opened, a kernel that is not one: the trace file is closed, not left half-written.
    await recorder?.close().catch(() => {});
    throw error;
  }
  try {
    // What this KVM passes through from the host despite hvemu's CPU model (one line per
    // register); after the VM is built, so unusable input fails first, in one line.
    for (const line of describeCpuidDifferences((await LinuxVm.probeCpuid()).differences)) o.log(`hvemu run: warning: cpuid: ${line}`);
    o.log(`hvemu run: ${vm.boot.kind === 'pvh' ? 'PVH vmlinux' : 'bzImage'}, ${o.memoryBytes >> 20} MiB, ${o.cpus} vCPU(s)`);
    for (const line of describeNics(vm, o.nics ?? [])) o.log(`hvemu run: ${line}`);
    const stopRequests = onStopRequests(vm, o.signals ?? process, o.log);
    const control = o.control
      ? await startControlServer(
          o.control,
          { balloon: vm.balloon, shutdown: () => askShutdown(vm, 'control socket', o.log) },
          parseSize,
          o.log,
        )
      : null;
    if (control) o.log(`hvemu run: control socket ${control.path} (commands: help)`);
    const end = await vm.run(o.timeoutSeconds * 1000).finally(async () => {
      stopRequests();
      await control?.close();
    });
    for (const line of describeEnd(end).split('\n')) o.log(`hvemu run: ${line}`);
    return RUN_EXIT[end.kind];
  } finally {
    await vm.close();
    if (recorder) {
      await recorder.close();
      o.log(`hvemu run: trace: ${recorder.eventsRecorded} events written to ${o.trace}`);
    }
  }
}

/**
 * One line per NIC with the MAC its device holds (what the guest's OID_802_3_PERMANENT_ADDRESS
 * query gets), read back from the device rather than the command line, and its TAP.
 */
function describeNics(vm: LinuxVm, specs: readonly NicSpec[]): string[] {
  return nicsOf(vm.vm).map((nic, i) => {
    const mac = [...nic.mac].map((b) => b.toString(16).padStart(2, '0')).join(':');
    const tap = specs[i]?.tap;
    return `nic${i}: MAC ${mac}${tap === undefined ? '' : `, TAP ${tap}`}`;
  });
}

function describeEnd(end: LinuxVmEnd): string {
  switch (end.kind) {
    case 'poweroff':
      return 'the guest powered off (ACPI S5)';
    case 'reset':
      return 'the guest reset (ACPI reset register)';
    case 'crash': {
      const params = `P0-P4 ${end.params.map((p) => `0x${p.toString(16)}`).join(' ')}`;
      const message = end.message ? `\n${crashMessageTail(end.message)}` : '';
      return `the guest crashed: ${params}${message}`;
    }
    case 'triple-fault':
      return `triple fault: ${end.error.message}`;
    case 'emulation-failure':
      return `emulation failure: ${end.error.message}`;
    case 'timeout':
      return 'timed out: the guest was stopped';
    case 'stopped':
      return 'stopped by the host (a second SIGINT/SIGTERM)';
    case 'error':
      return `the guest failed: ${end.error.message.replace(/\s*\n\s*/g, '; ')}`;
  }
}

/** The last lines of the guest's crash message (Linux: the tail of its kernel log, up to a page). */
function crashMessageTail(message: string, lines = 20): string {
  const all = message.trimEnd().split('\n');
  const shown = all.slice(-lines);
  const what = shown.length < all.length ? `the last ${shown.length} of its ${all.length} lines` : 'as the guest wrote it';
  return `the guest's crash message (${what}):\n${shown.join('\n')}`;
}

/** Asks the guest to shut down through the shutdown IC; false when there is none ready (--devices may leave it out). */
function askShutdown(vm: LinuxVm, who: string, log: (line: string) => void, more = ''): boolean {
  const shutdownIc = vm.vm.devices.get('shutdown')?.device as IcDevice<ShutdownService> | undefined;
  if (shutdownIc?.service.state !== 'ready') return false;
  log(`hvemu run: ${who}: asking the guest to shut down (the shutdown IC)${more}`);
  void shutdownIc.host.shutdown({ kind: 'poweroff', message: `hvemu run: ${who}` });
  return true;
}

/**
 * SIGINT / SIGTERM as a VMM's power button: the first asks the guest to shut down through the
 * shutdown IC (Linux then powers off through ACPI, exit 0), the next stops the vCPUs at once.
 * Returns the function that stops listening.
 */
function onStopRequests(vm: LinuxVm, signals: NodeJS.EventEmitter, log: (line: string) => void): () => void {
  let asked = false;
  const onSignal = (signal: string): void => {
    if (!asked && askShutdown(vm, signal, log, `; ${signal} again stops it at once`)) {
      asked = true;
      return;
    }
    log(`hvemu run: ${signal}: stopping the guest`);
    vm.stop();
  };
  signals.on('SIGINT', onSignal);
  signals.on('SIGTERM', onSignal);
  return () => {
    signals.off('SIGINT', onSignal);
    signals.off('SIGTERM', onSignal);
  };
}
