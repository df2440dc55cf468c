/**
 * Optimizer kernels: fused sparse AdamW (SIFT), dense multi-tensor AdamW and the clipping
 * coefficient, against a float64 PyTorch-semantics reference on the host, against each other, and
 * (on a GPU) CUDA against CPU.
 */
import { Tensor, tensor, tidy, SiftError } from '../../lib';
import { native } from '../../lib/engine/native';
import type { AdamWHyper, NativeTensor } from '../../lib/engine/addon-types';
import { seededValues, expectClose, describeCuda } from '../helpers/gradcheck';

type FloatDType = 'f32' | 'f16' | 'bf16' | 'f64';

const HP: Omit<AdamWHyper, 'step'> = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 };

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SiftError);
    return (e as SiftError).code;
  }
  return undefined;
}

const nums = (t: Tensor): number[] => Array.from(t.toArray() as ArrayLike<number | bigint>, Number);
const h = (ts: Tensor[]): NativeTensor[] => ts.map((t) => t.handle);

/** k distinct sorted indices in [0, n), deterministic. */
function pickIndices(n: number, k: number, seed: number): number[] {
  const r = seededValues(n, seed).map((v, i) => [v, i] as const);
  r.sort((a, b) => a[0] - b[0]);
  return r
    .slice(0, k)
    .map((x) => x[1])
    .sort((a, b) => a - b);
}

/** torch.optim.AdamW's update of one value in float64 (state arrays updated in place). */
function refAdamW(p: number[], g: number[], m: number[], v: number[], hp: AdamWHyper): void {
  const bias1 = 1 - hp.beta1 ** hp.step;
  const bias2 = 1 - hp.beta2 ** hp.step;
  for (let i = 0; i < p.length; i++) {
    p[i] *= 1 - hp.lr * hp.weightDecay;
    m[i] = hp.beta1 * m[i] + (1 - hp.beta1) * g[i];
    v[i] = hp.beta2 * v[i] + (1 - hp.beta2) * g[i] * g[i];
    const denom = Math.sqrt(v[i]) / Math.sqrt(bias2) + hp.eps;
    p[i] -= (hp.lr / bias1) * (m[i] / denom);
  }
}

const f32 = (xs: number[]): number[] => xs.map(Math.fround);

/** One sparse-trained weight: host data for the weight, its selection and per-step gradients. */
interface SparseCase {
  shape: number[];
  wdtype: FloatDType;
  idtype: 'i32' | 'i64';
  w0: number[]; // initial weight values (f32-representable)
  idx: number[];
  grads: number[][]; // per step, k values (f32-representable)
}

function makeCase(
  shape: number[],
  k: number,
  steps: number,
  seed: number,
  wdtype: FloatDType = 'f32',
  idtype: 'i32' | 'i64' = 'i32',
): SparseCase {
  const n = shape.reduce((a, b) => a * b, 1);
  const grads: number[][] = [];
  for (let s = 0; s < steps; s++) grads.push(f32(seededValues(k, seed * 31 + s + 7).map((x) => x * 0.5)));
  return { shape, wdtype, idtype, w0: f32(seededValues(n, seed)), idx: pickIndices(n, k, seed + 1000), grads };
}

/** The device tensors of a case: masters start from the f32 weight values at idx. */
function upload(c: SparseCase, device: string) {
  const k = c.idx.length;
  return {
    w: tensor(c.w0, c.shape, { dtype: c.wdtype, device }),
    idx: tensor(c.idx, [k], { dtype: c.idtype, device }),
    m: tensor(new Array(k).fill(0), [k], { dtype: 'f32', device }),
    v: tensor(new Array(k).fill(0), [k], { dtype: 'f32', device }),
    master: tensor(
      c.idx.map((i) => c.w0[i]),
      [k],
      { dtype: 'f32', device },
    ),
  };
}
type Uploaded = ReturnType<typeof upload>;

