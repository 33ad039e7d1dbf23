/**
 * `npm run bench`: every benchmark suite, measured side by side in one run (these machines
 * are noisy, so ratios between things measured together are what to compare). The last line
 * printed is one JSON object with every figure and ratio.
 */
import { benchAccel } from './accel.js';
import { benchRing } from './ring.js';
import { benchSynic } from './synic.js';
import { benchVmbus, benchVmbusKvm } from './vmbus.js';

const figures: Record<string, number | string> = {
  node: process.version,
  date: new Date().toISOString(),
};
Object.assign(figures, benchRing());
Object.assign(figures, await benchAccel());
Object.assign(figures, await benchSynic());
Object.assign(figures, await benchVmbus());
Object.assign(figures, await benchVmbusKvm());
console.log(JSON.stringify(figures));
