/**
 * LayerNorm and RMSNorm: values against float64 references, gradients (input, weight, bias) by
 * finite differences, saved statistics, determinism, 16-bit dtypes, errors, and CUDA vs CPU.
 */
import { Tensor, tensor, layerNorm, rmsNorm, tidy, SiftError } from '../../lib';
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

function refLayerNorm(x: number[], d: number, w: number[] | null, b: number[] | null, eps: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < x.length / d; r++) {
    const row = x.slice(r * d, (r + 1) * d);
    const mu = row.reduce((a, v) => a + v, 0) / d;
    const vr = row.reduce((a, v) => a + (v - mu) ** 2, 0) / d;
    const rs = 1 / Math.sqrt(vr + eps);
    row.forEach((v, j) => out.push((v - mu) * rs * (w ? w[j] : 1) + (b ? b[j] : 0)));
  }
  return out;
}

function refRmsNorm(x: number[], d: number, w: number[] | null, eps: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < x.length / d; r++) {
    const row = x.slice(r * d, (r + 1) * d);
    const rs = 1 / Math.sqrt(row.reduce((a, v) => a + v * v, 0) / d + eps);
    row.forEach((v, j) => out.push(v * rs * (w ? w[j] : 1)));
  }
  return out;
}

describe('layerNorm', () => {
  const D = 6;
  const xv = seededValues(4 * D, 2).map((v) => v * 3 + 1.5);
  const wv = seededValues(D, 3).map((v) => v + 1);
  const bv = seededValues(D, 4);

  test('f32 values with and without affine parameters', () => {
    tidy(() => {
      const x = tensor(xv, [2, 2, D], { dtype: 'f32' });
      const w = tensor(wv, [D], { dtype: 'f32' });
      const b = tensor(bv, [D], { dtype: 'f32' });
      expectClose(nums(layerNorm(x, w, b)), refLayerNorm(xv, D, wv, bv, 1e-5), { atol: 1e-5, rtol: 1e-5 });
      expectClose(nums(layerNorm(x, null, null, 1e-3)), refLayerNorm(xv, D, null, null, 1e-3), { atol: 1e-5, rtol: 1e-5 });
      expectClose(nums(layerNorm(x, w, null)), refLayerNorm(xv, D, wv, null, 1e-5), { atol: 1e-5, rtol: 1e-5 });
      expectClose(nums(layerNorm(x, null, b)), refLayerNorm(xv, D, null, bv, 1e-5), { atol: 1e-5, rtol: 1e-5 });
      expect(layerNorm(x, w, b).shape).toEqual([2, 2, D]);
    });
  });

  test('saved statistics: mean and rstd, f32 per row', () => {
    tidy(() => {
      const x = tensor(xv, [4, D], { dtype: 'f16' });
      const [y, mean, rstd] = native()
        .layerNorm(x.handle, null, null, 1e-5)
        .map((h) => new Tensor(h));
      expect(y.dtype).toBe('f16');
      expect(mean.dtype).toBe('f32');
      expect(rstd.dtype).toBe('f32');
      expect(mean.shape).toEqual([4]);
      const xr = nums(x);
      for (let r = 0; r < 4; r++) {
        const row = xr.slice(r * D, (r + 1) * D);
        const mu = row.reduce((a, v) => a + v, 0) / D;
        const vr = row.reduce((a, v) => a + (v - mu) ** 2, 0) / D;
        expectClose([nums(mean)[r], nums(rstd)[r]], [mu, 1 / Math.sqrt(vr + 1e-5)], { atol: 1e-6, rtol: 1e-5 });
      }
    });
  });

  test('gradients with affine parameters match finite differences (f64)', () => {
    const x = randomTensor([2, 3, 5], 1, { requiresGrad: true, scale: 2 });
    const w = randomTensor([5], 2, { requiresGrad: true, offset: 1 });
    const b = randomTensor([5], 3, { requiresGrad: true });
    gradcheck((a, ww, bb) => layerNorm(a, ww, bb), [x, w, b]);
    // Only some inputs need gradients.
    w.requiresGrad = false;
    gradcheck((a, ww, bb) => layerNorm(a, ww, bb), [x, w, b]);
    x.requiresGrad = false;
    w.requiresGrad = true;
    gradcheck((a, ww) => layerNorm(a, ww, null), [x, w]);
    for (const t of [x, w, b]) t.dispose();
  });

  test('gradients without affine parameters match finite differences (f64)', () => {
    const x = randomTensor([4, 7], 5, { requiresGrad: true, scale: 3 });
    gradcheck((a) => layerNorm(a, null, null, 1e-2), [x]);
    x.dispose();
  });

  test('weight and bias gradients are deterministic over many rows', () => {
    tidy(() => {
      const rows = 700;
      const Dl = 48;
      const xs = seededValues(rows * Dl, 9);
      const run = () => {
        const x = tensor(xs, [rows, Dl], { dtype: 'f32', requiresGrad: true });
        const w = tensor(seededValues(Dl, 1), [Dl], { dtype: 'f32', requiresGrad: true });
        const b = tensor(seededValues(Dl, 2), [Dl], { dtype: 'f32', requiresGrad: true });
        layerNorm(x, w, b).backward(tensor(seededValues(rows * Dl, 3), [rows, Dl], { dtype: 'f32' }));
        const out = [nums(w.grad!), nums(b.grad!), nums(x.grad!)];
        for (const t of [x, w, b]) t.dispose();
        return out;
      };
      const a = run();
      const c = run();
      expect(a).toEqual(c);
      // And the bias gradient is the column sum of gy.
      const gy = seededValues(rows * Dl, 3);
      const colSum = Array.from({ length: Dl }, (_, j) => {
        let s = 0;
        for (let r = 0; r < rows; r++) s += Math.fround(gy[r * Dl + j]);
        return s;
      });
      expectClose(a[1], colSum, { atol: 1e-4, rtol: 1e-5 });
    });
  });

  test.each([
    ['f16', 1e-2, 1e-2],
    ['bf16', 5e-2, 2e-2],
  ] as const)('%s results are close to float64', (dtype, atol, rtol) => {
    tidy(() => {
      const x = tensor(xv, [4, D], { dtype });
      const w = tensor(wv, [D], { dtype });
      const b = tensor(bv, [D], { dtype });
      const y = layerNorm(x, w, b);
      expect(y.dtype).toBe(dtype);
      expectClose(nums(y), refLayerNorm(nums(x), D, nums(w), nums(b), 1e-5), { atol, rtol });
    });
  });

  test('errors', () => {
    tidy(() => {
      const N = native();
      const x = tensor(xv, [4, D], { dtype: 'f32' });
      const w = tensor(wv, [D], { dtype: 'f32' });
      const wBad = tensor(wv.slice(0, 5), [5], { dtype: 'f32' });
      const w64 = tensor(wv, [D], { dtype: 'f64' });
      expect(codeOf(() => layerNorm(x, wBad, null))).toBe('E_SHAPE');
      expect(codeOf(() => layerNorm(x, w64, null))).toBe('E_DTYPE');
      expect(codeOf(() => layerNorm(x, null, wBad))).toBe('E_SHAPE');
      expect(codeOf(() => layerNorm(tensor([1, 2], [2], { dtype: 'i32' }), null, null))).toBe('E_DTYPE');
      expect(codeOf(() => layerNorm(x, w, null, -1))).toBe('E_ARG');
      expect(codeOf(() => layerNorm(tensor(1, [], { dtype: 'f32' }), null, null))).toBe('E_SHAPE');
      const [, mean, rstd] = N.layerNorm(x.handle, w.handle, null, 1e-5);
      const gyBad = tensor(xv.slice(0, 12), [2, D], { dtype: 'f32' });
      expect(codeOf(() => N.layerNormBackward(gyBad.handle, x.handle, w.handle, mean, rstd, true))).toBe('E_SHAPE');
      expect(codeOf(() => N.layerNormBackward(x.handle, x.handle, w.handle, x.handle, rstd, true))).toBe('E_SHAPE');
      N.dispose(mean);
      N.dispose(rstd);
    });
  });
});

