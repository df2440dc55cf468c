/**
 * matmul and linear through the autograd: forward against a float64 reference, gradients against
 * finite differences (2-D, batched, broadcast batches, 2-D x 3-D, vectors, transposed views),
 * error codes, and CUDA gradients against the CPU.
 */
import { Tensor, tidy, matmul, linear, conv1d, transpose, toDevice, SiftError, noGrad, liveTensors } from '../../lib';
import { gradcheck, randomTensor, expectClose, describeCuda } from '../helpers/gradcheck';

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SiftError);
    return (e as SiftError).code;
  }
  return undefined;
}

function vals(t: Tensor): number[] {
  return Array.from(t.contiguous().toArray() as ArrayLike<number>, Number);
}

const g = (shape: number[], seed: number) => randomTensor(shape, seed, { requiresGrad: true });

describe('matmul forward', () => {
  test('2-D, vectors and a batched product match a float64 reference', () => {
    tidy(() => {
      const a = randomTensor([3, 4], 1);
      const b = randomTensor([4, 2], 2);
      const av = vals(a),
        bv = vals(b);
      const ref: number[] = [];
      for (let i = 0; i < 3; i++)
        for (let j = 0; j < 2; j++) {
          let s = 0;
          for (let k = 0; k < 4; k++) s += av[i * 4 + k] * bv[k * 2 + j];
          ref.push(s);
        }
      const y = matmul(a, b);
      expect(y.shape).toEqual([3, 2]);
      expectClose(vals(y), ref, { atol: 1e-12 });
      // Vector cases follow torch.matmul.
      const v = randomTensor([4], 3);
      expect(matmul(a, v).shape).toEqual([3]);
      expect(matmul(v, b).shape).toEqual([2]);
      expect(matmul(v, v).shape).toEqual([]);
      const vv = vals(v);
      expectClose(vals(matmul(v, v)), [vv.reduce((s, x) => s + x * x, 0)], { atol: 1e-12 });
      expect(matmul(randomTensor([5, 3, 4], 4), b).shape).toEqual([5, 3, 2]);
      expect(matmul(randomTensor([2, 1, 3, 4], 4), randomTensor([5, 4, 2], 5)).shape).toEqual([2, 5, 3, 2]);
    });
  });

  test('linear matches x @ W^T + b', () => {
    tidy(() => {
      const x = randomTensor([2, 3, 5], 1);
      const w = randomTensor([4, 5], 2);
      const bias = randomTensor([4], 3);
      const y = linear(x, w, bias);
      expect(y.shape).toEqual([2, 3, 4]);
      const xv = vals(x),
        wv = vals(w),
        bv = vals(bias);
      const ref: number[] = [];
      for (let r = 0; r < 6; r++)
        for (let o = 0; o < 4; o++) {
          let s = bv[o];
          for (let i = 0; i < 5; i++) s += xv[r * 5 + i] * wv[o * 5 + i];
          ref.push(s);
        }
      expectClose(vals(y), ref, { atol: 1e-12 });
      expect(linear(randomTensor([5], 4), w).shape).toEqual([4]);
    });
  });

  test('errors: inner mismatch E_SHAPE, dtype mismatch E_DTYPE, bad linear weight/bias E_SHAPE', () => {
    tidy(() => {
      const a = randomTensor([3, 4], 1);
      expect(code(() => matmul(a, randomTensor([5, 2], 2)))).toBe('E_SHAPE');
      expect(code(() => matmul(a, randomTensor([4, 2], 2, { dtype: 'f32' })))).toBe('E_DTYPE');
      expect(code(() => matmul(randomTensor([2, 3, 4], 1), randomTensor([3, 4, 5], 2)))).toBe('E_SHAPE');
      expect(code(() => linear(a, randomTensor([2, 5], 2)))).toBe('E_SHAPE');
      expect(code(() => linear(a, randomTensor([2, 2, 4], 2)))).toBe('E_SHAPE');
      expect(code(() => linear(a, randomTensor([2, 4], 2), randomTensor([3], 3)))).toBe('E_SHAPE');
      expect(code(() => linear(a, randomTensor([2, 4], 2, { dtype: 'f32' })))).toBe('E_DTYPE');
    });
  });
});

