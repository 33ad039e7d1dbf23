// Child process (run with --expose-gc): unclosed, unreachable partitions are collected and
// release their VM fds and RAM; one whose vCPUs run stays alive until run() settles, even when
// nothing else references it.
import { readdirSync } from 'node:fs';
import { KvmPartition } from '@hvemu/accel';
import { enterLongMode } from '@hvemu/platform';

const fds = () => readdirSync('/proc/self/fd').length;
const settle = async () => {
  for (let i = 0; i < 6; i++) {
    globalThis.gc();
    await new Promise((r) => setTimeout(r, 30));
  }
};

await settle();
const before = fds();
for (let i = 0; i < 100; i++) {
  const p = KvmPartition.create({ memory: [{ gpa: 0, size: 1 << 20 }] });
  if (i % 10 === 0) p.createIoeventfd({ space: 'pio', address: 0x90, length: 1 }).watch(() => {});
  if (i % 10 === 1) p.createIrqfd(0, 0x30);
}
const created = fds();
await settle();
const collected = fds();

// A running guest referenced by nothing but its run() promise: out 0x80 in a loop, stopped
// by the device after 3000 exits.
function start() {
  const p = KvmPartition.create({ memory: [{ gpa: 0, size: 4 << 20 }] });
  p.memory.write(0x100000, Uint8Array.of(0xe6, 0x80, 0xeb, 0xfc));
  enterLongMode(p, 0x100000);
  let n = 0;
  p.addIoDevice({ port: 0x80, count: 1, write: () => (++n >= 3000 ? { stop: true } : undefined) });
  return p.run();
}
const done = start();
await settle();
const outcomes = await done;
console.log(JSON.stringify({ before, created, collected, outcome: outcomes.map((o) => [o.cause, o.exits]) }));
