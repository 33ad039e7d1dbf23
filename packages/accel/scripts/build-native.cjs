#!/usr/bin/env node
// Builds hvemu_native.node with node-gyp, from the workspace's native/ or the packed copy.
// npm puts its own node-gyp on PATH for install scripts; the workspace also has it as a
// devDependency.
'use strict';
const { spawnSync } = require('node:child_process');
const { nativeDir } = require('./native-dir.cjs');

const dir = nativeDir();
const r = spawnSync('node-gyp', ['rebuild', `--directory=${dir}`], { stdio: 'inherit', shell: process.platform === 'win32' });
if (r.error) {
  console.error(`@hvemu/accel: cannot run node-gyp: ${r.error.message}`);
  process.exit(1);
}
process.exit(r.status ?? 1);
