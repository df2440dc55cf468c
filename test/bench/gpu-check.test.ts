/**
 * bench/gpu-check.sh and bench/pack-for-device.sh: shell syntax, the stage plan (with and without a
 * GPU), and the PyTorch peers' Python syntax. The full CPU smoke run (`bash bench/gpu-check.sh
 * --cpu-smoke`) takes about a minute and is run by hand, not here.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { cudaAvailable } from '../../lib';

const root = path.join(__dirname, '..', '..');
const sh = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  spawnSync('bash', args, { cwd: root, encoding: 'utf8', env: { ...process.env, ...env }, timeout: 120000 });

describe('GPU check scripts', () => {
  test.each(['bench/gpu-check.sh', 'bench/pack-for-device.sh'])('%s parses', (f) => {
    const r = sh(['-n', f]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  test('plans every stage inside the budget, and falls back to the CPU parts without a GPU', () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'gpu-check-plan-'));
    try {
      const r = sh(['bench/gpu-check.sh', out, '--plan']);
      expect(r.status).toBe(0);
      const stages = [...r.stdout.matchAll(/^stage (\S+): up to (\d+)s/gm)].map((m) => [m[1], Number(m[2])] as const);
      const names = stages.map(([n]) => n);
      if (cudaAvailable()) {
        expect(r.stdout).toContain('mode: gpu');
        for (const n of ['train', 'peers-train', 'select', 'adamw', 'peers-kernels', 'tests-cuda', 'profile']) expect(names).toContain(n);
      } else {
        expect(r.stdout).toContain('mode: cpu-smoke');
        expect(r.stderr).toContain('no usable GPU');
        expect(names).toEqual(expect.arrayContaining(['train', 'select', 'adamw', 'profile']));
        expect(r.stdout).toMatch(/train --cpu-only --quick/);
      }
      expect(fs.readFileSync(path.join(out, 'env.txt'), 'utf8')).toMatch(/mode: /);
      // At most 8 files come back from a device call.
      expect(fs.readdirSync(out).length).toBeLessThanOrEqual(8);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  });

  // The bracket top-k and prefetch AdamW checks (new_kernel_check): the script's own stage() and
  // new_kernel_check() and their two calls, run by bash with a stand-in for jest that passes, fails
  // or skips each test file. The switch is exported only where the tests ran and passed; otherwise it
  // is unset (also when the caller's environment set it) and the fallback stage row is written.
  describe('new_kernel_check', () => {
    const script = fs.readFileSync(path.join(root, 'bench/gpu-check.sh'), 'utf8');
    const stageFn = script.match(/^stage\(\) \{\n[\s\S]*?\n\}\n/m)?.[0];
    const checkFn = script.match(/^ {2}new_kernel_check\(\) \{\n[\s\S]*?\n {2}\}\n/m)?.[0];
    const calls = script.match(/^ {2}new_kernel_check [a-z].*$/gm) ?? [];

    type Outcome = 'pass' | 'fail' | 'skip';
    function simulate(select: Outcome, adamw: Outcome, opts: { plan?: boolean; env?: NodeJS.ProcessEnv } = {}) {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gpu-check-nkc-'));
      try {
        // jest's summary line as the script greps it; 'skip': the CUDA tests skipped (no GPU).
        const fake = [
          'case "$1" in *select*) o=$FAKE_SELECT ;; *optim*) o=$FAKE_ADAMW ;; *) exit 9 ;; esac',
          'case "$o" in',
          '  pass) echo "Tests:       40 skipped, 3 passed, 43 total"; exit 0 ;;',
          '  fail) echo "Tests:       1 failed, 2 passed, 3 total"; exit 1 ;;',
          '  skip) echo "Tests:       43 skipped, 43 total"; exit 0 ;;',
          'esac',
        ].join('\n');
        fs.writeFileSync(path.join(dir, 'fakejest.sh'), fake);
        const harness = [
          'set -uo pipefail',
          `WORK='${dir}'; BENCH='${dir}/bench.jsonl'; TESTS='${dir}/tests.txt'; LOG='${dir}/log.txt'`,
          `PLAN=${opts.plan ? 1 : 0}; START=$SECONDS; DEADLINE=$((SECONDS + 600))`,
          `JEST=(bash '${dir}/fakejest.sh')`,
          ': > "$BENCH"',
          'say() { echo "[say] $*" >&2; }',
          stageFn,
          'SELECT_KERNELS=radix',
          'ADAMW_KERNELS=rounds',
          checkFn,
          ...calls,
          // What a later stage's process sees (exported or not), and the bench's kernel lists.
          `sh -c 'echo "select=\${SIFT_FT_CUDA_SELECT-unset} adamw=\${SIFT_FT_CUDA_SPARSE_ADAMW-unset}"'`,
          'echo "kernels=$SELECT_KERNELS/$ADAMW_KERNELS"',
        ].join('\n');
        const r = spawnSync('bash', ['-c', harness], {
          cwd: root,
          encoding: 'utf8',
          env: { ...process.env, FAKE_SELECT: select, FAKE_ADAMW: adamw, ...opts.env },
          timeout: 60000,
        });
        const rows = fs
          .readFileSync(path.join(dir, 'bench.jsonl'), 'utf8')
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as { stage: string; rc: number | null; status: string });
        return { status: r.status, stdout: r.stdout, stderr: r.stderr, rows: rows.map((x) => [x.stage, x.rc, x.status]) };
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    }

    test('the script has the functions and the two calls', () => {
      expect(stageFn).toBeDefined();
      expect(checkFn).toBeDefined();
      expect(calls.map((c) => c.trim().split(' ')[1])).toEqual(['select-check', 'adamw-check']);
    });

    test('both pass: the switches are exported and the bench times both kernels', () => {
      const r = simulate('pass', 'pass', { env: { SIFT_FT_CUDA_SELECT: undefined, SIFT_FT_CUDA_SPARSE_ADAMW: undefined } });
      expect(r.status).toBe(0);
      expect(r.stdout).toContain('select=bracket adamw=prefetch');
      expect(r.stdout).toContain('kernels=radix,bracket/rounds,prefetch');
      expect(r.rows).toEqual([
        ['select-check', 0, 'ok'],
        ['adamw-check', 0, 'ok'],
      ]);
    });

    test('a failed or skipped check unsets its switch (even one set by the caller) and records the fallback', () => {
      const env = { SIFT_FT_CUDA_SELECT: 'bracket', SIFT_FT_CUDA_SPARSE_ADAMW: 'prefetch' };
      const failed = simulate('fail', 'pass', { env });
      expect(failed.stdout).toContain('select=unset adamw=prefetch');
      expect(failed.stdout).toContain('kernels=radix/rounds,prefetch');
      expect(failed.rows).toEqual([
        ['select-check', 1, 'error'],
        ['select-fallback', null, 'radix'],
        ['adamw-check', 0, 'ok'],
      ]);
      expect(failed.stderr).toContain('bracket top-k check failed (see tests.txt)');

      const skipped = simulate('pass', 'skip', { env });
      expect(skipped.stdout).toContain('select=bracket adamw=unset');
      expect(skipped.stdout).toContain('kernels=radix,bracket/rounds');
      expect(skipped.rows).toEqual([
        ['select-check', 0, 'ok'],
        ['adamw-check', 3, 'error'],
        ['adamw-fallback', null, 'rounds'],
      ]);
      expect(skipped.stderr).toContain('prefetch sparse AdamW check failed (see tests.txt)');
    });

    test('--plan: the stages are listed, nothing is exported or recorded', () => {
      const r = simulate('pass', 'pass', { plan: true, env: { SIFT_FT_CUDA_SELECT: undefined, SIFT_FT_CUDA_SPARSE_ADAMW: undefined } });
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(/^stage select-check: up to 180s/m);
      expect(r.stdout).toMatch(/^stage adamw-check: up to 90s/m);
      expect(r.stdout).toContain('select=unset adamw=unset');
      expect(r.stdout).toContain('kernels=radix/rounds');
      expect(r.rows).toEqual([]);
    });
  });

  test('rejects unknown flags', () => {
    expect(sh(['bench/gpu-check.sh', '--nope']).status).toBe(2);
  });

  test('the PyTorch peers compile', () => {
    const py = ['python3', '/usr/bin/python3'].find((p) => spawnSync(p, ['--version']).status === 0);
    if (!py) return; // no Python here: nothing to check
    for (const f of ['bench/peers/torch_train.py', 'bench/peers/torch_kernels.py']) {
      const src = fs.readFileSync(path.join(root, f), 'utf8');
      const r = spawnSync(py, ['-c', 'import ast,sys; ast.parse(sys.stdin.read())'], { input: src, encoding: 'utf8' });
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
    }
  });
});
