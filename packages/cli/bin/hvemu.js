#!/usr/bin/env node
// The `hvemu` command. This file is committed (npm links bins when it installs, before
// `npm ci`'s prepare step has compiled dist/), and loads the compiled CLI.
try {
  await import('../dist/main.js');
} catch (error) {
  if (error?.code === 'ERR_MODULE_NOT_FOUND' && String(error.message).includes('dist/main.js')) {
    process.stderr.write('hvemu: the CLI is not built yet (packages/cli/dist/main.js is missing): run npm run build\n');
    process.exit(2);
  }
  throw error;
}
