export { runRingDemo, type DemoOptions } from './ring-demo.js';
export { runVmDemo, type VmDemoResult } from './vm-demo.js';
export { runReplay, type ReplayReport } from './replay.js';
export { showTrace, type ShowFilter, type ShowSummary } from './trace-show.js';
