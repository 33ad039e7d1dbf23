/**
 * The DLL layer under the WHPX backend: the only place that touches WinHvPlatform.dll and
 * kernel32. WhpxPartition talks to a `WhpxApi`; tests use FakeWhpxApi (@hvemu/accel/testing), Windows
 * hosts use KoffiWhpxApi, which loads koffi and the DLLs lazily, when the backend is opened.
 *
 * Every call returns the raw HRESULT (as an unsigned 32-bit number): the partition decides
 * what is fatal (most things) and what is an answer (ERROR_HV_OBJECT_IN_USE from a SynIC
 * post is 'busy'). Buffers the hypervisor reads or writes while the call may still be running
 * on another thread (the exit context of WHvRunVirtualProcessor) are `HostBuffer`s: memory
 * with a fixed address from VirtualAlloc, never a movable JS heap buffer.
 */
import { createRequire } from 'node:module';
import { HostSystemError, HypervisorUnavailableError } from '../../errors.js';
import { formatHresult, WHV_REGISTER_VALUE_SIZE } from './abi.js';

/** Host memory with a stable address (VirtualAlloc), seen from JS as a Uint8Array over it. */
export interface HostBuffer {
  readonly address: bigint;
  readonly bytes: Uint8Array;
}

/** A WHv* call failed with an HRESULT the backend cannot continue from. */
export class WhpxCallError extends HostSystemError {
  constructor(
    readonly call: string,
    readonly hresult: number,
  ) {
    super(`${call} failed: HRESULT ${formatHresult(hresult)}`, undefined);
  }
}

/** Opaque WHV_PARTITION_HANDLE. */
export type PartitionHandle = bigint;

export interface WhpxApi {
  /** WHvGetCapability(code, buffer, size, &written). */
  getCapability(code: number, out: Uint8Array): { hr: number; written: number };
  /** WHvCreatePartition(&handle). */
  createPartition(): { hr: number; handle: PartitionHandle };
  setPartitionProperty(h: PartitionHandle, code: number, value: Uint8Array): number;
  setupPartition(h: PartitionHandle): number;
  deletePartition(h: PartitionHandle): number;
  /** WHvMapGpaRange(h, source, gpa, size, flags); `source` is memory from allocate(). */
  mapGpaRange(h: PartitionHandle, source: bigint, gpa: bigint, size: bigint, flags: number): number;
  unmapGpaRange(h: PartitionHandle, gpa: bigint, size: bigint): number;
  /** WHvCreateVirtualProcessor2(h, vp, NULL, 0): default properties. */
  createVirtualProcessor(h: PartitionHandle, vp: number): number;
  deleteVirtualProcessor(h: PartitionHandle, vp: number): number;
  /** WHvRunVirtualProcessor off the JS thread; resolves with the HRESULT once the exit context is filled. */
  runVirtualProcessor(h: PartitionHandle, vp: number, exitContext: HostBuffer, size: number): Promise<number>;
  cancelRunVirtualProcessor(h: PartitionHandle, vp: number): number;
  /** `values` receives names.length WHV_REGISTER_VALUEs (16 bytes each). */
  getVirtualProcessorRegisters(h: PartitionHandle, vp: number, names: Uint32Array, values: Uint8Array): number;
  setVirtualProcessorRegisters(h: PartitionHandle, vp: number, names: Uint32Array, values: Uint8Array): number;
  /** WHvRequestInterrupt(h, &control, sizeof(control)); x64 16 bytes, arm64 32. */
  requestInterrupt(h: PartitionHandle, control: Uint8Array): number;
  postVirtualProcessorSynicMessage(h: PartitionHandle, vp: number, sint: number, message: Uint8Array): number;
  /** WHvSignalVirtualProcessorSynicEvent(h, params (8 bytes, by value), &newlySignaled). */
  signalVirtualProcessorSynicEvent(h: PartitionHandle, params: Uint8Array): { hr: number; newlySignaled: boolean };
  /** VirtualAlloc(MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE): zeroed, page-aligned, fixed address. */
  allocate(size: number): HostBuffer;
  /** VirtualFree(MEM_RELEASE). */
  free(buffer: HostBuffer): void;
}

export const WHP_DLL = 'WinHvPlatform.dll';
export const WHP_REQUIREMENTS =
  'Windows 10 1803+ / Windows Server 2019+ on x64 (SynIC post/signal need 20H2+), or Windows 11 24H2 build 26100.3915+ on arm64, ' +
  'with the "Windows Hypervisor Platform" optional feature enabled (Enable-WindowsOptionalFeature -Online -FeatureName HypervisorPlatform)';

const MEM_COMMIT_RESERVE = 0x3000;
const MEM_RELEASE = 0x8000;
const PAGE_READWRITE = 0x04;

