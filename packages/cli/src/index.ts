export { runRingDemo, type DemoOptions } from './ring-demo.js';
export { runVmDemo, type VmDemoResult } from './vm-demo.js';
