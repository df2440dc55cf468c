/**
 * embedding: row lookup for i32/i64 ids of any shape, the scatter-add gradient (repeated ids
 * accumulate), 16-bit weights, index/shape/dtype errors, and CUDA vs CPU (with determinism).
 */
import { Tensor, tensor, embedding, tidy, SiftError } from '../../lib';
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

describe('embedding', () => {
  const V = 5;
  const D = 3;
  const wv = seededValues(V * D, 31);

  test.each(['i32', 'i64'] as const)('looks up rows for %s ids of any shape', (idt) => {
    tidy(() => {
      const w = tensor(wv, [V, D], { dtype: 'f32' });
      const ids = tensor([4, 0, 2, 2, 1, 4], [2, 3], { dtype: idt });
      const y = embedding(w, ids);
      expect(y.shape).toEqual([2, 3, D]);
      const expected = [4, 0, 2, 2, 1, 4].flatMap((i) => wv.slice(i * D, (i + 1) * D).map(Math.fround));
      expect(nums(y)).toEqual(expected);
      const scalar = embedding(w, tensor(3, [], { dtype: idt }));
      expect(scalar.shape).toEqual([D]);
      expect(nums(scalar)).toEqual(wv.slice(9, 12).map(Math.fround));
      expect(embedding(w, tensor([], [0], { dtype: idt })).shape).toEqual([0, D]);
    });
  });

  test('16-bit weights are copied exactly', () => {
    for (const dtype of ['f16', 'bf16'] as const) {
      tidy(() => {
        const w = tensor(wv, [V, D], { dtype });
        const y = embedding(w, tensor([1, 3], [2], { dtype: 'i64' }));
        expect(y.dtype).toBe(dtype);
        const wr = nums(w);
        expect(nums(y)).toEqual([...wr.slice(3, 6), ...wr.slice(9, 12)]);
      });
    }
  });

  test('gradient with repeated ids matches finite differences (f64)', () => {
    const w = randomTensor([V, D], 32, { requiresGrad: true });
    const ids = tensor([0, 2, 2, 4, 0, 2, 2, 2], [2, 4], { dtype: 'i32' });
    gradcheck((ww) => embedding(ww, ids), [w]);
    w.dispose();
    ids.dispose();
  });

  test('repeated ids accumulate; unused rows get zero', () => {
    tidy(() => {
      const w = tensor(wv, [V, D], { dtype: 'f32', requiresGrad: true });
      const ids = tensor([1, 1, 3, 1], [4], { dtype: 'i64' });
      const g = [1, 2, 3, 10, 20, 30, 100, 200, 300, 1000, 2000, 3000];
      embedding(w, ids).backward(tensor(g, [4, D], { dtype: 'f32' }));
      expect(nums(w.grad!)).toEqual([0, 0, 0, 1011, 2022, 3033, 0, 0, 0, 100, 200, 300, 0, 0, 0]);
      w.dispose();
    });
  });

  test('16-bit gradients accumulate in f32', () => {
    tidy(() => {
      const gy = tensor(new Array(64).fill(0.01), [64, 1], { dtype: 'bf16' });
      const ids = tensor(new Array(64).fill(0), [64], { dtype: 'i32' });
      const gw = new Tensor(native().embeddingBackward(gy.handle, ids.handle, 2));
      expect(gw.dtype).toBe('bf16');
      // 64 * bf16(0.01) summed in f32, rounded once (a bf16 running sum would stall near 0.5).
      expectClose(nums(gw), [64 * nums(gy)[0], 0], { rtol: 1 / 128, atol: 0 });
    });
  });

  test('out-of-range ids are E_INDEX', () => {
    tidy(() => {
      const w = tensor(wv, [V, D], { dtype: 'f32' });
      // Ids already on the host are checked at the call; otherwise the error surfaces at the
      // next read (toArray) or synchronisation.
      expect(codeOf(() => embedding(w, tensor([0, 5], [2], { dtype: 'i32' })).toArray())).toBe('E_INDEX');
      expect(codeOf(() => embedding(w, tensor([-1], [1], { dtype: 'i64' })).toArray())).toBe('E_INDEX');
      const f = tensor([1, 7], [2], { dtype: 'f32' });
      expect(codeOf(() => embedding(w, f.to('i32')).toArray())).toBe('E_INDEX');
      const gy = tensor(new Array(6).fill(1), [2, D], { dtype: 'f32' });
      expect(
        codeOf(() => new Tensor(native().embeddingBackward(gy.handle, tensor([0, 5], [2], { dtype: 'i32' }).handle, V)).toArray()),
      ).toBe('E_INDEX');
      // The executor is healthy afterwards.
      expect(nums(embedding(w, tensor([4], [1], { dtype: 'i32' })))).toEqual(wv.slice(12).map(Math.fround));
    });
  });

  test('shape and dtype errors', () => {
    tidy(() => {
      const N = native();
      const w = tensor(wv, [V, D], { dtype: 'f32' });
      const ids = tensor([0, 1], [2], { dtype: 'i32' });
      expect(codeOf(() => embedding(w, tensor([0, 1], [2], { dtype: 'f32' })))).toBe('E_DTYPE');
      expect(codeOf(() => N.embedding(w.handle, tensor([0, 1], [2], { dtype: 'f32' }).handle))).toBe('E_DTYPE');
      expect(codeOf(() => embedding(tensor(wv, [V * D], { dtype: 'f32' }), ids))).toBe('E_SHAPE');
      const gy = tensor(new Array(8).fill(1), [2, 4], { dtype: 'f32' });
      expect(codeOf(() => N.embeddingBackward(gy.handle, tensor([0, 1, 2], [3], { dtype: 'i32' }).handle, V))).toBe('E_SHAPE');
      expect(codeOf(() => N.embeddingBackward(gy.handle, ids.handle, -1))).toBe('E_ARG');
      expect(codeOf(() => N.embeddingBackward(tensor([1, 2], [2, 1], { dtype: 'i32' }).handle, ids.handle, V))).toBe('E_DTYPE');
    });
  });
});