/** Runs the steps of all cases as fused sparseAdamW calls; scale (if given) is a host value uploaded once. */
function runSparse(cases: SparseCase[], device: string, hp = HP, scale?: number, steps = cases[0].grads.length): Uploaded[] {
  const us = cases.map((c) => upload(c, device));
  const sc = scale === undefined ? null : tensor([scale], [], { dtype: 'f32', device });
  for (let s = 0; s < steps; s++) {
    const gs = cases.map((c) => tensor(c.grads[s], [c.idx.length], { dtype: 'f32', device }));
    native().sparseAdamW(
      h(us.map((u) => u.w)),
      h(us.map((u) => u.idx)),
      h(gs),
      h(us.map((u) => u.m)),
      h(us.map((u) => u.v)),
      h(us.map((u) => u.master)),
      { ...hp, step: s + 1 },
      sc ? sc.handle : null,
    );
    gs.forEach((g) => g.dispose());
  }
  return us;
}

/** float64 reference of a case: the dense update restricted to the selected entries. */
function refSparse(c: SparseCase, hp = HP, scale = 1, steps = c.grads.length) {
  const k = c.idx.length;
  const p = c.idx.map((i) => c.w0[i]);
  const m = new Array(k).fill(0);
  const v = new Array(k).fill(0);
  for (let s = 0; s < steps; s++)
    refAdamW(
      p,
      c.grads[s].map((g) => g * scale),
      m,
      v,
      { ...hp, step: s + 1 },
    );
  return { p, m, v };
}

