/**
 * The SDDMM (sampled dense-dense product, a weight gradient at selected entries only) against a
 * float64 reference on the CPU, against the dense weight gradient plus gather, and CUDA against
 * CPU.
 */
import { Tensor, tensor, zeros, SiftError, tidy } from '../../lib';
import { native } from '../../lib/engine/native';
import { matmulRaw } from '../../lib/autograd/matmul';
import { setNumThreads } from '../../lib/engine/runtime';
import { describeCuda, seededValues } from '../helpers/gradcheck';

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

function sddmm(out: Tensor, a: Tensor, b: Tensor, idx: Tensor, accumulate: boolean, plan?: Tensor): void {
  N().sddmm(out.handle, a.handle, b.handle, idx.handle, accumulate, plan?.handle);
}
function plan(idx: Tensor, rows: number, cols: number): Tensor {
  return new Tensor(N().sddmmPlan(idx.handle, rows, cols));
}

/** Indices: shuffled, with repeats, covering the first and last entry, or sorted and distinct. */
function indices(m: number, n: number, k: number, seed: number, sorted: boolean): number[] {
  const r = seededValues(k, seed);
  const ix = r.map((v) => Math.min(m * n - 1, Math.floor(((v + 1) / 2) * m * n)));
  ix[0] = 0;
  if (k > 1) ix[k - 1] = m * n - 1;
  if (k > 4) ix[3] = ix[2]; // a repeated index
  return sorted ? [...new Set(ix)].sort((x, y) => x - y) : ix;
}

/** float64 reference from the values a and b hold (after their dtype's rounding). */
function reference(av: number[], bv: number[], m: number, n: number, idx: number[]): { g: number[]; mag: number[] } {
  const tokens = av.length / m;
  const g: number[] = [];
  const mag: number[] = [];
  for (const f of idx) {
    const r = Math.floor(f / n);
    const c = f % n;
    let s = 0;
    let s1 = 0;
    for (let t = 0; t < tokens; t++) {
      const p = av[t * m + r] * bv[t * n + c];
      s += p;
      s1 += Math.abs(p);
    }
    g.push(s);
    mag.push(s1);
  }
  return { g, mag };
}

/** |got - want| within `rel` of the sum of |terms| (the scale of accumulation rounding). */
function expectNear(got: number[], want: number[], mag: number[], rel: number, label: string): void {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < got.length; i++) {
    const tol = rel * mag[i] + 1e-30;
    if (!(Math.abs(got[i] - want[i]) <= tol)) throw new Error(`${label}: entry ${i} is ${got[i]}, expected ${want[i]} (tolerance ${tol})`);
  }
}

const shapes: [number, number, number][] = [
  // [tokens, m, n]: tile edges, token counts off multiples of 8, more tokens than one chunk.
  [1, 1, 1],
  [7, 33, 65],
  [50, 96, 130],
  [1100, 40, 70],
];

