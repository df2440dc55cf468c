/**
 * Loads the native addon once. Looks at SIFT_FT_NATIVE (a path to a .node file), then the
 * package's build/Release. The addon throws SiftError directly (setErrorClass).
 */
import * as fs from 'fs';
import * as path from 'path';
import type { Addon } from './addon-types';
import { SiftError } from './errors';

function packageRoot(): string {
  // dist/lib/engine/native.js or lib/engine/native.ts: walk up to package.json.
  let dir = __dirname;
  for (let i = 0; i < 6; i++) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    dir = path.dirname(dir);
  }
  return path.join(__dirname, '..', '..');
}

function load(): Addon {
  const candidates: string[] = [];
  if (process.env.SIFT_FT_NATIVE) candidates.push(path.resolve(process.env.SIFT_FT_NATIVE));
  const root = packageRoot();
  candidates.push(path.join(root, 'build', 'Release', 'sift_ft.node'));
  candidates.push(path.join(root, 'build', 'Debug', 'sift_ft.node'));
  for (const c of candidates) {
    if (fs.existsSync(c)) {
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      const addon = require(c) as Addon;
      addon.setErrorClass(SiftError);
      return addon;
    }
  }
  throw new SiftError(
    'E_INTERNAL',
    `the sift-ft native addon is not built (looked in ${candidates.join(', ')}); run \`npm run build:native\``,
  );
}

let cached: Addon | undefined;
export function native(): Addon {
  if (!cached) cached = load();
  return cached;
}
