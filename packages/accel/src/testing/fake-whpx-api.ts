/**
 * A fake WinHvPlatform.dll for tests: records every call with copies of its argument bytes,
 * keeps per-VP register values (so a get after a set returns what was set), and answers
 * WHvRunVirtualProcessor from a per-VP script of exit contexts. When a VP's script is empty
 * its run blocks until WHvCancelRunVirtualProcessor, which then returns a Canceled exit (as the
 * real call does). Everything is byte-level: the partition cannot tell it from the DLL.
 */
import {
  RUN_VP_EXIT_CONTEXT_SIZE,
  S_OK,
  WHV_REGISTER_VALUE_SIZE,
  WHvRunVpExitReasonArm64,
  WHvRunVpExitReasonX64,
  type WhpxArch,
} from '../backends/whpx/abi.js';
import type { HostBuffer, PartitionHandle, WhpxApi } from '../backends/whpx/api.js';

export interface FakeCall {
  readonly fn: string;
  readonly args: Readonly<Record<string, unknown>>;
}

/** One scripted run: exit-context bytes, or a function producing them (may touch the fake first). */
export type ScriptedExit = Uint8Array | ((fake: FakeWhpxApi) => Uint8Array);

export interface FakeWhpxOptions {
  readonly arch: WhpxArch;
  /** Capability answers by code (bytes copied into the caller's buffer); missing codes: WHV_E_UNKNOWN_CAPABILITY. */
  readonly capabilities?: ReadonlyMap<number, Uint8Array>;
}

const WHV_E_UNKNOWN_CAPABILITY = 0x80370300;
const HANDLE = 0x1234_5678n;

export class FakeWhpxApi implements WhpxApi {
  readonly calls: FakeCall[] = [];
  /** Per-call HRESULT overrides: fn -> queue of results (consumed first, then S_OK). */
  readonly results = new Map<string, number[]>();
  readonly registers = new Map<number, Map<number, Uint8Array>>();
  readonly allocations: HostBuffer[] = [];
  readonly freed: HostBuffer[] = [];
  private readonly scripts = new Map<number, ScriptedExit[]>();
  private readonly blocked = new Map<number, (hr: number) => void>();
  private readonly pendingCancel = new Set<number>();
  private readonly blockedContexts = new Map<number, HostBuffer>();
  private nextAddress = 0x10_0000_0000n;
  private readonly capabilities: ReadonlyMap<number, Uint8Array>;

  constructor(readonly opts: FakeWhpxOptions) {
    this.capabilities = opts.capabilities ?? new Map();
  }

  /** Queues exits for `vp` (each WHvRunVirtualProcessor consumes one). */
  script(vp: number, ...exits: ScriptedExit[]): void {
    const list = this.scripts.get(vp) ?? [];
    list.push(...exits);
    this.scripts.set(vp, list);
  }

  /** Calls by function name, in order. */
  named(fn: string): FakeCall[] {
    return this.calls.filter((c) => c.fn === fn);
  }

  /** True while vp's run is blocked waiting for a cancel. */
  isBlocked(vp: number): boolean {
    return this.blocked.has(vp);
  }

  register64(vp: number, name: number): bigint {
    const v = this.registers.get(vp)?.get(name);
    return v ? new DataView(v.buffer, v.byteOffset).getBigUint64(0, true) : 0n;
  }

  setRegister64(vp: number, name: number, value: bigint): void {
    const bytes = new Uint8Array(WHV_REGISTER_VALUE_SIZE);
    new DataView(bytes.buffer).setBigUint64(0, BigInt.asUintN(64, value), true);
    this.regsOf(vp).set(name, bytes);
  }

  private regsOf(vp: number): Map<number, Uint8Array> {
    let m = this.registers.get(vp);
    if (!m) this.registers.set(vp, (m = new Map()));
    return m;
  }

  private record(fn: string, args: Record<string, unknown>): number {
    this.calls.push({ fn, args });
    return this.results.get(fn)?.shift() ?? S_OK;
  }

  getCapability(code: number, out: Uint8Array): { hr: number; written: number } {
    const answer = this.capabilities.get(code);
    this.record('WHvGetCapability', { code, size: out.length });
    if (!answer) return { hr: WHV_E_UNKNOWN_CAPABILITY, written: 0 };
    out.set(answer.subarray(0, out.length));
    return { hr: S_OK, written: Math.min(answer.length, out.length) };
  }

  createPartition(): { hr: number; handle: PartitionHandle } {
    return { hr: this.record('WHvCreatePartition', {}), handle: HANDLE };
  }

  setPartitionProperty(h: PartitionHandle, code: number, value: Uint8Array): number {
    return this.record('WHvSetPartitionProperty', { h, code, value: value.slice() });
  }

  setupPartition(h: PartitionHandle): number {
    return this.record('WHvSetupPartition', { h });
  }