describe('rmsNorm', () => {
  const D = 8;
  const xv = seededValues(3 * D, 12).map((v) => v * 2 + 0.5);
  const wv = seededValues(D, 13).map((v) => v + 1);

  test('f32 values with and without a weight', () => {
    tidy(() => {
      const x = tensor(xv, [3, D], { dtype: 'f32' });
      const w = tensor(wv, [D], { dtype: 'f32' });
      expectClose(nums(rmsNorm(x, w)), refRmsNorm(xv, D, wv, 1e-6), { atol: 1e-5, rtol: 1e-5 });
      expectClose(nums(rmsNorm(x, null, 0.1)), refRmsNorm(xv, D, null, 0.1), { atol: 1e-5, rtol: 1e-5 });
      const [, rstd] = native()
        .rmsNorm(x.handle, null, 1e-6)
        .map((h) => new Tensor(h));
      expect(rstd.dtype).toBe('f32');
      expect(rstd.shape).toEqual([3]);
    });
  });

  test('gradients match finite differences (f64)', () => {
    const x = randomTensor([2, 3, 4], 21, { requiresGrad: true, scale: 2 });
    const w = randomTensor([4], 22, { requiresGrad: true, offset: 1 });
    gradcheck((a, ww) => rmsNorm(a, ww), [x, w]);
    gradcheck((a) => rmsNorm(a, null, 1e-3), [x]);
    x.requiresGrad = false;
    gradcheck((a, ww) => rmsNorm(a, ww), [x, w]);
    x.dispose();
    w.dispose();
  });

  test.each([
    ['f16', 1e-2, 1e-2],
    ['bf16', 5e-2, 2e-2],
  ] as const)('%s results and gradients are close', (dtype, atol, rtol) => {
    tidy(() => {
      const x = tensor(xv, [3, D], { dtype, requiresGrad: true });
      const w = tensor(wv, [D], { dtype, requiresGrad: true });
      const x32 = tensor(nums(x), [3, D], { dtype: 'f32', requiresGrad: true });
      const w32 = tensor(nums(w), [D], { dtype: 'f32', requiresGrad: true });
      const y = rmsNorm(x, w);
      expectClose(nums(y), refRmsNorm(nums(x), D, nums(w), 1e-6), { atol, rtol });
      const g = seededValues(3 * D, 14);
      y.backward(tensor(g, [3, D], { dtype }));
      rmsNorm(x32, w32).backward(tensor(nums(tensor(g, [3, D], { dtype })), [3, D], { dtype: 'f32' }));
      expectClose(nums(x.grad!), nums(x32.grad!), { atol: atol * 2, rtol: rtol * 2 });
      expectClose(nums(w.grad!), nums(w32.grad!), { atol: atol * 2, rtol: rtol * 2 });
      for (const t of [x, w, x32, w32]) t.dispose();
    });
  });

  test('errors', () => {
    tidy(() => {
      const N = native();
      const x = tensor(xv, [3, D], { dtype: 'f32' });
      const wBad = tensor([1, 2], [2], { dtype: 'f32' });
      expect(codeOf(() => rmsNorm(x, wBad))).toBe('E_SHAPE');
      expect(codeOf(() => rmsNorm(x, tensor(wv, [D], { dtype: 'bf16' })))).toBe('E_DTYPE');
      expect(codeOf(() => rmsNorm(x, null, Number.NaN))).toBe('E_ARG');
      const [, rstd] = N.rmsNorm(x.handle, null, 1e-6);
      const r64 = N.cast(rstd, 'f64');
      expect(codeOf(() => N.rmsNormBackward(x.handle, x.handle, null, r64, false))).toBe('E_DTYPE');
      N.dispose(rstd);
      N.dispose(r64);
    });
  });
});

