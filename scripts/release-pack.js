#!/usr/bin/env node
// `npm run release:pack -- DIR [--addon=FILE] [--allow-cpu-only] [--no-build]`: writes to DIR the
// tarballs of a release built from this checkout, ready for `npm publish <tarball>`:
//  - sift-ft-<version>.tgz: the main package (library, CLI, native sources for `sift-ft build`),
//    with the platform package as an optional dependency and no install script;
//  - sift-ft-<platform>-<version>.tgz: the prebuilt addon for this platform (@sift-ft/linux-x64-gnu
//    here) with os/cpu/libc fields, so that npm installs it only where it runs.
// The addon is this checkout's build (build/Release/sift_ft.node, as `npm install` or `sift-ft
// build` made it; --addon=FILE for another). A release addon has the CUDA backend: a CPU-only one is
// refused unless --allow-cpu-only (tests of the packaging on machines without nvcc). The TypeScript
// is compiled first (--no-build: use dist/ as it is). Prints what it wrote and a JSON line.
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const root = path.join(__dirname, '..');

function fail(msg) {
  console.error(`release:pack: ${msg}`);
  process.exit(1);
}

function parseArgs(argv) {
  const o = { dir: null, addon: path.join(root, 'build', 'Release', 'sift_ft.node'), allowCpuOnly: false, build: true };
  for (const a of argv) {
    if (a.startsWith('--addon=')) o.addon = path.resolve(a.slice('--addon='.length));
    else if (a === '--allow-cpu-only') o.allowCpuOnly = true;
    else if (a === '--no-build') o.build = false;
    else if (a.startsWith('--')) fail(`unknown flag ${a}`);
    else if (o.dir) fail(`one output folder, got ${o.dir} and ${a}`);
    else o.dir = path.resolve(a);
  }
  if (!o.dir) fail('usage: npm run release:pack -- DIR [--addon=FILE] [--allow-cpu-only] [--no-build]');
  return o;
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, ...opts });
  if (r.status !== 0) fail(`${cmd} ${args.join(' ')} failed:\n${r.stdout || ''}${r.stderr || ''}${r.error ? r.error.message : ''}`);
  return r.stdout;
}

// npm through the Node.js running this script (works where npm is not on PATH).
function npm(args, cwd) {
  const cli = process.env.npm_execpath && fs.existsSync(process.env.npm_execpath) ? process.env.npm_execpath : null;
  return cli ? run(process.execPath, [cli, ...args], { cwd }) : run('npm', args, { cwd });
}

// Highest GLIBC_x.y[.z] / GLIBCXX_ / CXXABI_ version the binary's dynamic symbols ask for (the
// strings are in .dynstr; no binutils needed).
function symbolVersions(file) {
  const text = fs.readFileSync(file).toString('latin1');
  const max = (prefix) => {
    let best = null;
    for (const m of text.matchAll(new RegExp(`\\b${prefix}_(\\d+)\\.(\\d+)(?:\\.(\\d+))?\\b`, 'g'))) {
      const v = [Number(m[1]), Number(m[2]), Number(m[3] || 0)];
      if (!best || v[0] > best[0] || (v[0] === best[0] && (v[1] > best[1] || (v[1] === best[1] && v[2] > best[2])))) best = v;
    }
    return best ? best.slice(0, best[2] ? 3 : 2).join('.') : null;
  };
  return { glibc: max('GLIBC'), libstdcxx: max('GLIBCXX') };
}

// What the addon reports about itself, from a child process (loading it here would keep it loaded).
function addonFacts(file) {
  const code = `const a=require(${JSON.stringify(file)});const b=a.backends().cuda;process.stdout.write(JSON.stringify({cuda:b.compiled,runtime:b.runtimeVersion||null,archs:b.probe&&b.probe.archs?b.probe.archs.split(','):[]}))`;
  return JSON.parse(run(process.execPath, ['-e', code]));
}

function main() {
  const o = parseArgs(process.argv.slice(2));
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  if (!fs.existsSync(o.addon)) fail(`no addon at ${o.addon}: build it first (\`npm install\` in the clone, or \`npx sift-ft build\`)`);
  fs.mkdirSync(o.dir, { recursive: true });
  const stage = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-ft-release-'));
  try {
    // The compiled TypeScript: from scratch into the staging folder (dist/ of the checkout is left
    // alone, and output of sources since moved or deleted cannot ship), or dist/ with --no-build.
    const dist = path.join(stage, 'dist');
    if (o.build) {
      run(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', path.join(root, 'tsconfig.json'), '--outDir', dist], {
        cwd: root,
      });
      // esm-entry loads the compiled index to list its exports: its dependencies are the clone's.
      const env = { ...process.env, NODE_PATH: path.join(root, 'node_modules') };
      run(process.execPath, [path.join(__dirname, 'esm-entry.js'), dist], { cwd: root, env });
    } else {
      fs.cpSync(path.join(root, 'dist'), dist, { recursive: true });
    }
    for (const f of ['lib/index.js', 'lib/index.mjs', 'lib/index.d.mts']) {
      if (!fs.existsSync(path.join(dist, f))) fail(`dist/${f} is missing: run \`npm run build:ts\``);
    }
    pack(o, pkg, stage, dist);
  } finally {
    fs.rmSync(stage, { recursive: true, force: true });
  }
}