// koffi is untyped at this boundary (functions declared from C prototypes): `any` is the
// honest type here, confined to this module.
/* eslint-disable @typescript-eslint/no-explicit-any */
type Fn = ((...args: any[]) => any) & { async: (...args: any[]) => void };

interface Dlls {
  readonly koffi: any;
  readonly fns: Record<string, Fn>;
}

/** The prototypes hvemu uses; HRESULT is a 32-bit signed long on Windows. */
export const PROTOTYPES: readonly string[] = [
  'int32_t WHvGetCapability(uint32_t code, void *buffer, uint32_t size, uint32_t *written)',
  'int32_t WHvCreatePartition(void *handleOut)',
  'int32_t WHvSetPartitionProperty(void *h, uint32_t code, void *value, uint32_t size)',
  'int32_t WHvSetupPartition(void *h)',
  'int32_t WHvDeletePartition(void *h)',
  'int32_t WHvMapGpaRange(void *h, void *source, uint64_t gpa, uint64_t size, uint32_t flags)',
  'int32_t WHvUnmapGpaRange(void *h, uint64_t gpa, uint64_t size)',
  'int32_t WHvCreateVirtualProcessor2(void *h, uint32_t vp, void *properties, uint32_t count)',
  'int32_t WHvDeleteVirtualProcessor(void *h, uint32_t vp)',
  'int32_t WHvRunVirtualProcessor(void *h, uint32_t vp, void *exitContext, uint32_t size)',
  'int32_t WHvCancelRunVirtualProcessor(void *h, uint32_t vp, uint32_t flags)',
  'int32_t WHvGetVirtualProcessorRegisters(void *h, uint32_t vp, void *names, uint32_t count, void *values)',
  'int32_t WHvSetVirtualProcessorRegisters(void *h, uint32_t vp, void *names, uint32_t count, void *values)',
  'int32_t WHvRequestInterrupt(void *h, void *control, uint32_t size)',
  'int32_t WHvPostVirtualProcessorSynicMessage(void *h, uint32_t vp, uint32_t sint, void *message, uint32_t size)',
];

