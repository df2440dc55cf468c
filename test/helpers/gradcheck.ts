/**
 * Test helpers: finite-difference gradient checks in float64 on the CPU, comparisons of typed
 * arrays with tolerances, and a describe() that runs CUDA suites only where a GPU is usable.
 */
import { Tensor, tensor, tidy, backends, noGrad } from '../../lib';

/** Deterministic pseudo-random values in [-1, 1) (a small LCG; for test data only). */
export function seededValues(n: number, seed = 1): number[] {
  let s = (seed * 2654435761) >>> 0 || 1;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out.push(s / 2 ** 31 - 1);
  }
  return out;
}

export function randomTensor(
  shape: number[],
  seed = 1,
  opts: { dtype?: string; device?: string; requiresGrad?: boolean; scale?: number; offset?: number } = {},
): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const scale = opts.scale ?? 1;
  const offset = opts.offset ?? 0;
  return tensor(
    seededValues(n, seed).map((v) => v * scale + offset),
    shape,
    {
      dtype: opts.dtype ?? 'f64',
      device: opts.device ?? 'cpu',
      requiresGrad: opts.requiresGrad,
    },
  );
}

function toNumbers(t: Tensor): number[] {
  return Array.from(t.toArray() as ArrayLike<number | bigint>, Number);
}

/**
 * Checks the gradients of fn at `inputs` (f64 tensors with requiresGrad where checked) against
 * central differences. Non-scalar outputs are reduced with fixed random weights.
 */
export function gradcheck(
  fn: (...xs: Tensor[]) => Tensor,
  inputs: Tensor[],
  opts: { eps?: number; atol?: number; rtol?: number } = {},
): void {
  const eps = opts.eps ?? 1e-6;
  const atol = opts.atol ?? 1e-6;
  const rtol = opts.rtol ?? 1e-5;
  // Analytic: backward with fixed random output weights as the seed gradient, so that the check
  // needs no other op than fn itself; the numeric side weights the outputs on the host.
  const outShape = tidy(() => noGrad(() => fn(...inputs)).shape);
  const n = outShape.reduce((a, b) => a * b, 1);
  const w = seededValues(n, 99).map((v) => v + 0.1);
  for (const x of inputs) x.zeroGrad();
  tidy(() => {
    const y = fn(...inputs);
    const seed = tensor(w, outShape, { dtype: y.dtype, device: y.device });
    y.backward(seed);
  });
  const scalar = (xs: Tensor[]) =>
    tidy(() => {
      const y = noGrad(() => fn(...xs));
      const v = y.toArray() as Float64Array;
      let acc = 0;
      for (let k = 0; k < n; k++) acc += Number(v[k]) * w[k];
      return acc;
    });
  inputs.forEach((x, i) => {
    if (!x.requiresGrad) return;
    expect(x.grad).not.toBeNull();
    const analytic = toNumbers(x.grad!);
    const base = toNumbers(x);
    const numeric: number[] = [];
    for (let j = 0; j < base.length; j++) {
      const plus = base.slice();
      plus[j] += eps;
      const minus = base.slice();
      minus[j] -= eps;
      const xp = tensor(plus, x.shape, { dtype: x.dtype, device: x.device });
      const xm = tensor(minus, x.shape, { dtype: x.dtype, device: x.device });
      const argsP = inputs.map((t, k) => (k === i ? xp : t));
      const argsM = inputs.map((t, k) => (k === i ? xm : t));
      numeric.push((scalar(argsP) - scalar(argsM)) / (2 * eps));
      xp.dispose();
      xm.dispose();
    }
    expectClose(analytic, numeric, { atol, rtol, label: `gradient of input ${i}` });
  });
}

export function expectClose(
  actual: ArrayLike<number | bigint>,
  expected: ArrayLike<number | bigint>,
  opts: { atol?: number; rtol?: number; label?: string } = {},
): void {
  const atol = opts.atol ?? 1e-6;
  const rtol = opts.rtol ?? 1e-5;
  expect(actual.length).toBe(expected.length);
  let worst = -1;
  let worstErr = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = Number(actual[i]);
    const e = Number(expected[i]);
    if (Number.isNaN(e) && Number.isNaN(a)) continue;
    if (a === e) continue;
    const err = Math.abs(a - e) - (atol + rtol * Math.abs(e));
    if (!(err <= 0) && (worst < 0 || err > worstErr)) {
      worst = i;
      worstErr = err;
    }
  }
  if (worst >= 0) {
    throw new Error(
      `${opts.label ?? 'values'} differ at index ${worst}: got ${Number(actual[worst])}, expected ${Number(expected[worst])} (atol ${atol}, rtol ${rtol})`,
    );
  }
}

const cudaInfo = (() => {
  try {
    return backends().cuda;
  } catch {
    return { usable: false, status: 'addon not loaded' } as { usable: boolean; status: string };
  }
})();

export const cudaUsable: boolean = cudaInfo.usable;

/** describe() for suites that need a GPU: skipped, with the reason in its name, when none is usable. */
export function describeCuda(name: string, fn: () => void): void {
  if (cudaUsable) describe(`${name} [cuda]`, fn);
  else describe.skip(`${name} [skipped: CUDA not usable here: ${cudaInfo.status}]`, fn);
}
