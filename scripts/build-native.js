#!/usr/bin/env node
// Builds the native addon from source: `sift-ft build` runs it (in a clone, `npm install` too,
// through the "prepare" script). Published installs load a prebuilt addon and never run it.
//  - CMake present: cmake-js, with the CUDA backend when nvcc is found (static cudart, SASS for
//    75, 80, 86, 89 and 90 plus PTX, or --cuda-archs / SIFT_FT_CUDA_ARCHS="90;..." to override).
//  - --cuda: CUDA is required (fails without nvcc); --cpu-only or SIFT_FT_CPU_ONLY=1: no probe.
//  - No CMake (or SIFT_FT_BUILD_TOOL=node-gyp): node-gyp with binding.gyp, CPU only.
//  - --force: rebuild even when the sources, options and toolchain are those of the last build.
// Prints one line saying what was built and why; the tool output goes to build/build-native.log
// and is printed only when the build fails (or with SIFT_FT_VERBOSE_BUILD=1).
'use strict';
const { spawnSync, execFileSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.join(__dirname, '..');
const outDir = process.env.SIFT_FT_BUILD_DIR ? path.resolve(process.env.SIFT_FT_BUILD_DIR) : path.join(root, 'build');
const logPath = path.join(outDir, 'build-native.log');
const verbose = process.env.SIFT_FT_VERBOSE_BUILD === '1';
const DEFAULT_ARCHS = '75-real;80-real;86-real;89-real;90';

function option(name) {
  const a = process.argv.find((x) => x === `--${name}` || x.startsWith(`--${name}=`));
  if (!a) return undefined;
  return a.includes('=') ? a.slice(a.indexOf('=') + 1) : true;
}
const requireCuda = option('cuda') === true;
const cpuOnly = option('cpu-only') === true || process.env.SIFT_FT_CPU_ONLY === '1';
const archs = (typeof option('cuda-archs') === 'string' ? option('cuda-archs') : process.env.SIFT_FT_CUDA_ARCHS) || DEFAULT_ARCHS;

// "75-real;80-real;90" -> "75, 80, 90 (SASS) + PTX 90": what the summary line says.
function describeArchs(list) {
  const parts = list.split(/[;,]/).filter(Boolean);
  const sass = parts.filter((a) => !a.endsWith('-virtual')).map((a) => a.replace(/-(real|virtual)$/, ''));
  const ptx = parts.filter((a) => !a.endsWith('-real')).map((a) => a.replace(/-(real|virtual)$/, ''));
  return `archs ${sass.join(', ')}${ptx.length ? ` + PTX ${ptx.join(', ')}` : ''}`;
}

function which(cmd) {
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    const p = path.join(dir, cmd);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      /* keep looking */
    }
  }
  return null;
}

function findNvcc() {
  const candidates = [];
  if (process.env.CUDACXX) candidates.push(process.env.CUDACXX);
  for (const v of ['CUDA_HOME', 'CUDA_PATH', 'CUDA_ROOT']) if (process.env[v]) candidates.push(path.join(process.env[v], 'bin', 'nvcc'));
  const onPath = which('nvcc');
  if (onPath) candidates.push(onPath);
  candidates.push('/usr/local/cuda/bin/nvcc');
  for (const c of candidates) {
    try {
      fs.accessSync(c, fs.constants.X_OK);
      return fs.realpathSync(c);
    } catch {
      /* next */
    }
  }
  return null;
}

function nvccVersion(nvcc) {
  try {
    const out = execFileSync(nvcc, ['--version'], { encoding: 'utf8' });
    const m = /release ([0-9.]+)/.exec(out);
    return m ? m[1] : 'unknown';
  } catch {
    return null;
  }
}

// npm ships node-gyp; find it next to the npm that runs us.
function bundledNodeGyp() {
  const npmBin = which('npm');
  if (!npmBin) return null;
  const p = path.join(path.dirname(fs.realpathSync(npmBin)), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
  return fs.existsSync(p) ? p : null;
}

function npmConfig(key) {
  try {
    const v = execFileSync('npm', ['config', 'get', key], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return v && v !== 'undefined' && v !== 'null' ? v : null;
  } catch {
    return null;
  }
}

// A fingerprint of everything the build depends on: sources, build files, options and toolchain.
function buildStamp(parts) {
  const h = require('crypto').createHash('sha256');
  const walk = (dir) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else {
        h.update(path.relative(root, p));
        h.update(fs.readFileSync(p));
      }
    }
  };
  walk(path.join(root, 'native'));
  for (const f of ['CMakeLists.txt', 'binding.gyp', 'scripts/build-native.js', 'scripts/sources.js']) {
    if (fs.existsSync(path.join(root, f))) h.update(fs.readFileSync(path.join(root, f)));
  }
  h.update(JSON.stringify(parts));
  return h.digest('hex');
}

