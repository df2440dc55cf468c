/**
 * SIFT top-k selection (native topk / topkGlobal): exact top-k by value with ties toward the lower
 * index (tensor position first for topkGlobal), indices ascending, checked against a sort-based
 * reference; CUDA results must equal the CPU ones exactly.
 */
import { Tensor, tensor, SiftError, tidy } from '../../lib';
import { native } from '../../lib/engine/native';
import { describeCuda, seededValues } from '../helpers/gradcheck';

const N = () => native();
const wrap = (h: ReturnType<ReturnType<typeof native>['topk']>) => new Tensor(h);

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SiftError);
    return (e as SiftError).code;
  }
  return undefined;
}

/** Values as the tensor stores them (after f16/bf16 rounding), flat in logical order. */
function valuesOf(t: Tensor): number[] {
  return Array.from(t.contiguous().toArray() as ArrayLike<number>, Number);
}

/** Flat indices by value descending, ties by index ascending (-0 and +0 compare equal, as in the kernel). */
function refOrder(vals: number[]): Int32Array {
  const order = Int32Array.from(vals.keys());
  return order.sort((a, b) => vals[b] - vals[a] || a - b);
}

function refTopk(vals: number[] | Int32Array, k: number): number[] {
  const order = vals instanceof Int32Array ? vals : refOrder(vals);
  return Array.from(order.slice(0, k).sort());
}

function refTopkGlobal(lists: number[][], k: number): number[][] {
  const all: [number, number, number][] = [];
  lists.forEach((vs, t) => vs.forEach((v, i) => all.push([v, t, i])));
  all.sort((a, b) => b[0] - a[0] || a[1] - b[1] || a[2] - b[2]);
  const out: number[][] = lists.map(() => []);
  for (const [, t, i] of all.slice(0, k)) out[t].push(i);
  return out.map((o) => o.sort((a, b) => a - b));
}

function indices(t: Tensor): number[] {
  return Array.from(t.toArray() as ArrayLike<number | bigint>, Number);
}

function topk(scores: Tensor, k: number): Tensor {
  return wrap(N().topk(scores.handle, k));
}

function topkGlobal(scores: Tensor[], k: number): Tensor[] {
  return N()
    .topkGlobal(
      scores.map((s) => s.handle),
      k,
    )
    .map((h) => new Tensor(h));
}

function absRandom(n: number, seed: number, opts: { dtype?: string; device?: string } = {}): Tensor {
  return tensor(seededValues(n, seed).map(Math.abs), [n], { dtype: opts.dtype ?? 'f32', device: opts.device ?? 'cpu' });
}

function checkTopk(x: Tensor, ks: number[]): void {
  const order = refOrder(valuesOf(x));
  for (const k of ks) {
    const got = topk(x, k);
    expect(got.dtype).toBe('i32');
    expect(got.shape).toEqual([k]);
    expect(indices(got)).toEqual(refTopk(order, k));
    got.dispose();
  }
}