describeCuda('embedding, CUDA vs CPU', () => {
  for (const dtype of ['f32', 'f64', 'f16', 'bf16'] as const) {
    test(`${dtype} forward and backward with many repeated ids`, () => {
      tidy(() => {
        const V = 1000;
        const D = 96;
        const n = 4096;
        const idv = seededValues(n, 41).map((v) => (Math.floor((v + 1) * 0.5 * 37) * 17) % V); // few distinct ids
        const wv = seededValues(V * D, 42);
        const gv = seededValues(n * D, 43);
        for (const idt of ['i32', 'i64'] as const) {
          const wc = tensor(wv, [V, D], { dtype, requiresGrad: true });
          const wg = tensor(wv, [V, D], { dtype, device: 'cuda', requiresGrad: true });
          const ic = tensor(idv, [64, 64], { dtype: idt });
          const ig = tensor(idv, [64, 64], { dtype: idt, device: 'cuda' });
          const yc = embedding(wc, ic);
          const yg = embedding(wg, ig);
          expect(nums(yg.to('cpu'))).toEqual(nums(yc));
          yc.backward(tensor(gv, [64, 64, D], { dtype }));
          yg.backward(tensor(gv, [64, 64, D], { dtype, device: 'cuda' }));
          const tol = dtype === 'f64' ? 1e-12 : dtype === 'f32' ? 1e-4 : 0.1;
          const gg = nums(wg.grad!.to('cpu'));
          expectClose(gg, nums(wc.grad!), { atol: tol, rtol: 1e-2 });
          // Deterministic: a second backward on the GPU gives the same bits.
          const again = new Tensor(native().embeddingBackward(tensor(gv, [64, 64, D], { dtype, device: 'cuda' }).handle, ig.handle, V));
          expect(nums(again.to('cpu'))).toEqual(gg);
          for (const t of [wc, wg]) t.dispose();
        }
      });
    });
  }

  test('out-of-range ids are E_INDEX at the next synchronisation', () => {
    tidy(() => {
      const w = tensor(seededValues(20, 1), [5, 4], { device: 'cuda' });
      expect(codeOf(() => embedding(w, tensor([0, 9], [2], { dtype: 'i32', device: 'cuda' })).toArray())).toBe('E_INDEX');
      const gy = tensor(new Array(8).fill(1), [2, 4], { device: 'cuda' });
      const ids = tensor([-3, 1], [2], { dtype: 'i64', device: 'cuda' });
      expect(codeOf(() => new Tensor(native().embeddingBackward(gy.handle, ids.handle, 5)).toArray())).toBe('E_INDEX');
      expect(nums(embedding(w, tensor([1], [1], { dtype: 'i32', device: 'cuda' })).to('cpu')).length).toBe(4);
    });
  });
});
