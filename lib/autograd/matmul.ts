/**
 * Matrix products. matmul follows torch.matmul: [..., M, K] @ [..., K, N] with broadcast batch
 * dims; 1-D operands are treated as a row (left) or a column (right) vector. Transposed views
 * reach the GEMM as transpose flags, without copies.
 */
import { Tensor } from '../engine/tensor';
import { SiftError } from '../engine/errors';
import { record } from './tape';
import { N, wrap, sumToShape } from './util';
import { reshape, transpose, squeeze, unsqueeze } from './shape';
import { add } from './elementwise';

function checkOperands(a: Tensor, b: Tensor): void {
  if (a.dtype !== b.dtype) throw new SiftError('E_DTYPE', `matmul: dtypes differ (${a.dtype} and ${b.dtype})`);
  if (a.device !== b.device) throw new SiftError('E_DEVICE', `matmul: tensors on different devices (${a.device} and ${b.device})`);
  if (a.ndim === 0 || b.ndim === 0) throw new SiftError('E_SHAPE', 'matmul: operands must have at least one dimension');
}

/** Raw batched product with transpose flags (no autograd). */
export function matmulRaw(a: Tensor, b: Tensor, transA = false, transB = false): Tensor {
  return wrap(N().matmul(a.handle, b.handle, transA, transB));
}

export function matmul(a: Tensor, b: Tensor): Tensor {
  checkOperands(a, b);
  if (a.ndim === 1) return squeeze(matmul(unsqueeze(a, 0), b), -2);
  if (b.ndim === 1) return squeeze(matmul(a, unsqueeze(b, -1)), -1);
  const k1 = a.shape[a.ndim - 1];
  const k2 = b.shape[b.ndim - 2];
  if (k1 !== k2) throw new SiftError('E_SHAPE', `matmul: inner dimensions differ ([${a.shape}] @ [${b.shape}])`);
  const y = matmulRaw(a, b);
  const aShape = a.shape, bShape = b.shape;
  record('matmul', [a, b], [y], ([g]) => {
    let ga: Tensor | null = null;
    let gb: Tensor | null = null;
    if (a.requiresGrad) {
      ga = sumToShape(matmulRaw(g!, b, false, true), aShape);
    }
    if (b.requiresGrad) {
      if (bShape.length === 2 && aShape.length > 2) {
        // Fold the batch into rows: gb = a2^T @ g2, without a [batch, K, N] intermediate.
        const a2 = reshape(a, [-1, aShape[aShape.length - 1]]);
        const g2 = reshape(g!, [-1, g!.shape[g!.ndim - 1]]);
        gb = matmulRaw(a2, g2, true, false);
      } else {
        gb = sumToShape(matmulRaw(a, g!, true, false), bShape);
      }
    }
    return [ga, gb];
  });
  return y;
}

/** y = x @ weight^T + bias, with weight [out, in] as in torch.nn.Linear. */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  if (weight.ndim !== 2) throw new SiftError('E_SHAPE', `linear: weight must be 2-D [out, in], got [${weight.shape}]`);
  const y = matmul(x, transpose(weight, 0, 1));
  return bias ? add(y, bias) : y;
}
