/**
 * Elementwise ops: values against float64 references computed here (broadcasting, views, 0-d and
 * empty tensors, integer and bool dtypes), gradients by finite differences, f16/bf16 against
 * f32, error codes, and CUDA against CPU where a GPU is usable.
 */
import {
  Tensor,
  tensor,
  tidy,
  SiftError,
  add,
  sub,
  mul,
  div,
  pow,
  rsub,
  rdiv,
  maximum,
  minimum,
  compare,
  where,
  neg,
  exp,
  log,
  tanh,
  relu,
  silu,
  sigmoid,
  sqrt,
  rsqrt,
  abs,
  square,
  reciprocal,
  sin,
  cos,
  erf,
  sign,
  gelu,
} from '../../lib';
import { native } from '../../lib/engine/native';
import type { BinaryOp, ScalarOp, UnaryOp } from '../../lib/engine/addon-types';
import { gradcheck, randomTensor, seededValues, expectClose, describeCuda } from '../helpers/gradcheck';

const N = native;

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

/** erf to ~1e-14 (series; the inputs here stay within |x| < 4). */
function erfRef(x: number): number {
  if (Math.abs(x) > 5) return Math.sign(x);
  let sum = x,
    term = x;
  for (let n = 1; n < 200; n++) {
    term *= (-x * x) / n;
    const add = term / (2 * n + 1);
    sum += add;
    if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
  }
  return (2 / Math.sqrt(Math.PI)) * sum;
}

const K = Math.sqrt(2 / Math.PI);
const unaryRef: Record<UnaryOp, (x: number) => number> = {
  neg: (x) => -x,
  exp: Math.exp,
  log: Math.log,
  tanh: Math.tanh,
  relu: (x) => (x > 0 ? x : 0),
  gelu: (x) => 0.5 * x * (1 + erfRef(x / Math.SQRT2)),
  gelu_tanh: (x) => 0.5 * x * (1 + Math.tanh(K * (x + 0.044715 * x ** 3))),
  silu: (x) => x / (1 + Math.exp(-x)),
  sigmoid: (x) => 1 / (1 + Math.exp(-x)),
  sqrt: Math.sqrt,
  rsqrt: (x) => 1 / Math.sqrt(x),
  abs: Math.abs,
  square: (x) => x * x,
  reciprocal: (x) => 1 / x,
  sin: Math.sin,
  cos: Math.cos,
  erf: erfRef,
  sign: (x) => Math.sign(x),
};
const UNARY = Object.keys(unaryRef) as UnaryOp[];
const POSITIVE_ONLY = new Set<UnaryOp>(['log', 'sqrt', 'rsqrt']);

/** Inputs suited to op: positive for log/sqrt/rsqrt, away from 0 for reciprocal. */
function unaryInput(op: UnaryOp, n: number, seed: number): number[] {
  return seededValues(n, seed).map((v) => {
    if (POSITIVE_ONLY.has(op)) return 0.1 + 2 * Math.abs(v);
    if (op === 'reciprocal') return (v < 0 ? -0.2 : 0.2) + 2 * v;
    return 3 * v;
  });
}

const binaryRef: Record<string, (a: number, b: number) => number> = {
  add: (a, b) => a + b,
  sub: (a, b) => a - b,
  mul: (a, b) => a * b,
  div: (a, b) => a / b,
  pow: (a, b) => a ** b,
  maximum: Math.max,
  minimum: Math.min,
  eq: (a, b) => +(a === b),
  ne: (a, b) => +(a !== b),
  lt: (a, b) => +(a < b),
  le: (a, b) => +(a <= b),
  gt: (a, b) => +(a > b),
  ge: (a, b) => +(a >= b),
  rsub: (a, b) => b - a,
  rdiv: (a, b) => b / a,
  rpow: (a, b) => b ** a,
};
const ARITH: BinaryOp[] = ['add', 'sub', 'mul', 'div', 'pow', 'maximum', 'minimum'];
const CMP: BinaryOp[] = ['eq', 'ne', 'lt', 'le', 'gt', 'ge'];

function bshape(a: number[], b: number[]): number[] {
  const n = Math.max(a.length, b.length);
  return Array.from({ length: n }, (_, i) => {
    const da = a[a.length - n + i] ?? 1,
      db = b[b.length - n + i] ?? 1;
    return da === 1 ? db : da;
  });
}

/** Index into a (row-major) operand of shape s from an index of the broadcast shape out. */
function bindex(out: number[], s: number[], flat: number): number {
  let idx = 0,
    mul = 1;
  for (let d = out.length - 1, k = s.length - 1; d >= 0; d--, k--) {
    const i = flat % out[d];
    flat = Math.floor(flat / out[d]);
    if (k >= 0) {
      if (s[k] !== 1) idx += i * mul;
      mul *= s[k];
    }
  }
  return idx;
}