describe('sparseAdamW (CPU)', () => {
  test('N steps equal N steps of dense AdamW restricted to the selected entries (f64 reference and engine adamW)', () => {
    tidy(() => {
      const steps = 6;
      const c = makeCase([37, 29], 120, steps, 3);
      const [u] = runSparse([c], 'cpu');
      const ref = refSparse(c);
      expectClose(nums(u.master), ref.p, { atol: 1e-6, rtol: 1e-6, label: 'masters vs f64' });
      expectClose(nums(u.m), ref.m, { atol: 1e-6, rtol: 1e-6, label: 'm vs f64' });
      expectClose(nums(u.v), ref.v, { atol: 1e-7, rtol: 1e-5, label: 'v vs f64' });

      // The engine's dense kernel on the whole weight, with gradients that are zero off the selection
      // (the off-selection entries then only decay, which the comparison ignores).
      const n = c.w0.length;
      const p = tensor(c.w0, c.shape, { dtype: 'f32' });
      const m = tensor(new Array(n).fill(0), [n]);
      const v = tensor(new Array(n).fill(0), [n]);
      for (let s = 0; s < steps; s++) {
        const full = new Array(n).fill(0);
        c.idx.forEach((j, i) => {
          full[j] = c.grads[s][i];
        });
        const g = tensor(full, c.shape, { dtype: 'f32' });
        native().adamW([p.handle], [g.handle], [m.handle], [v.handle], [null], { ...HP, step: s + 1 }, null);
      }
      const dense = nums(p);
      expectClose(
        nums(u.master),
        c.idx.map((j) => dense[j]),
        { atol: 1e-7, rtol: 1e-6, label: 'masters vs engine adamW' },
      );

      // Selected weights hold the masters; the others never change.
      const w = nums(u.w);
      const masters = nums(u.master);
      const sel = new Set(c.idx);
      c.idx.forEach((j, i) => expect(w[j]).toBe(masters[i]));
      for (let j = 0; j < n; j++) if (!sel.has(j)) expect(w[j]).toBe(c.w0[j]);
    });
  });

  test('weight decay acts on the full value', () => {
    tidy(() => {
      const c = makeCase([64], 10, 1, 5);
      c.grads = [new Array(10).fill(0)];
      const hp = { ...HP, lr: 0.1, weightDecay: 0.5 };
      const [u] = runSparse([c], 'cpu', hp);
      // Zero gradient: m = v = 0, the Adam term vanishes and only p * (1 - lr * wd) is left.
      const decay = Math.fround(1 - 0.1 * 0.5);
      expect(nums(u.master)).toEqual(c.idx.map((j) => Math.fround(c.w0[j] * decay)));
      expectClose(nums(u.master), refSparse(c, hp).p, { atol: 1e-7, rtol: 1e-6 });
      const w = nums(u.w);
      c.idx.forEach((j) => expect(w[j]).toBe(Math.fround(c.w0[j] * decay)));
    });
  });

  test.each([
    ['bf16', 2 ** -8],
    ['f16', 2 ** -10],
    ['f64', 0],
  ] as const)('%s weights with f32 masters stay within rounding of the f32 run', (dtype, rtol) => {
    tidy(() => {
      const c32 = makeCase([23, 41], 200, 4, 9);
      const cx: SparseCase = { ...c32, wdtype: dtype };
      const [a] = runSparse([c32], 'cpu');
      const [b] = runSparse([cx], 'cpu');
      // The state never depends on the weight dtype.
      expect(nums(b.master)).toEqual(nums(a.master));
      expect(nums(b.m)).toEqual(nums(a.m));
      expect(nums(b.v)).toEqual(nums(a.v));
      const wa = nums(a.w);
      const wb = nums(b.w);
      expectClose(
        c32.idx.map((j) => wb[j]),
        c32.idx.map((j) => wa[j]),
        { atol: dtype === 'f16' ? 6e-8 : 0, rtol, label: `${dtype} weights` },
      );
      // Unselected entries keep the initial (rounded) value.
      const w0 = nums(tensor(c32.w0, c32.shape, { dtype }));
      const sel = new Set(c32.idx);
      for (let j = 0; j < w0.length; j++) if (!sel.has(j)) expect(wb[j]).toBe(w0[j]);
    });
  });

  test('scale multiplies every gradient (clipping coefficient on the device)', () => {
    tidy(() => {
      const c = makeCase([50, 10], 77, 3, 11);
      const scale = Math.fround(0.37);
      const [a] = runSparse([c], 'cpu', HP, scale);
      // Same as pre-scaled f32 gradients.
      const pre: SparseCase = { ...c, grads: c.grads.map((g) => g.map((x) => Math.fround(x * scale))) };
      const [b] = runSparse([pre], 'cpu');
      expect(nums(a.master)).toEqual(nums(b.master));
      expect(nums(a.v)).toEqual(nums(b.v));
      expectClose(nums(a.master), refSparse(c, HP, scale).p, { atol: 1e-6, rtol: 1e-6 });
      // And differs from the unscaled run.
      const [u] = runSparse([c], 'cpu');
      expect(nums(u.master)).not.toEqual(nums(a.master));
    });
  });

  test('one fused step over 50 tensors of mixed sizes, dtypes and index types equals per-tensor steps', () => {
    tidy(() => {
      const dts: FloatDType[] = ['f32', 'bf16', 'f16', 'f64'];
      const cases: SparseCase[] = [];
      for (let t = 0; t < 50; t++) {
        const rows = 1 + ((t * 7) % 23);
        const cols = 1 + ((t * 13) % 97);
        const n = rows * cols;
        const k = t === 17 ? 0 : Math.max(1, Math.floor(n * (0.05 + ((t * 3) % 10) / 20)));
        cases.push(makeCase([rows, cols], k, 3, 100 + t, dts[t % 4], t % 3 === 0 ? 'i64' : 'i32'));
      }
      const fused = runSparse(cases, 'cpu');
      cases.forEach((c, t) => {
        const [single] = runSparse([c], 'cpu');
        for (const key of ['w', 'm', 'v', 'master'] as const) expect(nums(fused[t][key])).toEqual(nums(single[key]));
        if (c.idx.length > 0 && c.wdtype === 'f64') expectClose(nums(single.master), refSparse(c).p, { atol: 1e-6, rtol: 1e-6 });
      });
    });
  });

  test('large selections split over threads match the reference', () => {
    tidy(() => {
      const c = makeCase([300, 257], 30000, 2, 21, 'bf16', 'i64');
      const [u] = runSparse([c], 'cpu');
      expectClose(nums(u.master), refSparse(c).p, { atol: 1e-6, rtol: 1e-6 });
    });
  });
});

