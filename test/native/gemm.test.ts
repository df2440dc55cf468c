/**
 * The native matmul against a float64 reference computed here: odd sizes, K = 1, vectors,
 * transposed views and flags, broadcast and strided batches, non-BLAS layouts (copied), every
 * dtype, every CPU microkernel this machine can run (and OpenBLAS when loadable), errors, and
 * CUDA (cuBLAS and the fallback kernel) against the CPU.
 */
import { Tensor, tensor, tidy, SiftError, transpose, permute, slice, expand, cast, toDevice } from '../../lib';
import { native } from '../../lib/engine/native';
import { randomTensor, expectClose, describeCuda } from '../helpers/gradcheck';

type Arr = ArrayLike<number>;
const N = () => native();

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SiftError);
    return (e as SiftError).code;
  }
  return undefined;
}

function values(t: Tensor): number[] {
  return Array.from(t.contiguous().toArray() as Arr, Number);
}

/** float64 reference of a @ b for logical shapes [...ba, M, K] and [...bb, K, N] with broadcasting. */
function reference(a: number[], aShape: number[], b: number[], bShape: number[]): { out: number[]; shape: number[] } {
  const M = aShape[aShape.length - 2],
    K = aShape[aShape.length - 1],
    Nn = bShape[bShape.length - 1];
  const ab = aShape.slice(0, -2),
    bb = bShape.slice(0, -2);
  const nd = Math.max(ab.length, bb.length);
  const pa = Array(nd - ab.length)
      .fill(1)
      .concat(ab),
    pb = Array(nd - bb.length)
      .fill(1)
      .concat(bb);
  const batch = pa.map((d, i) => Math.max(d, pb[i]));
  const count = batch.reduce((x, y) => x * y, 1);
  const out: number[] = [];
  for (let z = 0; z < count; z++) {
    let rem = z,
      ia = 0,
      ib = 0,
      sa = 1,
      sb = 1;
    for (let d = nd - 1; d >= 0; d--) {
      const i = rem % batch[d];
      rem = Math.floor(rem / batch[d]);
      ia += (pa[d] === 1 ? 0 : i) * sa;
      ib += (pb[d] === 1 ? 0 : i) * sb;
      sa *= pa[d];
      sb *= pb[d];
    }
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < Nn; j++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += a[ia * M * K + i * K + k] * b[ib * K * Nn + k * Nn + j];
        out.push(s);
      }
    }
  }
  return { out, shape: [...batch, M, Nn] };
}

/** Runs the native matmul on (possibly view) operands and checks it against the reference. */
function check(a: Tensor, b: Tensor, opts: { transA?: boolean; transB?: boolean; atol?: number; rtol?: number } = {}): void {
  tidy(() => {
    const la = opts.transA ? transpose(a, -2, -1) : a;
    const lb = opts.transB ? transpose(b, -2, -1) : b;
    const ref = reference(values(la), la.shape, values(lb), lb.shape);
    const y = new Tensor(N().matmul(a.handle, b.handle, !!opts.transA, !!opts.transB));
    expect(y.shape).toEqual(ref.shape);
    expect(y.dtype).toBe(a.dtype);
    const K = la.shape[la.ndim - 1];
    const f64 = a.dtype === 'f64';
    expectClose(values(y), ref.out, {
      atol: opts.atol ?? (f64 ? 1e-12 : 2e-6) * Math.max(K, 1),
      rtol: opts.rtol ?? (f64 ? 1e-12 : 1e-5),
      label: `[${a.shape}]${opts.transA ? '^T' : ''} @ [${b.shape}]${opts.transB ? '^T' : ''} ${a.dtype}`,
    });
  });
}

const shapes: [number, number, number][] = [
  [1, 1, 1],
  [1, 7, 1],
  [7, 1, 5],
  [1, 33, 129],
  [129, 33, 1],
  [7, 7, 7],
  [33, 17, 65],
  [13, 257, 31],
  [257, 300, 129],
  [200, 520, 70],
  [3, 5, 4133],
];

const cpuGemms = ['native:avx512', 'native:avx2', 'native:generic', 'openblas'] as const;
const usable = cpuGemms.filter((g) => {
  const ok = N().setCpuGemm(g);
  N().setCpuGemm('auto');
  return ok;
});