describe('topk (cpu)', () => {
  test('random scores, several sizes and rates, every float dtype', () => {
    tidy(() => {
      for (const dtype of ['f32', 'f64', 'f16', 'bf16']) {
        for (const n of [1, 7, 1000, 70001]) {
          const x = absRandom(n, n + 3, { dtype });
          checkTopk(x, [1, Math.max(1, Math.floor(n * 0.01)), Math.ceil(n / 2), n]);
        }
      }
    });
  });

  test('many chunks across threads (300k elements), 1% and 5%', () => {
    tidy(() => {
      const n = 300_000;
      const x = absRandom(n, 11);
      checkTopk(x, [3000, 15000]);
    });
  });

  test('heavy ties: values in {0, 1, 2}, ties go to the lowest indices', () => {
    tidy(() => {
      const n = 200_003;
      const vals = seededValues(n, 5).map((v) => Math.floor((v + 1) * 1.5));
      for (const dtype of ['f32', 'bf16', 'f64']) {
        const x = tensor(vals, [n], { dtype });
        checkTopk(x, [1, 5, 66_000, 100_000, 150_000, n - 1, n]);
      }
      // All equal: the first k indices.
      const z = tensor(new Float32Array(1000).fill(3), [1000]);
      expect(indices(topk(z, 10))).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    });
  });

  test('negative values, -0 ties with +0, subnormals, huge and tiny magnitudes', () => {
    tidy(() => {
      const vals = [-1, 0, -0, 5e-45, -5e-45, 3.4e38, -3.4e38, 1e-30, 2, -0, 0, 2];
      const x = tensor(new Float32Array(vals), [vals.length]);
      checkTopk(
        x,
        vals.map((_, i) => i + 1),
      );
      // -0 and 0 tie: the lower index wins.
      const z = tensor(new Float32Array([-0, 0, -0]), [3]);
      expect(indices(topk(z, 2))).toEqual([0, 1]);
      const d = tensor(new Float64Array([-0, 1e-310, 0, -1e-310]), [4]);
      expect(indices(topk(d, 2))).toEqual([0, 1]);
      expect(indices(topk(d, 3))).toEqual([0, 1, 2]);
    });
  });

  test('non-contiguous input is read in logical (row-major) order', () => {
    tidy(() => {
      const x = tensor(seededValues(60 * 70, 9).map(Math.abs), [60, 70]);
      const xt = x.transpose(0, 1);
      expect(xt.isContiguous).toBe(false);
      checkTopk(xt, [1, 42, 2000]);
    });
  });

  test('deterministic: the same indices every time', () => {
    tidy(() => {
      const x = absRandom(123_457, 4);
      const a = indices(topk(x, 4321));
      for (let i = 0; i < 3; i++) expect(indices(topk(x, 4321))).toEqual(a);
    });
  });

  test('NaN and Inf scores: E_NUMERIC', () => {
    tidy(() => {
      for (const bad of [NaN, Infinity, -Infinity]) {
        for (const dtype of ['f32', 'f64', 'f16', 'bf16']) {
          const vals = seededValues(5000, 2).map(Math.abs);
          vals[1234] = bad;
          const x = tensor(vals, [5000], { dtype });
          // CPU raises from the queued kernel: reading the result surfaces it.
          expect(codeOf(() => topk(x, 10).toArray())).toBe('E_NUMERIC');
        }
      }
    });
  });

  test('argument checks: k range, dtypes', () => {
    tidy(() => {
      const x = absRandom(10, 1);
      expect(codeOf(() => topk(x, 0))).toBe('E_ARG');
      expect(codeOf(() => topk(x, 11))).toBe('E_ARG');
      expect(codeOf(() => topk(x, 1.5))).toBe('E_ARG');
      expect(codeOf(() => topk(tensor([1, 2, 3], [3], { dtype: 'i32' }), 1))).toBe('E_DTYPE');
      expect(codeOf(() => topk(tensor([1, 0, 1], [3], { dtype: 'bool' }), 1))).toBe('E_DTYPE');
    });
  });
});

describe('topkGlobal (cpu)', () => {
  test('one budget spread unevenly over tensors of different sizes', () => {
    tidy(() => {
      // Tensor 1 holds the large values, so it takes most of the budget; tensor 2 is tiny.
      const a = seededValues(50_000, 1).map(Math.abs);
      const b = seededValues(80_000, 2).map((v) => Math.abs(v) * 3);
      const c = seededValues(5, 3).map(Math.abs);
      const d = seededValues(70_001, 4).map((v) => Math.abs(v) * 0.5);
      const ts = [a, b, c, d].map((v) => tensor(v, [v.length]));
      for (const k of [1, 100, 2000, 60_000, 200_006]) {
        const got = topkGlobal(ts, k);
        expect(got.map(indices)).toEqual(refTopkGlobal([a, b, c, d], k));
        expect(got.reduce((s, t) => s + t.shape[0], 0)).toBe(k);
        for (const g of got) expect(g.dtype).toBe('i32');
      }
    });
  });

  test('ties broken by tensor position, then index; empty shares come back empty', () => {
    tidy(() => {
      const a = [1, 2, 2, 0];
      const b = [2, 2, 1];
      const c = [0, 0];
      const ts = [a, b, c].map((v) => tensor(v, [v.length]));
      for (let k = 1; k <= 9; k++) expect(topkGlobal(ts, k).map(indices)).toEqual(refTopkGlobal([a, b, c], k));
      const got = topkGlobal(ts, 2);
      expect(got[1].shape).toEqual([0]);
      expect(got[2].shape).toEqual([0]);
    });
  });

  test('heavy ties over many tensors, f16 and f64', () => {
    tidy(() => {
      for (const dtype of ['f16', 'f64']) {
        const lists = [30_000, 1, 100_000, 7].map((n, t) => seededValues(n, t + 10).map((v) => Math.floor((v + 1) * 1.5)));
        const ts = lists.map((v) => tensor(v, [v.length], { dtype }));
        for (const k of [3, 40_000, 90_000]) expect(topkGlobal(ts, k).map(indices)).toEqual(refTopkGlobal(lists, k));
      }
    });
  });

  test('argument checks', () => {
    tidy(() => {
      const a = absRandom(10, 1);
      const b = absRandom(5, 2, { dtype: 'f64' });
      expect(codeOf(() => topkGlobal([], 1))).toBe('E_ARG');
      expect(codeOf(() => topkGlobal([a], 0))).toBe('E_ARG');
      expect(codeOf(() => topkGlobal([a, a], 21))).toBe('E_ARG');
      expect(codeOf(() => topkGlobal([a, b], 3))).toBe('E_DTYPE');
      const bad = tensor([1, NaN, 2], [3]);
      expect(codeOf(() => topkGlobal([a, bad], 3))).toBe('E_NUMERIC');
    });
  });
});

