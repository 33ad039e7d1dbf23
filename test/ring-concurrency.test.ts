/**
 * A producer on a real second thread (worker_threads, over the same SharedArrayBuffer) writes
 * packets into a small ring while this thread reads them. Every byte and the order are
 * checked; the ring wraps thousands of times; both ends sleep on the protocol's signals
 * (data-available with interrupt_mask, space-available with pending_send_sz), so a lost
 * wakeup shows up as a stall.
 */
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { GuestMemory, PAGE_SIZE } from '@hvemu/memory';
import { RingBuffer, RingReader } from '@hvemu/vmbus';
// @ts-expect-error plain JS module shared with the worker
import { checkPayload, payloadLength, DOORBELL_DATA, DOORBELL_SPACE } from './workers/ring-pattern.mjs';

const WAIT_MS = 1000;

async function runProducerConsumer(packets: number, dataSize: number, batchEvery: number) {
  const controlGpa = PAGE_SIZE;
  const dataGpa = 2 * PAGE_SIZE;
  const memorySize = dataGpa + Math.ceil(dataSize / PAGE_SIZE) * PAGE_SIZE;
  const memoryBuffer = new SharedArrayBuffer(memorySize);
  const memory = new GuestMemory([{ gpa: 0, size: memorySize, buffer: memoryBuffer }]);
  const ring = new RingBuffer(memory.u32Array(controlGpa, 1024), memory.range(dataGpa, dataSize));
  ring.initialize({ pendingSendSize: true });
  const doorbells = new SharedArrayBuffer(8);
  const bell = new Int32Array(doorbells);
  const reader = new RingReader(ring, {
    signal: () => {
      Atomics.add(bell, DOORBELL_SPACE, 1);
      Atomics.notify(bell, DOORBELL_SPACE);
    },
  });

  const worker = new Worker(new URL('./workers/ring-producer.mjs', import.meta.url), {
    workerData: { memoryBuffer, memorySize, controlGpa, dataGpa, dataSize, doorbells, packets, batchEvery, waitMs: WAIT_MS },
  });
  const producerDone = new Promise<{ stalls: number; waits: number; signals: number; written: number }>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });

  let expected = 0;
  let ringBytes = 0;
  let stalls = 0;
  let sleeps = 0;
  const errors: string[] = [];
  const deadline = Date.now() + 50_000;
  // A consumer as a host runs one: drain on each signal, then sleep until the next. Correct
  // masking means a packet published after the drain always brings a signal.
  while (expected < packets && Date.now() < deadline) {
    const seen = Atomics.load(bell, DOORBELL_DATA);
    reader.drain((p) => {
      const seq = p.transactionIdNumber;
      if (seq !== expected && errors.length < 5) errors.push(`packet ${expected}: got sequence ${seq}`);
      const problem = checkPayload(seq, p.payload(), payloadLength(seq, dataSize));
      if (problem && errors.length < 5) errors.push(`packet ${seq}: ${problem}`);
      ringBytes += p.length + 8;
      expected++;
    });
    if (expected === packets) break;
    sleeps++;
    if (Atomics.wait(bell, DOORBELL_DATA, seen, WAIT_MS) === 'timed-out' && reader.available() > 0) {
      // Data is there and no signal came: a lost wakeup (unless the writer is mid-signal).
      if (Atomics.wait(bell, DOORBELL_DATA, seen, 200) === 'timed-out' && ++stalls >= 3) break;
    }
  }
  const noReport = { stalls: -1, waits: 0, signals: 0, written: -1 };
  const producer = await Promise.race([producerDone, new Promise<typeof noReport>((r) => setTimeout(() => r(noReport), 5000))]);
  await worker.terminate();
  return { received: expected, errors, stalls, sleeps, producer, wraps: Math.floor(ringBytes / dataSize) };
}

describe('ring across threads', () => {
  it('delivers every byte in order through a 4 KiB ring wrapping thousands of times, with no lost wakeup', async () => {
    const packets = 60_000;
    const r = await runProducerConsumer(packets, 4096, 0);
    expect(r.stalls).toBe(0);
    expect(r.errors).toEqual([]);
    expect(r.received).toBe(packets);
    expect(r.producer.written).toBe(packets);
    expect(r.wraps).toBeGreaterThan(1000);
    expect(r.stalls).toBe(0);
    expect(r.producer.stalls).toBe(0);
    // Both ends really slept on the signals at least sometimes (the test exercised them).
    expect(r.sleeps + r.producer.waits).toBeGreaterThan(0);
  });

  it('does the same with batched writes mixed in', async () => {
    const packets = 40_000;
    const r = await runProducerConsumer(packets, 1024, 3);
    expect(r.stalls).toBe(0);
    expect(r.errors).toEqual([]);
    expect(r.received).toBe(packets);
    expect(r.stalls).toBe(0);
    expect(r.producer.stalls).toBe(0);
  });
});
