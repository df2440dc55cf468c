/**
 * Matrix products. matmul follows torch.matmul: [..., M, K] @ [..., K, N] with broadcast batch
 * dims; 1-D operands are treated as a row (left) or a column (right) vector. Transposed views
 * reach the GEMM as transpose flags, without copies, and the backward uses transpose flags too.
 */
import { Tensor } from '../engine/tensor';
import { SiftError } from '../engine/errors';
import { N, fresh, sumToShape } from './util';
import { reshape, squeeze, unsqueeze } from './shape';
import { gelu } from './elementwise';
import { isGradEnabled, noteSunkGradient, record } from './tape';

function checkOperands(a: Tensor, b: Tensor, op: string): void {
  if (a.dtype !== b.dtype) throw new SiftError('E_DTYPE', `${op}: dtypes differ (${a.dtype} and ${b.dtype})`);
  if (a.device !== b.device) throw new SiftError('E_DEVICE', `${op}: tensors on different devices (${a.device} and ${b.device})`);
  if (a.ndim === 0 || b.ndim === 0) throw new SiftError('E_SHAPE', `${op}: operands must have at least one dimension`);
}

/** Raw batched product with transpose flags (no autograd). */
export function matmulRaw(a: Tensor, b: Tensor, transA = false, transB = false): Tensor {
  const h = N().matmul(a.handle, b.handle, transA, transB);
  // The native op checked the operands and allocated [...batch, M, N] (batch dims broadcast).
  const as = a.shape,
    bs = b.shape;
  const na = as.length - 2,
    nb = bs.length - 2;
  const nbatch = Math.max(na, nb);
  const shape = new Array<number>(nbatch + 2);
  for (let i = 0; i < nbatch; i++) {
    const da = i - (nbatch - na) >= 0 ? as[i - (nbatch - na)] : 1;
    const db = i - (nbatch - nb) >= 0 ? bs[i - (nbatch - nb)] : 1;
    shape[i] = da === 1 ? db : da;
  }
  shape[nbatch] = transA ? as[na + 1] : as[na];
  shape[nbatch + 1] = transB ? bs[nb] : bs[nb + 1];
  return fresh(h, shape, a.dtype, a.device);
}

/** [..., R, C] -> [prod(...) * R, C] (a view when possible). */
function rows2d(t: Tensor): Tensor {
  return t.ndim === 2 ? t : reshape(t, [-1, t.shape[t.ndim - 1]]);
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
  const aShape = a.shape,
    bShape = b.shape;
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
 * Where a weight's gradient goes instead of a dense tensor: the entries `idx` (flat, into the
 * weight's own [rows, cols] layout) of its gradient are added into `grad` (f32 [k]) by the SDDMM,
 * straight from the layer's input and output gradient. SIFT sets this on its targets once the
 * indices are chosen; the weight's gradient hooks then see no gradient from linear layers (and
 * gradients() with respect to it returns none from them), while its post-accumulate hooks still
 * run once the backward has completed its gradient.
 */
export interface SparseWeightGradient {
  readonly grad: Tensor;
  readonly idx: Tensor;
  /** The tile plan of idx (sddmmPlan with the weight's two dims), made once. */
  readonly plan: Tensor;
  /** Called each time a backward adds a gradient through the SDDMM (SIFT counts the paths taken). */
  readonly onUse?: () => void;
}

const sparseWeightGradients = new WeakMap<Tensor, SparseWeightGradient>();

/** Sends the gradient of a 2-D weight through the SDDMM (or back to the dense path with null). */
export function setSparseWeightGradient(weight: Tensor, sink: SparseWeightGradient | null): void {
  if (sink) {
    if (weight.ndim !== 2) throw new SiftError('E_SHAPE', `setSparseWeightGradient: the weight must be 2-D, got [${weight.shape}]`);
    if (sink.grad.dtype !== 'f32' || sink.grad.size !== sink.idx.size)
      throw new SiftError(
        'E_ARG',
        `setSparseWeightGradient: grad must be f32 [${sink.idx.size}], got ${sink.grad.dtype} [${sink.grad.shape}]`,
      );
    sparseWeightGradients.set(weight, sink);
  } else {
    sparseWeightGradients.delete(weight);
  }
}

