/**
 * Reductions: values against float64 references computed here over many shapes, dim sets,
 * layouts (views), 0-d and empty tensors and dtypes; argmax; sumTo; p-norms; gradients by
 * finite differences; error codes; and CUDA against CPU where a GPU is usable.
 */
import { Tensor, tensor, tidy, SiftError, reduce, argmax, norm, zeros } from '../../lib';
import { native } from '../../lib/engine/native';
import type { ReduceOp } from '../../lib/engine/addon-types';
import { gradcheck, randomTensor, seededValues, expectClose, describeCuda } from '../helpers/gradcheck';

const N = native;
const nums = (t: Tensor): number[] => Array.from(t.toArray() as ArrayLike<number | bigint>, Number);

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SiftError);
    return (e as SiftError).code;
  }
  return undefined;
}

const OPS: ReduceOp[] = ['sum', 'mean', 'max', 'min', 'sumsq', 'absmax'];

/** Reference reduction of row-major values over dims: returns [shape, values]. */
function refReduce(op: ReduceOp, shape: number[], vals: number[], dims: number[], keepdim: boolean): [number[], number[]] {
  const nd = shape.length;
  const red = new Set(dims.map((d) => (d < 0 ? d + Math.max(nd, 1) : d)));
  const outShape = shape.flatMap((s, i) => (red.has(i) ? (keepdim ? [1] : []) : [s]));
  const keptShape = shape.map((s, i) => (red.has(i) ? 1 : s));
  const nOut = keptShape.reduce((a, b) => a * b, 1);
  const groups: number[][] = Array.from({ length: nOut }, () => []);
  vals.forEach((v, flat) => {
    let rem = flat,
      o = 0,
      mul = 1;
    for (let d = nd - 1; d >= 0; d--) {
      const i = rem % shape[d];
      rem = Math.floor(rem / shape[d]);
      if (!red.has(d)) o += i * mul;
      mul *= keptShape[d];
    }
    groups[o].push(v);
  });
  const f = (g: number[]): number => {
    switch (op) {
      case 'sum':
        return g.reduce((a, b) => a + b, 0);
      case 'mean':
        return g.reduce((a, b) => a + b, 0) / g.length;
      case 'max':
        return g.some(Number.isNaN) ? NaN : g.reduce((a, b) => Math.max(a, b), -Infinity);
      case 'min':
        return g.some(Number.isNaN) ? NaN : g.reduce((a, b) => Math.min(a, b), Infinity);
      case 'sumsq':
        return g.reduce((a, b) => a + b * b, 0);
      case 'absmax':
        return g.reduce((a, b) => Math.max(a, Math.abs(b)), 0);
    }
  };
  return [outShape, groups.map(f)];
}

const CASES: [number[], number[]][] = [
  [[2, 3, 4], [0]],
  [[2, 3, 4], [1]],
  [[2, 3, 4], [2]],
  [
    [2, 3, 4],
    [0, 2],
  ],
  [
    [2, 3, 4],
    [0, 1],
  ],
  [
    [2, 3, 4],
    [1, 2],
  ],
  [
    [2, 3, 4],
    [0, 1, 2],
  ],
  [[2, 3, 4], [-1]],
  [[2, 3, 4], []],
  [[5], [0]],
  [
    [3, 1, 4],
    [0, 2],
  ],
  [[1, 7, 1], [1]],
  [[300, 513], [0]],
  [[3, 5, 700], [1]],
  [
    [2, 3, 4, 5],
    [1, 3],
  ],
];