function main() {
  fs.mkdirSync(outDir, { recursive: true });
  const start = Date.now();
  // SIFT_FT_BUILD_TOOL=node-gyp forces the CMake-less path (CPU only), e.g. to test binding.gyp.
  const cmake = process.env.SIFT_FT_BUILD_TOOL === 'node-gyp' ? null : which('cmake');
  let cuda = false;
  let cudaWhy;
  let nvcc = null;
  if (requireCuda && cpuOnly) {
    console.error('sift-ft: --cuda and --cpu-only (or SIFT_FT_CPU_ONLY=1) contradict each other');
    process.exit(2);
  }
  if (cpuOnly) {
    cudaWhy = `CUDA off: ${option('cpu-only') ? '--cpu-only' : 'SIFT_FT_CPU_ONLY=1'}`;
  } else if (!cmake) {
    cudaWhy = 'CUDA off: CMake not found (node-gyp builds CPU only)';
  } else {
    nvcc = findNvcc();
    const ver = nvcc && nvccVersion(nvcc);
    if (!nvcc || !ver) {
      cudaWhy = 'CUDA off: nvcc not found (set CUDA_HOME or put nvcc on PATH to build it)';
    } else {
      cuda = true;
      cudaWhy = `CUDA on: nvcc ${ver} at ${nvcc}, ${describeArchs(archs)}, static cudart, cuBLAS loaded at run time`;
    }
  }
  if (requireCuda && !cuda) {
    console.error(`sift-ft: --cuda asked for the CUDA backend, but ${cudaWhy.replace(/^CUDA off: /, '')}`);
    process.exit(1);
  }

  let cmd;
  let args;
  if (cmake) {
    cmd = process.execPath;
    args = [
      require.resolve('cmake-js/bin/cmake-js'),
      'compile',
      '--out',
      outDir,
      '--parallel',
      String(Math.max(1, require('os').cpus().length)),
      '--log-level',
      'warn',
    ];
    if (cuda) {
      args.push('--CDSIFT_WITH_CUDA=ON', `--CDCMAKE_CUDA_COMPILER=${nvcc}`, `--CDSIFT_CUDA_ARCHS=${archs.replace(/,/g, ';')}`);
    } else {
      args.push('--CDSIFT_WITH_CUDA=OFF');
    }
  } else {
    const gyp = process.env.npm_config_node_gyp || which('node-gyp') || bundledNodeGyp();
    if (!gyp) {
      console.error('sift-ft: cannot build the native addon: neither cmake nor node-gyp was found');
      process.exit(1);
    }
    cmd = gyp.endsWith('.js') ? process.execPath : gyp;
    args = gyp.endsWith('.js') ? [gyp, 'rebuild'] : ['rebuild'];
    // Build against local Node headers when npm knows where they are (no download).
    const nodedir = process.env.npm_config_nodedir || npmConfig('nodedir');
    if (nodedir) args.push(`--nodedir=${nodedir}`);
  }

  // Up to date: the same sources, options and toolchain built this addon already (a second
  // `npm install`, or npx linking this checkout, should not rebuild for minutes).
  const addon = path.join(outDir, 'Release', 'sift_ft.node');
  const stampFile = path.join(outDir, 'Release', '.sift-build-stamp');
  const stamp = buildStamp({ args: args.slice(1), cuda, cudaWhy, node: process.versions.modules, napi: process.versions.napi });
  if (
    !process.argv.includes('--force') &&
    fs.existsSync(addon) &&
    fs.existsSync(stampFile) &&
    fs.readFileSync(stampFile, 'utf8') === stamp
  ) {
    console.log(`sift-ft: native addon up to date (${path.relative(root, addon)}); ${cudaWhy}; \`npm run build:native\` rebuilds it`);
    return;
  }

  const res = spawnSync(cmd, args, { cwd: root, encoding: 'utf8', maxBuffer: 256 * 1024 * 1024, env: process.env });
  const log = `$ ${cmd} ${args.join(' ')}\n${res.stdout || ''}\n${res.stderr || ''}`;
  fs.mkdirSync(outDir, { recursive: true }); // node-gyp's rebuild removes build/ first
  fs.writeFileSync(logPath, log);
  const secs = ((Date.now() - start) / 1000).toFixed(0);
  if (res.status !== 0) {
    process.stderr.write(log.split('\n').slice(-80).join('\n') + '\n');
    console.error(`sift-ft: native build FAILED after ${secs}s (${cmake ? 'cmake-js' : 'node-gyp'}); full log in ${logPath}`);
    process.exit(res.status || 1);
  }
  if (verbose) process.stdout.write(log);
  fs.writeFileSync(stampFile, stamp);
  const tool = cmake ? 'cmake-js' : 'node-gyp (CMake not found)';
  console.log(`sift-ft: built native addon with ${tool} in ${secs}s; CPU backend on; ${cudaWhy}`);
}

main();
