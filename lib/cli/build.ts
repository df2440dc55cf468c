/**
 * `sift-ft build`: builds the native addon from the sources shipped in the package (for a platform
 * without a prebuilt package, other CUDA architectures, or development). The build goes to the
 * package's build/Release, which is loaded before the prebuilt package; it prints one line saying
 * what was built and why (scripts/build-native.js).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { SiftError } from '../engine/errors';
import { packageRoot } from '../engine/native';
import type { FlagSpec, Parsed } from './args';

export const buildFlags: Record<string, FlagSpec> = {
  cuda: { type: 'boolean', help: 'require the CUDA backend (fails when nvcc is not found); default: CUDA when nvcc is found' },
  'cpu-only': { type: 'boolean', help: 'build the CPU backend only, without looking for nvcc' },
  'cuda-archs': {
    type: 'string',
    help: "CUDA architectures, CMake syntax (default '75-real;80-real;86-real;89-real;90': machine code for 7.5 to 9.0 plus PTX)",
  },
  force: { type: 'boolean', help: 'rebuild even when the sources, options and toolchain are unchanged' },
};

export const buildHelp =
  'Builds the native addon from source into the package (CMake and a C++17 compiler, or node-gyp for CPU only; nvcc for CUDA).';

/** The arguments scripts/build-native.js takes for these flags. */
export function buildArgs(flags: Parsed): string[] {
  if (flags.cuda && flags['cpu-only']) throw new SiftError('E_ARG', '--cuda and --cpu-only contradict each other');
  const args: string[] = [];
  if (flags.cuda) args.push('--cuda');
  if (flags['cpu-only']) args.push('--cpu-only');
  if (typeof flags['cuda-archs'] === 'string') {
    if (!/^[0-9a-z;,-]+$/.test(flags['cuda-archs']))
      throw new SiftError('E_ARG', `--cuda-archs: expected e.g. '86' or '80-real;90', got '${flags['cuda-archs']}'`);
    args.push(`--cuda-archs=${flags['cuda-archs']}`);
  }
  if (flags.force) args.push('--force');
  return args;
}

export function runBuild(flags: Parsed): number {
  const root = packageRoot();
  const script = path.join(root, 'scripts', 'build-native.js');
  if (!fs.existsSync(script)) throw new SiftError('E_IO', `the build script is missing from this installation (${script})`);
  const r = spawnSync(process.execPath, [script, ...buildArgs(flags)], { cwd: root, stdio: 'inherit' });
  if (r.error) throw new SiftError('E_IO', `cannot run ${script}: ${r.error.message}`);
  return r.status ?? 1;
}
