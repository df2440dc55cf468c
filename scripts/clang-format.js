#!/usr/bin/env node
// clang-format over native/ (.clang-format at the root): `--write` formats in place, `--check`
// lists the files that differ and exits 1. Uses clang-format from PATH; it is not an npm
// dependency (Debian/Ubuntu: apt-get install clang-format).
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.join(__dirname, '..');
const mode = process.argv.includes('--write') ? 'write' : process.argv.includes('--check') ? 'check' : null;
if (!mode) {
  console.error('usage: node scripts/clang-format.js --write | --check');
  process.exit(2);
}
const tool = 'clang-format';
const probe = spawnSync(tool, ['--version'], { encoding: 'utf8' });
if (probe.error || probe.status !== 0) {
  console.error(`clang-format not found (${tool}): install it (apt-get install clang-format)`);
  process.exit(1);
}
const files = [];
(function walk(dir) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) walk(p);
    else if (/\.(cpp|h|cu|cuh)$/.test(e.name)) files.push(p);
  }
})(path.join(root, 'native'));
let differ = 0;
for (const f of files) {
  if (mode === 'write') {
    const r = spawnSync(tool, ['-i', '--style=file', f], { stdio: 'inherit' });
    if (r.status !== 0) process.exit(r.status || 1);
  } else {
    const r = spawnSync(tool, ['--style=file', '--dry-run', '--Werror', f], { encoding: 'utf8' });
    if (r.status !== 0) {
      differ++;
      console.log(path.relative(root, f));
    }
  }
}
if (mode === 'check' && differ) {
  console.error(`${differ} of ${files.length} native files are not formatted (npm run format)`);
  process.exit(1);
}