function bref(f: (a: number, b: number) => number, as: number[], av: number[], bs: number[], bv: number[]): number[] {
  const out = bshape(as, bs);
  const n = out.reduce((x, y) => x * y, 1);
  return Array.from({ length: n }, (_, i) => f(av[bindex(out, as, i)], bv[bindex(out, bs, i)]));
}

const f32 = (v: number[]) => v.map(Math.fround);

describe('unary ops', () => {
  test.each(UNARY)('%s matches a float64 reference in f64 and f32', (op) => {
    const xs = unaryInput(op, 37, 3);
    for (const dtype of ['f64', 'f32'] as const) {
      tidy(() => {
        const vals = dtype === 'f32' ? f32(xs) : xs;
        const x = tensor(vals, [37], { dtype });
        const y = wrapU(op, x);
        expect(y.dtype).toBe(dtype);
        expect(y.shape).toEqual([37]);
        const tol = dtype === 'f64' ? { atol: 1e-12, rtol: 1e-12 } : { atol: 2e-6, rtol: 2e-6 };
        expectClose(nums(y), vals.map(unaryRef[op]), { ...tol, label: `${op} ${dtype}` });
      });
    }
  });

  test('non-contiguous, broadcast (stride 0), 0-d and empty inputs', () => {
    tidy(() => {
      const base = randomTensor([4, 6], 5);
      const bv = nums(base);
      // transpose
      const t = base.transpose(0, 1);
      expect(t.isContiguous).toBe(false);
      const expT: number[] = [];
      for (let j = 0; j < 6; j++) for (let i = 0; i < 4; i++) expT.push(Math.tanh(bv[i * 6 + j]));
      expectClose(nums(tanh(t)), expT, { atol: 1e-14 });
      // slice with offset
      const s = base.slice(1, 2, 5);
      const expS: number[] = [];
      for (let i = 0; i < 4; i++) for (let j = 2; j < 5; j++) expS.push(Math.exp(bv[i * 6 + j]));
      expectClose(nums(exp(s)), expS, { atol: 1e-14 });
      // expand (stride 0)
      const row = tensor([1, -2, 3], [1, 3], { dtype: 'f64' });
      expect(nums(square(row.expand([2, 3])))).toEqual([1, 4, 9, 1, 4, 9]);
      // 0-d
      const z = tensor(-2.5, undefined, { dtype: 'f64' });
      const az = abs(z);
      expect(az.shape).toEqual([]);
      expect(az.item()).toBe(2.5);
      // empty
      const e = tensor([], [0, 3], { dtype: 'f32' });
      expect(exp(e).shape).toEqual([0, 3]);
    });
  });

  test('special values: relu and abs at 0, sign of 0 and NaN, log of 0', () => {
    tidy(() => {
      const x = tensor([0, -0, NaN, -1, 2, Infinity], [6], { dtype: 'f64' });
      expect(nums(relu(x)).slice(0, 2)).toEqual([0, 0]);
      expect(nums(sign(x))).toEqual([0, -0, NaN, -1, 1, 1]);
      expect(nums(log(tensor([0, -1], [2], { dtype: 'f32' })))).toEqual([-Infinity, NaN]);
      // derivatives at 0 are 0 for relu and abs
      const z = tensor([0, 0], [2], { dtype: 'f64' });
      const g = tensor([1, 1], [2], { dtype: 'f64' });
      for (const op of ['relu', 'abs', 'sign'] as UnaryOp[]) {
        const y = new Tensor(N().unary(op, z.handle));
        expect(nums(new Tensor(N().unaryBackward(op, z.handle, y.handle, g.handle)))).toEqual([0, 0]);
      }
    });
  });

  test('integer tensors: neg, abs, square, sign, relu; others E_DTYPE', () => {
    tidy(() => {
      const x = tensor([-3, 0, 4], [3], { dtype: 'i32' });
      expect(nums(neg(x))).toEqual([3, 0, -4]);
      expect(nums(abs(x))).toEqual([3, 0, 4]);
      expect(nums(square(x))).toEqual([9, 0, 16]);
      expect(nums(sign(x))).toEqual([-1, 0, 1]);
      expect(nums(relu(tensor([-3, 5], [2], { dtype: 'i64' })))).toEqual([0, 5]);
      expect(code(() => exp(x))).toBe('E_DTYPE');
      expect(code(() => N().unary('neg', tensor([1], [1], { dtype: 'bool' }).handle))).toBe('E_DTYPE');
      expect(code(() => N().unary('nope' as UnaryOp, x.handle))).toBe('E_ARG');
    });
  });

  test('f16 and bf16 agree with f32 within their rounding', () => {
    for (const op of UNARY) {
      tidy(() => {
        const xs = unaryInput(op, 64, 11);
        const x32 = tensor(xs, [64], { dtype: 'f32' });
        for (const [dt, eps] of [
          ['f16', 2 ** -10],
          ['bf16', 2 ** -7],
        ] as const) {
          const xh = x32.cast(dt);
          const ref = nums(wrapU(op, xh.cast('f32'))); // same rounded input, f32 maths
          expectClose(nums(wrapU(op, xh)), ref, { rtol: eps, atol: eps * 1e-2, label: `${op} ${dt}` });
          const y = wrapU(op, xh);
          const gy = x32.cast(dt);
          const gRef = nums(new Tensor(N().unaryBackward(op, xh.cast('f32').handle, y.cast('f32').handle, gy.cast('f32').handle)));
          const gGot = nums(new Tensor(N().unaryBackward(op, xh.handle, y.handle, gy.handle)));
          expectClose(gGot, gRef, { rtol: 4 * eps, atol: 4 * eps, label: `${op} backward ${dt}` });
        }
      });
    }
  });

  test.each(UNARY.filter((o) => o !== 'sign'))('gradcheck %s', (op) => {
    const xs = unaryInput(op, 12, 7).map((v) => (op === 'relu' || op === 'abs' ? v + (v >= 0 ? 0.05 : -0.05) : v));
    const x = tensor(xs, [3, 4], { dtype: 'f64', requiresGrad: true });
    const fn = (t: Tensor) => (op === 'gelu_tanh' ? gelu(t, 'tanh') : unaryFns[op](t));
    gradcheck(fn, [x]);
    x.dispose();
  });

  test('sign has a zero gradient through autograd ops (norm p=1 uses it)', () => {
    tidy(() => {
      const x = tensor([1.5, -2], [2], { dtype: 'f64' });
      expect(nums(sign(x))).toEqual([1, -1]);
    });
  });
});

