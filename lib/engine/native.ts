/**
 * Loads the native addon once, from the first of: SIFT_FT_NATIVE (a path to a .node file), a source
 * build in the package (build/Release, made by `sift-ft build` or by `npm install` in a clone), the
 * prebuilt platform package (@sift-ft/<platform>, an optional dependency). The addon throws
 * SiftError directly (setErrorClass).
 */
import * as fs from 'fs';
import * as path from 'path';
import type { Addon } from './addon-types';
import { env } from './env';
import { SiftError } from './errors';

export function packageRoot(): string {
  // dist/lib/engine/native.js or lib/engine/native.ts: walk up to package.json.
  let dir = __dirname;
  for (let i = 0; i < 6; i++) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    dir = path.dirname(dir);
  }
  return path.join(__dirname, '..', '..');
}

/** The C library a Linux Node.js runs on: 'gnu' (glibc) or 'musl'. */
function linuxLibc(): 'gnu' | 'musl' {
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  return header?.glibcVersionRuntime ? 'gnu' : 'musl';
}

/** The name of the prebuilt package for this platform, e.g. '@sift-ft/linux-x64-gnu'. */
export function platformPackageName(platform: string = process.platform, arch: string = process.arch, libc?: string): string {
  const suffix = platform === 'linux' ? `-${libc ?? linuxLibc()}` : '';
  return `@sift-ft/${platform}-${arch}${suffix}`;
}

export type AddonOrigin = 'SIFT_FT_NATIVE' | 'source build' | 'prebuilt package';

export interface AddonSource {
  origin: AddonOrigin;
  path: string;
  /** The platform package's name and version when the addon came from it. */
  package?: string;
}

interface Candidate extends AddonSource {
  /** The platform package's build facts (package.json "sift-ft" field): what it needs to load. */
  requires?: { glibc?: string };
}

function candidates(): Candidate[] {
  const out: Candidate[] = [];
  const explicit = env('SIFT_FT_NATIVE');
  if (explicit) out.push({ origin: 'SIFT_FT_NATIVE', path: path.resolve(explicit) });
  const root = packageRoot();
  for (const kind of ['Release', 'Debug']) out.push({ origin: 'source build', path: path.join(root, 'build', kind, 'sift_ft.node') });
  const name = platformPackageName();
  try {
    const manifestPath = require.resolve(`${name}/package.json`, { paths: [root] });
    const manifest = JSON.parse(fs.readFileSync(manifestPath, 'utf8')) as { version: string; 'sift-ft'?: { glibc?: string } };
    out.push({
      origin: 'prebuilt package',
      path: path.join(path.dirname(manifestPath), 'sift_ft.node'),
      package: `${name}@${manifest.version}`,
      requires: { glibc: manifest['sift-ft']?.glibc },
    });
  } catch {
    /* not installed: no prebuilt addon for this platform, or optional dependencies omitted */
  }
  return out;
}

let loadedFrom: AddonSource | undefined;

function load(): Addon {
  const list = candidates();
  for (const c of list) {
    if (!fs.existsSync(c.path)) {
      if (c.origin === 'SIFT_FT_NATIVE') throw new SiftError('E_IO', `SIFT_FT_NATIVE points at ${c.path}, which does not exist`);
      continue;
    }
    let addon: Addon;
    try {
      addon = require(c.path) as Addon;
    } catch (e) {
      const glibc = c.requires?.glibc ? ` (it needs glibc ${c.requires.glibc} or newer)` : '';
      throw new SiftError(
        'E_IO',
        `cannot load the sift-ft native addon ${c.package ?? c.path}${glibc}: ${(e as Error).message}; build one for this machine with \`npx sift-ft build\``,
      );
    }
    addon.setErrorClass(SiftError);
    loadedFrom = { origin: c.origin, path: c.path, ...(c.package ? { package: c.package } : {}) };
    return addon;
  }
  throw new SiftError(
    'E_IO',
    `the sift-ft native addon is missing: no source build in ${path.join(packageRoot(), 'build')} and no prebuilt package ` +
      `${platformPackageName()} (none is published for this platform, or optional dependencies were omitted). ` +
      'Build it from source with `npx sift-ft build` (needs CMake or node-gyp, and a C++17 compiler; nvcc for CUDA).',
  );
}

let cached: Addon | undefined;
export function native(): Addon {
  if (!cached) cached = load();
  return cached;
}

/** Where the loaded addon came from (loads it if needed). */
export function addonSource(): AddonSource {
  native();
  return loadedFrom!;
}
