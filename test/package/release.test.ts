/**
 * The release as users install it: `npm run release:pack` writes the main and platform tarballs from
 * this checkout's build (no second native build), a fresh project installs them with npm's install
 * scripts off, offline, and with a PATH that has Node.js and nothing else (no cmake, nvcc or
 * compiler), then runs `sift-ft info --json` and a SIFT training step through the API, from
 * CommonJS and from an ES module. publint and @arethetypeswrong/cli check the package's shape.
 */
import { spawnSync, SpawnSyncReturns } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const root = path.join(__dirname, '..', '..');
const sourceBuild = path.join(root, 'build', 'Release', 'sift_ft.node');
const addon = fs.existsSync(sourceBuild) ? sourceBuild : process.env.SIFT_FT_NATIVE;
const haveAddon = !!addon && fs.existsSync(addon);

/** npm's CLI script, run through this Node.js (so that the user PATH needs nothing but node). */
function npmCli(): string | null {
  if (process.env.npm_execpath && /npm-cli\.js$/.test(process.env.npm_execpath) && fs.existsSync(process.env.npm_execpath))
    return process.env.npm_execpath;
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const p = path.join(dir, 'npm');
    if (!fs.existsSync(p)) continue;
    const cli = path.join(path.dirname(fs.realpathSync(p)), 'npm-cli.js');
    if (fs.existsSync(cli)) return cli;
  }
  return null;
}
const npm = npmCli();
const d = haveAddon && npm ? describe : describe.skip;

const work = haveAddon && npm ? fs.mkdtempSync(path.join(os.tmpdir(), 'sift-ft-release-test-')) : os.tmpdir();
const out = path.join(work, 'out');
const project = path.join(work, 'project');
const bin = path.join(work, 'bin');
// What the user's shell has: Node.js (and npm through it), no build tools.
const userEnv: NodeJS.ProcessEnv = { PATH: bin, HOME: os.homedir(), TMPDIR: os.tmpdir(), npm_config_update_notifier: 'false' };

function sh(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeout?: number } = {}): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, {
    cwd: opts.cwd ?? root,
    env: opts.env ?? process.env,
    encoding: 'utf8',
    timeout: opts.timeout ?? 300000,
    maxBuffer: 64 * 1024 * 1024,
  });
}
const expectOk = (r: SpawnSyncReturns<string>, what: string) => {
  if (r.status !== 0) throw new Error(`${what} failed (${r.status ?? r.signal}):\n${r.stdout}\n${r.stderr}`);
};

/**
 * A package-lock.json for the fresh project: the two tarballs, and for the main package's
 * dependencies the versions and integrities this clone's lockfile resolved (so npm takes them from
 * its cache, offline, as `npm ci` left them). Only what the main package needs at run time.
 */
function projectLock(mainTgz: string, platformTgz: string, platformName: string): object {
  const repo = JSON.parse(fs.readFileSync(path.join(root, 'package-lock.json'), 'utf8')).packages as Record<
    string,
    Record<string, unknown>
  >;
  const rel = (f: string) => `file:${path.relative(project, f)}`;
  const mainPkg = JSON.parse(sh('tar', ['-xzOf', mainTgz, 'package/package.json']).stdout);
  const platPkg = JSON.parse(sh('tar', ['-xzOf', platformTgz, 'package/package.json']).stdout);
  const packages: Record<string, Record<string, unknown>> = {
    '': { name: 'release-check', version: '1.0.0', dependencies: { 'sift-ft': rel(mainTgz), [platformName]: rel(platformTgz) } },
    'node_modules/sift-ft': {
      version: mainPkg.version,
      resolved: rel(mainTgz),
      license: mainPkg.license,
      dependencies: mainPkg.dependencies,
      optionalDependencies: mainPkg.optionalDependencies,
      bin: mainPkg.bin,
      engines: mainPkg.engines,
    },
    [`node_modules/${platformName}`]: {
      version: platPkg.version,
      resolved: rel(platformTgz),
      os: platPkg.os,
      cpu: platPkg.cpu,
      libc: platPkg.libc,
      engines: platPkg.engines,
    },
  };
  // Node's resolution over the clone's tree: from the requiring package's folder upwards.
  const resolve = (from: string, name: string): string => {
    for (let dir = from; ; dir = dir.includes('/node_modules/') ? dir.slice(0, dir.lastIndexOf('/node_modules/')) : '') {
      const key = dir ? `${dir}/node_modules/${name}` : `node_modules/${name}`;
      if (repo[key]) return key;
      if (!dir) throw new Error(`${name} (needed by ${from || 'the root'}) is not in package-lock.json`);
    }
  };
  const queue: [string, Record<string, string>][] = [['', mainPkg.dependencies]];
  while (queue.length) {
    const [from, deps] = queue.shift()!;
    for (const name of Object.keys(deps ?? {})) {
      const key = resolve(from, name);
      if (packages[key]) continue;
      const { dev, devOptional, peer, ...entry } = repo[key];
      void dev;
      void devOptional;
      void peer;
      packages[key] = entry;
      queue.push([key, { ...(entry.dependencies as Record<string, string>), ...(entry.optionalDependencies as Record<string, string>) }]);
    }
  }
  return { name: 'release-check', version: '1.0.0', lockfileVersion: 3, requires: true, packages };
}

