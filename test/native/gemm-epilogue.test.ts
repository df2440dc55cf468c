/**
 * GEMMs with fused epilogues (bias, tanh-GELU with its input kept, bias gradient).
 *
 * The cuBLASLt plan (native/ops/gemm_plan.h) is a pure function of the layout: here each plan is
 * executed by a column-major float64 interpreter with cuBLASLt's documented semantics (op(A), op(B),
 * leading dimensions, the epilogue by its cublasLtEpilogue_t value) over the row-major operands'
 * memory, and compared with the unfused row-major reference. The native op and the autograd layer
 * are checked on the CPU (the unfused path), and on CUDA with setCudaGemm('lt') against the CPU.
 */
import { Tensor, tidy, SiftError, cast, toDevice, linear, conv1d, gelu, slice, reshape } from '../../lib';
import { native } from '../../lib/engine/native';
import type { GemmEpilogue, GemmLtPlan } from '../../lib/engine/addon-types';
import { randomTensor, seededValues, expectClose, describeCuda } from '../helpers/gradcheck';

const N = () => native();
type Arr = ArrayLike<number>;

function values(t: Tensor): number[] {
  return Array.from(t.contiguous().toArray() as Arr, Number);
}

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SiftError);
    return (e as SiftError).code;
  }
  return undefined;
}

const geluTanh = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));

/** A row-major operand: logical rows x cols at mem[i * rs + j * cs]. */
interface Operand {
  mem: number[];
  rows: number;
  cols: number;
  rs: number;
  cs: number;
}

function operand(rows: number, cols: number, colMajor: boolean, seed: number): Operand {
  const mem = seededValues(rows * cols, seed);
  return colMajor ? { mem, rows, cols, rs: 1, cs: rows } : { mem, rows, cols, rs: cols, cs: 1 };
}

const at = (o: Operand, i: number, j: number) => o.mem[i * o.rs + j * o.cs];

/** Row-major reference of the epilogue GEMM: C = A @ B (+ bias, gelu), extra per the epilogue. */
function reference(a: Operand, b: Operand, epi: GemmEpilogue, bias: number[]): { out: number[]; extra: number[] } {
  const M = a.rows,
    K = a.cols,
    Nn = b.cols;
  const out = new Array<number>(M * Nn).fill(0);
  for (let i = 0; i < M; i++)
    for (let j = 0; j < Nn; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += at(a, i, k) * at(b, k, j);
      out[i * Nn + j] = s;
    }
  let extra: number[] = [];
  if (epi === 'bias' || epi.startsWith('gelu')) {
    for (let i = 0; i < M; i++) for (let j = 0; j < Nn; j++) out[i * Nn + j] += bias[j];
    if (epi === 'gelu_tanh_bias_aux') extra = out.slice();
    if (epi.startsWith('gelu')) for (let e = 0; e < out.length; e++) out[e] = geluTanh(out[e]);
  }
  if (epi === 'bias_grad_a')
    extra = Array.from({ length: M }, (_, i) => Array.from({ length: K }, (_, k) => at(a, i, k)).reduce((x, y) => x + y, 0));
  if (epi === 'bias_grad_b')
    extra = Array.from({ length: Nn }, (_, j) => Array.from({ length: K }, (_, k) => at(b, k, j)).reduce((x, y) => x + y, 0));
  return { out, extra };
}

/**
 * Runs a plan as cuBLASLt would: column-major A (the plan's "A" is the row-major b), B (the row-major
 * a), D with leading dimension ldc; epilogues by their cublasLtEpilogue_t values from cublasLt.h.
 * Reads outside a matrix's stored extent throw, so a wrong shape or leading dimension cannot pass.
 */
