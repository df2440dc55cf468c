/**
 * Host-side checks of CUDA code that need nvcc but no GPU: test/native/host/*.cu are compiled with
 * the CUDA toolkit (the pieces under test are __host__ __device__) and run on the CPU. Skipped with
 * the reason where nvcc is absent.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const root = path.join(__dirname, '..', '..');
const nvcc = [process.env.CUDACXX, 'nvcc', '/usr/local/cuda/bin/nvcc'].find((c) => !!c && spawnSync(c, ['--version']).status === 0);
const cudaInclude = nvcc
  ? path.join(
      path.dirname(
        path.dirname(
          fs.realpathSync(
            nvcc.includes('/') ? nvcc : spawnSync('sh', ['-c', `command -v ${nvcc}`], { encoding: 'utf8' }).stdout.trim() || nvcc,
          ),
        ),
      ),
      'include',
    )
  : '';
const describeNvcc = nvcc ? describe : describe.skip;

// Compiles test/native/host/NAME.cu with the core sources, `extra` sources (relative to the
// repository) and the CUDA runtime stub, runs it (for at most runMs), and expects its "0 of N cases
// wrong" line.
function compileAndRun(name: string, extra: string[] = [], runMs = 60000): void {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-cuda-host-'));
  try {
    const exe = path.join(dir, name);
    const core = fs
      .readdirSync(path.join(root, 'native/core'))
      .filter((f) => f.endsWith('.cpp'))
      .map((f) => path.join(root, 'native/core', f));
    const args = [
      '-std=c++17',
      '-O1',
      `-I${cudaInclude}`,
      `-I${path.join(cudaInclude, 'cccl')}`,
      path.join(root, `test/native/host/${name}.cu`),
      ...core,
      ...extra.map((f) => path.join(root, f)),
      path.join(root, 'native/cuda/runtime_stub.cpp'),
      '-o',
      exe,
    ];
    const c = spawnSync(nvcc!, args, { encoding: 'utf8', timeout: 240000 });
    expect(c.stderr.split('\n').filter((l) => /error/.test(l))).toEqual([]);
    expect(c.status).toBe(0);
    const r = spawnSync(exe, [], { encoding: 'utf8', timeout: runMs });
    expect(r.stdout).toMatch(/^0 of \d+ cases wrong/m);
    expect(r.status).toBe(0);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describeNvcc(nvcc ? 'CUDA host-side checks (nvcc)' : 'CUDA host-side checks [skipped: nvcc not found]', () => {
  test('the strided indexer maps every index as the naive div/mod chain does', () => compileAndRun('strided_indexer'), 300000);
  test(
    'the vector paths map every vector to the elements the scalar paths use; the column-reduction plan reads every row once',
    () => compileAndRun('vector_plan'),
    300000,
  );
  test(
    "the bracket top-k, simulated pass by pass on the host with the kernels' decisions, selects what cpu::topk selects",
    () => compileAndRun('select_bracket', ['native/cpu/select.cpp', 'native/cpu/parallel.cpp'], 300000),
    600000,
  );
  test(
    'the multi-tensor optimizer plan: every tensor in one launch, a LLaMA-7B target set in one',
    () => compileAndRun('optim_plan'),
    300000,
  );
});