function loadDlls(): Dlls {
  // createRequire keeps the load synchronous and lazy: koffi is needed only when WHPX is opened.
  const koffi = createRequire(import.meta.url)('koffi');
  const whp = koffi.load(WHP_DLL);
  const fns: Record<string, Fn> = {};
  for (const proto of PROTOTYPES) {
    const name = /\b(WHv\w+)\(/.exec(proto)![1];
    fns[name] = whp.func(proto);
  }
  // WHV_SYNIC_EVENT_PARAMETERS is passed by value (8 bytes). Anonymous, so a second load does
  // not redeclare a named koffi type.
  const eventParams = koffi.struct({ VpIndex: 'uint32_t', TargetSint: 'uint8_t', TargetVtl: 'uint8_t', FlagNumber: 'uint16_t' });
  fns['WHvSignalVirtualProcessorSynicEvent'] = whp.func('WHvSignalVirtualProcessorSynicEvent', 'int32_t', [
    'void *',
    eventParams,
    '_Out_ int32_t *',
  ]);
  const kernel32 = koffi.load('kernel32.dll');
  fns['VirtualAlloc'] = kernel32.func('void *VirtualAlloc(void *address, size_t size, uint32_t type, uint32_t protect)');
  fns['VirtualFree'] = kernel32.func('int32_t VirtualFree(void *address, size_t size, uint32_t type)');
  return { koffi, fns };
}

/**
 * Loads koffi, WinHvPlatform.dll and kernel32. Where the DLL is missing (any non-Windows host,
 * or Windows without the optional feature) this is a HypervisorUnavailableError naming the DLL
 * and what it needs.
 */
export function loadWhpxApi(): WhpxApi {
  let dlls: Dlls;
  try {
    dlls = loadDlls();
  } catch (e) {
    throw new HypervisorUnavailableError(
      `WHPX backend: cannot load ${WHP_DLL} (${(e as Error).message}; host platform ${process.platform}/${process.arch}). ` +
        `It needs ${WHP_REQUIREMENTS}.`,
      { cause: e },
    );
  }
  return new KoffiWhpxApi(dlls);
}

const u32 = (hr: number): number => hr >>> 0;

/** WhpxApi over the real DLL through koffi. Pointers are koffi BigInts; handles too. */
class KoffiWhpxApi implements WhpxApi {
  private readonly f: Record<string, Fn>;
  private readonly koffi: any;
  /** Page-aligned scratch for register arrays (WHV_REGISTER_VALUE must be 16-byte aligned). */
  private scratchBuffer: HostBuffer | undefined;

  constructor(dlls: Dlls) {
    this.f = dlls.fns;
    this.koffi = dlls.koffi;
  }

  private scratch(size: number): HostBuffer {
    if (!this.scratchBuffer || this.scratchBuffer.bytes.length < size) {
      if (this.scratchBuffer) this.free(this.scratchBuffer);
      this.scratchBuffer = this.allocate(Math.max(4096, Math.ceil(size / 4096) * 4096));
    }
    return this.scratchBuffer;
  }

  getCapability(code: number, out: Uint8Array): { hr: number; written: number } {
    const written = new Uint32Array(1);
    const hr = this.f['WHvGetCapability'](code, out, out.length, written) as number;
    return { hr: u32(hr), written: written[0] };
  }

  createPartition(): { hr: number; handle: PartitionHandle } {
    const out = new BigUint64Array(1);
    const hr = this.f['WHvCreatePartition'](out) as number;
    return { hr: u32(hr), handle: out[0] };
  }

  setPartitionProperty(h: PartitionHandle, code: number, value: Uint8Array): number {
    return u32(this.f['WHvSetPartitionProperty'](h, code, value, value.length));
  }

  setupPartition(h: PartitionHandle): number {
    return u32(this.f['WHvSetupPartition'](h));
  }

  deletePartition(h: PartitionHandle): number {
    return u32(this.f['WHvDeletePartition'](h));
  }

  mapGpaRange(h: PartitionHandle, source: bigint, gpa: bigint, size: bigint, flags: number): number {
    return u32(this.f['WHvMapGpaRange'](h, source, gpa, size, flags));
  }

  unmapGpaRange(h: PartitionHandle, gpa: bigint, size: bigint): number {
    return u32(this.f['WHvUnmapGpaRange'](h, gpa, size));
  }

  createVirtualProcessor(h: PartitionHandle, vp: number): number {
    return u32(this.f['WHvCreateVirtualProcessor2'](h, vp, null, 0));
  }

  deleteVirtualProcessor(h: PartitionHandle, vp: number): number {
    return u32(this.f['WHvDeleteVirtualProcessor'](h, vp));
  }

  runVirtualProcessor(h: PartitionHandle, vp: number, exitContext: HostBuffer, size: number): Promise<number> {
    // .async runs the blocking call on a koffi worker thread; the exit context is VirtualAlloc
    // memory, so its address stays valid however long the call blocks.
    return new Promise((resolve, reject) => {
      this.f['WHvRunVirtualProcessor'].async(h, vp, exitContext.address, size, (err: unknown, hr: number) => {
        if (err) reject(err);
        else resolve(u32(hr));
      });
    });
  }

  cancelRunVirtualProcessor(h: PartitionHandle, vp: number): number {
    return u32(this.f['WHvCancelRunVirtualProcessor'](h, vp, 0));
  }

  getVirtualProcessorRegisters(h: PartitionHandle, vp: number, names: Uint32Array, values: Uint8Array): number {
    const s = this.scratch(names.length * WHV_REGISTER_VALUE_SIZE);
    const hr = u32(this.f['WHvGetVirtualProcessorRegisters'](h, vp, names, names.length, s.address));
    values.set(s.bytes.subarray(0, names.length * WHV_REGISTER_VALUE_SIZE));
    return hr;
  }

  setVirtualProcessorRegisters(h: PartitionHandle, vp: number, names: Uint32Array, values: Uint8Array): number {
    const s = this.scratch(values.length);
    s.bytes.set(values);
    return u32(this.f['WHvSetVirtualProcessorRegisters'](h, vp, names, names.length, s.address));
  }

  requestInterrupt(h: PartitionHandle, control: Uint8Array): number {
    return u32(this.f['WHvRequestInterrupt'](h, control, control.length));
  }

  postVirtualProcessorSynicMessage(h: PartitionHandle, vp: number, sint: number, message: Uint8Array): number {
    return u32(this.f['WHvPostVirtualProcessorSynicMessage'](h, vp, sint, message, message.length));
  }

  signalVirtualProcessorSynicEvent(h: PartitionHandle, params: Uint8Array): { hr: number; newlySignaled: boolean } {
    const v = new DataView(params.buffer, params.byteOffset, 8);
    const value = { VpIndex: v.getUint32(0, true), TargetSint: v.getUint8(4), TargetVtl: v.getUint8(5), FlagNumber: v.getUint16(6, true) };
    const out = new Int32Array(1);
    const hr = this.f['WHvSignalVirtualProcessorSynicEvent'](h, value, out) as number;
    return { hr: u32(hr), newlySignaled: out[0] !== 0 };
  }

  allocate(size: number): HostBuffer {
    const p = this.f['VirtualAlloc'](null, size, MEM_COMMIT_RESERVE, PAGE_READWRITE) as bigint | null;
    if (p === null || BigInt(p) === 0n) throw new HostSystemError(`VirtualAlloc(${size}) failed`, undefined);
    return { address: BigInt(p), bytes: new Uint8Array(this.koffi.view(p, size) as ArrayBuffer) };
  }

  free(buffer: HostBuffer): void {
    this.f['VirtualFree'](buffer.address, 0, MEM_RELEASE);
  }
}
