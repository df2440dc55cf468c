/**
 * crossEntropy: values against a float64 reference (PyTorch semantics: ignoreIndex, mean over
 * non-ignored rows, label smoothing), gradients by finite differences for every reduction,
 * 3-D logits, stability, 16-bit logits, errors, and CUDA vs CPU.
 */
import { Tensor, tensor, crossEntropy, tidy, SiftError } from '../../lib';
import { native } from '../../lib/engine/native';
import { gradcheck, randomTensor, expectClose, describeCuda, seededValues } from '../helpers/gradcheck';

function nums(t: Tensor): number[] {
  return Array.from(t.toArray() as ArrayLike<number | bigint>, Number);
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

type Reduction = 'mean' | 'sum' | 'none';

/** PyTorch's F.cross_entropy(logits, targets, ignore_index, reduction, label_smoothing) in float64. */
function refCE(x: number[], c: number, t: number[], ignore: number, red: Reduction, eps: number): number[] {
  const per: number[] = [];
  let count = 0;
  t.forEach((tg, r) => {
    if (tg === ignore) {
      per.push(0);
      return;
    }
    count++;
    const row = x.slice(r * c, (r + 1) * c);
    const mx = Math.max(...row);
    const lse = mx + Math.log(row.reduce((a, v) => a + Math.exp(v - mx), 0));
    const nll = lse - row[tg];
    const smooth = row.reduce((a, v) => a + (lse - v), 0) / c;
    per.push((1 - eps) * nll + eps * smooth);
  });
  if (red === 'none') return per;
  const s = per.reduce((a, v) => a + v, 0);
  return [red === 'sum' ? s : count > 0 ? s / count : 0];
}

describe('crossEntropy', () => {
  const N = 6;
  const C = 5;
  const xv = seededValues(N * C, 51).map((v) => v * 4);
  const tv = [1, 4, -100, 0, 3, 4];

  test.each([
    ['mean', 0],
    ['sum', 0],
    ['none', 0],
    ['mean', 0.1],
    ['sum', 0.25],
    ['none', 0.3],
  ] as [Reduction, number][])('f32 values, reduction %s, labelSmoothing %d', (reduction, labelSmoothing) => {
    for (const idt of ['i32', 'i64'] as const) {
      tidy(() => {
        const x = tensor(xv, [N, C], { dtype: 'f32' });
        const t = tensor(tv, [N], { dtype: idt });
        const loss = crossEntropy(x, t, { reduction, labelSmoothing });
        expect(loss.dtype).toBe('f32');
        expect(loss.shape).toEqual(reduction === 'none' ? [N] : []);
        expectClose(nums(loss), refCE(xv, C, tv, -100, reduction, labelSmoothing), { atol: 1e-5, rtol: 1e-5 });
      });
    }
  });

  test('a custom ignoreIndex; all rows ignored gives a mean of 0', () => {
    tidy(() => {
      const x = tensor(xv, [N, C], { dtype: 'f32' });
      const t = tensor([2, 2, 1, 0, 2, 3], [N], { dtype: 'i32' });
      expectClose(nums(crossEntropy(x, t, { ignoreIndex: 2 })), refCE(xv, C, [2, 2, 1, 0, 2, 3], 2, 'mean', 0), { atol: 1e-5 });
      const all = tensor([-100, -100], [2], { dtype: 'i64' });
      expect(nums(crossEntropy(tensor(xv.slice(0, 10), [2, C]), all))).toEqual([0]);
      const none = crossEntropy(tensor(xv.slice(0, 10), [2, C]), all, { reduction: 'none' });
      expect(nums(none)).toEqual([0, 0]);
    });
  });

  test.each([
    ['mean', 0],
    ['sum', 0],
    ['none', 0],
    ['mean', 0.2],
    ['none', 0.1],
  ] as [Reduction, number][])('gradient matches finite differences (f64), %s, smoothing %d', (reduction, labelSmoothing) => {
    const x = randomTensor([N, C], 52, { requiresGrad: true, scale: 3 });
    const t = tensor(tv, [N], { dtype: 'i64' });
    gradcheck((a) => crossEntropy(a, t, { reduction, labelSmoothing }), [x]);
    x.dispose();
    t.dispose();
  });

  test('3-D logits [B, T, C] with [B, T] targets', () => {
    const x = randomTensor([2, 3, C], 53, { requiresGrad: true, scale: 2 });
    const tv3 = [0, 4, -100, 2, 2, 1];
    const t = tensor(tv3, [2, 3], { dtype: 'i32' });
    gradcheck((a) => crossEntropy(a, t, { labelSmoothing: 0.1 }), [x]);
    gradcheck((a) => crossEntropy(a, t, { reduction: 'none' }), [x]);
    tidy(() => {
      const none = crossEntropy(x, t, { reduction: 'none' });
      expect(none.shape).toEqual([2, 3]);
      expectClose(nums(none), refCE(nums(x), C, tv3, -100, 'none', 0), { atol: 1e-12, rtol: 1e-12 });
      expectClose(nums(crossEntropy(x, t)), refCE(nums(x), C, tv3, -100, 'mean', 0), { atol: 1e-12, rtol: 1e-12 });
    });
    x.dispose();
    t.dispose();
  });

  test('huge logits give finite losses and gradients', () => {
    tidy(() => {
      const v = [1e4, 0, -1e4, 1e4, 1e4, 1e4, -1e4, -1e4, 1e4];
      const x = tensor(v, [3, 3], { dtype: 'f32', requiresGrad: true });
      const t = tensor([2, 0, 2], [3], { dtype: 'i32' });
      const loss = crossEntropy(x, t, { reduction: 'none', labelSmoothing: 0.1 });
      expectClose(nums(loss), refCE(v, 3, [2, 0, 2], -100, 'none', 0.1), { rtol: 1e-6, atol: 1e-3 });
      crossEntropy(x, t).backward();
      expect(nums(x.grad!).every(Number.isFinite)).toBe(true);
      x.dispose();
    });
  });

  test.each([
    ['f16', 5e-3],
    ['bf16', 3e-2],
  ] as const)('%s logits: f32 loss, gradient in the logits dtype, close to float64', (dtype, tol) => {
    tidy(() => {
      const x = tensor(xv, [N, C], { dtype, requiresGrad: true });
      const t = tensor(tv, [N], { dtype: 'i32' });
      const loss = crossEntropy(x, t, { labelSmoothing: 0.1 });
      expect(loss.dtype).toBe('f32');
      const exact = nums(x);
      expectClose(nums(loss), refCE(exact, C, tv, -100, 'mean', 0.1), { atol: 1e-5, rtol: 1e-5 });
      loss.backward();
      expect(x.grad!.dtype).toBe(dtype);
      const x64 = tensor(exact, [N, C], { dtype: 'f64', requiresGrad: true });
      crossEntropy(x64, t, { labelSmoothing: 0.1 }).backward();
      expectClose(nums(x.grad!), nums(x64.grad!), { atol: tol, rtol: tol });
      x.dispose();
      x64.dispose();
    });
  });

  test('out-of-range targets are E_INDEX', () => {
    tidy(() => {
      const x = tensor(xv, [N, C], { dtype: 'f32' });
      const bad = (vals: number[]) => tensor(vals, [N], { dtype: 'i64' });
      expect(codeOf(() => crossEntropy(x, bad([0, 1, 2, 3, 4, 5])).toArray())).toBe('E_INDEX');
      expect(codeOf(() => crossEntropy(x, bad([0, 1, -1, 3, 4, 0])).toArray())).toBe('E_INDEX');
      expect(codeOf(() => crossEntropy(x, bad([0, 1, -1, 3, 4, 0]), { ignoreIndex: 0 }).toArray())).toBe('E_INDEX');
      const f = tensor([0, 1, 9, 3, 4, 0], [N], { dtype: 'f32' });
      expect(codeOf(() => crossEntropy(x, f.to('i32')).toArray())).toBe('E_INDEX');
      // Backward checks too.
      const N_ = native();
      const good = bad([0, 1, 2, 3, 4, 0]);
      const [loss, lse] = N_.crossEntropy(x.handle, good.handle, -100, 'mean', 0);
      expect(
        codeOf(() => new Tensor(N_.crossEntropyBackward(x.handle, bad([7, 1, 2, 3, 4, 0]).handle, lse, loss, -100, 'mean', 0)).toArray()),
      ).toBe('E_INDEX');
      N_.dispose(loss);
      N_.dispose(lse);
      expect(nums(crossEntropy(x, good)).every(Number.isFinite)).toBe(true);
    });
  });

  test('shape, dtype and argument errors', () => {
    tidy(() => {
      const Nn = native();
      const x = tensor(xv, [N, C], { dtype: 'f32' });
      const t = tensor(tv, [N], { dtype: 'i32' });
      expect(codeOf(() => crossEntropy(x, tensor(tv.slice(0, 5), [5], { dtype: 'i32' })))).toBe('E_SHAPE');
      expect(codeOf(() => crossEntropy(x, tensor(tv, [N], { dtype: 'f32' })))).toBe('E_DTYPE');
      expect(codeOf(() => crossEntropy(x, t, { reduction: 'avg' as Reduction }))).toBe('E_ARG');
      expect(codeOf(() => crossEntropy(x, t, { labelSmoothing: -0.1 }))).toBe('E_ARG');
      expect(codeOf(() => Nn.crossEntropy(x.handle, t.handle, -100, 'avg' as Reduction, 0))).toBe('E_ARG');
      expect(codeOf(() => Nn.crossEntropy(x.handle, t.handle, -100, 'mean', 2))).toBe('E_ARG');
      expect(codeOf(() => Nn.crossEntropy(tensor(xv, [N * C], { dtype: 'f32' }).handle, t.handle, -100, 'mean', 0))).toBe('E_SHAPE');
      expect(codeOf(() => Nn.crossEntropy(tensor(tv, [N, 1], { dtype: 'i32' }).handle, t.handle, -100, 'mean', 0))).toBe('E_DTYPE');
      const [loss, lse] = Nn.crossEntropy(x.handle, t.handle, -100, 'mean', 0);
      // 'none' needs a per-row gradient, the reductions a scalar one.
      expect(codeOf(() => Nn.crossEntropyBackward(x.handle, t.handle, lse, loss, -100, 'none', 0))).toBe('E_SHAPE');
      expect(codeOf(() => Nn.crossEntropyBackward(x.handle, t.handle, loss, loss, -100, 'mean', 0))).toBe('E_SHAPE');
      Nn.dispose(loss);
      Nn.dispose(lse);
    });
  });
});

describeCuda('crossEntropy, CUDA vs CPU', () => {
  const cases: [number, number, Reduction, number][] = [
    [7, 5, 'mean', 0],
    [64, 1000, 'sum', 0.1],
    [9, 3000, 'none', 0],
    [4, 50000, 'mean', 0.1],
    [3000, 17, 'mean', 0],
  ];
  for (const dtype of ['f32', 'f64', 'f16', 'bf16'] as const) {
    test.each(cases)(`${dtype}: N %d, C %d, %s, smoothing %d`, (n, c, reduction, labelSmoothing) => {
      tidy(() => {
        const xv = seededValues(n * c, 61).map((v) => v * 6);
        const tv = seededValues(n, 62).map((v, i) => (i % 5 === 3 ? -100 : Math.floor((v + 1) * 0.5 * c) % c));
        const tol = dtype === 'f64' ? 1e-10 : dtype === 'f32' ? 1e-4 : dtype === 'f16' ? 2e-3 : 1e-2;
        const xc = tensor(xv, [n, c], { dtype, requiresGrad: true });
        const xg = tensor(xv, [n, c], { dtype, device: 'cuda', requiresGrad: true });
        const tc = tensor(tv, [n], { dtype: 'i64' });
        const tg = tensor(tv, [n], { dtype: 'i64', device: 'cuda' });
        const lc = crossEntropy(xc, tc, { reduction, labelSmoothing });
        const lg = crossEntropy(xg, tg, { reduction, labelSmoothing });
        expect(lg.dtype).toBe(dtype === 'f64' ? 'f64' : 'f32');
        expectClose(nums(lg.to('cpu')), nums(lc), { atol: dtype === 'f64' ? 1e-10 : 1e-4, rtol: 1e-5 });
        if (reduction === 'none') {
          const g = seededValues(n, 63);
          lc.backward(tensor(g, [n], { dtype: lc.dtype }));
          lg.backward(tensor(g, [n], { dtype: lg.dtype, device: 'cuda' }));
        } else {
          lc.backward();
          lg.backward();
        }
        expectClose(nums(xg.grad!.to('cpu')), nums(xc.grad!), { atol: tol, rtol: tol * 10 });
        // The forward is deterministic on the GPU too.
        const again = crossEntropy(xg, tg, { reduction, labelSmoothing });
        expect(nums(again.to('cpu'))).toEqual(nums(lg.to('cpu')));
        xc.dispose();
        xg.dispose();
      });
    });
  }

  test('out-of-range targets are E_INDEX on CUDA', () => {
    tidy(() => {
      const x = tensor(seededValues(12, 1), [3, 4], { device: 'cuda' });
      expect(codeOf(() => crossEntropy(x, tensor([0, 4, 1], [3], { dtype: 'i32', device: 'cuda' })).toArray())).toBe('E_INDEX');
      expect(nums(crossEntropy(x, tensor([0, 3, 1], [3], { dtype: 'i32', device: 'cuda' })).to('cpu')).every(Number.isFinite)).toBe(true);
    });
  });
});
