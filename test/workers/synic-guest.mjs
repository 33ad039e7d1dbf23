// A guest on its own thread consuming SynIC messages from the SIMP page the way Linux
// vmbus_on_msg_dpc / vmbus_signal_eom does: read the slot, store HVMSG_NONE, full barrier,
// read msg_pending, and ask for an EOM (the host thread performs the MSR write).
import { parentPort, workerData } from 'node:worker_threads';

const { memoryBuffer, simpOffset, sint, count, waitMs } = workerData;
const words = new Uint32Array(memoryBuffer, simpOffset, 1024);
const bells = new Int32Array(workerData.bells); // [0] interrupts raised, [1] EOM requests, [2] messages received, [3] guest activity
const base = (sint * 256) / 4;
const bytes = new Uint8Array(memoryBuffer, simpOffset + sint * 256, 256);

let expected = 0;
let stalls = 0;
let eoms = 0;
const errors = [];
while (expected < count) {
  const seen = Atomics.load(bells, 0);
  const type = Atomics.load(words, base);
  if (type !== 0) {
    const size = Atomics.load(words, base + 1) & 0xff;
    const seq = bytes[16] | (bytes[17] << 8) | (bytes[18] << 16) | (bytes[19] << 24);
    if ((type !== 1 || seq !== expected || size !== 4 + (seq % 200)) && errors.length < 5) {
      errors.push(`message ${expected}: type ${type} seq ${seq} size ${size}`);
    }
    expected++;
    Atomics.store(bells, 2, expected);
    Atomics.store(words, base, 0); // HVMSG_NONE; seq_cst = the barrier before reading msg_pending
    if ((Atomics.load(words, base + 1) >>> 8) & 1) {
      eoms++;
      Atomics.add(bells, 1, 1);
    }
    // One counter the host sleeps on, bumped after each message (and its EOM request).
    Atomics.add(bells, 3, 1);
    Atomics.notify(bells, 3);
    continue;
  }
  if (Atomics.wait(bells, 0, seen, waitMs) === 'timed-out' && Atomics.load(words, base) === 0) stalls++;
  if (stalls > 3) break;
}
parentPort.postMessage({ received: expected, stalls, eoms, errors });