describeCuda('topk and topkGlobal match the CPU exactly', () => {
  const cases: [string, number, (n: number, seed: number) => number[]][] = [
    ['random', 1_000_003, (n, s) => seededValues(n, s).map(Math.abs)],
    [
      'gaussian-like',
      2_000_000,
      (n, s) => {
        const b = seededValues(n, s + 100);
        return seededValues(n, s).map((v, i) => Math.abs(v * b[i]) ** 3);
      },
    ],
    ['ties {0,1,2}', 500_000, (n, s) => seededValues(n, s).map((v) => Math.floor((v + 1) * 1.5))],
    ['tiny', 3, (n, s) => seededValues(n, s).map(Math.abs)],
  ];
  for (const [name, n, gen] of cases) {
    test(`topk: ${name}, every dtype`, () => {
      tidy(() => {
        const vals = gen(n, 3);
        for (const dtype of ['f32', 'f16', 'bf16', 'f64']) {
          const x = tensor(vals, [n], { dtype });
          const xc = x.to('cuda');
          for (const k of [1, Math.max(1, Math.floor(n / 100)), Math.max(1, Math.floor(n / 20)), n]) {
            const c = topk(xc, k);
            expect(c.device).toBe('cuda:0');
            expect(indices(c)).toEqual(indices(topk(x, k)));
          }
        }
      });
    });
  }

  test('topk: non-contiguous input, and 4096-aligned sizes', () => {
    tidy(() => {
      const x = tensor(seededValues(4096 * 33, 8).map(Math.abs), [4096, 33]);
      const xt = x.transpose(0, 1);
      const xc = x.to('cuda').transpose(0, 1);
      for (const k of [7, 1351, 4096 * 33]) expect(indices(topk(xc, k))).toEqual(indices(topk(xt, k)));
      expect(indices(topk(x.to('cuda'), 1000))).toEqual(refTopk(valuesOf(x), 1000));
    });
  });

  test('topk: contiguous views that start off a 16-byte boundary (the scalar loads), large enough for the sampled digit', () => {
    tidy(() => {
      const n = 4096 * 80 + 123; // 80+ tiles: the top digit is guessed from a sample first
      const vals = seededValues(n + 1, 21).map((v, i) => Math.abs(v) * (1 + (i % 977) / 100));
      for (const dtype of ['f32', 'f64', 'bf16']) {
        const x = tensor(vals, [n + 1], { dtype }).slice(0, 1, n + 1); // storage offset 1 element
        const xc = tensor(vals, [n + 1], { dtype })
          .to('cuda')
          .slice(0, 1, n + 1);
        for (const k of [1, Math.floor(n / 100), Math.floor(n / 20), n]) {
          expect(indices(topk(xc, k))).toEqual(indices(topk(x, k)));
        }
      }
    });
  });

  test('topk: NaN / Inf raise E_NUMERIC from topk itself', () => {
    tidy(() => {
      for (const dtype of ['f32', 'bf16', 'f64']) {
        const vals = seededValues(100_000, 2).map(Math.abs);
        vals[77_777] = NaN;
        expect(codeOf(() => topk(tensor(vals, [vals.length], { dtype }).to('cuda'), 100))).toBe('E_NUMERIC');
        vals[77_777] = -Infinity;
        expect(codeOf(() => topk(tensor(vals, [vals.length], { dtype }).to('cuda'), 100))).toBe('E_NUMERIC');
      }
    });
  });

  test('topkGlobal: many tensors (more than one descriptor batch), uneven budget, ties', () => {
    tidy(() => {
      const lists: number[][] = [];
      for (let t = 0; t < 70; t++) {
        const n = t % 7 === 3 ? 0 : 1 + ((t * 7919) % 20_000);
        lists.push(seededValues(n, t + 1).map((v) => (t % 2 ? Math.floor((v + 1) * 2) : Math.abs(v) * (1 + t / 10))));
      }
      const cpu = lists.map((v) => tensor(v, [v.length]));
      const gpu = cpu.map((t) => t.to('cuda'));
      const total = lists.reduce((s, v) => s + v.length, 0);
      for (const k of [1, 500, Math.floor(total / 10), total]) {
        expect(topkGlobal(gpu, k).map(indices)).toEqual(topkGlobal(cpu, k).map(indices));
      }
    });
  });

  test('device mismatch: E_DEVICE', () => {
    tidy(() => {
      const a = absRandom(10, 1);
      expect(codeOf(() => topkGlobal([a, a.to('cuda')], 3))).toBe('E_DEVICE');
    });
  });
});

