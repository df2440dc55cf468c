/**
 * Neural-network ops with fused native kernels: softmax, log-softmax, LayerNorm, RMSNorm,
 * embedding lookup, and cross-entropy fused with log-softmax.
 */
import { Tensor } from '../engine/tensor';
import { SiftError, check } from '../engine/errors';
import { isInt } from '../engine/dtype';
import { record } from './tape';
import { N, wrap, normDim } from './util';
import { reshape } from './shape';

/** A 0-d tensor has one softmax dimension, addressed as 0 or -1 (as in PyTorch). */
function softmaxDim(dim: number, ndim: number, op: string): number {
  return ndim === 0 && (dim === 0 || dim === -1) ? 0 : normDim(dim, ndim, op);
}

export function softmax(x: Tensor, dim = -1): Tensor {
  const d = softmaxDim(dim, x.ndim, 'softmax');
  const y = wrap(N().softmax(x.handle, d));
  record('softmax', [x], [y], ([g]) => [wrap(N().softmaxBackward(y.handle, g!.handle, d))]);
  return y;
}

export function logSoftmax(x: Tensor, dim = -1): Tensor {
  const d = softmaxDim(dim, x.ndim, 'logSoftmax');
  const y = wrap(N().logSoftmax(x.handle, d));
  record('logSoftmax', [x], [y], ([g]) => [wrap(N().logSoftmaxBackward(y.handle, g!.handle, d))]);
  return y;
}

/** LayerNorm over the last dimension (weight and bias of that size, or null). */
export function layerNorm(x: Tensor, weight: Tensor | null, bias: Tensor | null, eps = 1e-5): Tensor {
  const [yh, meanh, rstdh] = N().layerNorm(x.handle, weight?.handle ?? null, bias?.handle ?? null, eps);
  const y = wrap(yh);
  const mean = wrap(meanh);
  const rstd = wrap(rstdh);
  record('layerNorm', [x, weight, bias], [y], ([g]) => {
    const needW = !!(weight?.requiresGrad || bias?.requiresGrad);
    const [gx, gw, gb] = N().layerNormBackward(g!.handle, x.handle, weight?.handle ?? null, mean.handle, rstd.handle, needW);
    return [wrap(gx), gw ? wrap(gw) : null, gb ? wrap(gb) : null];
  }, [mean, rstd]);
  return y;
}

/** RMSNorm over the last dimension: x / sqrt(mean(x^2) + eps) * weight (LLaMA's). */
export function rmsNorm(x: Tensor, weight: Tensor | null, eps = 1e-6): Tensor {
  const [yh, rstdh] = N().rmsNorm(x.handle, weight?.handle ?? null, eps);
  const y = wrap(yh);
  const rstd = wrap(rstdh);
  record('rmsNorm', [x, weight], [y], ([g]) => {
    const [gx, gw] = N().rmsNormBackward(g!.handle, x.handle, weight?.handle ?? null, rstd.handle, !!weight?.requiresGrad);
    return [wrap(gx), gw ? wrap(gw) : null];
  }, [rstd]);
  return y;
}

/** Rows of weight [V, D] at ids (i32/i64, any shape): [...ids.shape, D]. */
export function embedding(weight: Tensor, ids: Tensor): Tensor {
  check(isInt(ids.dtype), 'E_DTYPE', `embedding: ids must be i32 or i64, got ${ids.dtype}`);
  const y = wrap(N().embedding(weight.handle, ids.handle));
  const rows = weight.shape[0];
  record('embedding', [weight], [y], ([g]) => [wrap(N().embeddingBackward(g!.handle, ids.handle, rows))]);
  return y;
}

export interface CrossEntropyOptions {
  /** Targets equal to this are left out of the loss and the mean (default -100, as PyTorch). */
  ignoreIndex?: number;
  reduction?: 'mean' | 'sum' | 'none';
  labelSmoothing?: number;
}

/**
 * Cross-entropy of logits [..., C] against integer targets [...], fused with log-softmax.
 * 'mean' averages over targets that are not ignoreIndex (0 when all are ignored).
 */
export function crossEntropy(logits: Tensor, targets: Tensor, opts: CrossEntropyOptions = {}): Tensor {
  const ignoreIndex = opts.ignoreIndex ?? -100;
  const reduction = opts.reduction ?? 'mean';
  const smoothing = opts.labelSmoothing ?? 0;
  if (!['mean', 'sum', 'none'].includes(reduction)) throw new SiftError('E_ARG', `crossEntropy: reduction must be mean, sum or none, got '${reduction}'`);
  check(smoothing >= 0 && smoothing <= 1, 'E_ARG', `crossEntropy: labelSmoothing must be in [0, 1], got ${smoothing}`);
  check(isInt(targets.dtype), 'E_DTYPE', `crossEntropy: targets must be i32 or i64, got ${targets.dtype}`);
  check(logits.ndim >= 1, 'E_SHAPE', 'crossEntropy: logits need a class dimension');
  const C = logits.shape[logits.ndim - 1];
  const lead = logits.shape.slice(0, -1);
  check(targets.ndim === lead.length && targets.shape.every((d, i) => d === lead[i]), 'E_SHAPE',
    () => `crossEntropy: targets of shape [${targets.shape}] for logits of shape [${logits.shape}] (expected [${lead}])`);
  const logits2 = logits.ndim === 2 ? logits : reshape(logits, [-1, C]);
  const targets2 = targets.ndim === 1 ? targets : reshape(targets, [-1]);
  const [lossh, lseh] = N().crossEntropy(logits2.handle, targets2.handle, ignoreIndex, reduction, smoothing);
  let loss = wrap(lossh);
  const lse = wrap(lseh);
  record('crossEntropy', [logits2], [loss], ([g]) => [
    wrap(N().crossEntropyBackward(logits2.handle, targets2.handle, lse.handle, g!.handle, ignoreIndex, reduction, smoothing)),
  ], [lse]);
  if (reduction === 'none' && lead.length !== 1) loss = reshape(loss, lead);
  return loss;
}