describe('adamW (dense, CPU)', () => {
  function runDense(dtype: FloatDType, gdtype: FloatDType, withMaster: boolean, steps: number, device = 'cpu', scale?: number) {
    const n = 1000;
    const p0 = f32(seededValues(n, 41));
    const p = tensor(p0, [40, 25], { dtype, device });
    const m = tensor(new Array(n).fill(0), [n], { device });
    const v = tensor(new Array(n).fill(0), [n], { device });
    const master = withMaster ? tensor(p0, [n], { dtype: 'f32', device }) : null;
    const sc = scale === undefined ? null : tensor([scale], [], { dtype: 'f32', device });
    const grads: number[][] = [];
    for (let s = 0; s < steps; s++) {
      const gv = f32(seededValues(n, 50 + s));
      const g = tensor(gv, [40, 25], { dtype: gdtype, device });
      grads.push(nums(g));
      native().adamW(
        [p.handle],
        [g.handle],
        [m.handle],
        [v.handle],
        [master ? master.handle : null],
        { ...HP, step: s + 1 },
        sc ? sc.handle : null,
      );
    }
    return { p, m, v, master, p0, grads };
  }

  test('f32 parameters match the f64 reference', () => {
    tidy(() => {
      const r = runDense('f32', 'f32', false, 5);
      const p = r.p0.slice();
      const m = new Array(p.length).fill(0);
      const v = new Array(p.length).fill(0);
      r.grads.forEach((g, s) => refAdamW(p, g, m, v, { ...HP, step: s + 1 }));
      expectClose(nums(r.p), p, { atol: 1e-6, rtol: 1e-6 });
      expectClose(nums(r.m), m, { atol: 1e-6, rtol: 1e-6 });
    });
  });

  test('bf16 and f16 parameters with f32 masters: masters equal the f32 run, parameters their rounding', () => {
    tidy(() => {
      const a = runDense('f32', 'f32', true, 3);
      for (const dt of ['bf16', 'f16'] as const) {
        const b = runDense(dt, 'f32', true, 3);
        expect(nums(b.master!)).toEqual(nums(a.master!));
        expect(nums(a.p)).toEqual(nums(a.master!));
        const rounded = nums(tensor(nums(a.master!), [1000], { dtype: dt }));
        expect(nums(b.p)).toEqual(rounded);
      }
      // Low-precision gradients are read as their values.
      const c = runDense('bf16', 'bf16', true, 2);
      const p = c.p0.slice();
      const m = new Array(p.length).fill(0);
      const v = new Array(p.length).fill(0);
      c.grads.forEach((g, s) => refAdamW(p, g, m, v, { ...HP, step: s + 1 }));
      expectClose(nums(c.master!), p, { atol: 1e-6, rtol: 1e-6 });
    });
  });

  test('scale and many tensors in one call', () => {
    tidy(() => {
      const a = runDense('f32', 'f32', false, 2, 'cpu', 0.25);
      const p = a.p0.slice();
      const m = new Array(p.length).fill(0);
      const v = new Array(p.length).fill(0);
      a.grads.forEach((g, s) =>
        refAdamW(
          p,
          g.map((x) => x * 0.25),
          m,
          v,
          { ...HP, step: s + 1 },
        ),
      );
      expectClose(nums(a.p), p, { atol: 1e-6, rtol: 1e-6 });

      const sizes = [1, 3, 17, 4096, 5000, 2, 8191];
      const mk = () =>
        sizes.map((n, t) => ({
          p: tensor(f32(seededValues(n, 60 + t)), [n]),
          g: tensor(f32(seededValues(n, 70 + t)), [n], { dtype: t % 2 ? 'bf16' : 'f32' }),
          m: tensor(new Array(n).fill(0), [n]),
          v: tensor(new Array(n).fill(0), [n]),
        }));
      const all = mk();
      native().adamW(
        h(all.map((x) => x.p)),
        h(all.map((x) => x.g)),
        h(all.map((x) => x.m)),
        h(all.map((x) => x.v)),
        all.map(() => null),
        { ...HP, step: 1 },
        null,
      );
      const one = mk();
      for (const x of one) native().adamW([x.p.handle], [x.g.handle], [x.m.handle], [x.v.handle], [null], { ...HP, step: 1 }, null);
      all.forEach((x, t) => expect(nums(x.p)).toEqual(nums(one[t].p)));
    });
  });
});