describe('setCudaSelect', () => {
  test('modes radix and bracket, the previous one returned; anything else E_ARG', () => {
    const prev = N().setCudaSelect('bracket');
    try {
      expect(N().setCudaSelect('radix')).toBe('bracket');
      expect(N().setCudaSelect('radix')).toBe('radix');
      expect(codeOf(() => N().setCudaSelect('fast' as 'radix'))).toBe('E_ARG');
      // The CPU selection does not depend on it.
      const x = absRandom(5000, 4);
      N().setCudaSelect('bracket');
      expect(indices(topk(x, 50))).toEqual(refTopk(valuesOf(x), 50));
    } finally {
      N().setCudaSelect(prev);
    }
  });

  test('cudaSelectStats: the mode set, counts that CPU selections leave alone, and a reset', () => {
    const prev = N().setCudaSelect('bracket');
    try {
      N().resetCudaSelectStats();
      expect(N().cudaSelectStats()).toEqual({ mode: 'bracket', bracketHits: 0, bracketMisses: 0, radix: 0 });
      tidy(() => {
        const x = absRandom(5000, 4);
        indices(topk(x, 50));
        topkGlobal([x, x], 70).forEach(indices);
      });
      expect(N().cudaSelectStats()).toEqual({ mode: 'bracket', bracketHits: 0, bracketMisses: 0, radix: 0 });
      N().setCudaSelect('radix');
      expect(N().cudaSelectStats().mode).toBe('radix');
    } finally {
      N().setCudaSelect(prev);
    }
  });
});

/**
 * The CUDA top-k of `x` and which kernels ran it: 'hit' (the bracket kernels selected), 'miss'
 * (the bracket missed; the radix kernels selected) or 'radix' (the radix kernels alone).
 */
function cudaTopkPath(x: Tensor, k: number): { idx: Tensor; path: 'hit' | 'miss' | 'radix' } {
  const before = N().cudaSelectStats();
  const idx = topk(x, k);
  const after = N().cudaSelectStats();
  const hits = after.bracketHits - before.bracketHits;
  const misses = after.bracketMisses - before.bracketMisses;
  const radix = after.radix - before.radix;
  expect(hits + misses + radix).toBe(1);
  return { idx, path: hits ? 'hit' : misses ? 'miss' : 'radix' };
}

/** Two i32 index tensors hold the same indices (compared as bytes; the first difference reported by position). */
function expectSameIndices(got: Tensor, want: Tensor, what: string): void {
  expect([what, got.dtype, got.shape]).toEqual([what, want.dtype, want.shape]);
  const a = got.toArray() as Int32Array;
  const b = want.toArray() as Int32Array;
  if (!Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))) {
    const i = a.findIndex((v, j) => v !== b[j]);
    expect([what, i, a[i]]).toEqual([what, i, b[i]]);
  }
}

