/**
 * The backend-neutral half of exit handling: user devices by address range, the hypercall
 * handler and the fallback, and how each Exit is routed to them. Every backend (KVM, MSHV,
 * WHPX) decodes its exits into the Exit model and hands them to one ExitRouter, so devices
 * behave the same on all of them.
 */
import { silentLogger, type Logger } from '@hvemu/common';
import { RangeMap, type DeviceControl, type IoDevice, type MmioDevice, type MsrDevice } from './devices.js';
import { AccelUsageError, GuestFatalError, type FatalReason } from './errors.js';
import { formatRegisters } from './registers.js';
import { checkFunction, checkInt, checkObject, MAX_GPA, optFunction, U32_MAX } from './validate.js';
import type { Exit, ExitHandler, ExitResponse, HypercallExit, IoExit, MmioExit, MsrReadExit, MsrWriteExit } from './exits.js';

/** The status a hypercall gets when nobody handles it (TLFS HV_STATUS_INVALID_HYPERCALL_CODE). */
const HV_STATUS_INVALID_HYPERCALL_CODE = 2n;
const HYPERV_MSR_FIRST = 0x40000000;
const HYPERV_MSR_LAST = 0x400000ff;

/** What the router needs of GuestMemory to follow run-time RAM changes. */
export interface RamMapLike {
  readonly regions: readonly { gpa: number; end: number }[];
  onChange(listener: (change: { kind: 'added' | 'removed'; region: { gpa: number; end: number } }) => void): () => void;
}

export class ExitRouter {
  private readonly ioDevices = new RangeMap<IoDevice>('I/O port');
  private readonly mmioDevices = new RangeMap<MmioDevice>('MMIO');
  private readonly msrDevices = new RangeMap<MsrDevice>('MSR');
  private fallback: ExitHandler | undefined;
  private hypercallHandler: ExitHandler<HypercallExit> | undefined;

  /** The RAM map now: MMIO devices may not overlap it. */
  private ram: readonly { gpa: number; end: number }[];
  private readonly unsubscribe: (() => void) | undefined;

  /**
   * `ram` is the guest's RAM: a fixed list of regions, or a GuestMemory-like map whose
   * `onChange` the router follows, so RAM added or removed at run time (memory hot add,
   * dynamic memory) is what MMIO devices are checked against. RAM added over an MMIO device
   * is reported (the partition's memoryControl refuses it before it is mapped: checkRam).
   */
  constructor(
    ram: readonly { gpa: number; end: number }[] | RamMapLike,
    private readonly logger: Logger = silentLogger,
  ) {
    if (Array.isArray(ram)) {
      this.ram = ram;
      return;
    }
    if (
      ram === null ||
      typeof ram !== 'object' ||
      !Array.isArray((ram as RamMapLike).regions) ||
      typeof (ram as RamMapLike).onChange !== 'function'
    ) {
      throw new AccelUsageError('new ExitRouter(ram): ram must be an array of RAM regions or a GuestMemory');
    }
    const map = ram as RamMapLike;
    this.ram = map.regions;
    this.unsubscribe = map.onChange((change) => {
      this.ram = map.regions;
      if (change.kind !== 'added') return;
      for (const s of this.mmioDevices.spans()) {
        if (change.region.gpa < s.end && s.start < change.region.end) {
          this.logger.error('RAM added over an MMIO device: guest accesses there now reach RAM', {
            gpa: change.region.gpa,
            end: change.region.end,
            device: s.start,
          });
        }
      }
    });
  }

  /** Stops following the RAM map (the partition is closed). */
  dispose(): void {
    this.unsubscribe?.();
  }

  /** Throws AccelUsageError when RAM at [gpa, gpa + size) would cover an MMIO device. */
  checkRam(gpa: number, size: number): void {
    for (const s of this.mmioDevices.spans()) {
      if (gpa < s.end && s.start < gpa + size) {
        throw new AccelUsageError(
          `RAM at 0x${gpa.toString(16)}+0x${size.toString(16)} would cover the MMIO device at 0x${s.start.toString(16)}`,
        );
      }
    }
  }

  addIoDevice(device: IoDevice): void {
    checkDevice(device, 'addIoDevice');
    const port = checkInt(device.port, 'addIoDevice: device.port', 0, 0xffff);
    checkInt(device.count, 'addIoDevice: device.count', 1, 0x10000 - port);
    this.ioDevices.add(device.port, device.count, device);
  }