describe('clipCoefficient', () => {
  const coef = (normSq: number, maxNorm: number, device = 'cpu'): Tensor =>
    new Tensor(native().clipCoefficient(tensor([normSq], [], { dtype: 'f32', device }).handle, maxNorm));

  test('below and above the maximum norm', () => {
    tidy(() => {
      const above = coef(4, 1);
      expect(above.shape).toEqual([]);
      expect(above.dtype).toBe('f32');
      expect(above.item()).toBeCloseTo(1 / (2 + 1e-6), 7);
      expect(coef(0.25, 1).item()).toBe(1);
      expect(coef(0, 1).item()).toBe(1);
      expect(coef(100, 5).item()).toBeCloseTo(5 / (10 + 1e-6), 7);
      expect(Number.isNaN(coef(NaN, 1).item())).toBe(true);
      expect(coef(Infinity, 1).item()).toBe(0);
    });
  });

  test('feeds sparseAdamW as its scale without a host round trip', () => {
    tidy(() => {
      const c = makeCase([20, 20], 40, 1, 13);
      const normSq = c.grads[0].reduce((a, g) => a + g * g, 0);
      const u = upload(c, 'cpu');
      const sc = new Tensor(native().clipCoefficient(tensor([normSq], [], { dtype: 'f32' }).handle, 0.5));
      const g = tensor(c.grads[0], [40]);
      native().sparseAdamW(
        [u.w.handle],
        [u.idx.handle],
        [g.handle],
        [u.m.handle],
        [u.v.handle],
        [u.master.handle],
        { ...HP, step: 1 },
        sc.handle,
      );
      const coefficient = Math.min(1, 0.5 / (Math.sqrt(normSq) + 1e-6));
      expect(coefficient).toBeLessThan(1);
      expectClose(nums(u.master), refSparse(c, HP, coefficient).p, { atol: 1e-6, rtol: 1e-6 });
      // m holds (1 - beta1) * g * coefficient.
      expectClose(
        nums(u.m),
        c.grads[0].map((x) => 0.1 * x * coefficient),
        { atol: 1e-7, rtol: 1e-5 },
      );
    });
  });
});