function execute(p: GemmLtPlan, aMem: number[], bMem: number[], bias: number[]): { d: number[]; extra: number[] } {
  expect(p.ok).toBe(true);
  expect(p.lda).toBeGreaterThanOrEqual(p.aRows);
  expect(p.ldb).toBeGreaterThanOrEqual(p.bRows);
  expect(p.ldc).toBeGreaterThanOrEqual(p.m);
  expect([p.transA ? p.aCols : p.aRows, p.transA ? p.aRows : p.aCols]).toEqual([p.m, p.k]);
  expect([p.transB ? p.bCols : p.bRows, p.transB ? p.bRows : p.bCols]).toEqual([p.k, p.n]);
  const read = (mem: number[], rows: number, cols: number, ld: number, i: number, j: number) => {
    if (i < 0 || i >= rows || j < 0 || j >= cols) throw new Error(`read (${i}, ${j}) outside ${rows} x ${cols}`);
    const v = mem[i + j * ld];
    if (v === undefined) throw new Error(`read past the end of memory at (${i}, ${j}), ld ${ld}`);
    return v;
  };
  const opA = (i: number, l: number) => (p.transA ? read(aMem, p.aRows, p.aCols, p.lda, l, i) : read(aMem, p.aRows, p.aCols, p.lda, i, l));
  const opB = (l: number, j: number) => (p.transB ? read(bMem, p.bRows, p.bCols, p.ldb, j, l) : read(bMem, p.bRows, p.bCols, p.ldb, l, j));
  const d = new Array<number>(p.ldc * p.n).fill(0);
  let extra: number[] = [];
  const aux = new Array<number>(p.auxLd * p.n).fill(0);
  for (let i = 0; i < p.m; i++)
    for (let j = 0; j < p.n; j++) {
      let s = 0;
      for (let l = 0; l < p.k; l++) s += opA(i, l) * opB(l, j);
      // cublasLtEpilogue_t: BIAS = 4, GELU_BIAS = 36, GELU_AUX_BIAS = 164 add bias[row of D].
      if (p.epilogue === 4 || p.epilogue === 36 || p.epilogue === 164) {
        expect(p.extraLen).toBe(p.m);
        s += bias[i];
      }
      if (p.epilogue === 164) aux[i + j * p.auxLd] = s;
      if (p.epilogue === 36 || p.epilogue === 164) s = geluTanh(s);
      d[i + j * p.ldc] = s;
    }
  if (p.epilogue === 256) {
    // BGRADA: bias gradient of length rows of D, reduced over k of op(A).
    expect(p.extraLen).toBe(p.m);
    extra = Array.from({ length: p.m }, (_, i) => Array.from({ length: p.k }, (_, l) => opA(i, l)).reduce((x, y) => x + y, 0));
  }
  if (p.epilogue === 512) {
    // BGRADB: length columns of D, reduced over k of op(B).
    expect(p.extraLen).toBe(p.n);
    extra = Array.from({ length: p.n }, (_, j) => Array.from({ length: p.k }, (_, l) => opB(l, j)).reduce((x, y) => x + y, 0));
  }
  if (p.epilogue === 164) {
    // The GELU input, read back as the row-major M x N matrix it is.
    extra = [];
    for (let j = 0; j < p.n; j++) for (let i = 0; i < p.m; i++) extra.push(aux[i + j * p.auxLd]);
  }
  // D is column-major m x n = row-major C (n x m) with row stride ldc.
  const c: number[] = [];
  for (let j = 0; j < p.n; j++) for (let i = 0; i < p.m; i++) c.push(d[i + j * p.ldc]);
  return { d: c, extra };
}

function plan(a: Operand, b: Operand, epi: GemmEpilogue, batch: number[] = []): GemmLtPlan {
  return N().gemmLtPlan([a.rows, b.cols, a.cols, a.rs, a.cs, b.rs, b.cs], batch, epi);
}