const unaryFns: Record<UnaryOp, (x: Tensor) => Tensor> = {
  neg,
  exp,
  log,
  tanh,
  relu,
  gelu: (x) => gelu(x),
  gelu_tanh: (x) => gelu(x, 'tanh'),
  silu,
  sigmoid,
  sqrt,
  rsqrt,
  abs,
  square,
  reciprocal,
  sin,
  cos,
  erf,
  sign,
};

function wrapU(op: UnaryOp, x: Tensor): Tensor {
  return new Tensor(N().unary(op, x.handle));
}

describe('binary ops', () => {
  const shapes: [number[], number[]][] = [
    [
      [2, 3],
      [2, 3],
    ],
    [
      [2, 3, 4],
      [3, 1],
    ],
    [[4], [2, 1, 4]],
    [[1], []],
    [[], []],
    [
      [5, 1],
      [1, 6],
    ],
    [[0, 3], [3]],
    [
      [2, 0],
      [1, 1],
    ],
  ];

  test.each(shapes)('arithmetic and comparisons with broadcasting %j x %j (f64 and f32)', (as, bs) => {
    const na = as.reduce((x, y) => x * y, 1),
      nb = bs.reduce((x, y) => x * y, 1);
    const av = seededValues(na, 1).map((v) => 0.5 + 1.5 * Math.abs(v));
    // some equal values so that eq/le/ge and the ties of maximum/minimum are exercised
    const bv = seededValues(nb, 2).map((v, i) => (i % 3 === 0 && na > 0 ? av[i % na] : 0.5 + 1.5 * Math.abs(v)));
    for (const dtype of ['f64', 'f32'] as const) {
      tidy(() => {
        const A = dtype === 'f32' ? f32(av) : av,
          B = dtype === 'f32' ? f32(bv) : bv;
        const a = tensor(A, as, { dtype }),
          b = tensor(B, bs, { dtype });
        for (const op of [...ARITH, ...CMP]) {
          const y = new Tensor(N().binary(op, a.handle, b.handle));
          expect(y.shape).toEqual(bshape(as, bs));
          expect(y.dtype).toBe(CMP.includes(op) ? 'bool' : dtype);
          const tol = dtype === 'f64' ? 1e-14 : 2e-6;
          expectClose(nums(y), bref(binaryRef[op], as, A, bs, B), { atol: tol, rtol: tol, label: `${op} ${dtype}` });
        }
      });
    }
  });

  test('operands that are views: transposed, sliced and expanded', () => {
    tidy(() => {
      const base = randomTensor([3, 4], 4);
      const bv = nums(base);
      const t = base.transpose(0, 1); // [4, 3]
      const r = randomTensor([4, 1], 6);
      const rv = nums(r);
      const y = mul(t, r.expand([4, 3]));
      const exp: number[] = [];
      for (let i = 0; i < 4; i++) for (let j = 0; j < 3; j++) exp.push(bv[j * 4 + i] * rv[i]);
      expectClose(nums(y), exp, { atol: 1e-15 });
      const s = base.slice(1, 1, 3); // [3, 2], offset 1
      const y2 = sub(s, t.slice(0, 0, 2).transpose(0, 1)); // both strided
      const e2: number[] = [];
      for (let i = 0; i < 3; i++) for (let j = 0; j < 2; j++) e2.push(bv[i * 4 + 1 + j] - bv[i * 4 + j]);
      expectClose(nums(y2), e2, { atol: 1e-15 });
    });
  });

  test('NaN in maximum/minimum and comparisons', () => {
    tidy(() => {
      const a = tensor([NaN, 1, 2], [3], { dtype: 'f32' }),
        b = tensor([0, NaN, 1], [3], { dtype: 'f32' });
      expect(nums(maximum(a, b))).toEqual([NaN, NaN, 2]);
      expect(nums(minimum(a, b))).toEqual([NaN, NaN, 1]);
      expect(nums(compare('eq', a, a))).toEqual([0, 1, 1]);
      expect(nums(compare('ne', a, a))).toEqual([1, 0, 0]);
    });
  });

  test('integer arithmetic (division truncates; x / 0 gives 0) and comparisons', () => {
    for (const dtype of ['i32', 'i64'] as const) {
      tidy(() => {
        const a = tensor([7, -7, 7, 5, 2, -3], [6], { dtype }),
          b = tensor([2, 2, -2, 0, 10, 3], [6], { dtype });
        expect(nums(add(a, b))).toEqual([9, -5, 5, 5, 12, 0]);
        expect(nums(sub(a, b))).toEqual([5, -9, 9, 5, -8, -6]);
        expect(nums(mul(a, b))).toEqual([14, -14, -14, 0, 20, -9]);
        expect(nums(div(a, b))).toEqual([3, -3, -3, 0, 0, -1]);
        expect(nums(pow(a, b))).toEqual([49, 49, 0, 1, 1024, -27]);
        expect(nums(maximum(a, b))).toEqual([7, 2, 7, 5, 10, 3]);
        expect(nums(compare('lt', a, b))).toEqual([0, 1, 0, 0, 1, 1]);
        expect(a.dtype).toBe(dtype);
        expect(nums(div(a, 2))).toEqual([3, -3, 3, 2, 1, -1]);
        expect(nums(compare('gt', a, 2.5))).toEqual([1, 0, 1, 1, 0, 0]);
        expect(code(() => mul(a, 0.5))).toBe('E_DTYPE');
      });
    }
    tidy(() => {
      const big = tensor([2 ** 40, -(2 ** 40)], [2], { dtype: 'i64' });
      expect(Array.from(add(big, big).toArray() as BigInt64Array)).toEqual([2n ** 41n, -(2n ** 41n)]);
      const mn = tensor([-(2 ** 31)], [1], { dtype: 'i32' });
      expect(nums(div(mn, tensor([-1], [1], { dtype: 'i32' })))).toEqual([-(2 ** 31)]); // wraps, no trap
    });
  });

  test('bool tensors: eq/ne work, arithmetic is E_DTYPE', () => {
    tidy(() => {
      const a = tensor([1, 0, 1], [3], { dtype: 'bool' }),
        b = tensor([1, 1, 0], [3], { dtype: 'bool' });
      expect(nums(compare('eq', a, b))).toEqual([1, 0, 0]);
      expect(nums(compare('ne', a, 1))).toEqual([0, 1, 0]);
      expect(code(() => N().binary('add', a.handle, b.handle))).toBe('E_DTYPE');
      expect(code(() => N().scalarOp('mul', a.handle, 2))).toBe('E_DTYPE');
    });
  });

  test('f16 and bf16 agree with f32 within rounding', () => {
    tidy(() => {
      const av = seededValues(24, 8).map((v) => 0.5 + Math.abs(v)),
        bv = seededValues(6, 9).map((v) => 0.5 + Math.abs(v));
      for (const [dt, eps] of [
        ['f16', 2 ** -10],
        ['bf16', 2 ** -7],
      ] as const) {
        const a = tensor(av, [4, 6], { dtype: dt }),
          b = tensor(bv, [6], { dtype: dt });
        for (const op of [...ARITH, ...CMP]) {
          const got = new Tensor(N().binary(op, a.handle, b.handle));
          const ref = new Tensor(N().binary(op, a.cast('f32').handle, b.cast('f32').handle));
          expectClose(nums(got), nums(ref), { rtol: eps, atol: 0, label: `${op} ${dt}` });
        }
      }
    });
  });

  test('errors: shapes that do not broadcast (E_SHAPE), mixed dtypes (E_DTYPE), bad op (E_ARG)', () => {
    tidy(() => {
      const a = tensor([1, 2, 3], [3]),
        b = tensor([1, 2], [2]);
      expect(code(() => N().binary('add', a.handle, b.handle))).toBe('E_SHAPE');
      expect(code(() => add(a, b))).toBe('E_SHAPE');
      const c = tensor([1, 2, 3], [3], { dtype: 'f64' });
      expect(code(() => N().binary('mul', a.handle, c.handle))).toBe('E_DTYPE');
      expect(code(() => mul(a, c))).toBe('E_DTYPE');
      expect(code(() => N().binary('rsub' as BinaryOp, a.handle, a.handle))).toBe('E_ARG');
      expect(code(() => N().binary('xor' as BinaryOp, a.handle, a.handle))).toBe('E_ARG');
      expect(code(() => N().scalarOp('add', a.handle, 'x' as unknown as number))).toBe('E_ARG');
    });
  });

  const gshapes: [number[], number[]][] = [
    [
      [2, 3],
      [2, 3],
    ],
    [[2, 3], [3]],
    [
      [4, 1],
      [1, 3],
    ],
    [[2, 3], []],
  ];
  test.each(gshapes)('gradcheck add/sub/mul/div/pow/maximum/minimum, shapes %j and %j', (as, bs) => {
    const fns: ((a: Tensor, b: Tensor) => Tensor)[] = [add, sub, mul, div, pow, maximum, minimum];
    fns.forEach((f, k) => {
      const a = randomTensor(as, 10 + k, { requiresGrad: true, scale: 0.8, offset: 1.2 });
      const b = randomTensor(bs, 20 + k, { requiresGrad: true, scale: 0.7, offset: 1.1 });
      gradcheck(f, [a, b]);
      a.dispose();
      b.dispose();
    });
  });

  test('gradcheck of the scalar forms and rsub/rdiv', () => {
    const x = randomTensor([2, 3], 31, { requiresGrad: true, scale: 0.5, offset: 1.5 });
    const fns: ((t: Tensor) => Tensor)[] = [
      (t) => add(t, 2),
      (t) => sub(t, 0.5),
      (t) => mul(t, -3),
      (t) => div(t, 4),
      (t) => pow(t, 2.5),
      (t) => pow(t, -1),
      (t) => rsub(3, t),
      (t) => rdiv(2, t),
      (t) => maximum(t, 1.5),
      (t) => minimum(t, 1.5),
    ];
    for (const f of fns) gradcheck(f, [x]);
    x.dispose();
  });

  test('maximum/minimum split the gradient evenly on ties', () => {
    tidy(() => {
      const a = tensor([1, 2, 3], [3], { dtype: 'f64', requiresGrad: true });
      const b = tensor([1, 1, 4], [3], { dtype: 'f64', requiresGrad: true });
      maximum(a, b).sum().backward();
      expect(nums(a.grad!)).toEqual([0.5, 1, 0]);
      expect(nums(b.grad!)).toEqual([0.5, 0, 1]);
    });
  });
});