describe('reduce', () => {
  test.each(CASES)('every op on shape %j over dims %j, f64 and f32, keepdim both ways', (shape, dims) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const vals = seededValues(n, 3).map((v) => v * 4);
    for (const dtype of ['f64', 'f32'] as const) {
      tidy(() => {
        const V = dtype === 'f32' ? vals.map(Math.fround) : vals;
        const x = tensor(V, shape, { dtype });
        for (const op of OPS) {
          for (const keepdim of [false, true]) {
            const [rs, rv] = refReduce(op, shape, V, dims, keepdim);
            const y = new Tensor(N().reduce(op, x.handle, dims, keepdim));
            expect(y.shape).toEqual(rs);
            expect(y.dtype).toBe(dtype);
            const tol = dtype === 'f64' ? 1e-12 : 2e-5;
            expectClose(nums(y), rv, { atol: tol, rtol: tol, label: `${op} ${dtype} keepdim=${keepdim}` });
          }
        }
      });
    }
  });

  test('non-contiguous inputs: transposed, permuted, sliced, expanded', () => {
    tidy(() => {
      const base = randomTensor([4, 5, 6], 9);
      const bv = nums(base);
      const views: [Tensor, number[], (i: number[]) => number][] = [
        [base.transpose(0, 2), [6, 5, 4], ([a, b, c]) => bv[c * 30 + b * 6 + a]],
        [base.permute(1, 2, 0), [5, 6, 4], ([a, b, c]) => bv[c * 30 + a * 6 + b]],
        [base.slice(2, 1, 4), [4, 5, 3], ([a, b, c]) => bv[a * 30 + b * 6 + c + 1]],
        [base.slice(0, 1, 2).expand([3, 5, 6]), [3, 5, 6], ([, b, c]) => bv[30 + b * 6 + c]],
      ];
      for (const [v, shape, at] of views) {
        const flat: number[] = [];
        for (let a = 0; a < shape[0]; a++) for (let b = 0; b < shape[1]; b++) for (let c = 0; c < shape[2]; c++) flat.push(at([a, b, c]));
        for (const dims of [[0], [1], [2], [0, 2], [0, 1, 2], [1, 2]]) {
          for (const op of OPS) {
            const [rs, rv] = refReduce(op, shape, flat, dims, false);
            const y = new Tensor(N().reduce(op, v.handle, dims, false));
            expect(y.shape).toEqual(rs);
            expectClose(nums(y), rv, { atol: 1e-12, rtol: 1e-12, label: `${op} over ${dims}` });
          }
        }
      }
    });
  });

  test('0-d tensors: dims [] copies, dim 0 reduces the single element', () => {
    tidy(() => {
      const z = tensor(-3, undefined, { dtype: 'f32' });
      for (const dims of [[], [0], [-1]]) {
        expect(new Tensor(N().reduce('sum', z.handle, dims, false)).item()).toBe(-3);
        expect(new Tensor(N().reduce('sumsq', z.handle, dims, true)).item()).toBe(9);
        expect(new Tensor(N().reduce('absmax', z.handle, dims, false)).shape).toEqual([]);
      }
      const c = new Tensor(N().reduce('mean', z.handle, [], false));
      expect(c.item()).toBe(-3);
      expect(N().sameStorage(c.handle, z.handle)).toBe(false);
      expect(code(() => N().reduce('sum', z.handle, [1], false))).toBe('E_SHAPE');
    });
  });

  test('empty tensors: sums are 0, mean is NaN, max/min have no identity', () => {
    tidy(() => {
      const e = zeros([0, 3]);
      expect(nums(e.sum(0))).toEqual([0, 0, 0]);
      expect(nums(new Tensor(N().reduce('sumsq', e.handle, [0], false)))).toEqual([0, 0, 0]);
      expect(nums(new Tensor(N().reduce('absmax', e.handle, [0], false)))).toEqual([0, 0, 0]);
      expect(nums(e.mean(0))).toEqual([NaN, NaN, NaN]);
      expect(e.sum(1).shape).toEqual([0]);
      expect(e.max(1).shape).toEqual([0]);
      expect(e.sum().item()).toBe(0);
      expect(code(() => e.max(0))).toBe('E_SHAPE');
      expect(code(() => e.min())).toBe('E_SHAPE');
    });
  });

  test('long rows (chunked) and wide columns stay accurate in f32', () => {
    tidy(() => {
      const n = 300001;
      const vals = seededValues(n, 17).map((v) => Math.fround(v + 0.25));
      const x = tensor(vals, [n], { dtype: 'f32' });
      const exact = vals.reduce((a, b) => a + b, 0);
      expectClose([x.sum().item()], [exact], { rtol: 1e-5, atol: 1e-3 });
      expectClose([x.mean().item()], [exact / n], { rtol: 1e-5, atol: 1e-8 });
      expectClose([new Tensor(N().reduce('sumsq', x.handle, [0], false)).item()], [vals.reduce((a, b) => a + b * b, 0)], { rtol: 1e-5 });
      expect(x.max().item()).toBe(vals.reduce((a, b) => Math.max(a, b), -Infinity));
      const two = tensor(vals.slice(0, 2 * 100000), [2, 100000], { dtype: 'f32' });
      const [, rv] = refReduce('sum', [2, 100000], vals.slice(0, 200000), [1], false);
      expectClose(nums(two.sum(1)), rv, { rtol: 1e-5, atol: 1e-3 });
      // results do not depend on the thread count: same bits on repeated calls
      expect(x.sum().item()).toBe(x.sum().item());
    });
  });

  test('NaN propagates through max, min and absmax', () => {
    tidy(() => {
      const x = tensor(
        [
          [1, NaN, 3],
          [4, 5, 6],
        ],
        undefined,
        { dtype: 'f32' },
      );
      expect(nums(x.max(1))).toEqual([NaN, 6]);
      expect(nums(x.min(1))).toEqual([NaN, 4]);
      expect(nums(x.max(0))).toEqual([4, NaN, 6]);
      expect(nums(new Tensor(N().reduce('absmax', x.handle, [0, 1], false)))).toEqual([NaN]);
    });
  });

  test('integer sum, max, min; other integer reductions and bool are E_DTYPE', () => {
    for (const dtype of ['i32', 'i64'] as const) {
      tidy(() => {
        const x = tensor(
          [
            [1, -5, 3],
            [7, 2, -8],
          ],
          undefined,
          { dtype },
        );
        expect(x.sum(1).dtype).toBe(dtype);
        expect(nums(x.sum(1))).toEqual([-1, 1]);
        expect(nums(x.sum(0))).toEqual([8, -3, -5]);
        expect(nums(x.max(0))).toEqual([7, 2, 3]);
        expect(nums(x.min())).toEqual([-8]);
        expect(code(() => x.mean())).toBe('E_DTYPE');
        expect(code(() => N().reduce('sumsq', x.handle, [0], false))).toBe('E_DTYPE');
      });
    }
    tidy(() => {
      const big = tensor([2 ** 40, 2 ** 40, 3], [3], { dtype: 'i64' });
      expect(Array.from(big.sum().toArray() as BigInt64Array)).toEqual([2n ** 41n + 3n]);
      expect(code(() => tensor([1, 0], [2], { dtype: 'bool' }).sum())).toBe('E_DTYPE');
    });
  });

  test('f16 and bf16 accumulate in f32 and agree with f32 within output rounding', () => {
    tidy(() => {
      const vals = seededValues(4 * 1000, 23).map((v) => v + 0.1);
      for (const [dt, eps] of [
        ['f16', 2 ** -10],
        ['bf16', 2 ** -7],
      ] as const) {
        const x = tensor(vals, [4, 1000], { dtype: dt });
        const x32 = x.cast('f32');
        for (const op of OPS) {
          for (const dims of [[1], [0], [0, 1]]) {
            const got = new Tensor(N().reduce(op, x.handle, dims, false));
            expect(got.dtype).toBe(dt);
            const ref = new Tensor(N().reduce(op, x32.handle, dims, false));
            expectClose(nums(got), nums(ref), { rtol: eps, atol: 1e-6, label: `${op} ${dt} ${dims}` });
          }
        }
      }
    });
  });

  test('errors: dims out of range or repeated (E_SHAPE), unknown op (E_ARG)', () => {
    tidy(() => {
      const x = zeros([2, 3]);
      expect(code(() => N().reduce('sum', x.handle, [2], false))).toBe('E_SHAPE');
      expect(code(() => N().reduce('sum', x.handle, [-3], false))).toBe('E_SHAPE');
      expect(code(() => N().reduce('sum', x.handle, [0, -2], false))).toBe('E_SHAPE');
      expect(code(() => x.sum([1, 1]))).toBe('E_SHAPE');
      expect(code(() => N().reduce('prod' as ReduceOp, x.handle, [0], false))).toBe('E_ARG');
      expect(code(() => N().reduce('sum', x.handle, [0.5], false))).toBe('E_ARG');
    });
  });

  const GRAD: [number[], number[] | undefined, boolean][] = [
    [[3, 4], undefined, false],
    [[3, 4], [0], false],
    [[3, 4], [1], true],
    [[2, 3, 4], [0, 2], true],
    [[2, 3, 4], [-2], false],
  ];
  test.each(GRAD)('gradcheck sum/mean/max/min on %j over %j keepdim=%j', (shape, dims, keepdim) => {
    for (const op of ['sum', 'mean', 'max', 'min'] as const) {
      const x = randomTensor(shape, 5, { requiresGrad: true }); // distinct values: no ties
      gradcheck((t) => reduce(op, t, dims, keepdim), [x]);
      x.dispose();
    }
  });

  test('max/min share the gradient among tied elements', () => {
    tidy(() => {
      const x = tensor(
        [
          [1, 3, 3],
          [2, 0, 0],
        ],
        undefined,
        { dtype: 'f64', requiresGrad: true },
      );
      x.max(1).sum().backward();
      expect(x.grad!.tolist()).toEqual([
        [0, 0.5, 0.5],
        [1, 0, 0],
      ]);
      x.zeroGrad();
      x.min(1).sum().backward();
      expect(x.grad!.tolist()).toEqual([
        [1, 0, 0],
        [0, 0.5, 0.5],
      ]);
    });
  });
});