describe('matmul gradients (finite differences, f64)', () => {
  test('2-D, odd sizes', () => {
    gradcheck(matmul, [g([3, 5], 1), g([5, 4], 2)]);
    gradcheck(matmul, [g([1, 7], 3), g([7, 1], 4)]);
    gradcheck(matmul, [g([4, 1], 5), g([1, 3], 6)]);
  });

  test('batched and 3-D x 2-D (folded weight gradient)', () => {
    gradcheck(matmul, [g([2, 3, 4], 1), g([2, 4, 5], 2)]);
    gradcheck(matmul, [g([2, 3, 4], 3), g([4, 5], 4)]);
  });

  test('2-D x 3-D and broadcast batch dims', () => {
    gradcheck(matmul, [g([3, 4], 1), g([2, 4, 5], 2)]);
    gradcheck(matmul, [g([2, 1, 3, 4], 3), g([3, 4, 2], 4)]);
  });

  test('vectors', () => {
    gradcheck(matmul, [g([4], 1), g([4, 3], 2)]);
    gradcheck(matmul, [g([3, 4], 3), g([4], 4)]);
    gradcheck(matmul, [g([4], 5), g([4], 6)]);
  });

  test('transposed views', () => {
    gradcheck((a, b) => matmul(transpose(a), b), [g([5, 3], 1), g([5, 4], 2)]);
    gradcheck((a, b) => matmul(a, transpose(b)), [g([3, 5], 3), g([4, 5], 4)]);
    gradcheck((a, b) => matmul(transpose(a), transpose(b)), [g([2, 5, 3], 5), g([2, 4, 5], 6)]);
  });

  test('only one operand requires a gradient', () => {
    gradcheck(matmul, [g([3, 4], 1), randomTensor([4, 2], 2)]);
    gradcheck(matmul, [randomTensor([3, 4], 3), g([4, 2], 4)]);
  });
});

describe('linear gradients (finite differences, f64)', () => {
  test('with and without bias, 2-D and 3-D inputs, 1-D input', () => {
    gradcheck((x, w, b) => linear(x, w, b), [g([3, 5], 1), g([4, 5], 2), g([4], 3)]);
    gradcheck((x, w) => linear(x, w), [g([2, 3, 5], 4), g([4, 5], 5)]);
    gradcheck((x, w, b) => linear(x, w, b), [g([2, 3, 5], 6), g([4, 5], 7), g([4], 8)]);
    gradcheck((x, w) => linear(x, w), [g([5], 9), g([4, 5], 10)]);
  });

  test('conv1d (weight [in, out], bias) matches x @ W + b and its gradients', () => {
    gradcheck((x, w, b) => conv1d(x, w, b), [g([3, 5], 11), g([5, 4], 12), g([4], 13)]);
    gradcheck((x, w, b) => conv1d(x, w, b), [g([2, 3, 5], 14), g([5, 4], 15), g([4], 16)]);
    gradcheck((x, w) => conv1d(x, w), [g([5], 17), g([5, 4], 18)]);
    tidy(() => {
      const x = randomTensor([2, 3, 5], 1),
        w = randomTensor([5, 4], 2),
        b = randomTensor([4], 3);
      expectClose(vals(conv1d(x, w, b)), vals(matmul(x, w).add(b)), { atol: 1e-12 });
      expect(code(() => conv1d(x, randomTensor([4, 5], 2)))).toBe('E_SHAPE');
      expect(code(() => conv1d(x, w, randomTensor([5], 3)))).toBe('E_SHAPE');
      expect(code(() => conv1d(x, w, randomTensor([4], 3, { dtype: 'f32' })))).toBe('E_DTYPE');
    });
  });

  test('the bias goes into the product in place: one output tensor, not two', () => {
    tidy(() => {
      const x = randomTensor([64, 32], 1),
        w = randomTensor([32, 16], 2),
        b = randomTensor([16], 3);
      const wt = transpose(w, 0, 1);
      let before = liveTensors().cpu.count;
      conv1d(x, w, b);
      expect(liveTensors().cpu.count - before).toBe(1);
      before = liveTensors().cpu.count;
      linear(x, wt, b);
      expect(liveTensors().cpu.count - before).toBe(1);
    });
  });

  test('the weight gradient is contiguous in the [out, in] layout', () => {
    tidy(() => {
      const x = g([6, 5], 1),
        w = g([4, 5], 2);
      linear(x, w).sum().backward();
      expect(w.grad!.shape).toEqual([4, 5]);
      expect(w.grad!.isContiguous).toBe(true);
    });
  });
});

describeCuda('matmul and linear gradients on CUDA vs CPU', () => {
  test('f32 gradients agree', () => {
    tidy(() => {
      const mk = (shape: number[], seed: number, device: string) => {
        const t = noGrad(() => toDevice(randomTensor(shape, seed, { dtype: 'f32' }), device));
        t.requiresGrad = true;
        return t;
      };
      const run = (device: string) => {
        const x = mk([2, 7, 33], 1, device),
          w = mk([17, 33], 2, device),
          b = mk([17], 3, device),
          m = mk([2, 17, 5], 4, device);
        const y = matmul(linear(x, w, b), m);
        y.sum().backward();
        return [y, x.grad!, w.grad!, b.grad!, m.grad!].map((t) => vals(toDevice(t, 'cpu')));
      };
      const cpu = run('cpu'),
        gpu = run('cuda');
      cpu.forEach((c, i) => expectClose(gpu[i], c, { atol: 1e-3, rtol: 1e-4, label: `tensor ${i}` }));
    });
  });
});