describe('scalar ops', () => {
  test('every scalar op against a reference, f64, f32 and a strided input', () => {
    const xs = seededValues(12, 4).map((v) => 0.5 + Math.abs(v));
    for (const dtype of ['f64', 'f32'] as const) {
      tidy(() => {
        const X = dtype === 'f32' ? f32(xs) : xs;
        const x = tensor(X, [3, 4], { dtype });
        const xt = x.transpose(0, 1);
        const XT: number[] = [];
        for (let j = 0; j < 4; j++) for (let i = 0; i < 3; i++) XT.push(X[i * 4 + j]);
        for (const op of [...ARITH, ...CMP, 'rsub', 'rdiv', 'rpow'] as ScalarOp[]) {
          for (const s of [0.75, 2, X[5]]) {
            const sv = dtype === 'f32' ? Math.fround(s) : s;
            const tol = dtype === 'f64' ? 1e-14 : 3e-6;
            expectClose(
              nums(new Tensor(N().scalarOp(op, x.handle, s))),
              X.map((v) => binaryRef[op](v, sv)),
              { atol: tol, rtol: tol, label: `${op} ${s} ${dtype}` },
            );
            expectClose(
              nums(new Tensor(N().scalarOp(op, xt.handle, s))),
              XT.map((v) => binaryRef[op](v, sv)),
              { atol: tol, rtol: tol, label: `${op} strided` },
            );
          }
        }
      });
    }
  });

  test('0-d and empty tensors', () => {
    tidy(() => {
      const z = tensor(3, undefined, { dtype: 'f32' });
      const y = new Tensor(N().scalarOp('rdiv', z.handle, 6));
      expect(y.shape).toEqual([]);
      expect(y.item()).toBe(2);
      const e = tensor([], [2, 0]);
      expect(new Tensor(N().scalarOp('lt', e.handle, 1)).shape).toEqual([2, 0]);
    });
  });
});

