/**
 * Neural-network ops with fused native kernels: softmax, log-softmax, LayerNorm, RMSNorm,
 * embedding lookup, and cross-entropy fused with log-softmax.
 */
import { Tensor } from '../engine/tensor';
import { SiftError, check } from '../engine/errors';
import { isInt } from '../engine/dtype';
import { record } from './tape';
import { N, fresh, normDim } from './util';
import type { DType } from '../engine/dtype';

/** dtype of the norms' and cross-entropy's statistics (mean, rstd, lse, loss): f64 for f64, else f32. */
function statDtype(t: DType): DType {
  return t === 'f64' ? 'f64' : 'f32';
}

/** Rows of a tensor normalised over its last dim. */
function rowsOf(shape: number[]): number[] {
  let n = 1;
  for (let i = 0; i < shape.length - 1; i++) n *= shape[i];
  return [n];
}
import { reshape } from './shape';

/** A 0-d tensor has one softmax dimension, addressed as 0 or -1 (as in PyTorch). */
function softmaxDim(dim: number, ndim: number, op: string): number {
  return ndim === 0 && (dim === 0 || dim === -1) ? 0 : normDim(dim, ndim, op);
}

export function softmax(x: Tensor, dim = -1): Tensor {
  const d = softmaxDim(dim, x.ndim, 'softmax');
  const y = fresh(N().softmax(x.handle, d), x.shape, x.dtype, x.device);
  record('softmax', [x], [y], ([g]) => [fresh(N().softmaxBackward(y.handle, g!.handle, d), x.shape, x.dtype, x.device)]);
  return y;
}

export function logSoftmax(x: Tensor, dim = -1): Tensor {
  const d = softmaxDim(dim, x.ndim, 'logSoftmax');
  const y = fresh(N().logSoftmax(x.handle, d), x.shape, x.dtype, x.device);
  record('logSoftmax', [x], [y], ([g]) => [fresh(N().logSoftmaxBackward(y.handle, g!.handle, d), x.shape, x.dtype, x.device)]);
  return y;
}

/** LayerNorm over the last dimension (weight and bias of that size, or null). */
export function layerNorm(x: Tensor, weight: Tensor | null, bias: Tensor | null, eps = 1e-5): Tensor {
  const [yh, meanh, rstdh] = N().layerNorm(x.handle, weight?.handle ?? null, bias?.handle ?? null, eps);
  const shape = x.shape,
    dtype = x.dtype,
    device = x.device;
  const y = fresh(yh, shape, dtype, device);
  const rows = rowsOf(shape);
  const mean = fresh(meanh, rows, statDtype(dtype), device);
  const rstd = fresh(rstdh, rows, statDtype(dtype), device);
  record(
    'layerNorm',
    [x, weight, bias],
    [y],
    ([g]) => {
      const needW = !!(weight?.requiresGrad || bias?.requiresGrad);
      const [gx, gw, gb] = N().layerNormBackward(g!.handle, x.handle, weight?.handle ?? null, mean.handle, rstd.handle, needW);
      const d = [shape.length ? shape[shape.length - 1] : 1];
      return [fresh(gx, shape, dtype, device), gw ? fresh(gw, d, dtype, device) : null, gb ? fresh(gb, d, dtype, device) : null];
    },
    [mean, rstd],
  );
  return y;
}

/** RMSNorm over the last dimension: x / sqrt(mean(x^2) + eps) * weight (LLaMA's). */
export function rmsNorm(x: Tensor, weight: Tensor | null, eps = 1e-6): Tensor {
  const [yh, rstdh] = N().rmsNorm(x.handle, weight?.handle ?? null, eps);
  const shape = x.shape,
    dtype = x.dtype,
    device = x.device;
  const y = fresh(yh, shape, dtype, device);
  const rstd = fresh(rstdh, rowsOf(shape), statDtype(dtype), device);
  record(
    'rmsNorm',
    [x, weight],
    [y],
    ([g]) => {
      const [gx, gw] = N().rmsNormBackward(g!.handle, x.handle, weight?.handle ?? null, rstd.handle, !!weight?.requiresGrad);
      return [fresh(gx, shape, dtype, device), gw ? fresh(gw, [shape.length ? shape[shape.length - 1] : 1], dtype, device) : null];
    },
    [rstd],
  );
  return y;
}

/** Rows of weight [V, D] at ids (i32/i64, any shape): [...ids.shape, D]. */
export function embedding(weight: Tensor, ids: Tensor): Tensor {
  check(isInt(ids.dtype), 'E_DTYPE', `embedding: ids must be i32 or i64, got ${ids.dtype}`);
  const h = N().embedding(weight.handle, ids.handle);
  const wShape = weight.shape,
    dtype = weight.dtype,
    device = weight.device;
  const y = fresh(h, [...ids.shape, wShape[1]], dtype, device);
  record('embedding', [weight], [y], ([g]) => [
    fresh(N().embeddingBackward(g!.handle, ids.handle, wShape[0]), [wShape[0], g!.shape[g!.shape.length - 1]], g!.dtype, device),
  ]);
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
  if (!['mean', 'sum', 'none'].includes(reduction))
    throw new SiftError('E_ARG', `crossEntropy: reduction must be mean, sum or none, got '${reduction}'`);
  check(smoothing >= 0 && smoothing <= 1, 'E_ARG', `crossEntropy: labelSmoothing must be in [0, 1], got ${smoothing}`);
  check(isInt(targets.dtype), 'E_DTYPE', `crossEntropy: targets must be i32 or i64, got ${targets.dtype}`);
  check(logits.ndim >= 1, 'E_SHAPE', 'crossEntropy: logits need a class dimension');
  const C = logits.shape[logits.ndim - 1];
  const lead = logits.shape.slice(0, -1);
  check(
    targets.ndim === lead.length && targets.shape.every((d, i) => d === lead[i]),
    'E_SHAPE',
    () => `crossEntropy: targets of shape [${targets.shape}] for logits of shape [${logits.shape}] (expected [${lead}])`,
  );
  const logits2 = logits.ndim === 2 ? logits : reshape(logits, [-1, C]);
  const targets2 = targets.ndim === 1 ? targets : reshape(targets, [-1]);
  const [lossh, lseh] = N().crossEntropy(logits2.handle, targets2.handle, ignoreIndex, reduction, smoothing);
  const rows = logits2.shape[0];
  const sd = statDtype(logits.dtype);
  let loss = fresh(lossh, reduction === 'none' ? [rows] : [], sd, logits.device);
  const lse = fresh(lseh, [rows], sd, logits.device);
  record(
    'crossEntropy',
    [logits2],
    [loss],
    ([g]) => [
      fresh(
        N().crossEntropyBackward(logits2.handle, targets2.handle, lse.handle, g!.handle, ignoreIndex, reduction, smoothing),
        logits2.shape,
        logits2.dtype,
        logits2.device,
      ),
    ],
    [lse],
  );
  if (reduction === 'none' && lead.length !== 1) loss = reshape(loss, lead);
  return loss;
}
