// Child process for the frame writer's teardown: a writer whose thread is busy (waiting for
// POLLOUT on a full FIFO) when its program ends or its worker is terminated, never closed. The
// environment cleanup must stop and join the thread before Node goes. Prints one JSON line.
import { execFileSync } from 'node:child_process';
import { constants, mkdtempSync, openSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { createFrameWriter, FRAME_SLOT_QUEUED } from '@hvemu/accel';

/** A writer with one slot queued behind a full FIFO (its thread polls for room). */
function busyWriter() {
  const path = join(mkdtempSync(join(tmpdir(), 'hvemu-fwt-')), 'fifo');
  execFileSync('mkfifo', [path]);
  const fd = openSync(path, constants.O_RDWR | constants.O_NONBLOCK);
  const chunk = Buffer.alloc(4096);
  for (;;) {
    try {
      writeSync(fd, chunk);
    } catch {
      break;
    }
  }
  const slot = { buffer: new Uint8Array(8192), lengths: new Uint32Array(4) };
  slot.lengths[0] = 4000;
  const writer = createFrameWriter(fd, [slot], () => {});
  writer.submit(0, 1);
  return writer.state(0) === FRAME_SLOT_QUEUED;
}

const scenario = isMainThread ? process.argv[2] : workerData;
if (!isMainThread) {
  busyWriter();
  parentPort.postMessage('busy');
} else if (scenario === 'terminate') {
  const w = new Worker(new URL(import.meta.url), { workerData: scenario });
  const exitCode = await new Promise((resolve, reject) => {
    w.on('error', reject);
    w.on('exit', resolve);
    w.on('message', () => setTimeout(() => w.terminate(), 20));
  });
  console.log(JSON.stringify({ workerExit: exitCode, queued: busyWriter() }));
} else {
  console.log(JSON.stringify({ queued: busyWriter() }));
}