  deletePartition(h: PartitionHandle): number {
    return this.record('WHvDeletePartition', { h });
  }

  mapGpaRange(h: PartitionHandle, source: bigint, gpa: bigint, size: bigint, flags: number): number {
    return this.record('WHvMapGpaRange', { h, source, gpa, size, flags });
  }

  unmapGpaRange(h: PartitionHandle, gpa: bigint, size: bigint): number {
    return this.record('WHvUnmapGpaRange', { h, gpa, size });
  }

  createVirtualProcessor(h: PartitionHandle, vp: number): number {
    return this.record('WHvCreateVirtualProcessor2', { h, vp });
  }

  deleteVirtualProcessor(h: PartitionHandle, vp: number): number {
    return this.record('WHvDeleteVirtualProcessor', { h, vp });
  }

  async runVirtualProcessor(h: PartitionHandle, vp: number, exitContext: HostBuffer, size: number): Promise<number> {
    const hr = this.record('WHvRunVirtualProcessor', { h, vp, size });
    await Promise.resolve(); // a real run always returns later, never synchronously
    if (hr !== S_OK) return hr;
    if (this.pendingCancel.delete(vp)) return this.fillCanceled(exitContext);
    const next = this.scripts.get(vp)?.shift();
    if (next !== undefined) {
      exitContext.bytes.fill(0);
      exitContext.bytes.set(typeof next === 'function' ? next(this) : next);
      return S_OK;
    }
    this.blockedContexts.set(vp, exitContext);
    return new Promise((resolve) => this.blocked.set(vp, resolve));
  }

  cancelRunVirtualProcessor(h: PartitionHandle, vp: number): number {
    const hr = this.record('WHvCancelRunVirtualProcessor', { h, vp });
    const resolve = this.blocked.get(vp);
    if (resolve) {
      this.blocked.delete(vp);
      resolve(this.fillCanceled(this.blockedContexts.get(vp)!));
    } else {
      this.pendingCancel.add(vp); // the next run returns Canceled at once
    }
    return hr;
  }

  private fillCanceled(ctx: HostBuffer): number {
    ctx.bytes.fill(0);
    const reason = this.opts.arch === 'x64' ? WHvRunVpExitReasonX64.Canceled : WHvRunVpExitReasonArm64.Canceled;
    new DataView(ctx.bytes.buffer, ctx.bytes.byteOffset).setUint32(0, reason, true);
    return S_OK;
  }

  getVirtualProcessorRegisters(h: PartitionHandle, vp: number, names: Uint32Array, values: Uint8Array): number {
    const hr = this.record('WHvGetVirtualProcessorRegisters', { h, vp, names: Array.from(names) });
    names.forEach((n, i) => values.set(this.regsOf(vp).get(n) ?? new Uint8Array(WHV_REGISTER_VALUE_SIZE), i * WHV_REGISTER_VALUE_SIZE));
    return hr;
  }

  setVirtualProcessorRegisters(h: PartitionHandle, vp: number, names: Uint32Array, values: Uint8Array): number {
    const hr = this.record('WHvSetVirtualProcessorRegisters', { h, vp, names: Array.from(names), values: values.slice() });
    if (hr === S_OK)
      names.forEach((n, i) => this.regsOf(vp).set(n, values.slice(i * WHV_REGISTER_VALUE_SIZE, (i + 1) * WHV_REGISTER_VALUE_SIZE)));
    return hr;
  }

  requestInterrupt(h: PartitionHandle, control: Uint8Array): number {
    return this.record('WHvRequestInterrupt', { h, control: control.slice() });
  }

  postVirtualProcessorSynicMessage(h: PartitionHandle, vp: number, sint: number, message: Uint8Array): number {
    return this.record('WHvPostVirtualProcessorSynicMessage', { h, vp, sint, message: message.slice() });
  }

  signalVirtualProcessorSynicEvent(h: PartitionHandle, params: Uint8Array): { hr: number; newlySignaled: boolean } {
    return { hr: this.record('WHvSignalVirtualProcessorSynicEvent', { h, params: params.slice() }), newlySignaled: true };
  }

  allocate(size: number): HostBuffer {
    const buf = { address: this.nextAddress, bytes: new Uint8Array(size) };
    this.nextAddress += BigInt(Math.ceil(size / 0x10000) * 0x10000);
    this.allocations.push(buf);
    return buf;
  }

  free(buffer: HostBuffer): void {
    this.freed.push(buffer);
  }
}

/** A blank exit context of the right size for `arch` with `reason` at @0. */
export function blankExitContext(arch: WhpxArch, reason: number): { buf: Uint8Array; view: DataView } {
  const buf = new Uint8Array(RUN_VP_EXIT_CONTEXT_SIZE[arch]);
  const view = new DataView(buf.buffer);
  view.setUint32(0, reason >>> 0, true);
  return { buf, view };
}