  addMmioDevice(device: MmioDevice): void {
    checkDevice(device, 'addMmioDevice');
    const gpa = checkInt(device.gpa, 'addMmioDevice: device.gpa', 0, MAX_GPA - 1);
    checkInt(device.size, 'addMmioDevice: device.size', 1, MAX_GPA - gpa);
    for (const r of this.ram) {
      if (device.gpa < r.end && r.gpa < device.gpa + device.size) {
        throw new AccelUsageError(`MMIO device at 0x${device.gpa.toString(16)} overlaps guest RAM`);
      }
    }
    this.mmioDevices.add(device.gpa, device.size, device);
  }

  /**
   * Adds an MSR device. A backend that must intercept the MSRs outside 0x40000000-0x400000FF
   * passes `intercept`: it gets them (at most `maxExtra`, checked before any list is built)
   * before the device is added, and may refuse by throwing, which leaves nothing added.
   */
  addMsrDevice(device: MsrDevice, intercept?: { maxExtra: number; add: (extra: number[]) => void }): void {
    checkDevice(device, 'addMsrDevice');
    const msr = checkInt(device.msr, 'addMsrDevice: device.msr', 0, U32_MAX);
    const count = device.count === undefined ? 1 : checkInt(device.count, 'addMsrDevice: device.count', 1, U32_MAX + 1 - msr);
    this.msrDevices.check(msr, count);
    if (intercept) {
      const end = msr + count;
      const inHyperV = Math.max(0, Math.min(end, HYPERV_MSR_LAST + 1) - Math.max(msr, HYPERV_MSR_FIRST));
      const extraCount = count - inHyperV;
      if (extraCount > intercept.maxExtra) {
        throw new AccelUsageError(
          `addMsrDevice: MSRs 0x${msr.toString(16)}+${count} include ${extraCount} outside 0x40000000-0x400000ff; this backend can intercept at most ${intercept.maxExtra} more`,
        );
      }
      const extra: number[] = [];
      for (let m = msr; m < end; m++) if (m < HYPERV_MSR_FIRST || m > HYPERV_MSR_LAST) extra.push(m);
      if (extra.length > 0) intercept.add(extra);
    }
    this.msrDevices.add(msr, count, device);
  }

  onHypercall(handler: ExitHandler<HypercallExit>): void {
    checkFunction(handler, 'onHypercall: handler');
    this.hypercallHandler = handler;
  }

  onExit(handler: ExitHandler): void {
    checkFunction(handler, 'onExit: handler');
    this.fallback = handler;
  }

  /** Routes one exit: device, hypercall handler, fallback, or the platform default. */
  dispatch(exit: Exit): ExitResponse | void | Promise<ExitResponse | void> {
    switch (exit.kind) {
      case 'io':
        return this.dispatchIo(exit);
      case 'mmio':
        return this.dispatchMmio(exit);
      case 'msr-read':
      case 'msr-write':
        return this.dispatchMsr(exit);
      case 'hypercall':
        if (this.hypercallHandler) return this.hypercallHandler(exit);
        return this.fallback ? this.fallback(exit) : { value: HV_STATUS_INVALID_HYPERCALL_CODE };
      default:
        return this.fallback ? this.fallback(exit) : undefined;
    }
  }

  private dispatchIo(exit: IoExit): ExitResponse | void | Promise<ExitResponse | void> {
    const dev = this.ioDevices.find(exit.port); // a device owns ports, whatever the access width
    if (!dev) return this.fallback ? this.fallback(exit) : exit.isWrite ? undefined : { value: allOnes(exit.size) };
    if (exit.count > 1) return stringIo(dev, exit);
    if (exit.isWrite) return control(dev.write?.(exit.port, exit.size, exit.data, exit.vp));
    const v = dev.read ? dev.read(exit.port, exit.size, exit.vp) : allOnes(exit.size);
    return isPromise(v) ? v.then((value) => ({ value })) : { value: v };
  }

  private dispatchMmio(exit: MmioExit): ExitResponse | void | Promise<ExitResponse | void> {
    const dev = this.mmioDevices.find(exit.gpa, exit.size);
    if (!dev) {
      this.logger.debug('unclaimed MMIO access', { vp: exit.vp, gpa: exit.gpa, size: exit.size, write: exit.isWrite });
      return this.fallback ? this.fallback(exit) : exit.isWrite ? undefined : { value: (1n << BigInt(exit.size * 8)) - 1n };
    }
    if (exit.isWrite) return control(dev.write?.(exit.gpa, exit.size, exit.data, exit.vp));
    const v = dev.read ? dev.read(exit.gpa, exit.size, exit.vp) : (1n << BigInt(exit.size * 8)) - 1n;
    return isPromise(v) ? v.then((value) => ({ value })) : { value: v };
  }