describe('cuBLASLt plans against the unfused semantics', () => {
  const T = 12,
    IN = 24,
    OUT = 16;
  // The products the engine's linear layers run, as (a, b) with their layouts.
  const products: { name: string; a: () => Operand; b: () => Operand; epilogues: GemmEpilogue[] }[] = [
    {
      name: 'linear forward x [T, in] @ W[out, in]^T',
      a: () => operand(T, IN, false, 1),
      b: () => operand(IN, OUT, true, 2),
      epilogues: ['none', 'bias', 'gelu_tanh_bias', 'gelu_tanh_bias_aux'],
    },
    {
      name: 'conv1d forward x [T, in] @ W[in, out]',
      a: () => operand(T, IN, false, 3),
      b: () => operand(IN, OUT, false, 4),
      epilogues: ['none', 'bias', 'gelu_tanh_bias', 'gelu_tanh_bias_aux'],
    },
    {
      name: 'linear weight gradient g^T [out, T] @ x [T, in] (bias gradient from g = A)',
      a: () => operand(OUT, T, true, 5),
      b: () => operand(T, IN, false, 6),
      epilogues: ['none', 'bias_grad_a'],
    },
    {
      name: 'conv1d weight gradient x^T [in, T] @ g [T, out] (bias gradient from g = B)',
      a: () => operand(IN, T, true, 7),
      b: () => operand(T, OUT, false, 8),
      epilogues: ['none', 'bias_grad_b'],
    },
    {
      name: 'input gradient g [T, out] @ W [out, in]',
      a: () => operand(T, OUT, false, 9),
      b: () => operand(OUT, IN, false, 10),
      epilogues: ['none'],
    },
    {
      name: 'both operands column-major',
      a: () => operand(T, IN, true, 11),
      b: () => operand(IN, OUT, true, 12),
      epilogues: ['none', 'bias', 'bias_grad_a', 'bias_grad_b'],
    },
  ];
  for (const pr of products)
    for (const epi of pr.epilogues)
      test(`${pr.name}: ${epi}`, () => {
        const a = pr.a(),
          b = pr.b();
        const bias = seededValues(b.cols, 99);
        const p = plan(a, b, epi);
        const got = execute(p, b.mem, a.mem, bias);
        const ref = reference(a, b, epi, bias);
        expectClose(got.d, ref.out, { atol: 1e-12, label: `${pr.name} ${epi} out` });
        expectClose(got.extra, ref.extra, { atol: 1e-12, label: `${pr.name} ${epi} extra` });
      });

  test('one strided batch without epilogue: strides swap with the operands', () => {
    const p = N().gemmLtPlan([5, 7, 3, 3, 1, 7, 1], [4, 15, 21, 35], 'none');
    expect(p.ok).toBe(true);
    expect([p.batch, p.strideA, p.strideB, p.strideC]).toEqual([4, 21, 15, 35]);
    expect([p.m, p.n, p.k, p.lda, p.ldb, p.ldc]).toEqual([7, 5, 3, 7, 3, 7]);
  });

  test('layouts cuBLASLt is not planned for fall back, with the reason', () => {
    const two = N().gemmLtPlan([5, 7, 3, 3, 1, 7, 1], [2, 30, 42, 70, 2, 15, 21, 35], 'none');
    expect(two.ok).toBe(false);
    expect(two.why).toMatch(/batch/);
    const batchedBias = N().gemmLtPlan([5, 7, 3, 3, 1, 7, 1], [4, 15, 21, 35], 'bias');
    expect(batchedBias.ok).toBe(false);
    // The GELU input's leading dimension (N) must be a multiple of 8.
    const odd = N().gemmLtPlan([4, 12, 3, 3, 1, 12, 1], [], 'gelu_tanh_bias_aux');
    expect(odd.ok).toBe(false);
    expect(odd.why).toMatch(/multiple of 8/);
    expect(N().gemmLtPlan([4, 12, 3, 3, 1, 12, 1], [], 'gelu_tanh_bias').ok).toBe(true);
    expect(code(() => N().gemmLtPlan([4, 12, 3, 3, 1, 12, 1], [], 'relu' as GemmEpilogue))).toBe('E_ARG');
    expect(code(() => N().gemmLtPlan([4, 12, 3], [], 'none'))).toBe('E_ARG');
  });
});