afterAll(() => N().setCpuGemm('auto'));

describe('gemmInfo / setCpuGemm', () => {
  test('describe the GEMMs in use', () => {
    const info = N().gemmInfo();
    expect(typeof info.cpu).toBe('string');
    expect(typeof info.cuda).toBe('string');
    expect(info.cpu).toMatch(/sift-ft .* microkernel, \d+ threads?|openblas/);
    expect(usable).toContain('native:generic');
  });

  test('forcing a kernel shows in gemmInfo; unknown names are E_ARG', () => {
    expect(N().setCpuGemm('native:generic')).toBe(true);
    expect(N().gemmInfo().cpu).toMatch(/generic/);
    expect(N().setCpuGemm('native')).toBe(true);
    expect(N().gemmInfo().cpu).not.toMatch(/forced/);
    expect(code(() => N().setCpuGemm('bogus' as 'auto'))).toBe('E_ARG');
    N().setCpuGemm('auto');
  });
});

describe.each(usable)('CPU GEMM %s', (gemm) => {
  beforeAll(() => expect(N().setCpuGemm(gemm)).toBe(true));
  afterAll(() => N().setCpuGemm('auto'));

  test.each(['f32', 'f64'])('odd shapes, %s', (dtype) => {
    shapes.forEach(([m, k, n], i) => {
      const a = randomTensor([m, k], 10 + i, { dtype });
      const b = randomTensor([k, n], 50 + i, { dtype });
      check(a, b);
      a.dispose();
      b.dispose();
    });
  });

  test('transposed views and transpose flags give the same products', () => {
    for (const [m, k, n] of [
      [37, 45, 29],
      [130, 260, 70],
      [1, 9, 40],
      [40, 9, 1],
    ] as [number, number, number][]) {
      tidy(() => {
        const a = randomTensor([m, k], 3, { dtype: 'f32' });
        const b = randomTensor([k, n], 4, { dtype: 'f32' });
        const at = randomTensor([k, m], 5, { dtype: 'f32' });
        const bt = randomTensor([n, k], 6, { dtype: 'f32' });
        check(transpose(at), b);
        check(a, transpose(bt));
        check(transpose(at), transpose(bt));
        check(at, b, { transA: true });
        check(a, bt, { transB: true });
        check(at, bt, { transA: true, transB: true });
        // A transposed view with a transpose flag is the original row-major layout again.
        check(transpose(a), bt, { transA: true, transB: true });
      });
    }
  });

  test('broadcast and strided batches', () => {
    tidy(() => {
      check(randomTensor([2, 3, 7, 9], 1, { dtype: 'f32' }), randomTensor([3, 9, 5], 2, { dtype: 'f32' }));
      check(randomTensor([4, 1, 7, 9], 1, { dtype: 'f64' }), randomTensor([1, 3, 9, 5], 2, { dtype: 'f64' }));
      check(randomTensor([5, 33, 20], 1, { dtype: 'f32' }), randomTensor([20, 17], 2, { dtype: 'f32' })); // 3-D x 2-D
      check(randomTensor([33, 20], 1, { dtype: 'f32' }), randomTensor([5, 20, 17], 2, { dtype: 'f32' })); // 2-D x 3-D
      check(randomTensor([64, 7, 9], 1, { dtype: 'f32' }), randomTensor([64, 9, 5], 2, { dtype: 'f32' })); // many small
      check(randomTensor([3, 130, 70], 1, { dtype: 'f32' }), randomTensor([3, 70, 150], 2, { dtype: 'f32' }));
      // Permuted batch dims ([H, B] -> [B, H]): batch strides that do not merge.
      const q = randomTensor([3, 2, 6, 8], 7, { dtype: 'f32' });
      const k = randomTensor([2, 3, 8, 6], 8, { dtype: 'f32' });
      check(permute(q, [1, 0, 2, 3]), k);
      check(permute(q, [1, 0, 3, 2]), k, { transA: true });
      // Batch slice with a stride: every other matrix.
      const big = randomTensor([6, 7, 9], 9, { dtype: 'f32' });
      const every2 = new Tensor(N().view(big.handle, [3, 7, 9], [126, 9, 1], 0));
      check(every2, randomTensor([3, 9, 4], 10, { dtype: 'f32' }));
    });
  });

  test('layouts a BLAS cannot take are copied first', () => {
    tidy(() => {
      const base = randomTensor([40, 60], 11, { dtype: 'f32' });
      // Every other column: neither row- nor column-major.
      const strided = new Tensor(N().view(base.handle, [40, 30], [60, 2], 1));
      check(strided, randomTensor([30, 12], 12, { dtype: 'f32' }));
      // Row stride 0 (an expanded row).
      const row = randomTensor([1, 30], 13, { dtype: 'f32' });
      check(expand(row, [9, 30]), randomTensor([30, 12], 14, { dtype: 'f32' }));
      // A slice of columns keeps a BLAS layout (leading dim larger than the width).
      check(slice(base, 1, 5, 35), randomTensor([30, 12], 15, { dtype: 'f32' }));
    });
  });

  test.each([
    ['f16', 3e-3, 3e-3],
    ['bf16', 2e-2, 2e-2],
  ] as [string, number, number][])('%s accumulates in f32', (dtype, rtol, atol) => {
    for (const [m, k, n] of [
      [7, 9, 5],
      [70, 300, 40],
      [1, 64, 33],
    ] as [number, number, number][]) {
      tidy(() => {
        const a = cast(randomTensor([m, k], 21, { dtype: 'f32' }), dtype as 'f16');
        const b = cast(randomTensor([k, n], 22, { dtype: 'f32' }), dtype as 'f16');
        // The reference uses the rounded inputs: only accumulation and output rounding differ.
        check(a, b, { rtol, atol: atol * Math.sqrt(k) });
        check(transpose(cast(randomTensor([k, m], 23, { dtype: 'f32' }), dtype as 'f16')), b, { rtol, atol: atol * Math.sqrt(k) });
      });
    }
  });
});