/**
 * Adds a weight's gradient at its sink's entries (the SDDMM) from the output gradient and the
 * input; the weight's post-accumulate hooks still run once its gradient is complete.
 */
function addSparseWeightGradient(weight: Tensor, sink: SparseWeightGradient, g: Tensor, x: Tensor, transW: boolean): void {
  // Weight [out, in]: dW[r, c] = sum_t g[t, r] x[t, c]; [in, out]: sum_t x[t, r] g[t, c].
  const [a, b] = transW ? [g, x] : [x, g];
  N().sddmm(sink.grad.handle, a.handle, b.handle, sink.idx.handle, true, sink.plan.handle);
  noteSunkGradient(weight);
  sink.onUse?.();
}

/**
 * y = x @ weight^T + bias, with weight [out, in] as in torch.nn.Linear. The weight is read in
 * place (transpose flag) and its gradient g2^T @ x2 comes out contiguous in the [out, in] layout.
 */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null, opts: AffineOptions = {}): Tensor {
  return affine(x, weight, bias ?? null, 'out-in', 'linear', opts.act ?? 'none');
}

/** `act`: an activation applied to the layer's output, fused into the GEMM where the GEMM path can. */
export interface AffineOptions {
  act?: 'none' | 'gelu_tanh';
}

/**
 * x @ weight + bias with weight [in, out] (GPT-2's Conv1D layout); gradient [in, out] too.
 */
export function conv1d(x: Tensor, weight: Tensor, bias?: Tensor | null, opts: AffineOptions = {}): Tensor {
  return affine(x, weight, bias ?? null, 'in-out', 'conv1d', opts.act ?? 'none');
}

/**
 * Whether GEMMs on `device` fuse their epilogues (bias, GELU, bias gradient): the CUDA GEMM path is
 * cuBLASLt (setCudaGemm('lt') or SIFT_FT_CUBLASLT=1, where libcublasLt loads). Models ask this to
 * hand an activation to the layer (`{ act }`) instead of running it as an op of its own.
 */
export function gemmEpiloguesFused(device: string): boolean {
  return device !== 'cpu' && N().cudaGemmEpilogues();
}

/**
 * The product and the bias in one tensor and one tape node: the bias is added in place into the
 * fresh product, so the product without the bias is never a tensor of its own (a linear layer's
 * output costs its own size once, not twice, until the enclosing tidy ends).
 */
function affine(
  x: Tensor,
  weight: Tensor,
  bias: Tensor | null,
  layout: 'out-in' | 'in-out',
  op: string,
  act: 'none' | 'gelu_tanh' = 'none',
): Tensor {
  checkOperands(x, weight, op);
  if (act !== 'none' && act !== 'gelu_tanh') throw new SiftError('E_ARG', `${op}: act must be 'none' or 'gelu_tanh', got '${act}'`);
  if (weight.ndim !== 2)
    throw new SiftError('E_SHAPE', `${op}: weight must be 2-D [${layout === 'out-in' ? 'out, in' : 'in, out'}], got [${weight.shape}]`);
  const outDim = layout === 'out-in' ? 0 : 1;
  const inF = weight.shape[1 - outDim],
    outF = weight.shape[outDim];
  if (x.shape[x.ndim - 1] !== inF) {
    throw new SiftError('E_SHAPE', `${op}: input [${x.shape}] does not end in ${inF} features (weight [${weight.shape}])`);
  }
  if (bias) {
    if (bias.ndim !== 1 || bias.shape[0] !== outF) throw new SiftError('E_SHAPE', `${op}: bias must be [${outF}], got [${bias.shape}]`);
    if (bias.dtype !== weight.dtype) throw new SiftError('E_DTYPE', `${op}: bias is ${bias.dtype}, weight ${weight.dtype}`);
    if (bias.device !== weight.device) throw new SiftError('E_DEVICE', `${op}: bias on ${bias.device}, weight on ${weight.device}`);
  }
  const x2 = x.ndim === 1 ? unsqueeze(x, 0) : x;
  const transW = layout === 'out-in';
  if (bias && (act !== 'none' || gemmEpiloguesFused(x.device))) {
    const y2 = affineEpilogue(x2, weight, bias, transW, outF, op, act);
    return x.ndim === 1 ? squeeze(y2, 0) : y2;
  }
  const y2 = matmulRaw(x2, weight, false, transW);
  if (bias) N().addInplace(y2.handle, bias.handle, 1);
  record(op, [x2, weight, bias], [y2], ([g]) => {
    const gx = x2.requiresGrad ? matmulRaw(g!, weight, false, !transW) : null;
    let gw: Tensor | null = null;
    const sparse = weight.requiresGrad ? sparseWeightGradients.get(weight) : undefined;
    if (sparse) {
      addSparseWeightGradient(weight, sparse, g!, x2, transW);
    } else if (weight.requiresGrad) {
      gw = transW ? matmulRaw(rows2d(g!), rows2d(x2), true, false) : matmulRaw(rows2d(x2), rows2d(g!), true, false);
    }
    const gb = bias && bias.requiresGrad ? sumToShape(g!, [outF]) : null;
    return [gx, gw, gb];
  });
  const y = x.ndim === 1 ? squeeze(y2, 0) : y2;
  return act === 'gelu_tanh' ? gelu(y, 'tanh') : y;
}