let packed: { main: string; platform: string; platformName: string; cuda: boolean; glibc?: string };
let addonCuda = false;
let installSeconds = 0;

d('release tarballs installed without scripts', () => {
  beforeAll(() => {
    const facts = sh(process.execPath, ['-e', `process.stdout.write(String(require(${JSON.stringify(addon)}).backends().cuda.compiled))`]);
    expectOk(facts, 'loading the addon');
    addonCuda = facts.stdout.trim() === 'true';
    const pack = sh(process.execPath, [
      path.join(root, 'scripts', 'release-pack.js'),
      out,
      `--addon=${addon}`,
      ...(addonCuda ? [] : ['--allow-cpu-only']),
    ]);
    expectOk(pack, 'release:pack');
    packed = JSON.parse(pack.stdout.trim().split('\n').pop()!);

    fs.mkdirSync(bin);
    fs.symlinkSync(process.execPath, path.join(bin, 'node'));
    fs.mkdirSync(project);
    fs.writeFileSync(
      path.join(project, 'package.json'),
      JSON.stringify({
        name: 'release-check',
        version: '1.0.0',
        private: true,
        dependencies: {
          'sift-ft': `file:${path.relative(project, packed.main)}`,
          [packed.platformName]: `file:${path.relative(project, packed.platform)}`,
        },
      }),
    );
    fs.writeFileSync(
      path.join(project, 'package-lock.json'),
      JSON.stringify(projectLock(packed.main, packed.platform, packed.platformName), null, 2),
    );
    const t0 = Date.now();
    const install = sh(process.execPath, [npm!, 'ci', '--offline', '--ignore-scripts', '--no-audit', '--no-fund'], {
      cwd: project,
      env: userEnv,
    });
    installSeconds = (Date.now() - t0) / 1000;
    expectOk(install, 'npm install of the tarballs');
    process.stdout.write(`release tarballs installed in ${installSeconds.toFixed(1)}s (offline, no scripts)\n`);
  }, 600000);

  afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

  test('the PATH of the install has no build tools', () => {
    for (const tool of ['cmake', 'nvcc', 'g++', 'make', 'python3']) {
      expect(fs.existsSync(path.join(bin, tool))).toBe(false);
    }
    expect(installSeconds).toBeLessThan(120);
  });

  test('the main tarball ships the library, the CLI and the native sources, and no development harness', () => {
    const list = sh('tar', ['-tzf', packed.main]).stdout.split('\n').filter(Boolean);
    for (const f of [
      'package/package.json',
      'package/README.md',
      'package/dist/lib/index.js',
      'package/dist/lib/index.mjs',
      'package/dist/lib/index.d.ts',
      'package/dist/lib/index.d.mts',
      'package/dist/lib/cli/main.js',
      'package/CMakeLists.txt',
      'package/scripts/build-native.js',
      'package/native/cuda/runtime.cu',
      'package/proto/onnx.proto',
    ]) {
      expect(list).toContain(f);
    }
    const dev = list.filter((f) =>
      /^package\/(bench|test|docs|\.ci|dist\/bench|build)\/|\.(js|ts)\.map$|\.tsbuildinfo$|release-pack|ensure-built|link-bin|gpu-check|experiment/.test(
        f,
      ),
    );
    expect(dev).toEqual([]);
    const pkg = JSON.parse(fs.readFileSync(path.join(project, 'node_modules', 'sift-ft', 'package.json'), 'utf8'));
    expect(pkg.scripts).toBeUndefined();
    // npm runs `node-gyp rebuild` on install for a package with a binding.gyp and no install
    // script, unless gypfile is false: the shipped binding.gyp is for `sift-ft build` only.
    if (list.includes('package/binding.gyp')) expect(pkg.gypfile).toBe(false);
    expect(pkg.devDependencies).toBeUndefined();
    expect(pkg.optionalDependencies).toEqual({ [packed.platformName]: pkg.version });
  });

  test('the platform package carries npm platform fields and what the binary needs', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(project, 'node_modules', ...packed.platformName.split('/'), 'package.json'), 'utf8'));
    expect(pkg.os).toEqual([process.platform]);
    expect(pkg.cpu).toEqual([process.arch]);
    if (process.platform === 'linux') expect(pkg.libc).toEqual(['glibc']);
    expect(pkg['sift-ft'].cuda).toBe(addonCuda);
    if (process.platform === 'linux') {
      // The documented floor: glibc 2.34 (Ubuntu 22.04, RHEL 9, Debian 12 and newer).
      const [maj, min] = String(pkg['sift-ft'].glibc).split('.').map(Number);
      expect(`glibc ${pkg['sift-ft'].glibc} <= 2.34: ${maj === 2 && min <= 34}`).toBe(`glibc ${pkg['sift-ft'].glibc} <= 2.34: true`);
      expect(pkg['sift-ft'].libstdcxx).toBeUndefined(); // libstdc++ is linked in
    }
  });

  test('sift-ft info --json loads the prebuilt addon, with CUDA compiled in when this build has it', () => {
    const r = sh(path.join(project, 'node_modules', '.bin', 'sift-ft'), ['info', '--json'], { cwd: project, env: userEnv });
    expectOk(r, 'sift-ft info');
    const info = JSON.parse(r.stdout);
    expect(info.addon.origin).toBe('prebuilt package');
    expect(info.addon.package).toBe(`${packed.platformName}@${info.version}`);
    expect(info.backends.cuda.compiled).toBe(addonCuda);
    if (!info.backends.cuda.usable) expect(info.backends.cuda.status).toMatch(/driver|GPU|compiled/);
    const text = sh(path.join(project, 'node_modules', '.bin', 'sift-ft'), ['info'], { cwd: project, env: userEnv });
    expect(text.stdout).toContain(`addon: ${packed.platformName}@`);
  });

  test('a SIFT training step through the API, from CommonJS and from an ES module', () => {
    const step = `
      const model = createModel({ model_type: 'gpt2', vocab_size: 61, n_positions: 32, n_embd: 16, n_layer: 2, n_head: 2 }, { task: 'causal-lm', seed: 1 });
      const batch = { inputIds: [[5, 9, 12, 3, 17, 22, 8], [7, 4, 30, 11, 2, 6, 1]] };
      batch.labels = batch.inputIds;
      const sift = new Sift(model, { sparseRate: 0.05, targetModules: 'all-linear' });
      tidy(() => model.forward(batch).loss.backward());
      sift.select();
      const opt = new SparseAdamW(sift, { lr: 1e-2 });
      const losses = [];
      for (let i = 0; i < 3; i++) {
        losses.push(tidy(() => { const l = model.forward(batch).loss; l.backward(); return l.item(); }));
        opt.step();
      }
      if (!losses.every(Number.isFinite) || !(losses[2] < losses[0])) throw new Error('loss did not fall: ' + losses);
      console.log(JSON.stringify({ losses, trainable: sift.summary().trainable }));
    `;
    fs.writeFileSync(path.join(project, 'step.cjs'), `const { createModel, Sift, SparseAdamW, tidy } = require('sift-ft');\n${step}`);
    fs.writeFileSync(path.join(project, 'step.mjs'), `import { createModel, Sift, SparseAdamW, tidy } from 'sift-ft';\n${step}`);
    for (const f of ['step.cjs', 'step.mjs']) {
      const r = sh(path.join(bin, 'node'), [f], { cwd: project, env: userEnv });
      expectOk(r, f);
      const res = JSON.parse(r.stdout.trim().split('\n').pop()!);
      expect(res.losses).toHaveLength(3);
      expect(res.trainable).toBeGreaterThan(0);
    }
  });

  test('commands that need a clone are not offered by the installed CLI', () => {
    const cli = path.join(project, 'node_modules', '.bin', 'sift-ft');
    const help = sh(cli, ['--help'], { cwd: project, env: userEnv });
    expect(help.stdout).toMatch(/^ {2}build /m);
    expect(help.stdout).not.toMatch(/^ {2}bench /m);
    const bench = sh(cli, ['bench'], { cwd: project, env: userEnv });
    expect(bench.status).not.toBe(0);
    expect(bench.stderr).toMatch(/clone of the repository/);
  });

  test('publint and @arethetypeswrong/cli find no problem in the main package', () => {
    const pkgDir = path.join(project, 'node_modules', 'sift-ft');
    const publint = sh(process.execPath, [path.join(root, 'node_modules', 'publint', 'src', 'cli.js'), '--strict', pkgDir]);
    expect(`${publint.stdout}${publint.stderr}`).not.toMatch(/warning|error|suggestion/i);
    expect(publint.status).toBe(0);
    const attw = sh(process.execPath, [
      path.join(root, 'node_modules', '@arethetypeswrong', 'cli', 'dist', 'index.js'),
      packed.main,
      '--format',
      'ascii',
    ]);
    if (attw.status !== 0) throw new Error(`attw:\n${attw.stdout}\n${attw.stderr}`);
  });
});

if (!haveAddon || !npm) {
  const why = !haveAddon ? `no addon built at ${sourceBuild} and SIFT_FT_NATIVE unset` : 'npm not found';
  test.skip(`release tarballs [skipped: ${why}]`, () => undefined);
}
