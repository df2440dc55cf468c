/**
 * Host-overhead paths: metadata that ops give their outputs at construction (instead of reading it
 * through native calls) must equal the native handle's; reshape views non-contiguous tensors where
 * the layout allows; splitHeads equals split + reshape + permute; leaf gradients are not copied;
 * SIFT's sparse gradients live in one buffer.
 */
import {
  tensor,
  randn,
  tidy,
  keep,
  Tensor,
  liveTensors,
  matmul,
  linear,
  softmax,
  logSoftmax,
  layerNorm,
  rmsNorm,
  embedding,
  crossEntropy,
  split,
  concat,
  Sift,
  SparseAdamW,
  SiftError,
} from '../../lib';
import { native } from '../../lib/engine/native';
import { checkTensorMeta } from '../../lib/engine/tensor';
import {
  reshape,
  permute,
  slice,
  expand,
  contiguous,
  clone,
  cast,
  detach,
  transpose,
  viewStrides,
  splitHeads,
} from '../../lib/autograd/shape';
import { add, sub, mul, div, neg, gelu, compare, where, maximum } from '../../lib/autograd/elementwise';
import { reduce } from '../../lib/autograd/reduce';
import { sumToShape } from '../../lib/autograd/util';
import { instrument } from '../../bench/profile';
import { Module } from '../../lib/nn/module';
import { Linear } from '../../lib/nn/layers';

/** Every metadata getter of t equals what the native handle reports. */
function expectNativeMeta(t: Tensor): void {
  const N = native();
  const h = t.handle;
  expect(t.shape).toEqual(N.shape(h));
  expect(t.dtype).toBe(N.dtype(h));
  expect(t.device).toBe(N.device(h));
  expect(t.strides).toEqual(N.strides(h));
  expect(t.offset).toBe(N.offset(h));
  expect(t.isContiguous).toBe(N.isContiguous(h));
}

const values = (t: Tensor) => Array.from(t.toArray() as Float32Array);

describe('metadata given at construction equals the native metadata', () => {
  test('elementwise, matmul, reductions, nn ops and their gradients', () => {
    tidy(() => {
      const a = randn([2, 3, 4], { seed: 1, requiresGrad: true });
      const b = randn([4], { seed: 2, requiresGrad: true });
      const w = randn([5, 4], { seed: 3, requiresGrad: true });
      const m = randn([2, 4, 3], { seed: 4, requiresGrad: true });
      const outs: Tensor[] = [
        add(a, b),
        sub(a, 1),
        mul(a, b),
        div(a, 2),
        neg(a),
        gelu(a, 'tanh'),
        compare('gt', a, b),
        compare('lt', a, 0),
        maximum(a, b),
        matmul(a, m),
        matmul(transpose(a, 1, 2), randn([3, 5], { seed: 8 })),
        matmul(a, transpose(w)),
        linear(a, w),
        softmax(a),
        logSoftmax(a, 1),
        layerNorm(a, b, b),
        rmsNorm(a, b),
        reduce('sum', a, 1),
        reduce('mean', a, [0, 2], true),
        where(compare('gt', a, 0), a, mul(a, 0.5)),
      ];
      for (const o of outs) expectNativeMeta(o);
      // Batch broadcasting in matmul: [3, 1, 2, 4] @ [5, 4, 6] -> [3, 5, 2, 6].
      const bm = matmul(randn([3, 1, 2, 4], { seed: 5 }), randn([5, 4, 6], { seed: 6 }));
      expect(bm.shape).toEqual([3, 5, 2, 6]);
      expectNativeMeta(bm);
      const loss = reduce('sum', add(add(linear(a, w), 1), reduce('sum', layerNorm(a, b, b), 2, true)));
      loss.backward();
      for (const p of [a, b, w]) expectNativeMeta(p.grad!);
      const s = sumToShape(randn([2, 3, 4], { seed: 7 }), [3, 1]);
      expectNativeMeta(s);
    });
  });

  test('embedding, cross-entropy (mean and none) and their gradients', () => {
    tidy(() => {
      const table = randn([10, 6], { seed: 1, requiresGrad: true });
      const ids = tensor(
        [
          [1, 2, 3],
          [4, 5, 9],
        ],
        [2, 3],
        { dtype: 'i32' },
      );
      const e = embedding(table, ids);
      expectNativeMeta(e);
      const logits = randn([6, 7], { seed: 2, requiresGrad: true });
      const targets = tensor([0, 1, 2, 3, 4, 5], [6], { dtype: 'i64' });
      const none = crossEntropy(logits, targets, { reduction: 'none' });
      expectNativeMeta(none);
      const l = crossEntropy(logits, targets);
      expectNativeMeta(l);
      add(l, reduce('sum', e)).backward();
      expectNativeMeta(logits.grad!);
      expectNativeMeta(table.grad!);
      const l64 = crossEntropy(randn([3, 4], { seed: 3, dtype: 'f64' }), tensor([0, 1, 2], [3], { dtype: 'i64' }));
      expect(l64.dtype).toBe('f64');
      expectNativeMeta(l64);
    });
  });

  test('views, copies and casts keep the right layout', () => {
    tidy(() => {
      const x = randn([4, 6], { seed: 1 });
      const sl = slice(x, 0, 1, 3); // offset 6, contiguous
      const t = transpose(x); // not contiguous
      const outs = [
        sl,
        t,
        contiguous(sl),
        contiguous(t),
        clone(t),
        cast(t, 'f64'),
        cast(sl, 'f32'),
        detach(t),
        reshape(t, [24]),
        reshape(sl, [3, 4]),
        permute(reshape(x, [2, 2, 6]), [2, 0, 1]),
        expand(reshape(x, [4, 1, 6]), [4, 3, 6]),
        ...split(x, 2, 1),
        concat([x, x], 0),
      ];
      for (const o of outs) expectNativeMeta(o);
      expect(outs[3].isContiguous).toBe(true);
      expect(native().sameStorage(outs[2].handle, x.handle)).toBe(true); // contiguous() of a contiguous slice is itself
    });
  });

  test('checkTensorMeta rejects metadata that differs from the handle', () => {
    const x = randn([2, 3], { seed: 1 });
    expect(() => checkTensorMeta(x.handle, { shape: [3, 2] })).toThrow(SiftError);
    expect(() => checkTensorMeta(x.handle, { dtype: 'f64' })).toThrow(SiftError);
    expect(() => checkTensorMeta(x.handle, { strides: [1, 2] })).toThrow(SiftError);
    expect(() => checkTensorMeta(x.handle, { shape: [2, 3], dtype: 'f32', device: 'cpu', contiguous: true })).not.toThrow();
    const t = transpose(x);
    expect(() => checkTensorMeta(t.handle, { shape: [3, 2], contiguous: true })).toThrow(SiftError);
    t.dispose();
    x.dispose();
  });
});

