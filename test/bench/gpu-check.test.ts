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
