/**
 * Evaluation metrics with the definitions of scikit-learn and scipy (as GLUE reports them):
 * accuracy, F1 (binary on class 1, or macro over classes), Matthews correlation (multi-class
 * form), Pearson and Spearman correlation (average ranks for ties), perplexity = exp(mean loss).
 */
import { SiftError } from '../engine/errors';

function sameLength(a: ArrayLike<number>, b: ArrayLike<number>, what: string): void {
  if (a.length !== b.length) throw new SiftError('E_SHAPE', `${what}: ${a.length} predictions for ${b.length} labels`);
}

export function accuracy(pred: ArrayLike<number>, labels: ArrayLike<number>): number {
  sameLength(pred, labels, 'accuracy');
  if (!labels.length) return 0;
  let ok = 0;
  for (let i = 0; i < labels.length; i++) if (pred[i] === labels[i]) ok++;
  return ok / labels.length;
}

function f1Of(pred: ArrayLike<number>, labels: ArrayLike<number>, cls: number): number {
  let tp = 0;
  let fp = 0;
  let fn = 0;
  for (let i = 0; i < labels.length; i++) {
    const p = pred[i] === cls;
    const l = labels[i] === cls;
    if (p && l) tp++;
    else if (p) fp++;
    else if (l) fn++;
  }
  // sklearn's zero_division=0: no positives predicted nor present gives 0.
  return tp === 0 ? 0 : (2 * tp) / (2 * tp + fp + fn);
}

/**
 * F1: for two classes (ids 0 and 1) the F1 of class 1, as GLUE reports for MRPC/QQP; otherwise the
 * unweighted mean over the classes present in labels or predictions (sklearn's average='macro').
 */
export function f1(pred: ArrayLike<number>, labels: ArrayLike<number>, numClasses?: number): number {
  sameLength(pred, labels, 'f1');
  const classes = new Set<number>();
  for (let i = 0; i < labels.length; i++) {
    classes.add(labels[i]);
    classes.add(pred[i]);
  }
  const binary = numClasses !== undefined ? numClasses <= 2 : [...classes].every((c) => c === 0 || c === 1);
  if (binary) return f1Of(pred, labels, 1);
  if (!classes.size) return 0;
  let s = 0;
  for (const c of classes) s += f1Of(pred, labels, c);
  return s / classes.size;
}

/** Matthews correlation coefficient (Gorodkin's multi-class form, = the binary formula for 2 classes). */
export function mcc(pred: ArrayLike<number>, labels: ArrayLike<number>): number {
  sameLength(pred, labels, 'mcc');
  const n = labels.length;
  const t = new Map<number, number>();
  const p = new Map<number, number>();
  let c = 0;
  for (let i = 0; i < n; i++) {
    t.set(labels[i], (t.get(labels[i]) ?? 0) + 1);
    p.set(pred[i], (p.get(pred[i]) ?? 0) + 1);
    if (pred[i] === labels[i]) c++;
  }
  let tp = 0;
  let pp = 0;
  let tt = 0;
  for (const [k, v] of t) tp += v * (p.get(k) ?? 0);
  for (const v of p.values()) pp += v * v;
  for (const v of t.values()) tt += v * v;
  const den = Math.sqrt(n * n - pp) * Math.sqrt(n * n - tt);
  return den === 0 ? 0 : (c * n - tp) / den;
}

export function pearson(x: ArrayLike<number>, y: ArrayLike<number>): number {
  sameLength(x, y, 'pearson');
  const n = x.length;
  if (n < 2) return 0;
  let mx = 0;
  let my = 0;
  for (let i = 0; i < n; i++) {
    mx += x[i];
    my += y[i];
  }
  mx /= n;
  my /= n;
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < n; i++) {
    const a = x[i] - mx;
    const b = y[i] - my;
    sxy += a * b;
    sxx += a * a;
    syy += b * b;
  }
  return sxx === 0 || syy === 0 ? 0 : sxy / Math.sqrt(sxx * syy);
}

/** 1-based ranks, ties sharing their average rank (scipy's rankdata 'average'). */
export function ranks(x: ArrayLike<number>): number[] {
  const idx = Array.from({ length: x.length }, (_, i) => i).sort((a, b) => x[a] - x[b]);
  const r = new Array<number>(x.length);
  for (let i = 0; i < idx.length; ) {
    let j = i;
    while (j + 1 < idx.length && x[idx[j + 1]] === x[idx[i]]) j++;
    const avg = (i + j) / 2 + 1;
    for (let k = i; k <= j; k++) r[idx[k]] = avg;
    i = j + 1;
  }
  return r;
}

export function spearman(x: ArrayLike<number>, y: ArrayLike<number>): number {
  sameLength(x, y, 'spearman');
  return pearson(ranks(x), ranks(y));
}

/** exp(mean token loss); Infinity past float range. */
export function perplexity(meanLoss: number): number {
  return Math.exp(meanLoss);
}
