// Where the native addon's sources are: native/ at the repository root in the workspace, or
// packages' own native/ copy in a packed @hvemu/accel (prepack copies it in).
'use strict';
const { existsSync } = require('node:fs');
const { join } = require('node:path');

const packageRoot = join(__dirname, '..');
const candidates = [join(packageRoot, '..', '..', 'native'), join(packageRoot, 'native')];

function nativeDir() {
  const dir = candidates.find((d) => existsSync(join(d, 'binding.gyp')));
  if (!dir) throw new Error(`@hvemu/accel: no native sources (binding.gyp) in ${candidates.join(' or ')}`);
  return dir;
}

module.exports = { nativeDir, packageRoot };
