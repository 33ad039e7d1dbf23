import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const pkg = (p: string): string => fileURLToPath(new URL(`./packages/${p}`, import.meta.url));

export default defineConfig({
  resolve: {
    // Tests run against the TypeScript sources; worker threads (which vitest does not
    // transform) load the compiled dist/ that `npm test` builds first.
    alias: [
      { find: '@hvemu/vmbus/testing', replacement: pkg('vmbus/src/testing/index.ts') },
      { find: '@hvemu/synic/testing', replacement: pkg('synic/src/testing/index.ts') },
      { find: '@hvemu/accel/testing', replacement: pkg('accel/src/testing/index.ts') },
      { find: '@hvemu/net/testing', replacement: pkg('net/src/testing/index.ts') },
      { find: '@hvemu/storage/testing', replacement: pkg('storage/src/testing/index.ts') },
      { find: '@hvemu/balloon/testing', replacement: pkg('balloon/src/testing/index.ts') },
      { find: /^@hvemu\/([a-z-]+)$/, replacement: pkg('$1/src/index.ts') },
    ],
  },
  test: {
    include: ['packages/*/test/**/*.test.ts', 'test/**/*.test.ts'],
    // Real-kernel boots take minutes on this kind of KVM: `npm run test:linux` runs them.
    exclude: ['**/node_modules/**', '**/*.linux.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
