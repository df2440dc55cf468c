#!/usr/bin/env node
// Lists the native sources for binding.gyp (the CPU-only node-gyp build used when CMake is absent).
'use strict';
const fs = require('fs');
const path = require('path');
const root = path.join(__dirname, '..');
const dirs = ['native/core', 'native/cpu', 'native/ops', 'native/dist', 'native/binding'];
const files = [];
for (const d of dirs) {
  for (const f of fs.readdirSync(path.join(root, d)).sort()) if (f.endsWith('.cpp')) files.push(`${d}/${f}`);
}
files.push('native/cuda/runtime_stub.cpp');
process.stdout.write(files.join(' ') + '\n');
