// Child process for teardown tests: a running partition torn down by its worker's termination,
// by process.exit(), or by an uncaught exception. Each used to abort the process at least in
// one form ("terminate called after throwing an instance of 'Napi::Error'"). Prints one JSON
// line when the main thread got through.
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { KvmPartition } from '@hvemu/accel';
import { enterLongMode } from '@hvemu/platform';

const ENTRY = 0x100000;
// 64-bit guest loops. 'exits': out 0x80,al; jmp back (a user-space exit per iteration).
// 'blocked': in al,0x81 (a handler that never answers). 'doorbell': out 0x82,al; jmp back (an
// ioeventfd: no exit, the watcher thread reports it). 'quiet': jmp $ (never exits).
const CODE = {
  exits: [0xe6, 0x80, 0xeb, 0xfc],
  blocked: [0xe4, 0x81, 0xeb, 0xfc],
  doorbell: [0xe6, 0x82, 0xeb, 0xfc],
  quiet: [0xeb, 0xfe],
};

/** Starts a one-vCPU guest running `kind`; resolves once it has really run (an exit, a doorbell). */
function startGuest(kind) {
  const p = KvmPartition.create({ memory: [{ gpa: 0, size: 4 << 20 }] });
  p.memory.write(ENTRY, Uint8Array.from(CODE[kind]));
  enterLongMode(p, ENTRY);
  let seen;
  const ran = new Promise((r) => (seen = r));
  p.addIoDevice({ port: 0x80, count: 1, write: () => seen() });
  p.addIoDevice({ port: 0x81, count: 1, read: () => (seen(), new Promise(() => {})) });
  if (kind === 'doorbell') p.createIoeventfd({ space: 'pio', address: 0x82, length: 0 }).watch(() => seen());
  if (kind === 'quiet') setTimeout(seen, 50);
  const done = p.run();
  done.catch(() => {});
  return { p, ran, done };
}

const [scenario, kind = 'exits'] = isMainThread ? process.argv.slice(2) : workerData;
const report = (o) => console.log(JSON.stringify(o));

if (!isMainThread) {
  const { ran } = startGuest(kind);
  await ran;
  if (scenario === 'worker-exit') process.exit(3);
  parentPort.postMessage('running');
} else if (scenario === 'terminate' || scenario === 'worker-exit') {
  const w = new Worker(new URL(import.meta.url), { workerData: [scenario, kind] });
  const exitCode = await new Promise((resolve, reject) => {
    w.on('error', reject);
    w.on('exit', resolve);
    w.on('message', () => setTimeout(() => w.terminate(), 50));
  });
  // The process goes on: a new partition on the main thread runs and stops normally.
  const { p, ran, done } = startGuest('exits');
  await ran;
  p.stop();
  const outcomes = await done;
  p.close();
  report({ workerExit: exitCode, mainOutcomes: outcomes.map((o) => o.cause) });
} else if (scenario === 'main-exit') {
  const { ran } = startGuest(kind);
  await ran;
  process.exit(7);
} else if (scenario === 'main-throw') {
  const { ran } = startGuest(kind);
  await ran;
  throw new Error('uncaught while a partition runs');
} else if (scenario === 'main-end') {
  // A stopped but never closed partition (and its watcher) at the end of the program.
  const { p, ran } = startGuest(kind);
  await ran;
  p.stop();
  report({ ended: true });
}
