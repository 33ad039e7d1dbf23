// Child process for large-ram tests: creating a partition with a RAM region over 4 GiB used to
// abort the whole process ("free(): double free detected"), so the test runs it here and reads
// the JSON line this prints. Imports the compiled package (npm test builds it first).
import { KvmPartition } from '@hvemu/accel';

const GiB = 2 ** 30;
const layouts = {
  'split-3g-6g': [
    { gpa: 0, size: 3 * GiB },
    { gpa: 4 * GiB, size: 6 * GiB },
  ],
  'just-over-4g': [{ gpa: 4 * GiB, size: 4 * GiB + 4096 }],
  'sparse-8g': [
    { gpa: 0, size: 16 << 20 },
    { gpa: 4 * GiB, size: 8 * GiB },
  ],
};
const memory = layouts[process.argv[2]];
const p = KvmPartition.create({ memory });
try {
  const last = memory[memory.length - 1];
  const end = last.gpa + last.size;
  // Near the end of the region, and across the 4 GiB buffer boundary inside it.
  p.memory.writeU32(end - 4, 0xfeedf00d);
  p.memory.write(last.gpa + 4 * GiB - 2, Uint8Array.of(1, 2, 3, 4));
  const across = new Uint8Array(4);
  p.memory.read(last.gpa + 4 * GiB - 2, across);
  const result = {
    regions: p.memory.regions.map((r) => [r.gpa, r.size]),
    ramSize: p.memory.ramSize,
    tail: p.memory.readU32(end - 4),
    across: [...across],
    pastEnd: p.memory.contains(end, 1),
  };
  console.log(JSON.stringify(result));
} finally {
  p.close();
}
