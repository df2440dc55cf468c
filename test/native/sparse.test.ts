/**
 * SIFT sparse-data kernels: scoreAccumulate, gatherInto, scatterInto, gradProportion, sumSquares,
 * against float64 references on the CPU, and CUDA against CPU.
 */
import { Tensor, tensor, zeros, SiftError, tidy } from '../../lib';
import { native } from '../../lib/engine/native';
import { describeCuda, expectClose, seededValues } from '../helpers/gradcheck';

const N = () => native();

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SiftError);
    return (e as SiftError).code;
  }
  return undefined;
}

const nums = (t: Tensor): number[] => Array.from(t.contiguous().toArray() as ArrayLike<number | bigint>, Number);
const f32 = (x: number) => Math.fround(x);

function scoreAccumulate(dst: Tensor, src: Tensor, kind: 'abs' | 'square', acc: boolean): void {
  N().scoreAccumulate(dst.handle, src.handle, kind, acc);
}
function gatherInto(dst: Tensor, src: Tensor, idx: Tensor, acc: boolean): void {
  N().gatherInto(dst.handle, src.handle, idx.handle, acc);
}
function scatterInto(dst: Tensor, idx: Tensor, values: Tensor, mode: 'set' | 'add'): void {
  N().scatterInto(dst.handle, idx.handle, values.handle, mode);
}
function gradProportion(out: Tensor, slot: number, grad: Tensor, idx: Tensor): void {
  N().gradProportion(out.handle, slot, grad.handle, idx.handle);
}
function sumSquares(ts: Tensor[]): Tensor {
  return new Tensor(N().sumSquares(ts.map((t) => t.handle)));
}

/** k distinct pseudo-random indices in [0, n), shuffled (not sorted). */
function distinctIndices(n: number, k: number, seed: number): number[] {
  const r = seededValues(n, seed);
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => r[a] - r[b]);
  return order.slice(0, k);
}

describe('scoreAccumulate (cpu)', () => {
  test('abs and square, written or added, from every float dtype and a strided source', () => {
    tidy(() => {
      const vals = seededValues(1000, 3).map((v) => v * 4);
      for (const dtype of ['f32', 'f64', 'f16', 'bf16']) {
        const src = tensor(vals, [20, 50], { dtype });
        const sv = nums(src);
        const dst = zeros([1000]);
        scoreAccumulate(dst, src, 'abs', false);
        expect(nums(dst)).toEqual(sv.map((v) => f32(Math.abs(v))));
        scoreAccumulate(dst, src, 'square', true);
        expectClose(
          nums(dst),
          sv.map((v) => Math.abs(v) + v * v),
          { rtol: 1e-6 },
        );
        scoreAccumulate(dst, src, 'square', false);
        expectClose(
          nums(dst),
          sv.map((v) => v * v),
          { rtol: 1e-6 },
        );
      }
      const src = tensor(vals, [20, 50]).transpose(0, 1);
      const dst = zeros([50, 20]);
      scoreAccumulate(dst, src, 'abs', false);
      expect(nums(dst)).toEqual(nums(src).map(Math.abs));
    });
  });

  test('argument checks', () => {
    tidy(() => {
      const src = tensor([1, -2, 3], [3]);
      expect(codeOf(() => scoreAccumulate(zeros([3], { dtype: 'f64' }), src, 'abs', false))).toBe('E_DTYPE');
      expect(codeOf(() => scoreAccumulate(zeros([4]), src, 'abs', false))).toBe('E_SHAPE');
      expect(codeOf(() => scoreAccumulate(zeros([3]), src, 'cube' as 'abs', false))).toBe('E_ARG');
      expect(codeOf(() => scoreAccumulate(zeros([3]), tensor([1, 2, 3], [3], { dtype: 'i32' }), 'abs', false))).toBe('E_DTYPE');
      expect(codeOf(() => scoreAccumulate(zeros([3, 2]).transpose(0, 1), zeros([2, 3]), 'abs', false))).toBe('E_ARG');
    });
  });
});