describe('reshape of non-contiguous tensors', () => {
  test('viewStrides follows the storage layout (PyTorch computeStride)', () => {
    // A slice of the last dim: [2, 3, 8] of a [2, 3, 24] buffer, split into [2, 3, 2, 4].
    expect(viewStrides([2, 3, 8], [72, 24, 1], [2, 3, 2, 4])).toEqual([72, 24, 4, 1]);
    // Merging the first two dims of that slice is possible, merging with the last is not.
    expect(viewStrides([2, 3, 8], [72, 24, 1], [6, 8])).toEqual([24, 1]);
    expect(viewStrides([2, 3, 8], [72, 24, 1], [2, 24])).toBeNull();
    // A transpose cannot be flattened; size-1 dims come and go freely.
    expect(viewStrides([3, 4], [1, 3], [12])).toBeNull();
    expect(viewStrides([3, 4], [1, 3], [3, 1, 4])).toEqual([1, 12, 3]);
  });

  test('viewable layouts give views with the same values as a copy, others a copy; gradients match', () => {
    const base = randn([2, 3, 24], { seed: 9, requiresGrad: true });
    tidy(() => {
      const cases: [Tensor, number[]][] = [
        [slice(base, 2, 8, 16), [2, 3, 2, 4]],
        [slice(base, 2, 8, 16), [6, 8]],
        [slice(base, 2, 8, 16), [2, 24]],
        [transpose(base, 0, 1), [3, 48]],
        [permute(base, [1, 0, 2]), [3, 2, 4, 6]],
      ];
      for (const [x, shape] of cases) {
        const y = reshape(x, shape);
        const ref = reshape(contiguous(x), shape);
        expect(values(y)).toEqual(values(ref));
        expectNativeMeta(y);
        const viewable = viewStrides(x.shape, x.strides, shape) !== null;
        expect(native().sameStorage(y.handle, base.handle)).toBe(viewable);
      }
      const [x] = cases[0];
      reduce('sum', mul(reshape(x, [2, 3, 2, 4]), reshape(x, [2, 3, 2, 4]))).backward();
      const g = values(base.grad!);
      const b = values(base);
      // d/dx sum(x^2) = 2x on the slice, 0 elsewhere.
      for (let i = 0; i < b.length; i++) {
        const inSlice = i % 24 >= 8 && i % 24 < 16;
        expect(g[i]).toBeCloseTo(inSlice ? 2 * b[i] : 0, 6);
      }
    });
    base.dispose();
  });
});

