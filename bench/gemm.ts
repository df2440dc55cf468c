/**
 * GEMM throughput: GFLOP/s of square products and transformer projection shapes on each usable
 * backend: the CPU with sift-ft's kernels and with OpenBLAS when it can be loaded (and their
 * ratio), CUDA with cuBLAS, cuBLASLt (where libcublasLt loads) and the fallback kernel; the shapes
 * include the backward's input- and weight-gradient products. Prints one JSON object per measurement,
 * then a table. Timing: one warm-up, then the median of repeats, each ended by synchronize().
 *
 * Flags: --cpu-only, --cuda-only, --quick (fewer shapes and repeats), --dtypes=f32,bf16,...,
 * --openblas-core=SkylakeX (sets OPENBLAS_CORETYPE before OpenBLAS loads: OpenBLAS versions that
 * do not know the CPU fall back to old SSE kernels, e.g. 0.3.21 on Sapphire Rapids in a VM).
 */
import { randn, cudaAvailable, tidy, Tensor, backends } from '../lib';
import { native } from '../lib/engine/native';
import type { DType } from '../lib/engine/dtype';
import { markdownTable, repeatTimed, timedCall } from './measure';

export const description = 'matrix product GFLOP/s (CPU: sift-ft vs OpenBLAS; CUDA: cuBLAS, cuBLASLt and the fallback)';

interface Shape {
  name: string;
  M: number;
  N: number;
  K: number;
  /**
   * 'NN': A @ B (a linear layer's input gradient g @ W); 'NT': x @ W^T as in a linear layer's forward
   * (W [N, K] read through a transpose flag); 'TN': g^T @ x, its weight gradient (g [K, M]).
   */
  layout: 'NN' | 'NT' | 'TN';
}

const squares: Shape[] = [256, 512, 1024, 2048].map((s) => ({ name: `${s}^3`, M: s, N: s, K: s, layout: 'NN' as const }));
// GPT-2 small with a batch of 8 x 512 tokens: attention projections, MLP up and down; LLaMA-ish MLP.
const transformer: Shape[] = [
  { name: 'gpt2 qkv/out 4096x768x768', M: 4096, N: 768, K: 768, layout: 'NT' },
  { name: 'gpt2 mlp-up 4096x3072x768', M: 4096, N: 3072, K: 768, layout: 'NT' },
  { name: 'gpt2 mlp-down 4096x768x3072', M: 4096, N: 768, K: 3072, layout: 'NT' },
  { name: 'llama mlp 4096x2816x1024', M: 4096, N: 2816, K: 1024, layout: 'NT' },
  // The backward of the same layers: input gradients (NN) and weight gradients (TN, K = tokens).
  { name: 'gpt2 dgrad mlp-up 4096x768x3072', M: 4096, N: 768, K: 3072, layout: 'NN' },
  { name: 'gpt2 dgrad mlp-down 4096x3072x768', M: 4096, N: 3072, K: 768, layout: 'NN' },
  { name: 'gpt2 wgrad qkv/out 768x768x4096', M: 768, N: 768, K: 4096, layout: 'TN' },
  { name: 'gpt2 wgrad mlp-up 3072x768x4096', M: 3072, N: 768, K: 4096, layout: 'TN' },
  { name: 'gpt2 wgrad mlp-down 768x3072x4096', M: 768, N: 3072, K: 4096, layout: 'TN' },
  { name: 'llama wgrad mlp 2816x1024x4096', M: 2816, N: 1024, K: 4096, layout: 'TN' },
];

interface Result {
  bench: 'gemm';
  device: string;
  impl: string;
  dtype: DType;
  shape: string;
  M: number;
  N: number;
  K: number;
  layout: string;
  ms: number;
  gflops: number;
  repeats: number;
}

function time(device: string, shape: Shape, dtype: DType, quick: boolean): { ms: number; repeats: number } {
  return tidy(() => {
    const transA = shape.layout === 'TN';
    const a = transA ? randn([shape.K, shape.M], { dtype, device }) : randn([shape.M, shape.K], { dtype, device });
    const b = shape.layout === 'NT' ? randn([shape.N, shape.K], { dtype, device }) : randn([shape.K, shape.N], { dtype, device });
    const transB = shape.layout === 'NT';
    // The first call is the warm-up (packing buffers, cuBLAS handle and heuristics).
    const once = () => timedCall(device, () => new Tensor(native().matmul(a.handle, b.handle, transA, transB)));
    return repeatTimed(once, quick ? 300 : 1000, quick ? 5 : 15);
  });
}

