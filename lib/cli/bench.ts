/** `sift-ft bench`: runs the benchmarks of bench/run.ts (present in a source checkout, built to dist/bench). */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { SiftError } from '../engine/errors';
import type { FlagSpec, Parsed } from './args';

export const benchFlags: Record<string, FlagSpec> = {};

export const benchHelp = "Runs benchmarks (names and flags go to bench/run.ts: 'sift-ft bench gemm --size 1024'; no name lists them).";

/** The compiled runner: dist/bench/run.js next to dist/lib/cli, or from the package root. */
export function benchRunner(): string | null {
  const candidates = [path.join(__dirname, '..', '..', 'bench', 'run.js'), path.join(__dirname, '..', '..', 'dist', 'bench', 'run.js')];
  return candidates.find((p) => fs.existsSync(p)) ?? null;
}

/** Bench takes its arguments raw (its flags belong to each benchmark), so main() passes argv through. */
export function runBench(_f: Parsed, argv: string[] = []): number {
  const runner = benchRunner();
  if (!runner) throw new SiftError('E_IO', 'the benchmarks are not in this installation (run from a source checkout after `npm run build:ts`)');
  const r = spawnSync(process.execPath, [runner, ...argv], { stdio: 'inherit', env: process.env });
  if (r.error) throw new SiftError('E_IO', `cannot run ${runner}: ${r.error.message}`);
  return r.status ?? 1;
}