describe('sddmm (cpu)', () => {
  test('f32 and f64 against a float64 reference: shuffled and repeated or sorted indices, with and without a plan, written and added', () => {
    tidy(() => {
      let seed = 1;
      for (const dtype of ['f32', 'f64'] as const) {
        for (const [tokens, m, n] of shapes) {
          const a = tensor(seededValues(tokens * m, seed++), [tokens, m], { dtype });
          const b = tensor(seededValues(tokens * n, seed++), [tokens, n], { dtype });
          const av = nums(a);
          const bv = nums(b);
          for (const sorted of [false, true]) {
            const k = Math.max(1, Math.floor(m * n * 0.05));
            const ixv = indices(m, n, k, seed++, sorted);
            const idx = tensor(ixv, [ixv.length], { dtype: sorted ? 'i32' : 'i64' });
            const { g, mag } = reference(av, bv, m, n, ixv);
            // f64 sums exactly enough that only out's f32 rounding is left.
            const rel = dtype === 'f64' ? 1e-7 : 2e-6;
            const out = zeros([ixv.length]);
            sddmm(out, a, b, idx, false);
            expectNear(nums(out), g, mag, rel, `${dtype} [${tokens}, ${m}] x [${tokens}, ${n}]`);
            const p = plan(idx, m, n);
            sddmm(out, a, b, idx, true, p);
            expectNear(
              nums(out),
              g.map((v) => 2 * v),
              mag.map((v) => 2 * v),
              rel,
              'accumulated with a plan',
            );
          }
        }
      }
    });
  });

  test('bf16 and f16 inputs accumulate in f32', () => {
    tidy(() => {
      const [tokens, m, n] = [300, 48, 80];
      for (const dtype of ['bf16', 'f16'] as const) {
        const a = tensor(seededValues(tokens * m, 11), [tokens, m], { dtype });
        const b = tensor(seededValues(tokens * n, 12), [tokens, n], { dtype });
        const ixv = indices(m, n, 200, 13, true);
        const idx = tensor(ixv, [ixv.length], { dtype: 'i32' });
        const out = zeros([ixv.length]);
        sddmm(out, a, b, idx, false);
        const { g, mag } = reference(nums(a), nums(b), m, n, ixv);
        expectNear(nums(out), g, mag, 2e-6, dtype);
      }
    });
  });

  test('the same bits with 1 and 3 threads when a row runs across the tiles a thread split separates', () => {
    // One row of entries, 7 in each of 37 column tiles: 3 threads split the tiles at 13 and 26
    // (entries 91 and 182, not multiples of 4), so entries are grouped differently than on one
    // thread; 40 tokens take both the 16-token steps and the 8-token tail.
    tidy(() => {
      const [tokens, m, n] = [40, 2, 64 * 37];
      const a = tensor(seededValues(tokens * m, 41), [tokens, m]);
      const b = tensor(seededValues(tokens * n, 42), [tokens, n]);
      const ixv: number[] = [];
      for (let ct = 0; ct < 37; ct++) for (let c = 0; c < 7; c++) ixv.push(ct * 64 + c);
      const idx = tensor(ixv, [ixv.length], { dtype: 'i32' });
      const before = setNumThreads(1);
      try {
        const one = zeros([ixv.length]);
        sddmm(one, a, b, idx, false);
        const oneBits = Buffer.from((one.toArray() as Float32Array).buffer);
        setNumThreads(3);
        const three = zeros([ixv.length]);
        sddmm(three, a, b, idx, false);
        expect(Buffer.from((three.toArray() as Float32Array).buffer).equals(oneBits)).toBe(true);
        const { g, mag } = reference(nums(a), nums(b), m, n, ixv);
        expectNear(nums(three), g, mag, 1e-6, 'three threads');
      } finally {
        setNumThreads(before);
      }
    });
  });

  test('token dims folded: [batch, seq, features] inputs', () => {
    tidy(() => {
      const a = tensor(seededValues(2 * 9 * 20, 21), [2, 9, 20]);
      const b = tensor(seededValues(2 * 9 * 30, 22), [2, 9, 30]);
      const ixv = indices(20, 30, 40, 23, true);
      const idx = tensor(ixv, [ixv.length], { dtype: 'i32' });
      const out = zeros([ixv.length]);
      sddmm(out, a, b, idx, false);
      const { g, mag } = reference(nums(a), nums(b), 20, 30, ixv);
      expectNear(nums(out), g, mag, 2e-6, 'folded');
    });
  });

  test('equals the dense weight gradient plus gather, for both weight layouts', () => {
    tidy(() => {
      const [tokens, fin, fout] = [64, 72, 40];
      const x = tensor(seededValues(tokens * fin, 31), [tokens, fin]);
      const dy = tensor(seededValues(tokens * fout, 32), [tokens, fout]);
      // W [out, in] (nn.Linear): dW = dy^T x, so a = dy, b = x.
      const ixv = indices(fout, fin, 150, 33, true);
      const idx = tensor(ixv, [ixv.length], { dtype: 'i32' });
      const dense = matmulRaw(dy, x, true, false);
      const gathered = zeros([ixv.length]);
      N().gatherInto(gathered.handle, dense.handle, idx.handle, false);
      const out = zeros([ixv.length]);
      sddmm(out, dy, x, idx, false);
      const { mag } = reference(nums(dy), nums(x), fout, fin, ixv);
      expectNear(nums(out), nums(gathered), mag, 4e-6, 'out-in');
      // W [in, out] (GPT-2's Conv1D): dW = x^T dy, so a = x, b = dy.
      const ixc = indices(fin, fout, 150, 34, true);
      const idc = tensor(ixc, [ixc.length], { dtype: 'i32' });
      const denseC = matmulRaw(x, dy, true, false);
      const gatheredC = zeros([ixc.length]);
      N().gatherInto(gatheredC.handle, denseC.handle, idc.handle, false);
      const outC = zeros([ixc.length]);
      sddmm(outC, x, dy, idc, false);
      const { mag: magC } = reference(nums(x), nums(dy), fin, fout, ixc);
      expectNear(nums(outC), nums(gatheredC), magC, 4e-6, 'in-out');
    });
  });

  test('the plan groups entries by tile', () => {
    tidy(() => {
      // [rows, cols, k, ntiles, order..., then (row0, col0, begin) per tile, then k]
      const ixv = [65, 0, 32 * 100 + 3, 1, 64, 99];
      const p = nums(plan(tensor(ixv, [6], { dtype: 'i64' }), 40, 100));
      expect(p.slice(0, 4)).toEqual([40, 100, 6, 3]);
      // 0 and 1 lie in tile (0, 0); 65, 64 and 99 in (0, 64); 3203 (row 32, column 3) in (32, 0).
      expect(p.slice(4, 10)).toEqual([1, 3, 0, 4, 5, 2]);
      expect(p.slice(10)).toEqual([0, 0, 0, 0, 64, 2, 32, 0, 5, 6]);
    });
  });

  test('the plan: a permutation of the entries, each tile holding only its own, in input order, tiles row-tile major', () => {
    tidy(() => {
      for (const [m, n, k, seed] of [
        [1, 1, 1, 1],
        [33, 65, 500, 2],
        [200, 1000, 3000, 3],
        [64, 128, 8192, 4],
      ]) {
        const ixv = indices(m, n, k, seed, false);
        const p = nums(plan(tensor(ixv, [k], { dtype: 'i32' }), m, n));
        expect(p.slice(0, 3)).toEqual([m, n, k]);
        const ntiles = p[3];
        expect(p.length).toBe(5 + k + 3 * ntiles);
        const order = p.slice(4, 4 + k);
        expect([...order].sort((x, y) => x - y)).toEqual(Array.from({ length: k }, (_, i) => i));
        expect(p[p.length - 1]).toBe(k);
        let prevKey = -1;
        for (let t = 0; t < ntiles; t++) {
          const [row0, col0, begin] = p.slice(4 + k + 3 * t, 7 + k + 3 * t);
          const end = t + 1 < ntiles ? p[4 + k + 3 * (t + 1) + 2] : k;
          expect(end).toBeGreaterThan(begin);
          expect(row0 % 32).toBe(0);
          expect(col0 % 64).toBe(0);
          const key = (row0 / 32) * Math.ceil(n / 64) + col0 / 64;
          expect(key).toBeGreaterThan(prevKey);
          prevKey = key;
          let wrong = 0;
          for (let e = begin; e < end; e++) {
            const f = ixv[order[e]];
            const r = Math.floor(f / n);
            const c = f % n;
            if (!(r >= row0 && r < row0 + 32 && c >= col0 && c < col0 + 64)) wrong++;
            if (e > begin && !(order[e] > order[e - 1])) wrong++;
          }
          expect(wrong).toBe(0);
        }
      }
    });
  });

  test('argument checks', () => {
    tidy(() => {
      const a = tensor(seededValues(20, 1), [4, 5]);
      const b = tensor(seededValues(24, 2), [4, 6]);
      const idx = tensor([0, 29], [2], { dtype: 'i32' });
      expect(codeOf(() => sddmm(zeros([3]), a, b, idx, false))).toBe('E_SHAPE');
      expect(codeOf(() => sddmm(zeros([2], { dtype: 'f64' }), a, b, idx, false))).toBe('E_DTYPE');
      expect(codeOf(() => sddmm(zeros([2]), a, tensor(seededValues(24, 2), [4, 6], { dtype: 'bf16' }), idx, false))).toBe('E_DTYPE');
      expect(codeOf(() => sddmm(zeros([2]), a, tensor(seededValues(30, 2), [5, 6]), idx, false))).toBe('E_SHAPE');
      expect(codeOf(() => sddmm(zeros([2]), a, b, tensor([0, 1], [2]), false))).toBe('E_DTYPE');
      expect(codeOf(() => plan(tensor([0, 30], [2], { dtype: 'i32' }), 5, 6))).toBe('E_INDEX');
      expect(codeOf(() => plan(tensor([0, -1], [2], { dtype: 'i32' }), 5, 6))).toBe('E_INDEX');
      expect(codeOf(() => sddmm(zeros([2]), a, b, idx, false, tensor([1, 2, 3], [3], { dtype: 'i64' })))).toBe('E_MISMATCH');
      // A plan of other dimensions, or an index out of range, fails when the queued kernel runs.
      const other = plan(idx, 6, 5);
      expect(
        codeOf(() => {
          sddmm(zeros([2]), a, b, idx, false, other);
          N().synchronize('cpu');
        }),
      ).toBe('E_MISMATCH');
      expect(
        codeOf(() => {
          sddmm(zeros([2]), a, b, tensor([0, 30], [2], { dtype: 'i32' }), false);
          N().synchronize('cpu');
        }),
      ).toBe('E_INDEX');
    });
  });
});

