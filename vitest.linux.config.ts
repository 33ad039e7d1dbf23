// `npm run test:linux`: the real-kernel tests (*.linux.test.ts) alone, one at a time, with long
// timeouts; the same module aliases as vitest.config.ts.
import { defineConfig } from 'vitest/config';
import base from './vitest.config.js';

export default defineConfig({
  resolve: base.resolve,
  test: {
    include: ['packages/*/test/**/*.linux.test.ts'],
    testTimeout: 30 * 60_000,
    hookTimeout: 30 * 60_000,
    fileParallelism: false,
  },
});
