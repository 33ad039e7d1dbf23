// The host process of the crash test: a simulated guest (the TypeScript storvsc) writing through
// storvsp to a raw image file (compiled dist/), printing each write when its completion arrives
// and each SYNCHRONIZE CACHE when it completes, until the test SIGKILLs it mid-stream.
import { FileBackend } from '@hvemu/storage';
import { patternFor } from '@hvemu/storage/testing';
import { storageSim } from './sim.mjs';

const [path, sizeText] = process.argv.slice(2);
const backend = FileBackend.open(path, { createSize: Number(sizeText) });
const sim = storageSim({ disks: [{ backend }] });
const { client } = await sim.connect();
const sectors = Number(sizeText) / 512;
let next = 0;
for (let round = 0; ; round++) {
  // Eight writes in flight, each to sectors no other write touches.
  const batch = Array.from({ length: 8 }, () => {
    const lba = (next = (next + 9) % (sectors - 8));
    return { lba, seed: round + 1, blocks: 8 };
  });
  await Promise.all(
    batch.map(async (w) => {
      const done = await client.write(w.lba, patternFor(w.seed, w.lba, w.blocks, 512), 512, { fua: w.lba % 3 === 0 });
      if (done.srbStatus === 1) process.stdout.write(JSON.stringify({ acked: w }) + '\n');
    }),
  );
  if (round % 4 === 3) {
    const flushed = await client.synchronizeCache();
    if (flushed.srbStatus === 1) process.stdout.write(JSON.stringify({ flushed: round }) + '\n');
  }
}
