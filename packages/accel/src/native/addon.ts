/**
 * Loads hvemu_native.node (built from native/ by node-gyp) and describes its surface.
 * Nothing outside src/native touches the addon object directly.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { NativeAddonError } from '../errors.js';

export interface NativePartitionConfig {
  vcpuCount: number;
  ram: { gpa: number; size: number }[];
  userMsrs?: number[];
  hypercallPort?: number;
  int3Fixup?: boolean;
  instructionFixups?: boolean;
  syscallFixup?: boolean;
  spinIterations?: number;
  syncRegs?: boolean;
}

/** The KVM partition object of the addon (native/src/addon.cc PartitionWrap). */
export interface NativePartition {
  /** Per RAM region (config order), buffers covering it in order, each at most 4 GiB (Node 20's limit). */
  ramBuffers(): ArrayBuffer[][];
  exitBuffer(): ArrayBuffer;
  supportedCpuid(): Uint32Array;
  setCpuid(vp: number, words: Uint32Array): void;
  setUserMsrs(msrs: number[]): void;
  getRegs(vp: number): BigUint64Array;
  setRegs(vp: number, regs: BigUint64Array): void;
  getSregs(vp: number): BigUint64Array;
  setSregs(vp: number, sregs: BigUint64Array): void;
  setMpState(vp: number, state: number): void;
  getXmm(vp: number): Uint8Array;
  setXmm(vp: number, xmm: Uint8Array): void;
  getTscKhz(vp: number): number;
  getGuestTsc(vp: number): bigint;
  getLapic(vp: number): Uint8Array;
  start(vp: number): void;
  wake(vp: number): void;
  requestStop(): void;
  join(): void;
  idle(): void;
  signalMsi(address: number | bigint, data: number): number;
  setIrqLine(gsi: number, level: boolean): void;
  addIrqfdMsi(address: number | bigint, data: number): number;
  addIoeventfd(addr: number | bigint, len: number, pio: boolean, datamatch?: number | bigint): number;
  removeIoeventfd(fd: number): void;
  /** Adds 1 to an irqfd of this partition; any other fd is refused (HVEMU_USAGE). */
  triggerIrqfd(fd: number): void;
  /** Reads and resets an ioeventfd of this partition (0n when no writes); any other fd is refused. */
  takeIoeventfd(fd: number): bigint;
  mapPages(pfns: Float64Array): ArrayBuffer;
  /** New RAM in a free memslot: buffers covering it in order (each at most 4 GiB). */
  addRam(gpa: number, size: number): ArrayBuffer[];
  /** Deletes the memslot of the region starting at `gpa` and detaches its JS buffers. */
  removeRam(gpa: number): void;
  /** FALLOC_FL_PUNCH_HOLE on the memfd: the pages read as zero, their host memory is freed. */
  discardRam(gpa: number, size: number): void;
  /** Batched discardRam over (gpa, size) pairs, all checked before any is punched; returns the bytes discarded. */
  discardRanges(pairs: Float64Array): number;
  /** Host bytes each RAM region's memfd holds now (st_blocks * 512). */
  ramUsage(): { gpa: number; size: number; allocated: number }[];
  close(): void;
}

/** An epoll thread reporting readable eventfds to JS (native/src/eventfd_watcher.h). */
export interface NativeEventfdWatcher {
  add(fd: number, oneShot?: boolean): void;
  rearm(fd: number): void;
  remove(fd: number): void;
  close(): void;
}

export interface NativeFrameWriter {
  submit(slot: number, count: number): void;
  close(): void;
}

export interface NativeAddon {
  probeKvm(): { ok: boolean; code: string; message: string };
  /** Detaches a mapPages() buffer, unmapping it now. */
  unmapPages?(buffer: ArrayBuffer): void;
  /** Absent where the addon was built as a stub (no backend for this platform yet). */
  KvmPartition?: new (config: NativePartitionConfig, onExitsPending: () => void) => NativePartition;
  EventfdWatcher?: new (onReady: (fds: number[]) => void) => NativeEventfdWatcher;
  /** Batched frame I/O on an fd (native/src/frame_io.cc); absent in the stub. */
  readFrames?(fd: number, buffer: Uint8Array, lengths: Uint32Array, maxFrame: number): number;
  writeFrames?(fd: number, buffer: Uint8Array, lengths: Uint32Array, count: number, status: Int32Array): number;
  /** preadv2(RWF_NOWAIT) into the targets (native/src/file_io.cc); absent in the stub. */
  readNowait?(fd: number, offset: number, targets: readonly Uint8Array[]): number;
  /** A writer thread for packet fds (native/src/frame_writer.cc); absent in the stub. */
  FrameWriter?: new (
    fd: number,
    buffers: Uint8Array[],
    lengths: Uint32Array[],
    status: Int32Array,
    onDone: () => void,
  ) => NativeFrameWriter;
  layout: { headerSize: number; slotSize: number; slotDataOffset: number };
}

/**
 * Where the addon is built: the repository's native/build/Release in the workspace (two levels
 * above this package), or the package's own native/build/Release when @hvemu/accel was installed
 * from a packed tarball (scripts/build-native.cjs builds it there).
 */
export function addonPath(): string {
  const override = process.env['HVEMU_NATIVE_ADDON'];
  if (override) return override;
  const candidates = ['../../../../native/build/Release/hvemu_native.node', '../../native/build/Release/hvemu_native.node'].map((rel) =>
    fileURLToPath(new URL(rel, import.meta.url)),
  );
  return candidates.find((p) => existsSync(p)) ?? candidates[0];
}

/** The addon. Node's require cache makes repeated calls cheap and returns the same module. */
export function loadAddon(): NativeAddon {
  const path = addonPath();
  if (!existsSync(path)) {
    throw new NativeAddonError(`hvemu native addon not built: ${path} is missing (run \`npm run build:native -w @hvemu/accel\`)`);
  }
  try {
    return createRequire(import.meta.url)(path) as NativeAddon;
  } catch (e) {
    throw new NativeAddonError(`cannot load hvemu native addon ${path}: ${(e as Error).message}`, { cause: e });
  }
}
