/**
 * softmax / logSoftmax: values against a float64 reference, gradients by finite differences,
 * stability with huge logits, 16-bit dtypes, argument errors, and CUDA against CPU.
 */
import { Tensor, tensor, softmax, logSoftmax, tidy, SiftError } from '../../lib';
import { native } from '../../lib/engine/native';
import { gradcheck, randomTensor, expectClose, describeCuda, seededValues } from '../helpers/gradcheck';

function nums(t: Tensor): number[] {
  return Array.from(t.toArray() as ArrayLike<number>, Number);
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SiftError);
    return (e as SiftError).code;
  }
  return undefined;
}

/** Float64 softmax (or log-softmax) of flat `x` of `shape` along `dim`. */
function refSoftmax(x: number[], shape: number[], dim: number, log: boolean): number[] {
  const d = dim < 0 ? dim + shape.length : dim;
  const n = shape[d];
  const inner = shape.slice(d + 1).reduce((a, b) => a * b, 1);
  const outer = shape.slice(0, d).reduce((a, b) => a * b, 1);
  const out = new Array(x.length);
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < inner; j++) {
      const idx = (k: number) => (o * n + k) * inner + j;
      let mx = -Infinity;
      for (let k = 0; k < n; k++) mx = Math.max(mx, x[idx(k)]);
      let s = 0;
      for (let k = 0; k < n; k++) s += Math.exp(x[idx(k)] - mx);
      for (let k = 0; k < n; k++) out[idx(k)] = log ? x[idx(k)] - mx - Math.log(s) : Math.exp(x[idx(k)] - mx) / s;
    }
  }
  return out;
}

describe('softmax and logSoftmax', () => {
  const shape = [3, 4, 5];
  const vals = seededValues(60, 7).map((v) => v * 3);

  test.each([0, 1, 2, -1])('f32 values match a float64 reference along dim %d', (dim) => {
    tidy(() => {
      const x = tensor(vals, shape, { dtype: 'f32' });
      expectClose(nums(softmax(x, dim)), refSoftmax(vals, shape, dim, false), { atol: 1e-6, rtol: 1e-5 });
      expectClose(nums(logSoftmax(x, dim)), refSoftmax(vals, shape, dim, true), { atol: 1e-5, rtol: 1e-5 });
      expect(x.softmax(dim).shape).toEqual(shape);
    });
  });

  test.each([0, 1, -1])('gradients along dim %d match finite differences (f64)', (dim) => {
    const x = randomTensor(shape, 3, { requiresGrad: true, scale: 2 });
    gradcheck((a) => softmax(a, dim), [x]);
    gradcheck((a) => logSoftmax(a, dim), [x]);
    x.dispose();
  });

  test('non-contiguous input (a transposed view)', () => {
    tidy(() => {
      const x = tensor(vals, shape, { dtype: 'f64' });
      const xt = x.transpose(0, 2); // [5, 4, 3]
      const dense = xt.contiguous();
      const ref = refSoftmax(nums(dense), [5, 4, 3], -1, false);
      expectClose(nums(softmax(xt, -1)), ref, { atol: 1e-12, rtol: 1e-12 });
    });
  });

  test('a long row (block path on CUDA) and a scalar', () => {
    tidy(() => {
      const v = seededValues(5000, 11).map((a) => a * 10);
      const x = tensor(v, [2, 2500], { dtype: 'f32' });
      expectClose(nums(logSoftmax(x)), refSoftmax(v, [2, 2500], -1, true), { atol: 1e-4, rtol: 1e-5 });
      expect(nums(softmax(tensor(3.5, [], { dtype: 'f32' }), 0))).toEqual([1]);
      expect(nums(logSoftmax(tensor(3.5, [], { dtype: 'f32' }), -1))).toEqual([0]);
    });
  });

  test('huge logits stay finite', () => {
    tidy(() => {
      const v = [1e4, 0, -1e4, 1e4, 1e4, 1e4, -1e4, -1e4, 5];
      const x = tensor(v, [3, 3], { dtype: 'f32' });
      const y = nums(softmax(x));
      const ly = nums(logSoftmax(x));
      expect(y.every(Number.isFinite)).toBe(true);
      expect(ly.every(Number.isFinite)).toBe(true);
      expectClose(y, refSoftmax(v, [3, 3], -1, false), { atol: 1e-6 });
      expectClose(ly, refSoftmax(v, [3, 3], -1, true), { atol: 1e-3, rtol: 1e-6 });
      // Along dim 0 too (strided path).
      expectClose(nums(softmax(x, 0)), refSoftmax(v, [3, 3], 0, false), { atol: 1e-6 });
    });
  });

  test.each([
    ['f16', 2e-3, 1e-2],
    ['bf16', 8e-3, 2e-2],
  ] as const)('%s results are close to float64', (dtype, atol, rtol) => {
    tidy(() => {
      const x = tensor(vals, shape, { dtype });
      const exact = nums(x.to('f64')); // the reference sees the rounded inputs
      for (const dim of [0, -1]) {
        const y = softmax(x, dim);
        expect(y.dtype).toBe(dtype);
        expectClose(nums(y), refSoftmax(exact, shape, dim, false), { atol, rtol });
        expectClose(nums(logSoftmax(x, dim)), refSoftmax(exact, shape, dim, true), { atol: atol * 10, rtol });
      }
    });
  });

  test('16-bit gradients are close to f32 gradients', () => {
    for (const dtype of ['f16', 'bf16'] as const) {
      tidy(() => {
        const x32 = tensor(vals, shape, { dtype: 'f32', requiresGrad: true });
        const xh = tensor(vals, shape, { dtype, requiresGrad: true });
        const g = seededValues(60, 5);
        softmax(x32, 1).backward(tensor(g, shape, { dtype: 'f32' }));
        softmax(xh, 1).backward(tensor(g, shape, { dtype }));
        expect(xh.grad!.dtype).toBe(dtype);
        expectClose(nums(xh.grad!), nums(x32.grad!), { atol: 2e-2, rtol: 5e-2 });
        x32.dispose();
        xh.dispose();
      });
    }
  });

  test('errors', () => {
    tidy(() => {
      const N = native();
      const x = tensor(vals, shape, { dtype: 'f32' });
      const xi = tensor([1, 2, 3], [3], { dtype: 'i32' });
      expect(codeOf(() => softmax(xi))).toBe('E_DTYPE');
      expect(codeOf(() => N.softmax(xi.handle, 0))).toBe('E_DTYPE');
      expect(codeOf(() => softmax(x, 3))).toBe('E_SHAPE');
      expect(codeOf(() => N.logSoftmax(x.handle, -4))).toBe('E_SHAPE');
      const y = softmax(x);
      const other = tensor(vals.slice(0, 12), [3, 4], { dtype: 'f32' });
      expect(codeOf(() => N.softmaxBackward(y.handle, other.handle, -1))).toBe('E_SHAPE');
      const y64 = y.to('f64');
      expect(codeOf(() => N.logSoftmaxBackward(y.handle, y64.handle, -1))).toBe('E_DTYPE');
    });
  });
});