describe('matmul edge cases and errors', () => {
  test('K = 0 gives zeros; empty M or batch gives an empty result', () => {
    tidy(() => {
      const y = new Tensor(N().matmul(tensor([], [3, 0]).handle, tensor([], [0, 4]).handle, false, false));
      expect(y.shape).toEqual([3, 4]);
      expect(values(y)).toEqual(Array(12).fill(0));
      const e = new Tensor(N().matmul(tensor([], [0, 5]).handle, randomTensor([5, 4], 1, { dtype: 'f32' }).handle, false, false));
      expect(e.shape).toEqual([0, 4]);
      const eb = new Tensor(N().matmul(tensor([], [0, 2, 5]).handle, randomTensor([5, 4], 1, { dtype: 'f32' }).handle, false, false));
      expect(eb.shape).toEqual([0, 2, 4]);
    });
  });

  test('errors', () => {
    tidy(() => {
      const a = randomTensor([3, 4], 1, { dtype: 'f32' });
      const b = randomTensor([5, 6], 2, { dtype: 'f32' });
      expect(code(() => N().matmul(a.handle, b.handle, false, false))).toBe('E_SHAPE');
      expect(code(() => N().matmul(a.handle, b.handle, true, false))).toBe('E_SHAPE');
      expect(code(() => N().matmul(randomTensor([4], 1, { dtype: 'f32' }).handle, b.handle, false, false))).toBe('E_SHAPE');
      expect(
        code(() =>
          N().matmul(
            randomTensor([2, 3, 4], 1, { dtype: 'f32' }).handle,
            randomTensor([3, 4, 5], 1, { dtype: 'f32' }).handle,
            false,
            false,
          ),
        ),
      ).toBe('E_SHAPE');
      expect(code(() => N().matmul(a.handle, randomTensor([4, 2], 2, { dtype: 'f64' }).handle, false, false))).toBe('E_DTYPE');
      const i = tensor([1, 2, 3, 4], [2, 2], { dtype: 'i32' });
      expect(code(() => N().matmul(i.handle, i.handle, false, false))).toBe('E_DTYPE');
      expect(code(() => N().matmul(a.handle, 3 as never, false, false))).toBe('E_ARG');
    });
  });

  test('setCudaGemm validates its argument and returns the previous choice', () => {
    expect(code(() => N().setCudaGemm('cublas' as never))).toBe('E_ARG');
    const prev = N().setCudaGemm('auto');
    expect(['auto', 'kernel']).toContain(prev);
    N().setCudaGemm(prev);
  });
});