describe('splitHeads', () => {
  test('equals split + reshape + permute, forward and backward, also with a missing gradient', () => {
    const B = 2,
      T = 3,
      H = 2,
      hd = 4,
      D = H * hd;
    const xs = randn([B, T, 3 * D], { seed: 3 });
    const run = (fused: boolean, useV: boolean) =>
      tidy(() => {
        const x = keep(clone(xs).requiresGrad_(true));
        let q: Tensor, k: Tensor, v: Tensor;
        if (fused) [q, k, v] = splitHeads(x, 3, H);
        else [q, k, v] = split(x, D, 2).map((t) => permute(reshape(t, [B, T, H, hd]), [0, 2, 1, 3]));
        for (const t of [q, k, v]) {
          expect(t.shape).toEqual([B, H, T, hd]);
          expectNativeMeta(t);
        }
        const w = randn([B, H, T, hd], { seed: 4 });
        const loss = reduce('sum', add(mul(mul(q, k), w), useV ? mul(v, v) : mul(q, 0.5)));
        loss.backward();
        expectNativeMeta(x.grad!);
        const out = { q: values(contiguous(q)), k: values(contiguous(k)), v: values(contiguous(v)), g: values(x.grad!) };
        x.dispose();
        return out;
      });
    for (const useV of [true, false]) expect(run(true, useV)).toEqual(run(false, useV));
    xs.dispose();
  });

  test('rejects bad shapes with SiftError', () => {
    const x = randn([2, 3, 10], { seed: 1 });
    expect(() => splitHeads(x, 3, 2)).toThrow(SiftError);
    expect(() => splitHeads(reshape(x, [60]), 3, 2)).toThrow(SiftError);
    x.dispose();
  });
});

describe('backward bookkeeping', () => {
  test('a leaf gradient held by nothing else becomes .grad without a copy', () => {
    const w = randn([4, 5], { seed: 1, requiresGrad: true });
    const b = randn([5], { seed: 2, requiresGrad: true });
    const prof = instrument(native());
    try {
      tidy(() => reduce('sum', add(matmul(randn([3, 4], { seed: 3 }), w), b)).backward());
    } finally {
      prof.restore();
    }
    expect(prof.stats().find((s) => s.op === 'clone')).toBeUndefined();
    expectNativeMeta(w.grad!);
    expect(values(b.grad!)).toEqual([3, 3, 3, 3, 3]);
    // A gradient shared between two leaves is still copied for one of them.
    const x = randn([3], { seed: 4, requiresGrad: true });
    const y = randn([3], { seed: 5, requiresGrad: true });
    tidy(() => reduce('sum', add(x, y)).backward());
    expect(values(x.grad!)).toEqual([1, 1, 1]);
    expect(values(y.grad!)).toEqual([1, 1, 1]);
    expect(native().sameStorage(x.grad!.handle, y.grad!.handle)).toBe(false);
    // A gradient that reaches a leaf through a view (here permute's backward) is copied: it is
    // not known to be the only handle on its storage.
    const u = randn([2, 3], { seed: 6, requiresGrad: true });
    const v = randn([3, 2], { seed: 7, requiresGrad: true });
    tidy(() => reduce('sum', mul(add(mul(u, 2), transpose(v)), randn([2, 3], { seed: 8 }))).backward());
    expect(native().isContiguous(v.grad!.handle)).toBe(true);
    expect(native().sameStorage(u.grad!.handle, v.grad!.handle)).toBe(false);
    expectNativeMeta(u.grad!);
    expectNativeMeta(v.grad!);
    for (const t of [w, b, x, y, u, v]) t.dispose();
  });
});

class Tiny extends Module {
  a: Linear;
  b: Linear;
  constructor() {
    super();
    this.a = this.registerModule('a', new Linear(6, 8, { seed: 1 }));
    this.b = this.registerModule('b', new Linear(8, 3, { seed: 2 }));
  }
  forward(x: Tensor): Tensor {
    return this.b.forward(this.a.forward(x));
  }
}