describe('gatherInto / scatterInto (cpu)', () => {
  test('gather then scatter round trip with i32 and i64 indices, every dtype', () => {
    tidy(() => {
      const n = 5000,
        k = 321;
      const vals = seededValues(n, 7);
      const ix = distinctIndices(n, k, 1);
      for (const itype of ['i32', 'i64']) {
        const idx = tensor(ix, [k], { dtype: itype });
        for (const dtype of ['f32', 'f64', 'f16', 'bf16']) {
          const src = tensor(vals, [50, 100], { dtype });
          const sv = nums(src);
          const g = zeros([k]);
          gatherInto(g, src, idx, false);
          expect(nums(g)).toEqual(ix.map((i) => f32(sv[i])));
          gatherInto(g, src, idx, true);
          expect(nums(g)).toEqual(ix.map((i) => f32(2 * sv[i])));
          // Scatter the gathered values into a zero tensor: only the selected entries come back.
          const dst = zeros([50, 100], { dtype });
          gatherInto(g, src, idx, false);
          scatterInto(dst, idx, g, 'set');
          const back = nums(dst);
          const expected = new Array(n).fill(0);
          for (const i of ix) expected[i] = f32(sv[i]);
          expect(back).toEqual(expected);
          // 'add' accumulates on top, rounding once to the destination dtype.
          scatterInto(dst, idx, g, 'add');
          const added = nums(dst);
          const dst2 = tensor(
            expected.map((v, i) => (ix.includes(i) ? 2 * v : v)),
            [50, 100],
            { dtype },
          );
          expect(added).toEqual(nums(dst2));
        }
      }
    });
  });

  test('strided source and destination use logical flat indices', () => {
    tidy(() => {
      const base = tensor(seededValues(12, 2), [3, 4]);
      const t = base.transpose(0, 1); // [4, 3], flat index i -> t[i / 3][i % 3]
      const tv = nums(t);
      const idx = tensor([0, 5, 11, 7], [4], { dtype: 'i32' });
      const g = zeros([4]);
      gatherInto(g, t, idx, false);
      expect(nums(g)).toEqual([0, 5, 11, 7].map((i) => tv[i]));
      scatterInto(t, idx, tensor([10, 20, 30, 40], [4]), 'set');
      const after = nums(t);
      expect([after[0], after[5], after[11], after[7]]).toEqual([10, 20, 30, 40]);
      expect(after[1]).toBe(tv[1]);
      // The base tensor saw the writes at the transposed positions.
      const bv = nums(base);
      expect(bv[0 * 4 + 0]).toBe(10); // t[0][0] = base[0][0]
      expect(bv[2 * 4 + 1]).toBe(20); // flat 5 of t = t[1][2] = base[2][1]
    });
  });

  test("'add' with repeated indices accumulates on the CPU", () => {
    tidy(() => {
      const dst = zeros([4]);
      scatterInto(dst, tensor([1, 1, 3, 1], [4], { dtype: 'i64' }), tensor([1, 2, 3, 4], [4]), 'add');
      expect(nums(dst)).toEqual([0, 7, 0, 3]);
    });
  });

  test('indices out of range: E_INDEX, and scatter writes nothing', () => {
    tidy(() => {
      const src = tensor([1, 2, 3, 4], [4]);
      for (const bad of [
        [0, 4],
        [-1, 2],
      ]) {
        for (const itype of ['i32', 'i64']) {
          const idx = tensor(bad, [2], { dtype: itype });
          expect(
            codeOf(() => {
              gatherInto(zeros([2]), src, idx, false);
              zeros([1]).toArray();
            }),
          ).toBe('E_INDEX');
          const dst = tensor([0, 0, 0, 0], [4]);
          expect(
            codeOf(() => {
              scatterInto(dst, idx, tensor([9, 9], [2]), 'set');
              dst.toArray();
            }),
          ).toBe('E_INDEX');
          expect(nums(dst)).toEqual([0, 0, 0, 0]);
        }
      }
    });
  });

  test('argument checks', () => {
    tidy(() => {
      const src = tensor([1, 2, 3, 4], [4]);
      const idx = tensor([0, 1], [2], { dtype: 'i32' });
      expect(codeOf(() => gatherInto(zeros([2]), src, tensor([0, 1], [2]), false))).toBe('E_DTYPE');
      expect(codeOf(() => gatherInto(zeros([3]), src, idx, false))).toBe('E_SHAPE');
      expect(codeOf(() => gatherInto(zeros([2], { dtype: 'bf16' }), src, idx, false))).toBe('E_DTYPE');
      expect(codeOf(() => scatterInto(src, idx, tensor([1, 2], [2], { dtype: 'f64' }), 'set'))).toBe('E_DTYPE');
      expect(codeOf(() => scatterInto(src, idx, tensor([1, 2, 3], [3]), 'set'))).toBe('E_SHAPE');
      expect(codeOf(() => scatterInto(src, idx, tensor([1, 2], [2]), 'mul' as 'set'))).toBe('E_ARG');
      expect(codeOf(() => scatterInto(tensor([1, 2], [2], { dtype: 'i32' }), idx, tensor([1, 2], [2]), 'set'))).toBe('E_DTYPE');
      expect(codeOf(() => scatterInto(src, tensor([0, 1], [2], { dtype: 'bool' }), tensor([1, 2], [2]), 'set'))).toBe('E_DTYPE');
    });
  });
});

