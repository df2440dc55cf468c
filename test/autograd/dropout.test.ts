/**
 * Seeded dropout: the mask is rng_uniform(seed, index) >= p (checked against a BigInt copy of
 * the generator), kept values are scaled by 1/(1-p), the statistics, determinism, the gradient
 * (the same mask), and CUDA masks equal to the CPU's.
 */
import { tensor, tidy, SiftError, Tensor, dropout } from '../../lib';
import { native } from '../../lib/engine/native';
import { randomTensor, gradcheck, expectClose, describeCuda } from '../helpers/gradcheck';
import { keeps } from '../helpers/dropout-ref';

const nums = (t: Tensor) => Array.from(t.toArray() as ArrayLike<number>, Number);

describe('dropout', () => {
  test('the mask is rng_uniform(seed, i) >= p and kept values are x / (1 - p)', () =>
    tidy(() => {
      const n = 2000,
        p = 0.3,
        seed = 42;
      const x = randomTensor([n], 1, { offset: 2 }); // nonzero values
      const y = nums(dropout(x, p, { seed }));
      const xv = nums(x);
      let kept = 0;
      for (let i = 0; i < n; i++) {
        const k = keeps(seed, i, p);
        if (k) kept++;
        expect(y[i]).toBeCloseTo(k ? xv[i] / (1 - p) : 0, 12);
      }
      expect(Math.abs(kept / n - (1 - p))).toBeLessThan(0.04);
    }));

  test('statistics for several p in f32 (fraction kept, mean preserved)', () =>
    tidy(() => {
      const n = 100000;
      const x = tensor(new Float32Array(n).fill(1), [n]);
      for (const p of [0.1, 0.5, 0.9]) {
        const y = nums(dropout(x, p, { seed: 3 }));
        const kept = y.filter((v) => v !== 0);
        expect(Math.abs(kept.length / n - (1 - p))).toBeLessThan(0.01);
        for (const v of kept.slice(0, 50)) expect(v).toBeCloseTo(1 / (1 - p), 5);
        const mean = y.reduce((a, b) => a + b, 0) / n;
        expect(Math.abs(mean - 1)).toBeLessThan(0.05);
      }
    }));

  test('deterministic for a seed, differs across seeds; identity when p = 0 or not training', () =>
    tidy(() => {
      const x = randomTensor([64, 8], 2, { dtype: 'f32' });
      expect(nums(dropout(x, 0.5, { seed: 9 }))).toEqual(nums(dropout(x, 0.5, { seed: 9 })));
      expect(nums(dropout(x, 0.5, { seed: 9 }))).not.toEqual(nums(dropout(x, 0.5, { seed: 10 })));
      expect(dropout(x, 0)).toBe(x);
      expect(dropout(x, 0.5, { training: false })).toBe(x);
      expect(nums(new Tensor(native().dropout(x.handle, 0, 1)))).toEqual(nums(x));
    }));

  test('f16 and bf16; strided input uses the logical element index', () =>
    tidy(() => {
      const x = randomTensor([6, 10], 3, { dtype: 'f32' });
      const ref = nums(dropout(x.contiguous(), 0.25, { seed: 11 }));
      for (const dt of ['f16', 'bf16'] as const) {
        const y = nums(dropout(x.to(dt), 0.25, { seed: 11 }));
        const xr = nums(x.to(dt));
        for (let i = 0; i < y.length; i++) expect(y[i] === 0).toBe(ref[i] === 0);
        expectClose(
          y,
          xr.map((v, i) => (ref[i] === 0 ? 0 : v / 0.75)),
          { rtol: 1e-2 },
        );
      }
      const t = x.T; // [10, 6] view
      const yt = nums(dropout(t, 0.25, { seed: 11 }));
      const tc = nums(dropout(t.contiguous(), 0.25, { seed: 11 }));
      expect(yt).toEqual(tc);
    }));

  test('gradient is the same mask (float64 finite differences)', () => {
    const x = randomTensor([5, 7], 4, { requiresGrad: true });
    gradcheck((a) => dropout(a, 0.4, { seed: 77 }), [x]);
    x.dispose();
  });

  test('errors', () =>
    tidy(() => {
      const code = (fn: () => unknown) => {
        try {
          fn();
        } catch (e) {
          expect(e).toBeInstanceOf(SiftError);
          return (e as SiftError).code;
        }
        return undefined;
      };
      const x = randomTensor([4], 1);
      expect(code(() => dropout(x, 1))).toBe('E_ARG');
      expect(code(() => dropout(x, -0.1))).toBe('E_ARG');
      expect(code(() => native().dropout(x.handle, 1.5, 0))).toBe('E_ARG');
      expect(code(() => native().dropout(tensor([1, 2], [2], { dtype: 'i32' }).handle, 0.5, 0))).toBe('E_DTYPE');
    }));
});

describeCuda('dropout CUDA vs CPU', () => {
  for (const dt of ['f32', 'f16', 'bf16', 'f64'] as const) {
    test(`${dt}: identical masks and values`, () =>
      tidy(() => {
        const x = randomTensor([333, 77], 5, { dtype: 'f32' }).to(dt);
        const a = nums(dropout(x, 0.35, { seed: 123456789n }).to('f32'));
        const b = nums(dropout(x.to('cuda'), 0.35, { seed: 123456789n }).to('cpu').to('f32'));
        expect(b).toEqual(a);
      }));
  }
});