describeCuda('layerNorm and rmsNorm, CUDA vs CPU', () => {
  const shapes: [number, number][] = [
    [5, 8],
    [33, 1000],
    [7, 3000],
    [300, 64],
    [2, 40000],
  ];
  for (const dtype of ['f32', 'f64', 'f16', 'bf16'] as const) {
    test.each(shapes)(`${dtype} forward and backward with parameters, rows %d, D %d`, (rows, D) => {
      tidy(() => {
        const n = rows * D;
        const xv = seededValues(n, 1).map((v) => v * 2 + 0.3);
        const wv = seededValues(D, 2).map((v) => v + 1);
        const bv = seededValues(D, 3);
        const gv = seededValues(n, 4);
        const tol = dtype === 'f64' ? 1e-10 : dtype === 'f32' ? 2e-4 : dtype === 'f16' ? 1e-2 : 5e-2;
        const sumTol = dtype === 'f64' ? 1e-9 : dtype === 'f32' ? 1e-3 : 0.1; // reductions over rows
        const mk = (device: string) => ({
          x: tensor(xv, [rows, D], { dtype, device, requiresGrad: true }),
          w: tensor(wv, [D], { dtype, device, requiresGrad: true }),
          b: tensor(bv, [D], { dtype, device, requiresGrad: true }),
        });
        const c = mk('cpu');
        const g = mk('cuda');
        const yc = layerNorm(c.x, c.w, c.b);
        const yg = layerNorm(g.x, g.w, g.b);
        expectClose(nums(yg.to('cpu')), nums(yc), { atol: tol, rtol: tol });
        yc.backward(tensor(gv, [rows, D], { dtype }));
        yg.backward(tensor(gv, [rows, D], { dtype, device: 'cuda' }));
        expectClose(nums(g.x.grad!.to('cpu')), nums(c.x.grad!), { atol: tol, rtol: tol * 5 });
        expectClose(nums(g.w.grad!.to('cpu')), nums(c.w.grad!), { atol: sumTol, rtol: tol * 5 });
        expectClose(nums(g.b.grad!.to('cpu')), nums(c.b.grad!), { atol: sumTol, rtol: tol * 5 });
        for (const t of [c.x, c.w, c.b, g.x, g.w, g.b]) t.zeroGrad();
        const rc = rmsNorm(c.x, c.w);
        const rg = rmsNorm(g.x, g.w);
        expectClose(nums(rg.to('cpu')), nums(rc), { atol: tol, rtol: tol });
        rc.backward(tensor(gv, [rows, D], { dtype }));
        rg.backward(tensor(gv, [rows, D], { dtype, device: 'cuda' }));
        expectClose(nums(g.x.grad!.to('cpu')), nums(c.x.grad!), { atol: tol, rtol: tol * 5 });
        expectClose(nums(g.w.grad!.to('cpu')), nums(c.w.grad!), { atol: sumTol, rtol: tol * 5 });
        for (const t of [c.x, c.w, c.b, g.x, g.w, g.b]) t.dispose();
      });
    });
  }

  test('weight gradients are bit-identical from run to run', () => {
    tidy(() => {
      const rows = 4096;
      const D = 256;
      const run = () => {
        const x = tensor(seededValues(rows * D, 5), [rows, D], { device: 'cuda', requiresGrad: true });
        const w = tensor(seededValues(D, 6), [D], { device: 'cuda', requiresGrad: true });
        const b = tensor(seededValues(D, 7), [D], { device: 'cuda', requiresGrad: true });
        layerNorm(x, w, b).backward(tensor(seededValues(rows * D, 8), [rows, D], { device: 'cuda' }));
        const out = [nums(w.grad!.to('cpu')), nums(b.grad!.to('cpu'))];
        for (const t of [x, w, b]) t.dispose();
        return out;
      };
      expect(run()).toEqual(run());
    });
  });
});
