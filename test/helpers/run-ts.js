// Runs a TypeScript file of this repository in a plain Node process (its own heap, no test runner
// around it): `node test/helpers/run-ts.js bench/run.ts eventloop --steps=3`. Files are transpiled
// on load and cached under the system's temporary folder (by path, size and mtime), so that a
// second run does not load the TypeScript compiler at all (its heap would weigh on the process).
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');

const root = path.join(__dirname, '..', '..');
const cacheDir = path.join(os.tmpdir(), `sift-ft-run-ts-${process.getuid ? process.getuid() : 'u'}`);
fs.mkdirSync(cacheDir, { recursive: true });

let compilerOptions = null;
function transpile(source, filename) {
  const ts = require('typescript');
  if (!compilerOptions) {
    const cfg = ts.readConfigFile(path.join(root, 'tsconfig.json'), ts.sys.readFile);
    const { options } = ts.parseJsonConfigFileContent(cfg.config, ts.sys, root);
    compilerOptions = {
      ...options,
      module: ts.ModuleKind.CommonJS,
      noEmit: false,
      sourceMap: false,
      declaration: false,
      inlineSourceMap: false,
    };
  }
  return ts.transpileModule(source, { fileName: filename, compilerOptions }).outputText;
}

require.extensions['.ts'] = (module, filename) => {
  const st = fs.statSync(filename);
  const key = crypto.createHash('sha256').update(`${filename}\0${st.size}\0${st.mtimeMs}`).digest('hex').slice(0, 32);
  const cached = path.join(cacheDir, `${key}.js`);
  let js;
  try {
    js = fs.readFileSync(cached, 'utf8');
  } catch {
    js = transpile(fs.readFileSync(filename, 'utf8'), filename);
    const tmp = `${cached}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, js);
    fs.renameSync(tmp, cached);
  }
  module._compile(js, filename);
};

const file = path.resolve(process.argv[2]);
process.argv.splice(1, 1); // the file sees itself as argv[1], its arguments from argv[2]
require(file);
