/**
 * A writer thread for a packet fd (a TAP): batches of frames written off the JS thread, so a
 * device's work on the next frames overlaps the write(2)s of the last ones (one per frame: a
 * TAP takes one frame per call). native/src/frame_writer.cc.
 *
 * The caller gives its slots once: slot k is `buffers[k]` (frames packed back to back) with
 * `lengths[k]`. `submit(k, count)` queues slot k's first `count` frames; slots are written in
 * submission order. When slot k is done, `state(k)` is DONE and `result(k)` says how many frames
 * were consumed and refused; `onDone` then runs on the JS thread (it may come after the caller
 * already saw DONE by polling). The caller must not touch a slot's memory while it is QUEUED.
 * EAGAIN is waited out on the writer's thread. close() writes what is queued and joins.
 */
import { AccelUsageError, native } from '../errors.js';
import { loadAddon } from './addon.js';

export const FRAME_SLOT_IDLE = 0;
export const FRAME_SLOT_QUEUED = 1;
export const FRAME_SLOT_DONE = 2;
const STATUS_WORDS = 4;

export interface FrameSlot {
  buffer: Uint8Array;
  lengths: Uint32Array;
}

export interface FrameSlotResult {
  /** Frames written or refused (the rest were not consumed: the writer was closed while waiting for EAGAIN). */
  consumed: number;
  /** Frames refused with an error (dropped). */
  failed: number;
  /** The last refusal's errno (0 if none). */
  errno: number;
}

export interface FrameWriter {
  readonly slots: number;
  submit(slot: number, count: number): void;
  /** FRAME_SLOT_IDLE, _QUEUED or _DONE (an acquire load: DONE means result() is complete). */
  state(slot: number): number;
  /** A DONE slot's counts; the slot becomes IDLE. */
  take(slot: number): FrameSlotResult;
  close(): void;
}

/** The addon's frame writer, or null where it has none (a stub build). Misuse is an AccelUsageError. */
export function createFrameWriter(fd: number, slots: readonly FrameSlot[], onDone: () => void): FrameWriter | null {
  let Writer;
  try {
    Writer = loadAddon().FrameWriter;
  } catch {
    return null;
  }
  if (!Writer) return null;
  if (!Array.isArray(slots)) throw new AccelUsageError('createFrameWriter: slots must be an array');
  // Its own ArrayBuffer: always off the V8 heap, so the thread's pointer to it stays valid.
  const status = new Int32Array(new ArrayBuffer(Math.max(1, slots.length) * STATUS_WORDS * 4));
  const writer = native(
    () =>
      new Writer(
        fd,
        slots.map((s) => s?.buffer),
        slots.map((s) => s?.lengths),
        status,
        onDone,
      ),
  );
  const check = (slot: number): number => {
    if (!Number.isInteger(slot) || slot < 0 || slot >= slots.length) throw new AccelUsageError(`frame writer: no slot ${String(slot)}`);
    return slot * STATUS_WORDS;
  };
  return {
    slots: slots.length,
    submit: (slot, count) => native(() => writer.submit(slot, count)),
    state: (slot) => Atomics.load(status, check(slot)),
    take(slot) {
      const at = check(slot);
      if (Atomics.load(status, at) !== FRAME_SLOT_DONE) throw new AccelUsageError(`frame writer: slot ${slot} is not done`);
      const result = { consumed: status[at + 1], failed: status[at + 2], errno: status[at + 3] };
      Atomics.store(status, at, FRAME_SLOT_IDLE);
      return result;
    },
    close: () => native(() => writer.close()),
  };
}
