// A ring producer on its own thread: the RingWriter (compiled dist/) writing into a ring in
// a SharedArrayBuffer while the test's RingReader consumes it on the main thread.
import { parentPort, workerData } from 'node:worker_threads';
import { GuestMemory } from '@hvemu/memory';
import { RingBuffer, RingWriter, VM_PKT_DATA_INBAND } from '@hvemu/vmbus';
import { payloadLength, fillPayload, DOORBELL_DATA, DOORBELL_SPACE } from './ring-pattern.mjs';

const { memoryBuffer, memorySize, controlGpa, dataGpa, dataSize, doorbells, packets, batchEvery, waitMs } = workerData;
const memory = new GuestMemory([{ gpa: 0, size: memorySize, buffer: memoryBuffer }]);
const ring = new RingBuffer(memory.u32Array(controlGpa, 1024), memory.range(dataGpa, dataSize));
const bell = new Int32Array(doorbells);
const writer = new RingWriter(ring, {
  signal: () => {
    Atomics.add(bell, DOORBELL_DATA, 1);
    Atomics.notify(bell, DOORBELL_DATA);
  },
});

const scratch = new Uint8Array(dataSize);
const packet = { type: VM_PKT_DATA_INBAND, transactionId: 0, payload: scratch };
let stalls = 0;
let waits = 0;

function writeWithBackpressure(seq) {
  const length = payloadLength(seq, dataSize);
  fillPayload(seq, scratch, length);
  packet.transactionId = seq;
  packet.payload = scratch.subarray(0, length);
  for (;;) {
    if (writer.write(packet)) return;
    const space = RingWriter.ringSpace(0, length);
    const seen = Atomics.load(bell, DOORBELL_SPACE);
    if (writer.requestSpace(space)) continue;
    waits++;
    // Outside a batch nothing is unpublished, so the reader will free space and signal.
    const r = Atomics.wait(bell, DOORBELL_SPACE, seen, waitMs);
    if (r === 'timed-out' && writer.freeBytes() > space) stalls++; // a lost wakeup
    writer.clearPendingSend();
  }
}

let seq = 0;
for (let round = 0; seq < packets; round++) {
  if (batchEvery > 0 && round % batchEvery === 0) {
    // A batch publishes once at the end; write only what fits now, so nothing waits inside it.
    writer.batch((w) => {
      for (let i = 0; i < 4 && seq < packets; i++) {
        const length = payloadLength(seq, dataSize);
        if (w.freeBytes() <= RingWriter.ringSpace(0, length)) break;
        fillPayload(seq, scratch, length);
        packet.transactionId = seq;
        packet.payload = scratch.subarray(0, length);
        if (!w.write(packet)) throw new Error('write refused after freeBytes said it fits');
        seq++;
      }
    });
  } else {
    writeWithBackpressure(seq++);
  }
}
parentPort.postMessage({ stalls, waits, signals: writer.signals, written: writer.packetsWritten });