/** matmulEpilogue against the float64 reference, on `device`. */
function checkEpilogueOp(device: string, dtype: string, tol: number, expectFused: boolean | null): void {
  const M = 33,
    K = 40,
    Nn = 24;
  const cases: { ta: boolean; tb: boolean; epi: GemmEpilogue }[] = [
    { ta: false, tb: true, epi: 'bias' },
    { ta: false, tb: false, epi: 'bias' },
    { ta: false, tb: true, epi: 'gelu_tanh_bias' },
    { ta: false, tb: false, epi: 'gelu_tanh_bias_aux' },
    { ta: true, tb: false, epi: 'bias_grad_a' },
    { ta: true, tb: false, epi: 'bias_grad_b' },
    { ta: false, tb: false, epi: 'none' },
  ];
  cases.forEach((c, idx) =>
    tidy(() => {
      const aShape = c.ta ? [K, M] : [M, K];
      const bShape = c.tb ? [Nn, K] : [K, Nn];
      const a64 = randomTensor(aShape, 10 + idx, { scale: 0.5 });
      const b64 = randomTensor(bShape, 20 + idx, { scale: 0.5 });
      const bias64 = randomTensor([Nn], 30 + idx);
      const a = toDevice(cast(a64, dtype as 'f32'), device);
      const b = toDevice(cast(b64, dtype as 'f32'), device);
      const bias = toDevice(cast(bias64, dtype as 'f32'), device);
      // The reference reads the dtype-rounded inputs.
      const ra = values(toDevice(cast(a, 'f64'), 'cpu')),
        rb = values(toDevice(cast(b, 'f64'), 'cpu')),
        rbias = values(toDevice(cast(bias, 'f64'), 'cpu'));
      const opA: Operand = c.ta ? { mem: ra, rows: M, cols: K, rs: 1, cs: M } : { mem: ra, rows: M, cols: K, rs: K, cs: 1 };
      const opB: Operand = c.tb ? { mem: rb, rows: K, cols: Nn, rs: 1, cs: K } : { mem: rb, rows: K, cols: Nn, rs: Nn, cs: 1 };
      const ref = reference(opA, opB, c.epi, rbias);
      const addsBias = c.epi === 'bias' || c.epi.startsWith('gelu');
      const r = N().matmulEpilogue(a.handle, b.handle, c.ta, c.tb, c.epi, addsBias ? bias.handle : null);
      if (expectFused !== null && c.epi !== 'none') expect(`${c.epi} fused: ${r.fused}`).toBe(`${c.epi} fused: ${expectFused}`);
      const out = new Tensor(r.out);
      expect(out.shape).toEqual([M, Nn]);
      expect(out.device).toBe(a.device);
      const label = `${device} ${dtype} ${c.epi} (transA ${c.ta}, transB ${c.tb})`;
      expectClose(values(toDevice(cast(out, 'f64'), 'cpu')), ref.out, { atol: tol * Math.sqrt(K), rtol: tol, label });
      if (ref.extra.length) {
        expect(r.extra).not.toBeNull();
        const extra = new Tensor(r.extra!);
        // Bias gradients sum K products-free values: tolerance grows with K.
        expectClose(values(toDevice(cast(extra, 'f64'), 'cpu')), ref.extra, { atol: tol * K, rtol: tol, label: `${label} extra` });
      } else {
        expect(r.extra).toBeNull();
      }
    }),
  );
}

describe('matmulEpilogue (CPU: the GEMM, then the separate kernels)', () => {
  test('every epilogue, f64 and f32, against the reference', () => {
    checkEpilogueOp('cpu', 'f64', 1e-12, false);
    checkEpilogueOp('cpu', 'f32', 1e-5, false);
  });

  test('bad input: missing or misshapen bias, n-d operands, unknown epilogue', () => {
    tidy(() => {
      const a = randomTensor([4, 8], 1);
      const b = randomTensor([8, 6], 2);
      expect(code(() => N().matmulEpilogue(a.handle, b.handle, false, false, 'bias', null))).toBe('E_ARG');
      expect(code(() => N().matmulEpilogue(a.handle, b.handle, false, false, 'bias', randomTensor([5], 3).handle))).toBe('E_SHAPE');
      expect(code(() => N().matmulEpilogue(a.handle, b.handle, false, false, 'bias', randomTensor([6], 3, { dtype: 'f32' }).handle))).toBe(
        'E_DTYPE',
      );
      const a3 = randomTensor([2, 4, 8], 4);
      expect(code(() => N().matmulEpilogue(a3.handle, b.handle, false, false, 'bias', randomTensor([6], 3).handle))).toBe('E_SHAPE');
      expect(code(() => N().matmulEpilogue(a.handle, b.handle, false, false, 'gelu' as GemmEpilogue, null))).toBe('E_ARG');
    });
  });
});

/**
 * linear / conv1d with act 'gelu_tanh' (the epilogue path) on `device` against gelu(layer(x)) on
 * `refDevice`, values and gradients.
 */