describe('SIFT gradients in one buffer', () => {
  test('zeroGrad is one fill; the optimizer follows a target whose gradient tensor changes', () => {
    const before = liveTensors().cpu.count;
    const m = new Tiny();
    const sift = new Sift(m, { sparseRate: 0.2, targetModules: ['a', 'b'] });
    const x = randn([4, 6], { seed: 3 });
    const lossOf = () => tidy(() => reduce('sum', mul(m.forward(x), m.forward(x))).backward());
    lossOf();
    sift.select();
    const opt = new SparseAdamW(sift, { lr: 1e-2 });
    lossOf();
    const grads = sift.targets.map((t) => values(t.grad!));
    expect(grads.some((g) => g.some((v) => v !== 0))).toBe(true);
    const prof = instrument(native());
    try {
      opt.step();
    } finally {
      prof.restore();
    }
    expect(prof.stats().find((s) => s.op === 'fill_')?.calls).toBe(1);
    for (const t of sift.targets) {
      expect(values(t.grad!).every((v) => v === 0)).toBe(true);
      expect(t.grad!.offset % 16).toBe(0); // 64-byte aligned views, as separate allocations were
      expectNativeMeta(t.grad!);
    }
    // Replacing a target's gradient tensor by hand: the next step reads the new one.
    const t0 = sift.targets[0];
    const old = t0.grad!;
    t0.grad = keep(tensor(new Array(t0.k).fill(1), [t0.k]));
    const before0 = values(t0.param);
    opt.step();
    const after0 = values(t0.param);
    const idx = Array.from(t0.idx!.toArray() as Int32Array);
    expect(idx.every((i) => after0[i] !== before0[i])).toBe(true);
    t0.grad.dispose();
    t0.grad = old;
    opt.dispose();
    sift.dispose();
    x.dispose();
    m.dispose();
    expect(liveTensors().cpu.count).toBe(before);
  });
});

describe('tidy scopes', () => {
  test('results in nested containers survive, the rest is freed; cycles, duplicates, keep and errors', () => {
    const before = liveTensors().cpu.count;
    const out = tidy(() => {
      const a = randn([2], { seed: 1 });
      const b = randn([2], { seed: 2 });
      const c = randn([2], { seed: 3 });
      randn([2], { seed: 4 }); // freed
      const inner = tidy(() => {
        const d = randn([2], { seed: 5 });
        randn([2], { seed: 6 }); // freed by the inner tidy
        const k = keep(randn([2], { seed: 7 })); // survives everything
        return { d, list: [d, null, 3], k };
      });
      const cyc: unknown[] = [a];
      cyc.push(cyc);
      return { pair: [a, a], nested: [[b]], map: new Map([['c', c]]), cyc, inner };
    });
    expect(out.pair[0].isDisposed).toBe(false);
    expect((out.nested[0][0] as Tensor).isDisposed).toBe(false);
    expect(out.map.get('c')!.isDisposed).toBe(false);
    expect(out.inner.d.isDisposed).toBe(false);
    expect(liveTensors().cpu.count).toBe(before + 5); // a, b, c, d, k
    for (const t of [out.pair[0], out.nested[0][0] as Tensor, out.map.get('c')!, out.inner.d, out.inner.k]) t.dispose();
    expect(liveTensors().cpu.count).toBe(before);
    // A result of an inner tidy moves to the outer one and is freed there.
    tidy(() => {
      tidy(() => randn([3], { seed: 8 }));
      expect(liveTensors().cpu.count).toBe(before + 1);
    });
    expect(liveTensors().cpu.count).toBe(before);
    // An error frees what was made.
    expect(() =>
      tidy(() => {
        randn([3], { seed: 9 });
        throw new SiftError('E_ARG', 'boom');
      }),
    ).toThrow('boom');
    expect(liveTensors().cpu.count).toBe(before);
  });
});

describe('native handle checks', () => {
  test('only real handles pass as tensors; look-alikes give SiftError E_ARG', () => {
    const x = randn([2, 3], { seed: 1 });
    const N = native();
    expect(N.offset(x.handle)).toBe(0);
    const fakes: unknown[] = [
      {},
      Object.create(x.handle as object),
      Object.setPrototypeOf({}, Object.getPrototypeOf(x.handle)),
      3,
      null,
      'x',
    ];
    for (const f of fakes) {
      let err: unknown;
      try {
        N.offset(f as never);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(SiftError);
      expect((err as SiftError).code).toBe('E_ARG');
    }
    // Lists check every element.
    let err: unknown;
    try {
      N.sumSquares([x.handle, Object.create(x.handle as object)]);
    } catch (e) {
      err = e;
    }
    expect((err as SiftError).code).toBe('E_ARG');
    x.dispose();
    expect(() => N.offset(x.handle as never)).toThrow();
  });
});
