/**
 * `sift-ft bench`: runs the benchmarks of bench/run.ts. They live in the repository, not in the
 * published package, so the command runs from a clone (after `npm install`) and says so elsewhere.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { SiftError } from '../engine/errors';
import type { FlagSpec, Parsed } from './args';

export const benchFlags: Record<string, FlagSpec> = {};

export const benchHelp =
  "Runs the benchmarks of a clone of the repository (names and flags go to bench/run.ts: 'sift-ft bench gemm --size 1024'; no name lists them).";

/** The compiled runner: dist/bench/run.js next to dist/lib/cli, or from the package root. */
export function benchRunner(): string | null {
  const candidates = [path.join(__dirname, '..', '..', 'bench', 'run.js'), path.join(__dirname, '..', '..', 'dist', 'bench', 'run.js')];
  return candidates.find((p) => fs.existsSync(p)) ?? null;
}

/** Bench takes its arguments raw (its flags belong to each benchmark), so main() passes argv through. */
export function runBench(_f: Parsed, argv: string[] = []): number {
  const runner = benchRunner();
  if (!runner) {
    throw new SiftError(
      'E_UNSUPPORTED',
      'the benchmarks are not part of the installed package: they run from a clone of the repository (git clone, npm install, then `npm run bench -- <name>`)',
    );
  }
  const r = spawnSync(process.execPath, [runner, ...argv], { stdio: 'inherit', env: process.env });
  if (r.error) throw new SiftError('E_IO', `cannot run ${runner}: ${r.error.message}`);
  return r.status ?? 1;
}
