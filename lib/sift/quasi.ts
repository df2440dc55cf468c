/**
 * Quasi-sparsity of a gradient, measured as the SIFT paper does: the share of the gradient's
 * squared norm carried by its largest entries (the top 0.1%, 1% and 5% by magnitude), per tensor
 * and over all the tensors together. A dense, even gradient gives shares near the fractions
 * themselves; a quasi-sparse one (a pre-trained model's, by the paper's claim) gives far more.
 *
 * The gradient is the selection batches' accumulated gradient (their sum): the one SIFT chooses
 * its entries from. Measured on the host in float64 sums over the sorted squared entries.
 */
import { SiftError, check } from '../engine/errors';
import type { Tensor } from '../engine/tensor';

/** The fractions of entries the paper reports. */
export const QUASI_FRACTIONS = [0.001, 0.01, 0.05];

export interface QuasiSparsityRow {
  name: string;
  numel: number;
  /** Share of the squared norm on the top `fractions[i]` of the entries (1 when the gradient is zero). */
  shares: number[];
  /** Squared norm of the gradient. */
  sqNorm: number;
}

export interface QuasiSparsity {
  fractions: number[];
  layers: QuasiSparsityRow[];
  /** All tensors pooled: the top entries of the whole set, as one global budget would take them. */
  overall: QuasiSparsityRow;
}

/** Entries in the top `fraction` of n (at least one). */
export function topCount(fraction: number, n: number): number {
  return Math.min(n, Math.max(1, Math.round(fraction * n)));
}

function sortedSquares(g: ArrayLike<number>): Float32Array {
  const sq = new Float32Array(g.length);
  for (let i = 0; i < g.length; i++) sq[i] = g[i] * g[i];
  // Ascending (typed-array numeric sort); read from the end for the largest.
  return sq.sort();
}

function sharesOf(sortedAsc: Float32Array, fractions: number[]): { shares: number[]; sqNorm: number } {
  const n = sortedAsc.length;
  let total = 0;
  for (let i = 0; i < n; i++) total += sortedAsc[i];
  const shares = fractions.map((f) => {
    if (total === 0) return 1;
    const k = topCount(f, n);
    let s = 0;
    for (let i = n - 1; i >= n - k; i--) s += sortedAsc[i];
    return s / total;
  });
  return { shares, sqNorm: total };
}

/** Quasi-sparsity of gradients given as host arrays, by name. */
export function quasiSparsity(grads: [string, ArrayLike<number>][], fractions: number[] = QUASI_FRACTIONS): QuasiSparsity {
  check(grads.length > 0, 'E_ARG', 'quasiSparsity: no gradients');
  for (const f of fractions) check(f > 0 && f <= 1, 'E_ARG', `quasiSparsity: fractions must be in (0, 1], got ${f}`);
  const layers: QuasiSparsityRow[] = [];
  const sorted: Float32Array[] = [];
  let n = 0;
  for (const [name, g] of grads) {
    const sq = sortedSquares(g);
    sorted.push(sq);
    n += sq.length;
    layers.push({ name, numel: sq.length, ...sharesOf(sq, fractions) });
  }
  const all = new Float32Array(n);
  let off = 0;
  for (const s of sorted) {
    all.set(s, off);
    off += s.length;
  }
  all.sort();
  return { fractions, layers, overall: { name: 'overall', numel: n, ...sharesOf(all, fractions) } };
}

/**
 * Quasi-sparsity of the accumulated gradient of `params` after `runBackward` (which runs the
 * selection batches' backward passes). The parameters' gradients are cleared before and after;
 * parameters that did not need gradients are restored to that.
 */
export async function measureQuasiSparsity(
  params: [string, Tensor][],
  runBackward: () => void | Promise<void>,
  fractions: number[] = QUASI_FRACTIONS,
): Promise<QuasiSparsity> {
  const had = params.map(([, t]) => t.requiresGrad);
  for (const [, t] of params) {
    t.zeroGrad();
    t.requiresGrad = true;
  }
  try {
    await runBackward();
    const grads: [string, ArrayLike<number>][] = [];
    for (const [name, t] of params) {
      if (!t.grad) throw new SiftError('E_ARG', `quasi-sparsity: no gradient reached '${name}'`);
      grads.push([name, (await t.grad.data()) as Float32Array]);
    }
    return quasiSparsity(grads, fractions);
  } finally {
    params.forEach(([, t], i) => {
      t.zeroGrad();
      t.requiresGrad = had[i];
    });
  }
}

/** 0.001 -> '0.1%'. */
export function fractionLabel(f: number): string {
  return `${+(100 * f).toPrecision(3)}%`;
}