describe('optimizer argument errors', () => {
  test('sparseAdamW validates lists, shapes, dtypes, hyperparameters and indices', () => {
    tidy(() => {
      const u = upload(makeCase([10, 10], 5, 1, 1), 'cpu');
      const g = tensor([0.1, 0.2, 0.3, 0.4, 0.5], [5]);
      const hp = { ...HP, step: 1 };
      const call = (
        o: Partial<Record<'w' | 'idx' | 'g' | 'm' | 'v' | 'master', Tensor>> = {},
        hpx: unknown = hp,
        scale: Tensor | null = null,
        lists?: NativeTensor[][],
      ) =>
        code(() => {
          const l = lists ?? [
            [(o.w ?? u.w).handle],
            [(o.idx ?? u.idx).handle],
            [(o.g ?? g).handle],
            [(o.m ?? u.m).handle],
            [(o.v ?? u.v).handle],
            [(o.master ?? u.master).handle],
          ];
          native().sparseAdamW(l[0], l[1], l[2], l[3], l[4], l[5], hpx as AdamWHyper, scale ? scale.handle : null);
          native().synchronize('cpu');
        });
      expect(call()).toBeUndefined();
      expect(
        call({}, hp, null, [[u.w.handle, u.w.handle], [u.idx.handle], [g.handle], [u.m.handle], [u.v.handle], [u.master.handle]]),
      ).toBe('E_ARG');
      expect(call({ g: tensor([1, 2], [2]) })).toBe('E_SHAPE');
      expect(call({ m: tensor([0, 0, 0, 0], [4]) })).toBe('E_SHAPE');
      expect(call({ v: tensor([0, 0, 0, 0, 0], [5], { dtype: 'f16' }) })).toBe('E_DTYPE');
      expect(call({ master: tensor([0, 0, 0, 0, 0], [5], { dtype: 'f64' }) })).toBe('E_DTYPE');
      expect(call({ g: tensor([0, 0, 0, 0, 0], [5], { dtype: 'bf16' }) })).toBe('E_DTYPE');
      expect(call({ idx: tensor([1, 2, 3, 4, 5], [5], { dtype: 'f32' }) })).toBe('E_DTYPE');
      expect(call({ w: tensor(new Array(100).fill(0), [10, 10], { dtype: 'i32' }) })).toBe('E_DTYPE');
      expect(call({ v: u.m })).toBe('E_ARG'); // m and v share memory
      expect(call({ w: new Tensor(native().view(u.w.handle, [10, 10], [1, 10], 0)) })).toBe('E_ARG'); // not contiguous
      expect(call({}, { ...hp, step: 0 })).toBe('E_ARG');
      expect(call({}, { ...hp, beta1: 1 })).toBe('E_ARG');
      expect(call({}, { ...hp, lr: -1 })).toBe('E_ARG');
      expect(call({}, { lr: 1e-3 })).toBe('E_ARG');
      expect(call({}, hp, tensor([1], [], { dtype: 'f64' }))).toBe('E_DTYPE');
      expect(call({}, hp, tensor([1, 1], [2], { dtype: 'f32' }))).toBe('E_SHAPE');
      expect(call({ idx: tensor([1, 2, 3, 4, 100], [5], { dtype: 'i32' }) })).toBe('E_INDEX');
      expect(call({ idx: tensor([-1, 2, 3, 4, 5], [5], { dtype: 'i64' }) })).toBe('E_INDEX');
      // Empty lists are a no-op.
      expect(code(() => native().sparseAdamW([], [], [], [], [], [], hp, null))).toBeUndefined();
    });
  });

  test('adamW and clipCoefficient validate their arguments', () => {
    tidy(() => {
      const p = tensor(seededValues(6, 1), [2, 3]);
      const g = tensor(seededValues(6, 2), [2, 3]);
      const m = tensor(new Array(6).fill(0), [6]);
      const v = tensor(new Array(6).fill(0), [6]);
      const hp = { ...HP, step: 1 };
      const call = (pp: Tensor, gg: Tensor, mm: Tensor, vv: Tensor, master: Tensor | null = null) =>
        code(() => {
          native().adamW([pp.handle], [gg.handle], [mm.handle], [vv.handle], [master ? master.handle : null], hp, null);
          native().synchronize('cpu');
        });
      expect(call(p, g, m, v)).toBeUndefined();
      expect(call(p, tensor(seededValues(6, 2), [3, 2]), m, v)).toBe('E_SHAPE');
      expect(call(p, g, tensor([0, 0], [2]), v)).toBe('E_SHAPE');
      expect(call(p, g, m, v, tensor(new Array(6).fill(0), [6], { dtype: 'bf16' }))).toBe('E_DTYPE');
      expect(call(p, tensor([1, 2, 3, 4, 5, 6], [2, 3], { dtype: 'i32' }), m, v)).toBe('E_DTYPE');
      expect(call(p, g, m, m)).toBe('E_ARG');
      expect(code(() => native().adamW([p.handle], [g.handle], [m.handle], [v.handle], [], hp, null))).toBe('E_ARG');
      const clip = (t: Tensor, maxNorm: number) => code(() => native().clipCoefficient(t.handle, maxNorm));
      expect(clip(tensor([1], [], { dtype: 'f32' }), 0)).toBe('E_ARG');
      expect(clip(tensor([1], [], { dtype: 'f32' }), NaN)).toBe('E_ARG');
      expect(clip(tensor([1, 2], [2], { dtype: 'f32' }), 1)).toBe('E_SHAPE');
      expect(clip(tensor([1], [], { dtype: 'f64' }), 1)).toBe('E_DTYPE');
    });
  });
});