function checkFusedLayers(device: string, dtype: string, tol: number, refDevice = device): void {
  for (const layout of ['linear', 'conv1d'] as const)
    for (const xShape of [
      [2, 5, 16],
      [7, 16],
    ])
      tidy(() => {
        const OUT = 24;
        const wShape = layout === 'linear' ? [OUT, 16] : [16, OUT];
        const run = (fused: boolean) => {
          const dev = fused ? device : refDevice;
          const make = (seed: number, shape: number[], scale = 1) =>
            toDevice(cast(randomTensor(shape, seed, { scale }), dtype as 'f32'), dev)
              .detach()
              .requiresGrad_();
          const x = make(1, xShape);
          const w = make(2, wShape, 0.3);
          const b = make(3, [OUT]);
          const f = layout === 'linear' ? linear : conv1d;
          const y = fused ? f(x, w, b, { act: 'gelu_tanh' }) : gelu(f(x, w, b), 'tanh');
          const seed = toDevice(cast(randomTensor(y.shape, 4), dtype as 'f32'), dev);
          y.backward(seed);
          return [y, x.grad!, w.grad!, b.grad!].map((t) => values(toDevice(cast(t, 'f64'), 'cpu')));
        };
        const fused = run(true);
        const plain = run(false);
        ['y', 'dx', 'dw', 'db'].forEach((name, i) =>
          expectClose(fused[i], plain[i], { atol: tol, rtol: tol, label: `${device} ${dtype} ${layout} [${xShape}] ${name}` }),
        );
      });
}

describe('linear and conv1d with a fused tanh-GELU (CPU)', () => {
  test('values and gradients equal gelu(layer(x))', () => {
    checkFusedLayers('cpu', 'f64', 1e-12);
    checkFusedLayers('cpu', 'f32', 1e-5);
  });
  test('layers ask whether CUDA GEMMs fuse epilogues; a CPU-only build never does', () => {
    if (!N().backends().cuda.compiled) expect(N().cudaGemmEpilogues()).toBe(false);
    expect(typeof N().cudaGemmEpilogues()).toBe('boolean');
  });
  test('an unknown act is refused', () => {
    tidy(() => {
      const x = randomTensor([3, 4], 1);
      const w = randomTensor([5, 4], 2);
      expect(code(() => linear(x, w, null, { act: 'relu' as 'gelu_tanh' }))).toBe('E_ARG');
    });
  });
});

