#!/usr/bin/env node
// prepack: copies the repository's native/ sources (binding.gyp, src/) into this package so a
// packed @hvemu/accel can build its addon where it is installed; postpack (--clean) removes it.
'use strict';
const { cpSync, existsSync, rmSync } = require('node:fs');
const { join } = require('node:path');
const { packageRoot } = require('./native-dir.cjs');

const target = join(packageRoot, 'native');
const source = join(packageRoot, '..', '..', 'native');
rmSync(target, { recursive: true, force: true });
if (process.argv.includes('--clean')) process.exit(0);
if (!existsSync(join(source, 'binding.gyp'))) {
  console.error(`@hvemu/accel: ${source} has no binding.gyp; pack from the hvemu repository`);
  process.exit(1);
}
cpSync(join(source, 'binding.gyp'), join(target, 'binding.gyp'));
cpSync(join(source, 'src'), join(target, 'src'), { recursive: true });