describe('gradProportion / sumSquares (cpu)', () => {
  test('gradProportion writes [selected, total] squared norms at its slot', () => {
    tidy(() => {
      const n = 150_000,
        k = 1500;
      for (const dtype of ['f32', 'f64', 'bf16', 'f16']) {
        const grad = tensor(seededValues(n, 5), [300, 500], { dtype });
        const gv = nums(grad);
        const ix = distinctIndices(n, k, 3);
        const out = zeros([3, 2]);
        gradProportion(out, 1, grad, tensor(ix, [k], { dtype: 'i64' }));
        const sel = ix.reduce((s, i) => s + gv[i] * gv[i], 0);
        const all = gv.reduce((s, v) => s + v * v, 0);
        expectClose(nums(out), [0, 0, sel, all, 0, 0], { rtol: 1e-6 });
      }
      // Non-contiguous gradients are read in logical order.
      const g = tensor(seededValues(200, 1), [10, 20]).transpose(0, 1);
      const gv = nums(g);
      const out = zeros([1, 2]);
      gradProportion(out, 0, g, tensor([3, 150], [2], { dtype: 'i32' }));
      expectClose(nums(out), [gv[3] ** 2 + gv[150] ** 2, gv.reduce((s, v) => s + v * v, 0)], { rtol: 1e-6 });
    });
  });

  test('gradProportion checks', () => {
    tidy(() => {
      const g = tensor([1, 2, 3], [3]);
      const idx = tensor([0], [1], { dtype: 'i32' });
      expect(codeOf(() => gradProportion(zeros([2, 2]), 2, g, idx))).toBe('E_INDEX');
      expect(codeOf(() => gradProportion(zeros([2, 2]), -1, g, idx))).toBe('E_INDEX');
      expect(codeOf(() => gradProportion(zeros([2, 3]), 0, g, idx))).toBe('E_SHAPE');
      expect(codeOf(() => gradProportion(zeros([2]), 0, g, idx))).toBe('E_SHAPE');
      expect(codeOf(() => gradProportion(zeros([2, 2], { dtype: 'f64' }), 0, g, idx))).toBe('E_DTYPE');
      expect(codeOf(() => gradProportion(zeros([2, 2]), 0, g, tensor([0], [1])))).toBe('E_DTYPE');
      const out = zeros([2, 2]);
      expect(
        codeOf(() => {
          gradProportion(out, 0, g, tensor([3], [1], { dtype: 'i32' }));
          out.toArray();
        }),
      ).toBe('E_INDEX');
    });
  });

  test('sumSquares over many tensors of mixed dtypes and layouts', () => {
    tidy(() => {
      const ts = [
        tensor(seededValues(100_000, 1), [100_000]),
        tensor(seededValues(7, 2), [7], { dtype: 'f64' }),
        tensor(seededValues(3000, 3), [30, 100], { dtype: 'bf16' }).transpose(0, 1),
        tensor(seededValues(0, 4), [0], { dtype: 'f16' }),
        tensor(seededValues(513, 5), [513], { dtype: 'f16' }),
      ];
      const expected = ts.reduce((s, t) => s + nums(t).reduce((a, v) => a + v * v, 0), 0);
      const r = sumSquares(ts);
      expect(r.shape).toEqual([]);
      expect(r.dtype).toBe('f32');
      expectClose(nums(r), [expected], { rtol: 1e-6 });
      expect(codeOf(() => sumSquares([]))).toBe('E_ARG');
      expect(codeOf(() => sumSquares([tensor([1], [1], { dtype: 'i32' })]))).toBe('E_DTYPE');
    });
  });
});