describe('norm', () => {
  test('values for p = 1, 2, Infinity over dims', () => {
    tidy(() => {
      const vals = [3, -4, 1, -2, 0.5, 6];
      const x = tensor(vals, [2, 3], { dtype: 'f64' });
      expectClose([norm(x).item()], [Math.hypot(...vals)], { rtol: 1e-14 });
      expectClose(nums(norm(x, 1, 1)), [8, 8.5], { rtol: 1e-14 });
      expectClose(nums(norm(x, Infinity, 0)), [3, 4, 6], { rtol: 1e-14 });
      expect(norm(x, 2, 1, true).shape).toEqual([2, 1]);
      expect(code(() => norm(x, 3))).toBe('E_ARG');
    });
  });

  test.each([1, 2, Infinity])('gradcheck norm p=%s over all elements and over a dim', (p) => {
    const x = randomTensor([3, 4], 13, { requiresGrad: true });
    gradcheck((t) => norm(t, p), [x]);
    gradcheck((t) => norm(t, p, 1, true), [x]);
    gradcheck((t) => norm(t, p, [0]), [x]);
    x.dispose();
  });

  test('the gradient of the 2-norm at zero is zero, not NaN', () => {
    tidy(() => {
      const x = tensor([0, 0, 0], [3], { dtype: 'f64', requiresGrad: true });
      norm(x).backward();
      expect(nums(x.grad!)).toEqual([0, 0, 0]);
    });
  });
});

