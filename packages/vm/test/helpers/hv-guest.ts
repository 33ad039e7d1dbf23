/**
 * Runs an enlightenment test guest (packages/vm/test/guests/*.c + hv.h, and the Hyper-V ABI
 * header packages/vm/guests/hv-abi.h it shares with the VMBus demo guest) on KVM with HyperV and
 * the hypercall dispatcher attached, and the request port hv.h names.
 */
import { fileURLToPath } from 'node:url';
import { describe } from 'vitest';
import { KvmPartition } from '@hvemu/accel';
import { buildFreestandingImage, enterLongMode, GUEST_RUNTIME_DIR, loadElf64, TestPlatform } from '@hvemu/platform';
import { attachHyperV, enlightenedPartitionOptions, type AttachOptions, type Enlightenments } from '@hvemu/vm';

const probe = KvmPartition.probe();
if (!probe.ok && process.env['HVEMU_REQUIRE_KVM'] === '1') throw new Error(`HVEMU_REQUIRE_KVM=1 but KVM is unusable: ${probe.reason}`);
if (!probe.ok) console.warn(`skipping KVM enlightenment tests: ${probe.reason}`);
export const describeKvm = probe.ok ? describe : describe.skip;

const guestFile = (name: string): string => fileURLToPath(new URL(`../guests/${name}`, import.meta.url));
const rt = (f: string): string => `${GUEST_RUNTIME_DIR}${f}`;
/** packages/vm/guests: hv-abi.h (and the demo guest), not test code. */
const ABI_DIR = fileURLToPath(new URL('../../guests/', import.meta.url));

/** Builds guests/<name>.c with hv.h and hv-abi.h (dependencies of the build cache, unlike buildLongModeGuest). */
export function buildHvGuest(name: string): Uint8Array {
  return buildFreestandingImage({
    name,
    sources: [rt('start.S'), rt('rt.c'), guestFile(`${name}.c`)],
    dependencies: ['rt.h', 'link.ld'].map(rt).concat(guestFile('hv.h'), `${ABI_DIR}hv-abi.h`),
    linkScript: rt('link.ld'),
    flags: ['-mno-red-zone', `-I${GUEST_RUNTIME_DIR}`, `-I${ABI_DIR}`],
  });
}

export const REQUEST_PORT = 0xe0;
export const REQ_POST = 1;
export const REQ_SIGNAL = 2;
export const REQ_ISR = 3;
export const REQ_UNREGISTER = 4;

export interface HvGuestRun {
  platform: TestPlatform;
  hv: Enlightenments;
  partition: KvmPartition;
  /** Per REQ_ISR request: how many ISR bits the in-kernel LAPIC of that vp had set. */
  isrBitsSeen: number[];
  error: unknown;
  report(): string;
}

export interface HvGuestOptions {
  vcpuCount?: number;
  attach?: AttachOptions;
  setup?(run: HvGuestRun, unregister: Map<number, () => void>): void;
  timeoutMs?: number;
}

/** Builds, runs and closes; never rejects (failures are in `error` and the platform). */
export async function runHvGuest(name: string, opts: HvGuestOptions = {}): Promise<HvGuestRun> {
  const image = buildHvGuest(name);
  const partition = KvmPartition.create({
    memory: [{ gpa: 0, size: 16 << 20 }],
    vcpuCount: opts.vcpuCount ?? 2,
    ...enlightenedPartitionOptions(),
  });
  const platform = new TestPlatform(partition);
  const hv = attachHyperV(partition, opts.attach);
  const unregister = new Map<number, () => void>();
  const run: HvGuestRun = {
    platform,
    hv,
    partition,
    isrBitsSeen: [],
    error: undefined,
    report: () => `${platform.assertionSummary()}\nserial: ${platform.serial.text()}\nerror: ${String(run.error ?? '')}`,
  };
  partition.addIoDevice({ port: REQUEST_PORT, count: 1, write: (_p, _size, data) => serveRequest(run, unregister, data >>> 0) });
  opts.setup?.(run, unregister);
  const { entry } = loadElf64(partition.memory, image);
  enterLongMode(partition, entry);
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      partition.stop();
      reject(new Error(`${name}: timed out after ${opts.timeoutMs ?? 30_000} ms`));
    }, opts.timeoutMs ?? 30_000);
  });
  try {
    await Promise.race([partition.run(), timeout]);
  } catch (error) {
    run.error = error;
  } finally {
    clearTimeout(timer);
    hv.dispose();
    partition.close();
  }
  return run;
}

function serveRequest(run: HvGuestRun, unregister: Map<number, () => void>, data: number): void {
  const op = data >>> 24;
  const vp = (data >>> 16) & 0xff;
  const sint = (data >>> 8) & 0xff;
  const arg = data & 0xff;
  const { hyperv } = run.hv;
  if (op === REQ_POST) hyperv.postMessage(vp, sint, { type: 1, payload: Uint8Array.of(sint, vp, arg) });
  else if (op === REQ_SIGNAL) hyperv.signalEvent(vp, sint, arg);
  else if (op === REQ_ISR) run.isrBitsSeen.push(countIsrBits(run.partition.vcpus[vp].lapicRegisters()));
  else if (op === REQ_UNREGISTER) unregister.get(arg)?.();
  else throw new Error(`unknown guest request 0x${data.toString(16)}`);
}

/** Set bits in the LAPIC's eight ISR words (0x100 + 16*i). */
export function countIsrBits(lapic: Uint8Array): number {
  const dv = new DataView(lapic.buffer, lapic.byteOffset, lapic.byteLength);
  let bits = 0;
  for (let i = 0; i < 8; i++) for (let w = dv.getUint32(0x100 + 16 * i, true); w; w &= w - 1) bits++;
  return bits;
}