describe('where', () => {
  test('broadcasts condition and values; any condition dtype (nonzero = true)', () => {
    tidy(() => {
      const c = tensor([1, 0, 1], [3], { dtype: 'bool' });
      const a = tensor(
        [
          [1, 2, 3],
          [4, 5, 6],
        ],
        undefined,
        { dtype: 'f64' },
      );
      const b = tensor(-1, undefined, { dtype: 'f64' });
      expect(where(c, a, b).tolist()).toEqual([
        [1, -1, 3],
        [4, -1, 6],
      ]);
      const cf = tensor([[0.5], [0]], undefined, { dtype: 'f32' });
      expect(where(cf, a, b).tolist()).toEqual([
        [1, 2, 3],
        [-1, -1, -1],
      ]);
      const ci = tensor([0, 7, 0], [3], { dtype: 'i64' });
      expect(where(ci, a.transpose(0, 1).transpose(0, 1), b).tolist()).toEqual([
        [-1, 2, -1],
        [-1, 5, -1],
      ]);
      const ib = tensor([1, 2, 3], [3], { dtype: 'i32' });
      expect(nums(new Tensor(N().where(c.handle, ib.handle, tensor([9], [1], { dtype: 'i32' }).handle)))).toEqual([1, 9, 3]);
      expect(code(() => N().where(c.handle, a.handle, tensor(1, undefined, { dtype: 'f32' }).handle))).toBe('E_DTYPE');
      expect(code(() => N().where(tensor([1, 0], [2], { dtype: 'bool' }).handle, a.handle, b.handle))).toBe('E_SHAPE');
      expect(where(tensor([], [0, 1], { dtype: 'bool' }), a.slice(0, 0, 1), b).shape).toEqual([0, 3]);
    });
  });

  test('gradcheck through both branches with broadcasting', () => {
    const c = tensor([1, 0, 0, 1, 1, 0], [2, 3], { dtype: 'bool' });
    const a = randomTensor([2, 3], 41, { requiresGrad: true });
    const b = randomTensor([3], 42, { requiresGrad: true });
    gradcheck((x, y) => where(c, x, y), [a, b]);
    for (const t of [a, b, c]) t.dispose();
  });
});