describe('argmax', () => {
  test('first index on ties, NaN counts as the maximum, any dim, keepdim', () => {
    tidy(() => {
      const x = tensor(
        [
          [1, 5, 5, 2],
          [7, 7, 0, 7],
          [0, NaN, 9, NaN],
        ],
        undefined,
        { dtype: 'f32' },
      );
      const a = argmax(x, 1);
      expect(a.dtype).toBe('i64');
      expect(nums(a)).toEqual([1, 0, 1]);
      expect(nums(argmax(x, 0))).toEqual([1, 2, 2, 2]);
      expect(argmax(x, -1, true).shape).toEqual([3, 1]);
      expect(nums(argmax(x.transpose(0, 1), 0))).toEqual([1, 0, 1]);
      expect(nums(argmax(tensor([3, 9, 9, -1], [4], { dtype: 'i32' }), 0))).toEqual([1]);
      expect(nums(argmax(tensor([2, 5], [2], { dtype: 'bf16' }), 0))).toEqual([1]);
      const z = argmax(tensor(4, undefined), 0);
      expect(z.shape).toEqual([]);
      expect(z.item()).toBe(0);
      expect(argmax(zeros([0, 3]), 1).shape).toEqual([0]);
      expect(code(() => argmax(zeros([2, 0]), 1))).toBe('E_SHAPE');
      expect(code(() => N().argmax(x.handle, 2, false))).toBe('E_SHAPE');
      expect(code(() => N().argmax(tensor([1], [1], { dtype: 'bool' }).handle, 0, false))).toBe('E_DTYPE');
    });
  });

  test('matches a reference on a larger tensor over each dim', () => {
    tidy(() => {
      const shape = [6, 7, 8];
      const vals = seededValues(336, 29);
      const x = tensor(vals, shape, { dtype: 'f64' });
      for (let d = 0; d < 3; d++) {
        const got = nums(argmax(x, d));
        const [, ref] = refReduce('max', shape, vals, [d], false);
        const idx: number[] = [];
        const st = [56, 8, 1];
        const kept = [0, 1, 2].filter((k) => k !== d);
        for (let o = 0; o < ref.length; o++) {
          const i0 = Math.floor(o / shape[kept[1]]),
            i1 = o % shape[kept[1]];
          for (let r = 0; r < shape[d]; r++) {
            const flat = i0 * st[kept[0]] + i1 * st[kept[1]] + r * st[d];
            if (vals[flat] === ref[o]) {
              idx.push(r);
              break;
            }
          }
        }
        expect(got).toEqual(idx);
      }
    });
  });
});

