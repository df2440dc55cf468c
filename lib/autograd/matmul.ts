/**
 * Matrix products. matmul follows torch.matmul: [..., M, K] @ [..., K, N] with broadcast batch
 * dims; 1-D operands are treated as a row (left) or a column (right) vector. Transposed views
 * reach the GEMM as transpose flags, without copies, and the backward uses transpose flags too.
 */
import { Tensor } from '../engine/tensor';
import { SiftError } from '../engine/errors';
import { record } from './tape';
import { N, wrap, sumToShape } from './util';
import { reshape, squeeze, unsqueeze } from './shape';
import { add } from './elementwise';

function checkOperands(a: Tensor, b: Tensor, op: string): void {
  if (a.dtype !== b.dtype) throw new SiftError('E_DTYPE', `${op}: dtypes differ (${a.dtype} and ${b.dtype})`);
  if (a.device !== b.device) throw new SiftError('E_DEVICE', `${op}: tensors on different devices (${a.device} and ${b.device})`);
  if (a.ndim === 0 || b.ndim === 0) throw new SiftError('E_SHAPE', `${op}: operands must have at least one dimension`);
}

/** Raw batched product with transpose flags (no autograd). */
export function matmulRaw(a: Tensor, b: Tensor, transA = false, transB = false): Tensor {
  return wrap(N().matmul(a.handle, b.handle, transA, transB));
}

/** [..., R, C] -> [prod(...) * R, C] (a view when possible). */
function rows2d(t: Tensor): Tensor {
  return reshape(t, [-1, t.shape[t.ndim - 1]]);
}

export function matmul(a: Tensor, b: Tensor): Tensor {
  checkOperands(a, b, 'matmul');
  if (a.ndim === 1 && b.ndim === 1) return reshape(matmul(unsqueeze(a, 0), unsqueeze(b, -1)), []);
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
      // ga = g @ b^T, summed over the batch dims a was broadcast along.
      ga = sumToShape(matmulRaw(g!, b, false, true), aShape);
    }
    if (b.requiresGrad) {
      if (bShape.length === 2 && aShape.length > 2) {
        // Fold the batch into rows: gb = a2^T @ g2, without a [batch, K, N] intermediate.
        gb = matmulRaw(rows2d(a), rows2d(g!), true, false);
      } else {
        gb = sumToShape(matmulRaw(a, g!, true, false), bShape);
      }
    }
    return [ga, gb];
  });
  return y;
}

/**
 * y = x @ weight^T + bias, with weight [out, in] as in torch.nn.Linear. The weight is read in
 * place (transpose flag) and its gradient g2^T @ x2 comes out contiguous in the [out, in] layout.
 */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  checkOperands(x, weight, 'linear');
  if (weight.ndim !== 2) throw new SiftError('E_SHAPE', `linear: weight must be 2-D [out, in], got [${weight.shape}]`);
  const inF = weight.shape[1];
  if (x.shape[x.ndim - 1] !== inF) {
    throw new SiftError('E_SHAPE', `linear: input [${x.shape}] does not end in ${inF} features (weight [${weight.shape}])`);
  }
  if (bias && (bias.ndim !== 1 || bias.shape[0] !== weight.shape[0])) {
    throw new SiftError('E_SHAPE', `linear: bias must be [${weight.shape[0]}], got [${bias.shape}]`);
  }
  const x2 = x.ndim === 1 ? unsqueeze(x, 0) : x;
  const y2 = matmulRaw(x2, weight, false, true);
  record('linear', [x2, weight], [y2], ([g]) => {
    const gx = x2.requiresGrad ? matmulRaw(g!, weight, false, false) : null;
    const gw = weight.requiresGrad ? matmulRaw(rows2d(g!), rows2d(x2), true, false) : null;
    return [gx, gw];
  });
  const y = x.ndim === 1 ? squeeze(y2, 0) : y2;
  return bias ? add(y, bias) : y;
}
