/**
 * Rotary position embedding (rotate-half): against a float64 reference, inverse(rotary(x)) == x,
 * gradients by finite differences, argument errors, and CUDA against CPU.
 */
import { tensor, transpose, tidy, SiftError, Tensor, rotaryEmbedding, rotaryInvFreq } from '../../lib';
import { native } from '../../lib/engine/native';
import { randomTensor, gradcheck, expectClose, describeCuda } from '../helpers/gradcheck';

const nums = (t: Tensor) => Array.from(t.toArray() as ArrayLike<number>, Number);

function refRotary(x: number[], [B, H, T, D]: number[], pos: number[], posBatched: boolean, inv: number[], inverse = false): number[] {
  const out = new Array(x.length).fill(0);
  const half = D / 2;
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let t = 0; t < T; t++) {
        const p = pos[posBatched ? b * T + t : t];
        const base = ((b * H + h) * T + t) * D;
        for (let d = 0; d < half; d++) {
          const ang = (inverse ? -1 : 1) * p * inv[d];
          const c = Math.cos(ang),
            s = Math.sin(ang);
          const x1 = x[base + d],
            x2 = x[base + d + half];
          out[base + d] = x1 * c - x2 * s;
          out[base + d + half] = x2 * c + x1 * s;
        }
      }
  return out;
}

describe('rotaryEmbedding', () => {
  test('matches the reference with shared [T] and per-batch [B, T] positions (i32, i64)', () =>
    tidy(() => {
      const B = 2,
        H = 3,
        T = 5,
        D = 8;
      const x = randomTensor([B, H, T, D], 3);
      const inv = rotaryInvFreq(D);
      const invv = nums(inv);
      const p1 = [0, 1, 2, 3, 4];
      const p2 = [7, 8, 9, 10, 11, 100, 0, 3, 2, 1];
      for (const dtype of ['i32', 'i64'] as const) {
        const y1 = rotaryEmbedding(x, tensor(p1, [T], { dtype }), inv);
        expectClose(nums(y1), refRotary(nums(x), [B, H, T, D], p1, false, invv), { atol: 1e-12, rtol: 1e-10 });
        const y2 = rotaryEmbedding(x, tensor(p2, [B, T], { dtype }), inv);
        expectClose(nums(y2), refRotary(nums(x), [B, H, T, D], p2, true, invv), { atol: 1e-12, rtol: 1e-10 });
      }
    }));

  test('angles are pos * invFreq with invFreq = theta^(-2i/D)', () =>
    tidy(() => {
      const inv = nums(rotaryInvFreq(6, 500000));
      expectClose(inv, [1, 500000 ** (-2 / 6), 500000 ** (-4 / 6)], { rtol: 1e-6 });
      // x = e_0 rotated by angle pos * 1 on the first pair.
      const x = tensor([1, 0, 0, 0, 0, 0], [1, 1, 1, 6], { dtype: 'f64' });
      const y = nums(rotaryEmbedding(x, tensor([2], [1], { dtype: 'i64' }), rotaryInvFreq(6, 500000)));
      expectClose([y[0], y[3]], [Math.cos(2), Math.sin(2)], { atol: 1e-12 });
    }));

  test('f32, f16, bf16 and a strided [B, T, H, D] -> [B, H, T, D] view', () =>
    tidy(() => {
      const B = 2,
        H = 2,
        T = 7,
        D = 16;
      const xs = randomTensor([B, T, H, D], 4);
      const x = transpose(xs, 1, 2);
      const pos = Array.from({ length: T }, (_, i) => 3 * i + 1000);
      const ref = refRotary(nums(x.contiguous()), [B, H, T, D], pos, false, nums(rotaryInvFreq(D)));
      const tol: Record<string, number> = { f64: 1e-4, f32: 2e-4, f16: 4e-3, bf16: 3e-2 };
      for (const dt of ['f64', 'f32', 'f16', 'bf16'] as const) {
        const y = rotaryEmbedding(transpose(xs.to(dt), 1, 2), tensor(pos, [T], { dtype: 'i32' }), rotaryInvFreq(D));
        expect(y.dtype).toBe(dt);
        // f32 angles at positions ~1000: absolute angle error up to ~1e-4.
        expectClose(nums(y), ref, { atol: tol[dt], rtol: tol[dt], label: dt });
      }
    }));

  test('inverse undoes the rotation', () =>
    tidy(() => {
      const x = randomTensor([1, 2, 4, 6], 5);
      const pos = tensor([5, 1, 9, 2], [4], { dtype: 'i32' });
      const inv = rotaryInvFreq(6);
      const y = new Tensor(native().rotary(x.handle, pos.handle, inv.handle, false));
      const back = new Tensor(native().rotary(y.handle, pos.handle, inv.handle, true));
      expectClose(nums(back), nums(x), { atol: 1e-12 });
    }));

  test('gradient (float64 finite differences)', () => {
    const x = randomTensor([2, 2, 3, 4], 6, { requiresGrad: true });
    const pos = tensor([3, 1, 4, 1, 5, 9], [2, 3], { dtype: 'i64' });
    const inv = rotaryInvFreq(4);
    gradcheck((a) => rotaryEmbedding(a, pos, inv), [x]);
    for (const t of [x, pos, inv]) t.dispose();
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
      const x = randomTensor([1, 2, 3, 4], 1);
      const pos = tensor([0, 1, 2], [3], { dtype: 'i32' });
      const inv = rotaryInvFreq(4);
      expect(code(() => rotaryEmbedding(randomTensor([2, 3, 4], 1), pos, inv))).toBe('E_SHAPE');
      expect(code(() => rotaryEmbedding(randomTensor([1, 2, 3, 5], 1), pos, rotaryInvFreq(4)))).toBe('E_SHAPE');
      expect(code(() => rotaryEmbedding(x, tensor([0, 1], [2], { dtype: 'i32' }), inv))).toBe('E_SHAPE');
      expect(code(() => rotaryEmbedding(x, tensor([0, 1, 2, 0, 1, 2], [2, 3], { dtype: 'i32' }), inv))).toBe('E_SHAPE');
      expect(code(() => rotaryEmbedding(x, pos, rotaryInvFreq(6)))).toBe('E_SHAPE');
      expect(code(() => rotaryEmbedding(x, tensor([0, 1, 2], [3], { dtype: 'f32' }), inv))).toBe('E_DTYPE');
      expect(code(() => native().rotary(x.handle, tensor([0, 1, 2], [3], { dtype: 'f32' }).handle, inv.handle, false))).toBe('E_DTYPE');
      expect(code(() => native().rotary(tensor([1, 2, 3, 4], [1, 1, 1, 4], { dtype: 'i32' }).handle, pos.handle, inv.handle, false))).toBe(
        'E_DTYPE',
      );
      expect(code(() => rotaryInvFreq(5))).toBe('E_SHAPE');
    }));
});