describe('sumTo', () => {
  test('reverses broadcasting', () => {
    tidy(() => {
      const vals = seededValues(24, 31);
      const x = tensor(vals, [2, 3, 4], { dtype: 'f64' });
      const cases: [number[], number[]][] = [
        [
          [3, 1],
          [0, 2],
        ],
        [[4], [0, 1]],
        [[], [0, 1, 2]],
        [
          [1, 1, 4],
          [0, 1],
        ],
        [[2, 1, 4], [1]],
        [[2, 3, 4], []],
      ];
      for (const [target, dims] of cases) {
        const y = new Tensor(N().sumTo(x.handle, target));
        expect(y.shape).toEqual(target);
        const [, rv] = refReduce('sum', [2, 3, 4], vals, dims, true);
        expectClose(nums(y), rv, { rtol: 1e-14, atol: 1e-14 });
      }
      const r = new Tensor(N().sumTo(tensor([1, 2, 3], [1, 3]).handle, [3]));
      expect(nums(r)).toEqual([1, 2, 3]);
      expect(code(() => N().sumTo(x.handle, [3]))).toBe('E_SHAPE');
      expect(code(() => N().sumTo(x.handle, [5, 2, 3, 4]))).toBe('E_SHAPE');
    });
  });
});

describeCuda('reductions, CUDA vs CPU', () => {
  const tolFor = (dt: string) => (dt === 'f64' ? 1e-12 : dt === 'f32' ? 2e-5 : dt === 'f16' ? 2 ** -10 : 2 ** -7);

  test('every op over many shapes and dims (rows, warps, blocks, two-pass, columns), every float dtype', () => {
    const cases: [number[], number[]][] = [
      ...CASES,
      [[1000, 100], [1]],
      [[3, 200000], [1]],
      [[1, 1000000], [1]],
      [[1000000], [0]],
      [[5000, 3], [0]],
      [
        [2, 64, 40],
        [0, 2],
      ],
      [[7, 300, 5], [1]],
      // column sums on the 16-byte vector path over several row chunks (I a multiple of 8)
      [[520, 768], [0]],
      [[3, 300, 64], [1]],
    ];
    for (const [shape, dims] of cases) {
      for (const dt of ['f32', 'f64', 'f16', 'bf16'] as const) {
        tidy(() => {
          const n = shape.reduce((a, b) => a * b, 1);
          const x = tensor(
            seededValues(n, 37).map((v) => v + 0.05),
            shape,
            { dtype: dt },
          );
          const xg = x.cuda();
          for (const op of OPS) {
            for (const keepdim of [false, true]) {
              const c = new Tensor(N().reduce(op, x.handle, dims, keepdim));
              const g = new Tensor(N().reduce(op, xg.handle, dims, keepdim));
              expect(g.shape).toEqual(c.shape);
              // summation orders differ: compare to the CPU with a tolerance scaled to the row length
              const rlen = dims.reduce((a, d) => a * shape[d < 0 ? d + shape.length : d], 1);
              const tol = tolFor(dt) * (op === 'sum' || op === 'sumsq' ? Math.max(1, Math.sqrt(rlen) / 8) : 1);
              expectClose(nums(g.cpu()), nums(c), { rtol: tol, atol: tol, label: `${op} ${dt} ${shape} ${dims}` });
            }
          }
          // deterministic: the same bits twice
          const s1 = new Tensor(N().reduce('sum', xg.handle, dims, false));
          const s2 = new Tensor(N().reduce('sum', xg.handle, dims, false));
          expect(nums(s1.cpu())).toEqual(nums(s2.cpu()));
        });
      }
    }
  });

  test('views, integers, empty and 0-d tensors, argmax and sumTo', () => {
    tidy(() => {
      const x = randomTensor([6, 50, 7], 41, { dtype: 'f32' });
      const xg = x.cuda();
      for (const dims of [[0], [1], [2], [0, 2], [0, 1, 2]]) {
        const c = new Tensor(N().reduce('sum', x.permute(2, 0, 1).handle, dims, false));
        const g = new Tensor(N().reduce('sum', xg.permute(2, 0, 1).handle, dims, false));
        expectClose(nums(g.cpu()), nums(c), { rtol: 1e-5, atol: 1e-5 });
      }
      for (const dt of ['i32', 'i64'] as const) {
        const xi = tensor(
          seededValues(4000, 43).map((v) => Math.round(v * 100)),
          [40, 100],
          { dtype: dt },
        );
        for (const op of ['sum', 'max', 'min'] as ReduceOp[])
          for (const dims of [[0], [1], [0, 1]])
            expect(nums(new Tensor(N().reduce(op, xi.cuda().handle, dims, false)).cpu())).toEqual(
              nums(new Tensor(N().reduce(op, xi.handle, dims, false))),
            );
      }
      const e = zeros([0, 3], { device: 'cuda' });
      expect(nums(e.sum(0).cpu())).toEqual([0, 0, 0]);
      expect(tensor(5, undefined, { device: 'cuda' }).sum().item()).toBe(5);
      for (const dt of ['f32', 'f16', 'i64'] as const) {
        const a = tensor(
          seededValues(3000, 47).map((v) => Math.round(v * 20)),
          [30, 100],
          { dtype: dt },
        );
        for (const d of [0, 1]) expect(nums(argmax(a.cuda(), d).cpu())).toEqual(nums(argmax(a, d)));
      }
      const big = tensor(seededValues(100000, 53), [100000], { dtype: 'f32' });
      expect(argmax(big.cuda(), 0).item()).toBe(argmax(big, 0).item());
      const nan = tensor([1, NaN, 3, NaN], [4], { dtype: 'f32' });
      expect(argmax(nan.cuda(), 0).item()).toBe(1);
      const s = randomTensor([2, 3, 4], 59, { dtype: 'f32' });
      for (const target of [[3, 1], [4], [], [2, 1, 4]])
        expectClose(nums(new Tensor(N().sumTo(s.cuda().handle, target)).cpu()), nums(new Tensor(N().sumTo(s.handle, target))), {
          rtol: 1e-6,
          atol: 1e-6,
        });
      // a bias gradient at a training shape: [8, 512, 768] summed to [768]
      for (const dt of ['f32', 'bf16'] as const) {
        const gb = tensor(seededValues(8 * 512 * 768, 67), [8, 512, 768], { dtype: dt });
        const tol = dt === 'f32' ? 1e-4 : 2 ** -6;
        expectClose(nums(new Tensor(N().sumTo(gb.cuda().handle, [768])).cpu()), nums(new Tensor(N().sumTo(gb.handle, [768]))), {
          rtol: tol,
          atol: tol * 8,
          label: `sumTo ${dt}`,
        });
      }
    });
  });

  test('gradients of sum/mean/max/min and norms match the CPU', () => {
    tidy(() => {
      const x = randomTensor([5, 6], 61, { dtype: 'f32', requiresGrad: true });
      const xg = x.detach().cuda().requiresGrad_(true);
      const f = (t: Tensor) =>
        reduce('sum', reduce('max', t, 1))
          .add(reduce('mean', t, 0).sum())
          .add(norm(t))
          .add(norm(t, 1, 1).sum())
          .add(norm(t, Infinity));
      f(x).backward();
      f(xg).backward();
      expectClose(nums(xg.grad!.cpu()), nums(x.grad!), { rtol: 1e-5, atol: 1e-6 });
    });
  });
});