/**
 * The affine layer through GEMMs with epilogues: forward y = act(x W + b) in one GEMM (the GELU
 * input kept for the backward when a gradient is wanted), backward the weight gradient with the
 * bias gradient reduced in the same GEMM. Where the epilogues cannot be fused, the native op runs
 * the GEMM and then the same separate kernels as the plain path.
 */
function affineEpilogue(
  x2: Tensor,
  weight: Tensor,
  bias: Tensor,
  transW: boolean,
  outF: number,
  op: string,
  act: 'none' | 'gelu_tanh',
): Tensor {
  const xr = rows2d(x2);
  const wantsGrad = isGradEnabled() && (x2.requiresGrad || weight.requiresGrad || bias.requiresGrad);
  const epilogue = act === 'none' ? 'bias' : wantsGrad ? 'gelu_tanh_bias_aux' : 'gelu_tanh_bias';
  const r = N().matmulEpilogue(xr.handle, weight.handle, false, transW, epilogue, bias.handle);
  const flat = fresh(r.out, [xr.shape[0], outF], x2.dtype, x2.device);
  const y2 = x2.ndim === 2 ? flat : reshape(flat, [...x2.shape.slice(0, -1), outF]);
  const aux = r.extra ? fresh(r.extra, [xr.shape[0], outF], x2.dtype, x2.device) : null;
  record(
    op,
    [x2, weight, bias],
    [y2],
    ([g]) => {
      const g2 = rows2d(g!);
      // The gradient of the pre-activation: GELU's backward from its saved input.
      const gp = aux ? fresh(N().unaryBackward('gelu_tanh', aux.handle, aux.handle, g2.handle), aux.shape, aux.dtype, aux.device) : g2;
      const gx = x2.requiresGrad ? reshape(matmulRaw(gp, weight, false, !transW), x2.shape) : null;
      let gw: Tensor | null = null;
      let gb: Tensor | null = null;
      const sparse = weight.requiresGrad ? sparseWeightGradients.get(weight) : undefined;
      if (sparse) {
        addSparseWeightGradient(weight, sparse, gp, xr, transW);
        if (bias.requiresGrad) gb = sumToShape(gp, [outF]);
      } else if (weight.requiresGrad) {
        // linear: gW = gp^T x (gp is the left operand, A); conv1d: gW = x^T gp (gp is B).
        const [a, b] = transW ? [gp, xr] : [xr, gp];
        const epi = bias.requiresGrad ? (transW ? 'bias_grad_a' : 'bias_grad_b') : 'none';
        const rw = N().matmulEpilogue(a.handle, b.handle, true, false, epi, null);
        gw = fresh(rw.out, weight.shape, weight.dtype, weight.device);
        if (rw.extra) gb = fresh(rw.extra, [outF], bias.dtype, bias.device);
      } else if (bias.requiresGrad) {
        gb = sumToShape(gp, [outF]);
      }
      if (gp !== g2) gp.dispose();
      return [gx, gw, gb];
    },
    aux ? [aux] : undefined,
  );
  return y2;
}