describeCuda('optimizers on CUDA vs CPU', () => {
  function mixedCases(count: number, steps: number, seed: number): SparseCase[] {
    const dts: FloatDType[] = ['f32', 'bf16', 'f16', 'f64'];
    const cases: SparseCase[] = [];
    for (let t = 0; t < count; t++) {
      const rows = 1 + ((t * 7 + seed) % 31);
      const cols = 1 + ((t * 13 + seed) % 211);
      const n = rows * cols;
      const k = t === 5 ? 0 : Math.max(1, Math.floor(n * (0.02 + ((t * 3) % 10) / 15)));
      cases.push(makeCase([rows, cols], k, steps, seed + t, dts[t % 4], t % 2 ? 'i64' : 'i32'));
    }
    return cases;
  }

  function compare(a: Uploaded[], b: Uploaded[]): void {
    a.forEach((x, t) => {
      expectClose(nums(b[t].master), nums(x.master), { atol: 1e-7, rtol: 1e-6, label: `masters[${t}]` });
      expectClose(nums(b[t].m), nums(x.m), { atol: 1e-7, rtol: 1e-6, label: `m[${t}]` });
      expectClose(nums(b[t].v), nums(x.v), { atol: 1e-9, rtol: 1e-6, label: `v[${t}]` });
      const tol = x.w.dtype === 'bf16' ? 2 ** -8 : x.w.dtype === 'f16' ? 2 ** -10 : 1e-6;
      expectClose(nums(b[t].w), nums(x.w), { atol: 1e-7, rtol: tol, label: `weights[${t}]` });
    });
  }

  test('fused sparse AdamW over 60 mixed tensors with a device-side scale', () => {
    tidy(() => {
      const cases = mixedCases(60, 3, 1);
      compare(runSparse(cases, 'cpu', HP, 0.6), runSparse(cases, 'cuda', HP, 0.6));
    });
  });

  test('more tensors than one launch holds (two launches), and a large selection', () => {
    tidy(() => {
      compare(runSparse(mixedCases(450, 2, 7), 'cpu'), runSparse(mixedCases(450, 2, 7), 'cuda'));
      const big = [makeCase([1024, 1031], 200003, 2, 5, 'bf16', 'i64')];
      compare(runSparse(big, 'cpu'), runSparse(big, 'cuda'));
    });
  });

  test('unaligned state (offset views) takes the scalar path and agrees', () => {
    tidy(() => {
      const c = makeCase([100, 77], 3001, 2, 8, 'f16', 'i32');
      const k = c.idx.length;
      const run = (device: string) => {
        const u = upload(c, device);
        // State views at offset 1 of larger buffers: contiguous but not 16-byte aligned.
        const shifted = (t: Tensor) => {
          const buf = tensor([0, ...nums(t)], [k + 1], { dtype: 'f32', device });
          return new Tensor(native().view(buf.handle, [k], [1], 1));
        };
        const m = shifted(u.m);
        const v = shifted(u.v);
        const master = shifted(u.master);
        for (let s = 0; s < 2; s++) {
          const g = tensor(c.grads[s], [k], { device });
          native().sparseAdamW(
            [u.w.handle],
            [u.idx.handle],
            [g.handle],
            [m.handle],
            [v.handle],
            [master.handle],
            { ...HP, step: s + 1 },
            null,
          );
        }
        return [nums(master), nums(u.w)];
      };
      const [pc, wc] = run('cpu');
      const [pg, wg] = run('cuda');
      expectClose(pg, pc, { atol: 1e-7, rtol: 1e-6 });
      expectClose(wg, wc, { atol: 1e-7, rtol: 2 ** -10 });
    });
  });

  test('dense adamW and clipCoefficient agree with the CPU', () => {
    tidy(() => {
      for (const [dt, gdt, master] of [
        ['f32', 'f32', false],
        ['bf16', 'bf16', true],
        ['f16', 'f32', true],
        ['f64', 'f64', false],
      ] as const) {
        const run = (device: string) => {
          const n = 5003;
          const p0 = f32(seededValues(n, 3));
          const p = tensor(p0, [n], { dtype: dt, device });
          const m = tensor(new Array(n).fill(0), [n], { device });
          const v = tensor(new Array(n).fill(0), [n], { device });
          const ms = master ? tensor(p0, [n], { device }) : null;
          const sc = new Tensor(native().clipCoefficient(tensor([9], [], { device }).handle, 1.5));
          for (let s = 0; s < 3; s++) {
            const g = tensor(f32(seededValues(n, 10 + s)), [n], { dtype: gdt, device });
            native().adamW([p.handle], [g.handle], [m.handle], [v.handle], [ms ? ms.handle : null], { ...HP, step: s + 1 }, sc.handle);
          }
          return { p: nums(p), m: nums(m), master: ms ? nums(ms) : [], sc: sc.item() };
        };
        const a = run('cpu');
        const b = run('cuda');
        expect(b.sc).toBe(a.sc);
        expectClose(b.m, a.m, { atol: 1e-7, rtol: 1e-6 });
        expectClose(b.master, a.master, { atol: 1e-7, rtol: 1e-6 });
        expectClose(b.p, a.p, { atol: 1e-7, rtol: dt === 'bf16' ? 2 ** -8 : dt === 'f16' ? 2 ** -10 : 1e-6 });
      }
    });
  });

  test('errors: mixed devices and an index out of range', () => {
    tidy(() => {
      const u = upload(makeCase([10, 10], 5, 1, 1), 'cuda');
      const g = tensor([0.1, 0.2, 0.3, 0.4, 0.5], [5], { device: 'cuda' });
      const hp = { ...HP, step: 1 };
      const gc = tensor([0.1, 0.2, 0.3, 0.4, 0.5], [5]);
      expect(
        code(() =>
          native().sparseAdamW([u.w.handle], [u.idx.handle], [gc.handle], [u.m.handle], [u.v.handle], [u.master.handle], hp, null),
        ),
      ).toBe('E_DEVICE');
      const scCpu = tensor([1], [], { dtype: 'f32' });
      expect(
        code(() =>
          native().sparseAdamW([u.w.handle], [u.idx.handle], [g.handle], [u.m.handle], [u.v.handle], [u.master.handle], hp, scCpu.handle),
        ),
      ).toBe('E_DEVICE');
      const bad = tensor([1, 2, 3, 4, 100], [5], { dtype: 'i32', device: 'cuda' });
      expect(
        code(() => {
          native().sparseAdamW([u.w.handle], [bad.handle], [g.handle], [u.m.handle], [u.v.handle], [u.master.handle], hp, null);
          native().synchronize('cuda');
        }),
      ).toBe('E_INDEX');
    });
  });
});

