/**
 * `npm run bench`: every benchmark suite, measured side by side in one run (these machines
 * are noisy, so ratios between things measured together are what to compare). The last line
 * printed is one JSON object with every figure and ratio.
 */
import { benchAccel } from './accel.js';
import { benchRing } from './ring.js';
import { benchSynic } from './synic.js';
import { benchVmbus, benchVmbusKvm } from './vmbus.js';
import { benchTrace } from './trace.js';
import { benchNet } from './net.js';
import { benchStorage } from './storage.js';
import { benchBalloon } from './balloon.js';

const SUITES: Record<string, () => Record<string, number | string> | Promise<Record<string, number | string>>> = {
  ring: benchRing,
  accel: benchAccel,
  synic: benchSynic,
  vmbus: benchVmbus,
  'vmbus-kvm': benchVmbusKvm,
  trace: benchTrace,
  net: benchNet,
  storage: benchStorage,
  balloon: benchBalloon,
};

// `npm run bench -- synic vmbus-kvm` runs only the named suites (default: all, in this order).
const wanted = process.argv.slice(2);
for (const name of wanted) {
  if (!(name in SUITES)) {
    console.error(`unknown suite ${name}; suites: ${Object.keys(SUITES).join(', ')}`);
    process.exit(2);
  }
}
const figures: Record<string, number | string> = {
  node: process.version,
  date: new Date().toISOString(),
};
for (const [name, suite] of Object.entries(SUITES)) {
  if (wanted.length === 0 || wanted.includes(name)) Object.assign(figures, await suite());
}
console.log(JSON.stringify(figures));