describeCuda('softmax and logSoftmax, CUDA vs CPU', () => {
  const cases: [number[], number][] = [
    [[6, 7], -1],
    [[5, 1000], -1],
    [[3, 3000], -1],
    [[2, 40000], -1],
    [[4, 33, 9], 1],
    [[64, 5], 0],
    [[2, 3], 0],
  ];
  for (const dtype of ['f32', 'f64', 'f16', 'bf16'] as const) {
    test.each(cases)(`${dtype} forward and backward, shape %j dim %d`, (shape, dim) => {
      tidy(() => {
        const n = shape.reduce((a, b) => a * b, 1);
        const v = seededValues(n, 3).map((a) => a * 8);
        const g = seededValues(n, 4);
        const tol = dtype === 'f64' ? 1e-12 : dtype === 'f32' ? 1e-5 : dtype === 'f16' ? 2e-3 : 1e-2;
        for (const fn of [softmax, logSoftmax]) {
          const xc = tensor(v, shape, { dtype, requiresGrad: true });
          const xg = tensor(v, shape, { dtype, device: 'cuda', requiresGrad: true });
          const yc = fn(xc, dim);
          const yg = fn(xg, dim);
          expect(yg.device).toBe('cuda:0');
          expectClose(nums(yg.to('cpu')), nums(yc), { atol: tol * (fn === logSoftmax ? 10 : 1), rtol: tol });
          yc.backward(tensor(g, shape, { dtype }));
          yg.backward(tensor(g, shape, { dtype, device: 'cuda' }));
          expectClose(nums(xg.grad!.to('cpu')), nums(xc.grad!), { atol: tol * 10, rtol: tol * 10 });
          xc.dispose();
          xg.dispose();
        }
      });
    });
  }

  test('huge logits stay finite on CUDA', () => {
    tidy(() => {
      const x = tensor([1e4, 0, -1e4, 1e4, 1e4, 1e4], [2, 3], { dtype: 'f32', device: 'cuda' });
      expect(nums(softmax(x).to('cpu')).every(Number.isFinite)).toBe(true);
      expect(nums(logSoftmax(x).to('cpu')).every(Number.isFinite)).toBe(true);
    });
  });
});