describe('in-place updates', () => {
  test('addInplace with alpha and a broadcast source; scaleInplace', () => {
    tidy(() => {
      const d = tensor(
        [
          [1, 2, 3],
          [4, 5, 6],
        ],
        undefined,
        { dtype: 'f64' },
      );
      d.addInplace(tensor([10, 20, 30], [3], { dtype: 'f64' }), 0.5);
      expect(d.tolist()).toEqual([
        [6, 12, 18],
        [9, 15, 21],
      ]);
      d.addInplace(tensor(1, undefined, { dtype: 'f64' }));
      expect(d.tolist()).toEqual([
        [7, 13, 19],
        [10, 16, 22],
      ]);
      N().scaleInplace(d.handle, -2);
      expect(d.tolist()).toEqual([
        [-14, -26, -38],
        [-20, -32, -44],
      ]);
      const i = tensor([1, 2], [2], { dtype: 'i32' });
      i.addInplace(tensor([3, 4], [2], { dtype: 'i32' }), 2);
      expect(nums(i)).toEqual([7, 10]);
      const h = tensor([1, 2], [2], { dtype: 'bf16' });
      h.addInplace(tensor([0.5, 0.25], [2], { dtype: 'bf16' }), 2);
      expect(nums(h)).toEqual([2, 2.5]);
    });
  });

  test('addInplace into a strided view updates the base tensor', () => {
    tidy(() => {
      const base = tensor(
        [
          [1, 2],
          [3, 4],
        ],
        undefined,
        { dtype: 'f32' },
      );
      const col = base.slice(1, 1, 2); // [[2], [4]], stride 2
      col.addInplace(tensor([[10], [20]], undefined, { dtype: 'f32' }));
      expect(base.tolist()).toEqual([
        [1, 12],
        [3, 24],
      ]);
      const t = base.transpose(0, 1);
      N().scaleInplace(t.handle, 2);
      expect(base.tolist()).toEqual([
        [2, 24],
        [6, 48],
      ]);
    });
  });

  test('errors: src must broadcast to dst; dtypes must match', () => {
    tidy(() => {
      const d = tensor([1, 2, 3], [3]);
      expect(code(() => d.addInplace(tensor([1, 2], [2])))).toBe('E_SHAPE');
      expect(code(() => d.addInplace(tensor([[1, 2, 3]], undefined)))).toBe('E_SHAPE'); // [1,3] does not fit [3]
      expect(code(() => d.addInplace(tensor([1, 2, 3], [3], { dtype: 'f64' })))).toBe('E_DTYPE');
      expect(code(() => N().scaleInplace(tensor([1], [1], { dtype: 'bool' }).handle, 2))).toBe('E_DTYPE');
      expect(code(() => tensor([1], [1], { dtype: 'i32' }).addInplace(tensor([1], [1], { dtype: 'i32' }), 0.5))).toBe('E_DTYPE');
    });
  });
});