describeCuda('CUDA matmul vs CPU', () => {
  const cases: { a: number[]; b: number[]; ta?: boolean; tb?: boolean }[] = [
    { a: [1, 1], b: [1, 1] },
    { a: [7, 1], b: [1, 5] },
    { a: [33, 17], b: [17, 65] },
    { a: [257, 300], b: [300, 129] },
    { a: [129, 33], b: [129, 7], ta: true },
    { a: [31, 64], b: [45, 64], tb: true },
    { a: [64, 31], b: [45, 64], ta: true, tb: true },
    { a: [2, 3, 7, 9], b: [3, 9, 5] },
    { a: [5, 33, 20], b: [20, 17] },
    { a: [33, 20], b: [5, 20, 17] },
    { a: [4, 1, 70, 90], b: [1, 3, 90, 50] },
    { a: [70000, 2, 3], b: [70000, 3, 2] },
  ];
  const dtypes: [string, number][] = [
    ['f32', 1e-4],
    ['f64', 1e-10],
    ['f16', 2e-2],
    ['bf16', 6e-2],
  ];

  for (const path of ['cublas', 'fallback']) {
    test(`${path}: shapes, transposes, batches and dtypes`, () => {
      // A switch in the addon: a jest worker's process.env does not reach the addon's getenv.
      const prev = N().setCudaGemm(path === 'fallback' ? 'kernel' : 'auto');
      try {
        if (path === 'fallback') expect(N().gemmInfo().cuda).toMatch(/sift-ft kernel/);
        for (const [dtype, tol] of dtypes) {
          cases.forEach((c, i) =>
            tidy(() => {
              const a = cast(randomTensor(c.a, 100 + i, { dtype: 'f32' }), dtype as 'f32');
              const b = cast(randomTensor(c.b, 200 + i, { dtype: 'f32' }), dtype as 'f32');
              const cpu = new Tensor(N().matmul(a.handle, b.handle, !!c.ta, !!c.tb));
              const ga = toDevice(a, 'cuda'),
                gb = toDevice(b, 'cuda');
              const gpu = new Tensor(N().matmul(ga.handle, gb.handle, !!c.ta, !!c.tb));
              expect(gpu.shape).toEqual(cpu.shape);
              expect(gpu.device).toBe('cuda:0');
              const K = c.ta ? c.a[c.a.length - 2] : c.a[c.a.length - 1];
              expectClose(values(toDevice(gpu, 'cpu')), values(cpu), {
                atol: tol * Math.sqrt(K),
                rtol: tol,
                label: `${path} ${dtype} case ${i}`,
              });
              // Transposed views reach the GPU GEMM as flags too: (op(A) op(B))^T = op(B)^T op(A)^T,
              // with op(B)^T given as the view B^T under the same flag.
              const gv = new Tensor(N().matmul(transpose(gb).handle, transpose(ga).handle, !!c.tb, !!c.ta));
              const cv = new Tensor(N().matmul(transpose(b).handle, transpose(a).handle, !!c.tb, !!c.ta));
              expect(gv.shape).toEqual(transpose(cpu).shape);
              expectClose(values(toDevice(gv, 'cpu')), values(cv), {
                atol: tol * Math.sqrt(K),
                rtol: tol,
                label: `${path} ${dtype} case ${i} (views)`,
              });
              expectClose(values(cv), values(transpose(cpu)), {
                atol: tol * Math.sqrt(K),
                rtol: tol,
                label: `${path} ${dtype} case ${i} (views vs transpose)`,
              });
            }),
          );
        }
      } finally {
        N().setCudaGemm(prev);
      }
    });
  }

  test('errors on CUDA: device mismatch', () => {
    tidy(() => {
      const a = toDevice(randomTensor([3, 4], 1, { dtype: 'f32' }), 'cuda');
      const b = randomTensor([4, 5], 2, { dtype: 'f32' });
      expect(code(() => N().matmul(a.handle, b.handle, false, false))).toBe('E_DEVICE');
    });
  });
});