  private dispatchMsr(exit: MsrReadExit | MsrWriteExit): ExitResponse | void | Promise<ExitResponse | void> {
    const dev = this.msrDevices.find(exit.msr);
    if (!dev) return this.fallback ? this.fallback(exit) : { gp: true };
    if (exit.kind === 'msr-read') {
      const v = dev.read ? dev.read(exit.msr, exit.vp) : undefined;
      const toResponse = (x: bigint | undefined): ExitResponse => (x === undefined ? { gp: true } : { value: x });
      return isPromise(v) ? v.then(toResponse) : toResponse(v);
    }
    const ok = dev.write ? dev.write(exit.msr, exit.value, exit.vp) : false;
    const toResponse = (x: boolean | void): ExitResponse => (x === false ? { gp: true } : {});
    return isPromise(ok) ? ok.then(toResponse) : toResponse(ok);
  }
}

/** A device object whose read/write, when present, are functions. */
function checkDevice(device: unknown, what: string): void {
  const d = checkObject(device, `${what}: device`);
  optFunction(d['read'], `${what}: device.read`);
  optFunction(d['write'], `${what}: device.write`);
}

export function isPromise<T>(v: T | Promise<T>): v is Promise<T> {
  return typeof (v as { then?: unknown } | undefined)?.then === 'function';
}

function allOnes(size: number): number {
  return size === 4 ? 0xffffffff : (1 << (size * 8)) - 1;
}

function control(r: void | DeviceControl | Promise<void | DeviceControl>): ExitResponse | void | Promise<ExitResponse | void> {
  if (isPromise(r)) return r.then((c) => (c?.stop ? { stop: true } : undefined));
  return r?.stop ? { stop: true } : undefined;
}

/** String I/O against a per-element device: one call per element, in order. */
async function stringIo(dev: IoDevice, exit: IoExit): Promise<ExitResponse> {
  const n = exit.count;
  if (exit.isWrite) {
    const view = new DataView(exit.bytes.buffer, exit.bytes.byteOffset, exit.bytes.byteLength);
    let stop = false;
    for (let i = 0; i < n; i++) {
      const c = await dev.write?.(exit.port, exit.size, readLe(view, i * exit.size, exit.size), exit.vp);
      stop ||= c?.stop === true;
    }
    return { stop };
  }
  const out = new Uint8Array(n * exit.size);
  const view = new DataView(out.buffer);
  for (let i = 0; i < n; i++) {
    const v = dev.read ? await dev.read(exit.port, exit.size, exit.vp) : allOnes(exit.size);
    writeLe(view, i * exit.size, exit.size, v);
  }
  return { bytes: out };
}

function readLe(v: DataView, at: number, size: number): number {
  return size === 1 ? v.getUint8(at) : size === 2 ? v.getUint16(at, true) : v.getUint32(at, true);
}

function writeLe(v: DataView, at: number, size: number, value: number): void {
  if (size === 1) v.setUint8(at, value);
  else if (size === 2) v.setUint16(at, value, true);
  else v.setUint32(at, value >>> 0, true);
}

/** The GuestFatalError a shutdown or unrecoverable exit becomes (registers and instruction bytes when known). */
export function fatalError(exit: Exit & { kind: 'shutdown' | 'unrecoverable' }): GuestFatalError {
  const regs = exit.registers;
  const where = regs ? ` at rip=0x${regs.rip.toString(16)}` : '';
  const dump = regs ? `\n  registers: ${formatRegisters(regs)}` : '';
  if (exit.kind === 'shutdown') {
    const reason: FatalReason = exit.reason === 'triple-fault' ? 'triple-fault' : 'system-event';
    const text = exit.reason === 'triple-fault' ? 'triple fault (shutdown)' : `system event ${exit.detail}`;
    return new GuestFatalError(`vCPU ${exit.vp}: guest ${text}${where}${dump}`, exit.vp, reason, regs, undefined);
  }
  const bytes = exit.instructionBytes;
  const insn =
    bytes && bytes.length > 0 ? `; instruction bytes at RIP: ${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(' ')}` : '';
  const reason: FatalReason = exit.reason === 'bad-io' ? 'internal-error' : exit.reason === 'unknown' ? 'unknown' : exit.reason;
  return new GuestFatalError(
    `vCPU ${exit.vp}: unrecoverable exit (${exit.reason}, backend code ${exit.backendCode}, detail ${exit.detail})${where}${insn}${dump}`,
    exit.vp,
    reason,
    regs,
    bytes,
  );
}