function pack(o, pkg, stage, dist) {
  const { platformPackageName } = require(path.join(dist, 'lib', 'engine', 'native.js'));
  const platformName = platformPackageName();
  const facts = addonFacts(o.addon);
  if (!facts.cuda && !o.allowCpuOnly)
    fail(`${o.addon} has no CUDA backend; a release addon needs it (build with nvcc, or pass --allow-cpu-only)`);
  const versions = symbolVersions(o.addon);
  // The platform package: the addon, a README and package.json with npm's platform fields.
  const plat = path.join(stage, 'platform');
  fs.mkdirSync(plat);
  fs.copyFileSync(o.addon, path.join(plat, 'sift_ft.node'));
  const [osName, cpu, libc] = platformName.slice('@sift-ft/'.length).split('-');
  const backendsLine = facts.cuda ? `CPU and CUDA ${facts.runtime} (static runtime; ${facts.archs.join(', ')})` : 'CPU only';
  const platPkg = {
    name: platformName,
    version: pkg.version,
    description: `The prebuilt native addon of sift-ft for ${osName}-${cpu}${libc ? ` (${libc === 'gnu' ? 'glibc' : libc})` : ''}: ${backendsLine}`,
    license: pkg.license,
    ...(pkg.repository ? { repository: pkg.repository } : {}),
    os: [osName],
    cpu: [cpu],
    ...(libc ? { libc: [libc === 'gnu' ? 'glibc' : libc] } : {}),
    files: ['sift_ft.node'],
    engines: pkg.engines,
    'sift-ft': {
      cuda: facts.cuda,
      ...(facts.cuda ? { cudaRuntime: facts.runtime, cudaArchs: facts.archs } : {}),
      ...(versions.glibc ? { glibc: versions.glibc } : {}),
      ...(versions.libstdcxx ? { libstdcxx: versions.libstdcxx } : {}),
    },
  };
  fs.writeFileSync(path.join(plat, 'package.json'), `${JSON.stringify(platPkg, null, 2)}\n`);
  fs.writeFileSync(
    path.join(plat, 'README.md'),
    `# ${platformName}\n\nThe prebuilt native addon of [sift-ft](https://www.npmjs.com/package/sift-ft) for ${osName}-${cpu}: ${backendsLine}.\n` +
      `${versions.glibc ? `It needs glibc ${versions.glibc} or newer.` : ''} sift-ft installs it as an optional dependency; do not install it directly.\n`,
  );

  // The main package: what `npm pack` would ship from the checkout, with the release's package.json.
  const main = path.join(stage, 'main');
  // What `npm pack` would ship from the checkout, except the compiled TypeScript, which comes
  // from the staged build; npm pack in the staging folder applies the same "files" patterns.
  const listing = JSON.parse(npm(['pack', '--dry-run', '--json', '--ignore-scripts'], root));
  for (const f of listing[0].files) {
    if (f.path.startsWith('dist/')) continue;
    const dst = path.join(main, f.path);
    fs.mkdirSync(path.dirname(dst), { recursive: true });
    fs.copyFileSync(path.join(root, f.path), dst);
  }
  fs.cpSync(dist, path.join(main, 'dist'), { recursive: true });
  const mainPkg = { ...pkg };
  delete mainPkg.scripts;
  delete mainPkg.devDependencies;
  mainPkg.optionalDependencies = { ...(pkg.optionalDependencies || {}), [platformName]: pkg.version };
  fs.writeFileSync(path.join(main, 'package.json'), `${JSON.stringify(mainPkg, null, 2)}\n`);

  const written = [];
  for (const dir of [main, plat]) {
    const out = JSON.parse(npm(['pack', '--json', '--ignore-scripts', '--pack-destination', o.dir], dir));
    written.push({ name: out[0].name, file: path.join(o.dir, out[0].filename), size: out[0].size, files: out[0].files.length });
  }
  for (const w of written) console.log(`${w.file}  ${w.name}  ${(w.size / 1048576).toFixed(1)} MiB, ${w.files} files`);
  console.log(
    `addon: ${facts.cuda ? `CUDA ${facts.runtime}, archs ${facts.archs.join(', ')}` : 'CPU only'}; needs glibc ${versions.glibc ?? 'unknown'}` +
      `${versions.libstdcxx ? ` and libstdc++ (GLIBCXX_${versions.libstdcxx})` : ', libstdc++ linked in'}`,
  );
  console.log(JSON.stringify({ main: written[0].file, platform: written[1].file, platformName, ...platPkg['sift-ft'] }));
}

main();