describeCuda('elementwise ops, CUDA vs CPU', () => {
  const tolFor = (dt: string) => (dt === 'f64' ? 1e-12 : dt === 'f32' ? 3e-6 : dt === 'f16' ? 2 ** -10 : 2 ** -7);

  test('every unary op and its backward, all float dtypes, contiguous and strided', () => {
    for (const op of UNARY) {
      for (const dt of ['f32', 'f64', 'f16', 'bf16'] as const) {
        tidy(() => {
          const x = tensor(unaryInput(op, 15 * 13, 21), [15, 13], { dtype: dt });
          const xgBase = x.cuda();
          for (const tr of [false, true]) {
            const xs = tr ? [x.transpose(0, 1), xgBase.transpose(0, 1)] : [x, xgBase];
            const yc = wrapU(op, xs[0]);
            const yg = wrapU(op, xs[1]);
            expectClose(nums(yg.cpu()), nums(yc), { rtol: tolFor(dt), atol: tolFor(dt) * 1e-2, label: `${op} ${dt}` });
            const gc = new Tensor(N().unaryBackward(op, xs[0].handle, yc.handle, xs[0].handle));
            const gg = new Tensor(N().unaryBackward(op, xs[1].handle, yc.cuda().handle, xs[1].handle));
            expectClose(nums(gg.cpu()), nums(gc), { rtol: 4 * tolFor(dt), atol: 4 * tolFor(dt), label: `${op} backward ${dt}` });
          }
        });
      }
    }
  });

  test('binary, scalar, where and in-place ops with broadcasting, all dtypes', () => {
    // [37, 64] + [64] and [3, 8, 64] + [8, 64]: the strided 16-byte vector path (a broadcast outer
    // dim, the innermost dense), as the bias add of a linear layer takes.
    const shapes: [number[], number[]][] = [
      [
        [37, 65],
        [37, 65],
      ],
      [
        [4, 5, 6],
        [5, 1],
      ],
      [[3], [2, 1, 3]],
      [[], [7]],
      [[37, 64], [64]],
      [
        [3, 8, 64],
        [8, 64],
      ],
    ];
    for (const [as, bs] of shapes) {
      for (const dt of ['f32', 'f64', 'f16', 'bf16', 'i32', 'i64'] as const) {
        tidy(() => {
          const isInt = dt === 'i32' || dt === 'i64';
          const mk = (shape: number[], seed: number) =>
            tensor(
              seededValues(
                shape.reduce((x, y) => x * y, 1),
                seed,
              ).map((v) => (isInt ? Math.round(v * 5) : 0.5 + Math.abs(v))),
              shape,
              { dtype: dt },
            );
          const a = mk(as, 51),
            b = mk(bs, 52);
          const ag = a.cuda(),
            bg = b.cuda();
          for (const op of [...ARITH, ...CMP]) {
            if (isInt && op === 'pow') continue;
            const c = new Tensor(N().binary(op, a.handle, b.handle));
            const g = new Tensor(N().binary(op, ag.handle, bg.handle));
            expect(g.dtype).toBe(c.dtype);
            expectClose(nums(g.cpu()), nums(c), { rtol: tolFor(dt), atol: 0, label: `${op} ${dt} ${as}x${bs}` });
          }
          for (const op of [...ARITH, ...CMP, 'rsub', 'rdiv', 'rpow'] as ScalarOp[]) {
            if (isInt && (op === 'pow' || op === 'rpow' || op === 'rdiv')) continue;
            const s = isInt ? 2 : 0.75;
            const c = new Tensor(N().scalarOp(op, a.handle, s));
            const g = new Tensor(N().scalarOp(op, ag.handle, s));
            expectClose(nums(g.cpu()), nums(c), { rtol: tolFor(dt), atol: 0, label: `scalar ${op} ${dt}` });
          }
          const cond = new Tensor(N().binary('gt', a.handle, b.handle));
          const wc = where(cond, a, b),
            wg = where(cond.cuda(), ag, bg);
          expect(nums(wg.cpu())).toEqual(nums(wc));
          if (bshape(as, bs).join() === as.join()) {
            const dc = a.clone(),
              dg = ag.clone();
            dc.addInplace(b, isInt ? 3 : 0.5);
            dg.addInplace(bg, isInt ? 3 : 0.5);
            N().scaleInplace(dc.handle, isInt ? -2 : 1.5);
            N().scaleInplace(dg.handle, isInt ? -2 : 1.5);
            expectClose(nums(dg.cpu()), nums(dc), { rtol: tolFor(dt), atol: 0, label: `in-place ${dt}` });
          }
        });
      }
    }
  });

  test('views that start inside a row (vector path with an offset base) and odd offsets (scalar path)', () => {
    for (const dt of ['f32', 'f16', 'bf16'] as const) {
      tidy(() => {
        const base = tensor(
          seededValues(37 * 80, 71).map((v) => 0.5 + Math.abs(v)),
          [37, 80],
          { dtype: dt },
        );
        const other = tensor(
          seededValues(37 * 64, 72).map((v) => 0.5 + Math.abs(v)),
          [37, 64],
          { dtype: dt },
        );
        const bg = base.cuda(),
          og = other.cuda();
        for (const start of [8, 3]) {
          // 8: 16-byte aligned for every dtype here; 3: not
          const a = base.slice(1, start, start + 64),
            ag = bg.slice(1, start, start + 64);
          for (const op of ['add', 'mul', 'div'] as const) {
            const c = new Tensor(N().binary(op, a.handle, other.handle));
            const g = new Tensor(N().binary(op, ag.handle, og.handle));
            expectClose(nums(g.cpu()), nums(c), { rtol: tolFor(dt), atol: 0, label: `${op} ${dt} view at ${start}` });
          }
          const yc = wrapU('gelu_tanh', a),
            yg = wrapU('gelu_tanh', ag);
          expectClose(nums(yg.cpu()), nums(yc), { rtol: tolFor(dt), atol: tolFor(dt) * 1e-2, label: `gelu_tanh ${dt} view at ${start}` });
          expect(nums(ag.contiguous().cpu())).toEqual(nums(a.contiguous()));
          expect(nums(ag.transpose(0, 1).contiguous().cpu())).toEqual(nums(a.transpose(0, 1).contiguous()));
          const dc = other.clone(),
            dg = og.clone();
          dc.addInplace(a, 0.5);
          dg.addInplace(ag, 0.5);
          expectClose(nums(dg.cpu()), nums(dc), { rtol: tolFor(dt), atol: 0, label: `in-place ${dt} from view at ${start}` });
        }
      });
    }
  });

  test('operands on different devices are E_DEVICE', () => {
    tidy(() => {
      const a = tensor([1, 2, 3], [3]),
        g = a.cuda();
      expect(code(() => N().binary('add', a.handle, g.handle))).toBe('E_DEVICE');
      expect(code(() => N().where(tensor([1, 0, 1], [3], { dtype: 'bool' }).handle, g.handle, g.handle))).toBe('E_DEVICE');
      expect(code(() => N().addInplace(g.handle, a.handle, 1))).toBe('E_DEVICE');
      expect(code(() => N().unaryBackward('exp', a.handle, g.handle, a.handle))).toBe('E_DEVICE');
    });
  });

  test('gradients through the autograd ops match the CPU', () => {
    tidy(() => {
      const a = randomTensor([3, 4], 61, { dtype: 'f32', offset: 1.5, requiresGrad: true });
      const b = randomTensor([4], 62, { dtype: 'f32', offset: 1.5, requiresGrad: true });
      const ag = a.detach().cuda().requiresGrad_(true),
        bg = b.detach().cuda().requiresGrad_(true);
      const f = (x: Tensor, y: Tensor) => tanh(pow(div(mul(x, y), add(x, y)), sub(y, 1))).sum();
      f(a, b).backward();
      f(ag, bg).backward();
      expectClose(nums(ag.grad!.cpu()), nums(a.grad!), { rtol: 1e-5, atol: 1e-6 });
      expectClose(nums(bg.grad!.cpu()), nums(b.grad!), { rtol: 1e-5, atol: 1e-6 });
    });
  });
});