describe('setCudaSparseAdamW', () => {
  test('modes rounds and prefetch, the previous one returned; anything else E_ARG', () => {
    const prev = native().setCudaSparseAdamW('prefetch');
    try {
      expect(native().setCudaSparseAdamW('rounds')).toBe('prefetch');
      expect(native().setCudaSparseAdamW('rounds')).toBe('rounds');
      expect(code(() => native().setCudaSparseAdamW('fast' as 'rounds'))).toBe('E_ARG');
    } finally {
      native().setCudaSparseAdamW(prev);
    }
  });
});

// The prefetch kernel (setCudaSparseAdamW('prefetch')): the same arithmetic as the rounds kernel,
// so its results equal the rounds kernel's bit for bit and the CPU's within the usual tolerance.
describeCuda('sparse AdamW, prefetch kernel, vs the CPU and the rounds kernel', () => {
  const run = (cases: SparseCase[], mode: 'rounds' | 'prefetch', scale?: number) => {
    const prev = native().setCudaSparseAdamW(mode);
    try {
      return runSparse(cases, 'cuda', HP, scale);
    } finally {
      native().setCudaSparseAdamW(prev);
    }
  };
  const same = (a: Uploaded[], b: Uploaded[]) =>
    a.forEach((x, t) => {
      expect(nums(b[t].master)).toEqual(nums(x.master));
      expect(nums(b[t].m)).toEqual(nums(x.m));
      expect(nums(b[t].v)).toEqual(nums(x.v));
      expect(nums(b[t].w)).toEqual(nums(x.w));
    });
  test('mixed tensors, dtypes and index types, a device-side scale, more tensors than one launch holds', () => {
    tidy(() => {
      const dts: FloatDType[] = ['f32', 'bf16', 'f16', 'f64'];
      const cases: SparseCase[] = [];
      for (let t = 0; t < 450; t++) {
        const rows = 1 + ((t * 7) % 31);
        const cols = 1 + ((t * 13) % 211);
        const k = Math.max(1, Math.floor(rows * cols * (0.01 + ((t * 3) % 10) / 15)));
        cases.push(makeCase([rows, cols], k, 2, 3 + t, dts[t % 4], t % 2 ? 'i64' : 'i32'));
      }
      const pre = run(cases, 'prefetch', 0.6);
      same(run(cases, 'rounds', 0.6), pre);
      const cpu = runSparse(cases, 'cpu', HP, 0.6);
      cpu.forEach((x, t) => {
        expectClose(nums(pre[t].master), nums(x.master), { atol: 1e-7, rtol: 1e-6, label: `masters[${t}]` });
        const tol = x.w.dtype === 'bf16' ? 2 ** -8 : x.w.dtype === 'f16' ? 2 ** -10 : 1e-6;
        expectClose(nums(pre[t].w), nums(x.w), { atol: 1e-7, rtol: tol, label: `weights[${t}]` });
      });
      const big = [makeCase([1024, 1031], 10_559, 2, 5, 'bf16', 'i32')]; // 1%
      same(run(big, 'rounds'), run(big, 'prefetch'));
    });
  });
});