describeCuda('sparse kernels: CUDA matches CPU', () => {
  const gpu = (t: Tensor) => t.to('cuda');

  test('scoreAccumulate', () => {
    tidy(() => {
      for (const dtype of ['f32', 'f64', 'f16', 'bf16']) {
        const src = tensor(
          seededValues(300_001, 2).map((v) => v * 3),
          [300_001],
          { dtype },
        );
        for (const kind of ['abs', 'square'] as const) {
          const c = zeros([300_001]);
          const g = gpu(c);
          scoreAccumulate(c, src, kind, false);
          scoreAccumulate(c, src, kind, true);
          scoreAccumulate(g, gpu(src), kind, false);
          scoreAccumulate(g, gpu(src), kind, true);
          expect(nums(g)).toEqual(nums(c));
        }
      }
    });
  });

  test('gatherInto / scatterInto (set, add, strided, every dtype, i32/i64)', () => {
    tidy(() => {
      const n = 200_000,
        k = 5_000;
      const ix = distinctIndices(n, k, 4);
      const vals = tensor(seededValues(k, 9), [k]);
      for (const itype of ['i32', 'i64']) {
        const idx = tensor(ix, [k], { dtype: itype });
        for (const dtype of ['f32', 'f64', 'f16', 'bf16']) {
          const src = tensor(seededValues(n, 3), [400, 500], { dtype });
          for (const strided of [false, true]) {
            const s = strided ? src.transpose(0, 1) : src;
            const sg = strided ? gpu(src).transpose(0, 1) : gpu(src);
            const c = zeros([k]);
            const g = gpu(c);
            gatherInto(c, s, idx, false);
            gatherInto(c, s, idx, true);
            gatherInto(g, sg, gpu(idx), false);
            gatherInto(g, sg, gpu(idx), true);
            expect(nums(g)).toEqual(nums(c));
          }
          for (const mode of ['set', 'add'] as const) {
            const c = src.clone();
            const g = gpu(src);
            scatterInto(c, idx, vals, mode);
            scatterInto(g, gpu(idx), gpu(vals), mode);
            expect(nums(g)).toEqual(nums(c));
            const ct = src.clone().transpose(0, 1);
            const gt = gpu(src).transpose(0, 1);
            scatterInto(ct, idx, vals, mode);
            scatterInto(gt, gpu(idx), gpu(vals), mode);
            expect(nums(gt)).toEqual(nums(ct));
          }
        }
      }
    });
  });

  test("'add' with repeated indices accumulates on CUDA too (atomics)", () => {
    tidy(() => {
      for (const dtype of ['f32', 'f64', 'f16', 'bf16']) {
        const dst = gpu(zeros([6], { dtype }));
        const idx = gpu(
          tensor(
            new Array(64).fill(0).map((_, i) => (i % 3) * 2 + 1),
            [64],
            { dtype: 'i32' },
          ),
        );
        scatterInto(dst, idx, gpu(tensor(new Array(64).fill(0.5), [64])), 'add');
        expect(nums(dst)).toEqual([0, 11, 0, 10.5, 0, 10.5]);
      }
    });
  });

  test('index errors surface as E_INDEX at the next read', () => {
    tidy(() => {
      const src = gpu(tensor([1, 2, 3, 4], [4]));
      const idx = gpu(tensor([0, 4], [2], { dtype: 'i64' }));
      expect(
        codeOf(() => {
          gatherInto(gpu(zeros([2])), src, idx, false);
          src.toArray();
        }),
      ).toBe('E_INDEX');
      expect(
        codeOf(() => {
          scatterInto(src, idx, gpu(tensor([1, 1], [2])), 'add');
          src.toArray();
        }),
      ).toBe('E_INDEX');
      const out = gpu(zeros([1, 2]));
      expect(
        codeOf(() => {
          gradProportion(out, 0, src, gpu(tensor([-1], [1], { dtype: 'i32' })));
          out.toArray();
        }),
      ).toBe('E_INDEX');
      // The flag was cleared by the read: later work is unaffected.
      expect(nums(src).length).toBe(4);
    });
  });

  test('gradProportion and sumSquares (deterministic, close to the CPU)', () => {
    tidy(() => {
      const n = 1_000_003,
        k = 10_000;
      const ix = tensor(distinctIndices(n, k, 5), [k], { dtype: 'i32' });
      for (const dtype of ['f32', 'bf16', 'f64']) {
        const grad = tensor(seededValues(n, 6), [n], { dtype });
        const c = zeros([2, 2]);
        const g = gpu(c);
        gradProportion(c, 1, grad, ix);
        gradProportion(g, 1, gpu(grad), gpu(ix));
        expectClose(nums(g), nums(c), { rtol: 1e-6 });
        const again = gpu(zeros([2, 2]));
        gradProportion(again, 1, gpu(grad), gpu(ix));
        expect(nums(again)).toEqual(nums(g));
      }
      const ts = Array.from({ length: 100 }, (_, i) =>
        tensor(seededValues(1 + i * 997, i), [1 + i * 997], { dtype: i % 3 ? 'f32' : 'bf16' }),
      );
      const cpu = nums(sumSquares(ts))[0];
      const gts = ts.map(gpu);
      const a = nums(sumSquares(gts))[0];
      expectClose([a], [cpu], { rtol: 1e-6 });
      expect(nums(sumSquares(gts))[0]).toBe(a);
      const cpuT = ts[0];
      expect(codeOf(() => sumSquares([gts[0], cpuT]))).toBe('E_DEVICE');
      expect(codeOf(() => gatherInto(gpu(zeros([1])), cpuT, gpu(tensor([0], [1], { dtype: 'i32' })), false))).toBe('E_DEVICE');
    });
  });
});
