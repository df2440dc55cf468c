#!/usr/bin/env node
// Builds what is missing before tests or benchmarks: the native addon and the TypeScript output.
'use strict';
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');
const root = path.join(__dirname, '..');
const addon = process.env.SIFT_FT_NATIVE || path.join(root, 'build', 'Release', 'sift_ft.node');
function run(args) {
  const r = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status || 1);
}
if (!fs.existsSync(addon)) run([path.join(__dirname, 'build-native.js')]);
if (!fs.existsSync(path.join(root, 'dist', 'lib', 'index.js')) || process.argv.includes('--ts')) {
  run([require.resolve('typescript/bin/tsc'), '-p', path.join(root, 'tsconfig.json')]);
  run([path.join(__dirname, 'esm-entry.js')]);
}