describeCuda('sddmm: CUDA matches CPU', () => {
  test('f32, bf16 and f16 at tile edges and past one block of entries, with a plan and without', () => {
    tidy(() => {
      let seed = 100;
      for (const dtype of ['f32', 'bf16', 'f16'] as const) {
        for (const [tokens, m, n] of [...shapes, [257, 300, 520] as [number, number, number]]) {
          const a = tensor(seededValues(tokens * m, seed++), [tokens, m], { dtype });
          const b = tensor(seededValues(tokens * n, seed++), [tokens, n], { dtype });
          // Dense enough that some tiles hold more entries than one pass of a block (1024).
          const k = Math.max(1, Math.floor(m * n * (m * n > 100000 ? 0.9 : 0.3)));
          const ixv = indices(m, n, k, seed++, false);
          const idx = tensor(ixv, [ixv.length], { dtype: 'i32' });
          const cpu = zeros([ixv.length]);
          sddmm(cpu, a, b, idx, false);
          const { mag } = reference(nums(a), nums(b), m, n, ixv);
          const ga = a.to('cuda');
          const gb = b.to('cuda');
          const gi = idx.to('cuda');
          const gout = zeros([ixv.length], { device: 'cuda' });
          sddmm(gout, ga, gb, gi, false);
          expectNear(nums(gout), nums(cpu), mag, 4e-6, `${dtype} [${tokens}, ${m}] x [${tokens}, ${n}]`);
          const p = plan(gi, m, n);
          sddmm(gout, ga, gb, gi, true, p);
          expectNear(
            nums(gout),
            nums(cpu).map((v) => 2 * v),
            mag.map((v) => 2 * v),
            4e-6,
            'accumulated with a plan',
          );
        }
      }
    });
  });

  test('an index out of range is reported at the next synchronisation', () => {
    tidy(() => {
      const a = tensor(seededValues(20, 1), [4, 5], { device: 'cuda' });
      const b = tensor(seededValues(24, 2), [4, 6], { device: 'cuda' });
      const good = tensor([0, 29], [2], { dtype: 'i32', device: 'cuda' });
      const p = plan(good, 5, 6);
      const bad = tensor([0, 30], [2], { dtype: 'i32', device: 'cuda' });
      expect(
        codeOf(() => {
          sddmm(zeros([2], { device: 'cuda' }), a, b, bad, false, p);
          N().synchronize('cuda');
        }),
      ).toBe('E_INDEX');
    });
  });

  test('a plan of the same length made for other indices or another shape is reported, not read past', () => {
    tidy(() => {
      const a = tensor(seededValues(4 * 64, 3), [4, 64], { device: 'cuda' });
      const b = tensor(seededValues(4 * 256, 4), [4, 256], { device: 'cuda' });
      // 4 entries in 4 tiles and 7 entries in 3 tiles: both plans hold 5 + 4 + 12 = 5 + 7 + 9 values.
      const four = tensor([0, 64, 128, 192], [4], { dtype: 'i32', device: 'cuda' });
      const seven = tensor([0, 1, 2, 64, 65, 128, 129], [7], { dtype: 'i32', device: 'cuda' });
      const p7 = plan(seven, 64, 256);
      expect(p7.size).toBe(plan(four, 64, 256).size);
      for (const p of [p7, plan(four, 64, 512)]) {
        expect(
          codeOf(() => {
            sddmm(zeros([4], { device: 'cuda' }), a, b, four, false, p);
            N().synchronize('cuda');
          }),
        ).toBe('E_INDEX');
      }
    });
  });
});
