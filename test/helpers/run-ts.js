// Runs a TypeScript file of this repository in a plain Node process (its own heap, no test runner
// around it), transpiling on load: `node test/helpers/run-ts.js bench/run.ts eventloop --steps=3`.
'use strict';
const fs = require('fs');
const path = require('path');
const ts = require('typescript');

const root = path.join(__dirname, '..', '..');
const cfg = ts.readConfigFile(path.join(root, 'tsconfig.json'), ts.sys.readFile);
const { options } = ts.parseJsonConfigFileContent(cfg.config, ts.sys, root);
const compilerOptions = { ...options, module: ts.ModuleKind.CommonJS, noEmit: false, sourceMap: false, declaration: false, inlineSourceMap: false };

require.extensions['.ts'] = (module, filename) => {
  const out = ts.transpileModule(fs.readFileSync(filename, 'utf8'), { fileName: filename, compilerOptions });
  module._compile(out.outputText, filename);
};

const file = path.resolve(process.argv[2]);
process.argv.splice(1, 1); // the file sees itself as argv[1], its arguments from argv[2]
require(file);