describeCuda('rotary CUDA vs CPU', () => {
  for (const dt of ['f32', 'f16', 'bf16', 'f64'] as const) {
    test(dt, () =>
      tidy(() => {
        const xs = randomTensor([2, 9, 4, 64], 7, { dtype: 'f32' }).to(dt);
        const pos = tensor(
          Array.from({ length: 18 }, (_, i) => i * 37),
          [2, 9],
          { dtype: 'i64' },
        );
        const inv = rotaryInvFreq(64);
        const a = rotaryEmbedding(transpose(xs, 1, 2), pos, inv);
        const b = rotaryEmbedding(transpose(xs.to('cuda'), 1, 2), pos.to('cuda'), inv.to('cuda'));
        const tol = dt === 'f32' || dt === 'f64' ? 1e-5 : dt === 'f16' ? 2e-3 : 1.6e-2;
        expectClose(nums(b.to('cpu').to('f32')), nums(a.to('f32')), { atol: tol, rtol: tol });
        const back = new Tensor(native().rotary(b.handle, pos.to('cuda').handle, inv.to('cuda').handle, true));
        expectClose(nums(back.to('cpu').to('f32')), nums(transpose(xs, 1, 2).contiguous().to('f32')), { atol: 4 * tol, rtol: 4 * tol });
      }),
    );
  }
});