// The bracket kernels (setCudaSelect('bracket')) against the CPU selection: shapes with partial
// tiles, sampled and exact brackets, both bench shapes, the cases where the bracket misses (all
// equal, k at the extremes: the radix kernels take over), ties, zeros of both signs, denormals,
// negative scores, views off a 16-byte boundary, NaN/Inf. Every call tries the bracket
// (cudaSelectStats); on |gradient|-like scores at 64 <= k <= n / 2 (n >= 4096) it must hit, as in
// the host simulation (test/native/host/select_bracket.cu). Indices are compared as bytes: the
// gpu-check's select-check stage runs this block under a time cap.
describeCuda('topk with the bracket kernels matches the CPU exactly', () => {
  let prev: 'radix' | 'bracket' = 'radix';
  beforeAll(() => {
    prev = N().setCudaSelect('bracket');
  });
  afterAll(() => {
    N().setCudaSelect(prev);
  });
  const gens: [string, (n: number, seed: number) => number[]][] = [
    ['|normal|', (n, s) => seededValues(n, s).map((v) => Math.abs(v) * 1e-3)],
    ['signed', (n, s) => seededValues(n, s)],
    ['all equal', (n) => new Array(n).fill(0.25)],
    ['zeros and -0', (n) => Array.from({ length: n }, (_, i) => (i % 3 === 0 ? -0 : i % 7 === 0 ? 1 : 0))],
    ['five values', (n, s) => seededValues(n, s).map((v) => Math.floor((v + 1) * 2.5) * 0.5)],
    ['denormals', (n, s) => seededValues(n, s).map((v, i) => (i % 4 === 0 ? 1e-40 * (i % 7) : i % 4 === 1 ? -1e-40 : Math.abs(v) * 1e-3))],
  ];
  for (const n of [5, 4096, 4097, 262_147, 1_000_003]) {
    for (const [name, gen] of gens) {
      test(`${name}, n ${n}, f32 / f16 / bf16`, () => {
        tidy(() => {
          const vals = gen(n, n % 97);
          for (const dtype of ['f32', 'f16', 'bf16']) {
            const x = tensor(vals, [n], { dtype });
            const xc = x.to('cuda');
            for (const k of [1, Math.max(1, Math.floor(n / 100)), Math.max(1, Math.floor(n / 20)), Math.max(1, n - 1), n]) {
              const { idx, path } = cudaTopkPath(xc, k);
              const what = `${dtype} k ${k}`;
              expectSameIndices(idx, topk(x, k), what);
              const typical = name === '|normal|' && n >= 4096 && k >= 64 && k <= n / 2;
              expect([what, path]).toEqual([what, typical ? 'hit' : expect.stringMatching(/^(hit|miss)$/)]);
            }
          }
        });
      });
    }
  }
  test('the bench shapes 4096x11008 and 8192x28672 at 1% and 5%, f32 and bf16', () => {
    tidy(() => {
      for (const [r, c] of [
        [4096, 11008],
        [8192, 28672],
      ]) {
        for (const dtype of ['f32', 'bf16']) {
          const xc = new Tensor(N().randn([r, c], dtype, 'cuda', r + c)).abs();
          const x = xc.to('cpu');
          for (const rate of [0.01, 0.05]) {
            const k = Math.floor(r * c * rate);
            const what = `${dtype} ${r}x${c} ${rate}`;
            const { idx, path } = cudaTopkPath(xc, k);
            expect(idx.dtype).toBe('i32');
            expect([what, path]).toEqual([what, 'hit']);
            expectSameIndices(idx, topk(x, k), what);
          }
        }
      }
    });
  }, 600_000);
  test('views off a 16-byte boundary, and NaN / Inf (E_NUMERIC)', () => {
    tidy(() => {
      const n = 4096 * 80 + 123;
      const vals = seededValues(n + 1, 21).map((v, i) => Math.abs(v) * (1 + (i % 977) / 100));
      for (const dtype of ['f32', 'f16', 'bf16']) {
        const x = tensor(vals, [n + 1], { dtype }).slice(0, 1, n + 1);
        const xc = tensor(vals, [n + 1], { dtype })
          .to('cuda')
          .slice(0, 1, n + 1);
        for (const k of [1, Math.floor(n / 100), n]) {
          const { idx, path } = cudaTopkPath(xc, k);
          expectSameIndices(idx, topk(x, k), `${dtype} k ${k}`);
          expect(path).not.toBe('radix');
        }
        for (const bad of [NaN, Infinity, -Infinity]) {
          const v2 = vals.slice(0, 300_000);
          v2[123_456] = bad;
          expect(codeOf(() => topk(tensor(v2, [v2.length], { dtype }).to('cuda'), 3000))).toBe('E_NUMERIC');
        }
      }
    });
  });
});