function measure(device: string, impl: string, shapes: Shape[], dtype: DType, quick: boolean, out: Result[]): void {
  for (const s of shapes) {
    const { ms, repeats } = time(device, s, dtype, quick);
    const r: Result = {
      bench: 'gemm',
      device,
      impl,
      dtype,
      shape: s.name,
      M: s.M,
      N: s.N,
      K: s.K,
      layout: s.layout,
      ms: Number(ms.toFixed(3)),
      gflops: Number(((2 * s.M * s.N * s.K) / (ms * 1e6)).toFixed(1)),
      repeats,
    };
    console.log(JSON.stringify(r));
    out.push(r);
  }
}

function table(results: Result[]): void {
  const columns = [...new Set(results.map((r) => `${r.device} ${r.impl} ${r.dtype}`))];
  const rows = [...new Set(results.map((r) => `${r.shape} ${r.layout}`))];
  const cell = (row: string, col: string) =>
    results.find((r) => `${r.shape} ${r.layout}` === row && `${r.device} ${r.impl} ${r.dtype}` === col);
  // ours / OpenBLAS per dtype, when both ran.
  const ratios: { label: string; ours: string; ref: string }[] = [];
  for (const dt of [...new Set(results.map((r) => r.dtype))]) {
    const ours = columns.find((c) => c.startsWith('cpu sift-ft') && c.endsWith(` ${dt}`));
    const ref = columns.find((c) => c.startsWith('cpu openblas') && c.endsWith(` ${dt}`));
    if (ours && ref) ratios.push({ label: `ours/openblas ${dt}`, ours, ref });
  }
  const header = ['shape (MxNxK)', ...columns.map((c) => `${c} GFLOP/s`), ...ratios.map((r) => r.label)];
  const body = rows.map((row) => {
    const vals = columns.map((c) => cell(row, c)?.gflops.toFixed(1) ?? '-');
    const rs = ratios.map((r) => {
      const o = cell(row, r.ours),
        b = cell(row, r.ref);
      return o && b ? (o.gflops / b.gflops).toFixed(2) : '-';
    });
    return [row, ...vals, ...rs];
  });
  console.log('\n' + markdownTable(header, body));
}

export async function run(args: string[]): Promise<void> {
  const quick = args.includes('--quick');
  const dtArg = args.find((a) => a.startsWith('--dtypes='));
  const dtypes = (dtArg ? dtArg.slice('--dtypes='.length).split(',') : ['f32']) as DType[];
  const shapes = quick ? [squares[1], squares[2], transformer[0], transformer[6]] : [...squares, ...transformer];
  const core = args.find((a) => a.startsWith('--openblas-core='));
  if (core) process.env.OPENBLAS_CORETYPE = core.slice('--openblas-core='.length);
  const N = native();
  const results: Result[] = [];
  const b = backends();
  console.error(
    `# gemm bench: cpu ${b.cpu.threads} threads, cuda ${b.cuda.usable ? b.cuda.devices.map((d) => d.name).join(', ') : 'not usable'}`,
  );

  if (!args.includes('--cuda-only')) {
    const impls: string[] = ['native'];
    if (N.setCpuGemm('openblas')) impls.push('openblas');
    for (const impl of impls) {
      N.setCpuGemm(impl as 'native');
      const name = N.gemmInfo().cpu.startsWith('openblas')
        ? 'openblas'
        : `sift-ft ${
            N.gemmInfo()
              .cpu.replace(/^sift-ft /, '')
              .split(' microkernel')[0]
          }`;
      console.error(`# cpu: ${N.gemmInfo().cpu}`);
      // OpenBLAS takes only f32/f64; f16/bf16 always use our kernels.
      for (const dt of dtypes) if (impl === 'native' || dt === 'f32' || dt === 'f64') measure('cpu', name, shapes, dt, quick, results);
    }
    N.setCpuGemm('auto');
  }

  if (!args.includes('--cpu-only') && cudaAvailable()) {
    const prev = N.setCudaGemm('auto');
    try {
      for (const path of ['cublas', 'cublaslt', 'fallback']) {
        N.setCudaGemm(path === 'fallback' ? 'kernel' : path === 'cublaslt' ? 'lt' : 'auto');
        const lib = N.gemmInfo().cuda;
        if (path === 'cublas' && !lib.startsWith('cublas (')) {
          console.error(`# cuda: cuBLAS not loadable (${lib}); fallback only`);
          continue;
        }
        if (path === 'cublaslt' && !lib.startsWith('cublasLt')) {
          console.error(`# cuda: cuBLASLt not loadable (${lib})`);
          continue;
        }
        console.error(`# cuda: ${lib}`);
        const cudaDtypes = [...new Set<DType>(['f32', 'bf16', ...dtypes])];
        for (const dt of cudaDtypes) measure('cuda', path === 'fallback' ? 'sift-ft-kernel' : path, shapes, dt, quick, results);
      }
    } finally {
      N.setCudaGemm(prev);
    }
  }
  table(results);
}
