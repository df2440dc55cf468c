/**
 * Every environment variable read under lib/, native/ and scripts/ is in the registry
 * (lib/engine/env.ts; native ones also in native/core/env.h) and documented in docs/environment.md;
 * the TypeScript reads process.env only through lib/engine/env.ts.
 */
import * as fs from 'fs';
import * as path from 'path';
import { ENV_VARS } from '../../lib/engine/env';

const root = path.join(__dirname, '..', '..');

function files(dir: string, exts: string[]): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (exts.some((x) => e.name.endsWith(x))) out.push(p);
    }
  };
  walk(path.join(root, dir));
  return out;
}

const rel = (p: string) => path.relative(root, p);
const nativeHeader = fs.readFileSync(path.join(root, 'native', 'core', 'env.h'), 'utf8');
const headerNames = new Set([...nativeHeader.matchAll(/\{"([A-Z0-9_]+)",/g)].map((m) => m[1]));
const docs = fs.readFileSync(path.join(root, 'docs', 'environment.md'), 'utf8');

describe('environment variables', () => {
  test('native reads: each std::getenv names a variable listed in native/core/env.h and the registry', () => {
    const reads: string[] = [];
    for (const f of files('native', ['.cpp', '.cu', '.h', '.cuh'])) {
      const src = fs.readFileSync(f, 'utf8');
      for (const m of src.matchAll(/getenv\(\s*("?)([A-Za-z0-9_]+)"?\s*\)/g)) {
        if (m[1] === '"') reads.push(m[2]);
        else {
          // getenv(var) over a list of literals in the same statement (e.g. {"CUDA_HOME", "CUDA_PATH"}).
          const loop = src.slice(Math.max(0, m.index! - 200), m.index!);
          const lits = [...loop.matchAll(/"([A-Z][A-Z0-9_]+)"/g)].map((x) => x[1]);
          expect(`${rel(f)}: getenv(${m[2]}) over ${lits.join(', ')}`).toMatch(/over [A-Z]/);
          reads.push(...lits);
        }
      }
    }
    expect(reads.length).toBeGreaterThan(5);
    for (const name of reads) {
      expect(`${name} in native/core/env.h: ${headerNames.has(name)}`).toBe(`${name} in native/core/env.h: true`);
      expect(`${name}: ${ENV_VARS[name as keyof typeof ENV_VARS]?.readBy}`).toBe(`${name}: native`);
    }
    for (const name of headerNames) expect(reads).toContain(name);
  });

  test('TypeScript reads go through lib/engine/env.ts, and only registered library variables are read', () => {
    for (const f of files('lib', ['.ts'])) {
      if (rel(f) === path.join('lib', 'engine', 'env.ts')) continue;
      const src = fs.readFileSync(f, 'utf8');
      const direct = [...src.matchAll(/process\.env(\.[A-Za-z_]+|\[)/g)].map((m) => m[0]);
      expect(`${rel(f)}: ${direct.join(', ')}`).toBe(`${rel(f)}: `);
      for (const m of src.matchAll(/\benv(?:Flag)?\('([A-Za-z0-9_]+)'\)/g)) {
        expect(`${m[1]}: ${ENV_VARS[m[1] as keyof typeof ENV_VARS]?.readBy}`).toBe(`${m[1]}: library`);
      }
    }
  });

  test('build script reads are registered as build (or native, for toolkit folders) variables', () => {
    for (const f of files('scripts', ['.js'])) {
      const src = fs.readFileSync(f, 'utf8');
      const names = new Set([...src.matchAll(/process\.env\.([A-Za-z0-9_]+)/g)].map((m) => m[1]));
      for (const m of src.matchAll(/for \(const v of \[([^\]]+)\]\) if \(process\.env\[v\]\)/g)) {
        for (const x of m[1].matchAll(/'([A-Z0-9_]+)'/g)) names.add(x[1]);
      }
      // Variables npm sets for its scripts and the standard PATH are not sift-ft's.
      for (const name of names) {
        if (name === 'PATH' || name.startsWith('npm_')) continue;
        expect(`${rel(f)}: ${name} registered: ${name in ENV_VARS}`).toBe(`${rel(f)}: ${name} registered: true`);
      }
    }
  });

  test('every registered SIFT_ variable is documented in docs/environment.md, and nothing else is', () => {
    for (const name of Object.keys(ENV_VARS)) expect(`${name}: ${docs.includes(`\`${name}`)}`).toBe(`${name}: true`);
    const documented = new Set([...docs.matchAll(/`(SIFT_[A-Z0-9_]+)/g)].map((m) => m[1]));
    for (const name of documented) expect(`${name} registered: ${name in ENV_VARS}`).toBe(`${name} registered: true`);
  });
});
