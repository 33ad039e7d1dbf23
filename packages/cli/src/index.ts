export { runRingDemo, type DemoOptions } from './ring-demo.js';