describeCuda('cuBLASLt with fused epilogues', () => {
  let prev: 'auto' | 'kernel' | 'lt' = 'auto';
  beforeAll(() => {
    prev = N().setCudaGemm('lt');
  });
  afterAll(() => {
    N().setCudaGemm(prev);
  });
  const loaded = () => N().gemmInfo().cuda.startsWith('cublasLt');

  test('gemmInfo names cuBLASLt where libcublasLt loads', () => {
    // A machine with cuBLAS but no cuBLASLt keeps cuBLAS (and this suite checks that path).
    expect(N().gemmInfo().cuda).toMatch(/^(cublasLt|cublas) \(/);
    expect(N().cudaGemmEpilogues()).toBe(loaded());
    const lt = N().setCudaGemm('auto');
    expect(N().cudaGemmEpilogues()).toBe(false);
    N().setCudaGemm(lt);
  });

  for (const [dtype, tol] of [
    ['f32', 1e-4],
    ['f16', 2e-2],
    ['bf16', 6e-2],
  ] as const)
    test(`${dtype}: every epilogue against the float64 reference (fused where cuBLASLt loads)`, () => {
      checkEpilogueOp('cuda', dtype, tol, loaded() ? null : false);
    });

  test('the bf16 bias epilogue is fused (and which other epilogues cuBLASLt fuses here, printed)', () => {
    if (!loaded()) return;
    tidy(() => {
      const x = toDevice(randomTensor([64, 64], 1, { dtype: 'bf16' }), 'cuda');
      const w = toDevice(randomTensor([64, 64], 2, { dtype: 'bf16' }), 'cuda');
      const bias = toDevice(randomTensor([64], 3, { dtype: 'bf16' }), 'cuda');
      expect(N().matmulEpilogue(x.handle, w.handle, false, true, 'bias', bias.handle).fused).toBe(true);
      // Where the heuristic has no algorithm the op runs unfused (still correct, checked above);
      // the list says which ones the GPU check's figures had fused.
      const fused: Record<string, boolean> = {};
      for (const dtype of ['bf16', 'f16', 'f32'] as const) {
        const [a, b, c] = [x, w, bias].map((t) => cast(t, dtype));
        for (const epi of ['bias', 'gelu_tanh_bias', 'gelu_tanh_bias_aux'] as const)
          fused[`${dtype} ${epi}`] = N().matmulEpilogue(a.handle, b.handle, false, true, epi, c.handle).fused;
        fused[`${dtype} bias_grad_a (linear weight gradient)`] = N().matmulEpilogue(
          a.handle,
          b.handle,
          true,
          false,
          'bias_grad_a',
          null,
        ).fused;
        fused[`${dtype} bias_grad_b (conv1d weight gradient)`] = N().matmulEpilogue(
          a.handle,
          b.handle,
          true,
          false,
          'bias_grad_b',
          null,
        ).fused;
      }
      console.error(`cuBLASLt epilogues fused on this GPU: ${JSON.stringify(fused)}`);
      expect(Object.keys(fused)).toHaveLength(15);
    });
  });

  test('plain matmuls through cuBLASLt (batched, transposed) equal the CPU', () => {
    tidy(() => {
      for (const [aShape, bShape, ta, tb] of [
        [[3, 33, 20], [3, 20, 17], false, false],
        [[64, 48], [80, 64], true, true],
        [[4, 2, 16, 8], [4, 2, 16, 8], false, true],
      ] as [number[], number[], boolean, boolean][]) {
        const a = randomTensor(aShape, 5, { dtype: 'f32' });
        const b = randomTensor(bShape, 6, { dtype: 'f32' });
        const cpu = new Tensor(N().matmul(a.handle, b.handle, ta, tb));
        const gpu = new Tensor(N().matmul(toDevice(a, 'cuda').handle, toDevice(b, 'cuda').handle, ta, tb));
        expectClose(values(toDevice(gpu, 'cpu')), values(cpu), { atol: 1e-4, rtol: 1e-4, label: `lt matmul [${aShape}] @ [${bShape}]` });
      }
    });
  });

  test('operands that start mid-vector (a view one element into its buffer) equal the CPU', () => {
    // Leading dimensions stay multiples of 8: only the start addresses are 2- (bf16) or 4-byte
    // (f32) aligned, which the heuristic must be told (it assumes 256 bytes otherwise).
    tidy(() => {
      for (const [dtype, tol] of [
        ['bf16', 6e-2],
        ['f32', 1e-4],
      ] as const) {
        const shifted = (shape: number[], seed: number) => {
          const n = shape.reduce((p, d) => p * d, 1);
          const flat = toDevice(randomTensor([n + 1], seed, { dtype }), 'cuda');
          return reshape(slice(flat, 0, 1), shape);
        };
        const x = shifted([64, 64], 11);
        const w = shifted([96, 64], 12);
        const bias = shifted([96], 13);
        const cpu = (t: Tensor) => toDevice(t, 'cpu');
        const ref = N().matmulEpilogue(cpu(x).handle, cpu(w).handle, false, true, 'bias', cpu(bias).handle);
        const got = N().matmulEpilogue(x.handle, w.handle, false, true, 'bias', bias.handle);
        expectClose(values(toDevice(new Tensor(got.out), 'cpu')), values(new Tensor(ref.out)), {
          atol: tol,
          rtol: tol,
          label: `${dtype} bias epilogue on shifted operands`,
        });
        const plain = new Tensor(N().matmul(x.handle, w.handle, false, true));
        const plainRef = new Tensor(N().matmul(cpu(x).handle, cpu(w).handle, false, true));
        expectClose(values(toDevice(plain, 'cpu')), values(plainRef), {
          atol: tol,
          rtol: tol,
          label: `${dtype} matmul on shifted operands`,
        });
      }
    });
  });

  test('linear and conv1d with fused GELU and bias gradients: values and gradients equal the CPU', () => {
    checkFusedLayers('cuda', 'f32', 1e-4, 'cpu');
  });
});
