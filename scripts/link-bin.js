#!/usr/bin/env node
// npm links the bins of dependencies into node_modules/.bin, but not the bin of the project being
// installed. Linking ours there lets `npx sift-ft ...` run this checkout's CLI right after
// `npm install`, with no registry lookup.
'use strict';
const fs = require('fs');
const path = require('path');
const root = path.join(__dirname, '..');
const target = path.join(root, 'dist', 'lib', 'cli', 'main.js');
const binDir = path.join(root, 'node_modules', '.bin');
if (!fs.existsSync(target) || !fs.existsSync(path.join(root, 'node_modules'))) process.exit(0);
fs.mkdirSync(binDir, { recursive: true });
fs.chmodSync(target, 0o755);
const link = path.join(binDir, 'sift-ft');
try {
  fs.unlinkSync(link);
} catch {
  /* not there yet */
}
fs.symlinkSync(path.relative(binDir, target), link);
