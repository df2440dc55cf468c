/**
 * Shape ops, views and copies: reshape, transpose, permute, (un)squeeze, flatten, expand, slice,
 * split, concat, contiguous, clone, cast, device moves, detach. Views share storage; each op's
 * backward is next to its forward.
 */
import { Tensor, contiguousStrides } from '../engine/tensor';
import type { NativeTensor } from '../engine/addon-types';
import { DType, isFloat } from '../engine/dtype';
import { SiftError, check } from '../engine/errors';
import { record } from './tape';
import { N, wrap, fresh, sumToShape, normDim, sameShape } from './util';

function viewOf(x: Tensor, shape: number[], strides: number[], offset: number): Tensor {
  x.markViewed();
  return new Tensor(N().view(x.handle, shape, strides, offset), { shape, dtype: x.dtype, device: x.device, strides, offset });
}

/** Resolves one -1 in a target shape. */
function resolveShape(shape: number[], numel: number, op: string): number[] {
  let infer = -1;
  let known = 1;
  shape.forEach((d, i) => {
    if (d === -1) {
      if (infer >= 0) throw new SiftError('E_SHAPE', `${op}: only one dimension can be -1 in [${shape}]`);
      infer = i;
    } else {
      if (!Number.isInteger(d) || d < 0) throw new SiftError('E_SHAPE', `${op}: invalid dimension ${d} in [${shape}]`);
      known *= d;
    }
  });
  const out = shape.slice();
  if (infer >= 0) {
    if (known === 0 || numel % known !== 0) throw new SiftError('E_SHAPE', `${op}: cannot reshape ${numel} elements to [${shape}]`);
    out[infer] = numel / known;
  }
  const total = out.reduce((a, b) => a * b, 1);
  if (total !== numel) throw new SiftError('E_SHAPE', `${op}: cannot reshape a tensor of ${numel} elements to [${shape}]`);
  return out;
}

/**
 * Strides that show a tensor of (shape, strides) as `target` without moving data, or null when the
 * layout does not allow it (PyTorch's computeStride): each run of dims that is contiguous in
 * memory may be split or merged freely; runs cannot be merged with each other.
 */
export function viewStrides(shape: readonly number[], strides: readonly number[], target: readonly number[]): number[] | null {
  let numel = 1;
  for (const d of shape) numel *= d;
  if (numel === 0 || shape.length === 0) return null;
  const out = new Array<number>(target.length);
  let viewD = target.length - 1;
  let chunkBase = strides[strides.length - 1];
  let tensorNumel = 1;
  let viewNumel = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    tensorNumel *= shape[d];
    // A run ends where the next dim out is not laid out right after this one.
    if (d === 0 || (shape[d - 1] !== 1 && strides[d - 1] !== tensorNumel * chunkBase)) {
      while (viewD >= 0 && (viewNumel < tensorNumel || target[viewD] === 1)) {
        out[viewD] = viewNumel * chunkBase;
        viewNumel *= target[viewD];
        viewD--;
      }
      if (viewNumel !== tensorNumel) return null;
      if (d > 0) {
        chunkBase = strides[d - 1];
        tensorNumel = 1;
        viewNumel = 1;
      }
    }
  }
  return viewD === -1 ? out : null;
}

export function reshape(x: Tensor, shape: number[]): Tensor {
  const target = resolveShape(shape, x.size, 'reshape');
  const inShape = x.shape;
  let y: Tensor;
  let st: number[] | null;
  if (x.isContiguous) {
    y = viewOf(x, target, contiguousStrides(target), x.offset);
  } else if ((st = viewStrides(inShape, x.strides, target)) !== null) {
    // Non-contiguous but viewable (e.g. splitting the last dim of a slice): a view, as torch.reshape.
    y = viewOf(x, target, st, x.offset);
  } else {
    const c = N().contiguous(x.handle);
    y = new Tensor(N().view(c, target, contiguousStrides(target), 0), {
      shape: target,
      dtype: x.dtype,
      device: x.device,
      contiguous: true,
    });
    N().dispose(c);
  }
  record('reshape', [x], [y], ([g]) => [reshape(g!, inShape)]);
  return y;
}

export function transpose(x: Tensor, a = -2, b = -1): Tensor {
  const nd = x.ndim;
  const da = normDim(a, nd, 'transpose');
  const db = normDim(b, nd, 'transpose');
  const perm = Array.from({ length: nd }, (_, i) => i);
  perm[da] = db;
  perm[db] = da;
  return permute(x, perm);
}

export function permute(x: Tensor, dims: number[]): Tensor {
  const nd = x.ndim;
  check(dims.length === nd, 'E_SHAPE', `permute: ${dims.length} dims given for a tensor of ${nd} dimensions`);
  const perm = dims.map((d) => normDim(d, nd, 'permute'));
  check(new Set(perm).size === nd, 'E_SHAPE', `permute: dims [${dims}] are not a permutation`);
  const shape = x.shape;
  const strides = x.strides;
  const y = viewOf(
    x,
    perm.map((p) => shape[p]),
    perm.map((p) => strides[p]),
    x.offset,
  );
  const inverse = new Array(nd);
  perm.forEach((p, i) => (inverse[p] = i));
  record('permute', [x], [y], ([g]) => [permute(g!, inverse)]);
  return y;
}

export function unsqueeze(x: Tensor, dim: number): Tensor {
  const nd = x.ndim + 1;
  const d = normDim(dim, nd, 'unsqueeze');
  const shape = x.shape.slice();
  shape.splice(d, 0, 1);
  return reshape(x, shape);
}

export function squeeze(x: Tensor, dim?: number): Tensor {
  if (dim === undefined)
    return reshape(
      x,
      x.shape.filter((s) => s !== 1),
    );
  const d = normDim(dim, x.ndim, 'squeeze');
  if (x.shape[d] !== 1) return reshape(x, x.shape);
  const shape = x.shape.slice();
  shape.splice(d, 1);
  return reshape(x, shape);
}

export function flatten(x: Tensor, start = 0, end = -1): Tensor {
  if (x.ndim === 0) return reshape(x, [1]);
  const s = normDim(start, x.ndim, 'flatten');
  const e = normDim(end, x.ndim, 'flatten');
  const shape = x.shape;
  const mid = shape.slice(s, e + 1).reduce((a, b) => a * b, 1);
  return reshape(x, [...shape.slice(0, s), mid, ...shape.slice(e + 1)]);
}

/** Broadcasts to a larger shape as a view (stride 0 on expanded dims); -1 keeps a dim. */
export function expand(x: Tensor, shape: number[]): Tensor {
  const inShape = x.shape;
  const inStrides = x.strides;
  check(shape.length >= inShape.length, 'E_SHAPE', `expand: cannot expand [${inShape}] to fewer dims [${shape}]`);
  const lead = shape.length - inShape.length;
  const outShape: number[] = [];
  const outStrides: number[] = [];
  shape.forEach((d, i) => {
    const j = i - lead;
    const src = j >= 0 ? inShape[j] : 1;
    const target = d === -1 ? src : d;
    if (j >= 0 && src !== 1 && src !== target) throw new SiftError('E_SHAPE', `expand: cannot expand [${inShape}] to [${shape}]`);
    outShape.push(target);
    outStrides.push(j >= 0 && src === target ? inStrides[j] : 0);
  });
  const y = viewOf(x, outShape, outStrides, x.offset);
  record('expand', [x], [y], ([g]) => [sumToShape(g!, inShape)]);
  return y;
}

/** Elements [start, end) along dim as a view; negative indices count from the end. */
export function slice(x: Tensor, dim: number, start: number, end?: number): Tensor {
  const d = normDim(dim, x.ndim, 'slice');
  const size = x.shape[d];
  let s = start < 0 ? start + size : start;
  let e = end === undefined ? size : end < 0 ? end + size : end;
  s = Math.min(Math.max(s, 0), size);
  e = Math.min(Math.max(e, s), size);
  const shape = x.shape.slice();
  shape[d] = e - s;
  const strides = x.strides;
  const y = viewOf(x, shape, strides, x.offset + s * strides[d]);
  const inShape = x.shape;
  const dtype = x.dtype;
  const device = x.device;
  record('slice', [x], [y], ([g]) => {
    const gx = fresh(N().full(inShape, 0, dtype, device), inShape, dtype, device);
    const part = N().view(gx.handle, shape, contiguousStrides(inShape), s * contiguousStrides(inShape)[d]);
    N().copy_(part, g!.handle);
    N().dispose(part);
    return [gx];
  });
  return y;
}

/** Splits along dim into pieces of `sizes` (a number: equal pieces, the last may be smaller). */
export function split(x: Tensor, sizes: number | number[], dim = 0): Tensor[] {
  const d = normDim(dim, x.ndim, 'split');
  const total = x.shape[d];
  let parts: number[];
  if (typeof sizes === 'number') {
    check(Number.isInteger(sizes) && sizes > 0, 'E_ARG', `split: size must be a positive integer, got ${sizes}`);
    parts = [];
    for (let s = 0; s < total; s += sizes) parts.push(Math.min(sizes, total - s));
  } else {
    parts = sizes;
    check(parts.reduce((a, b) => a + b, 0) === total, 'E_SHAPE', `split: sizes [${parts}] do not add up to ${total}`);
  }
  const strides = x.strides;
  const base = x.offset;
  const outs: Tensor[] = [];
  let start = 0;
  for (const p of parts) {
    const shape = x.shape.slice();
    shape[d] = p;
    outs.push(viewOf(x, shape, strides, base + start * strides[d]));
    start += p;
  }
  const dtype = x.dtype;
  const device = x.device;
  record('split', [x], outs, (grads) => {
    const pieces = grads.map((g, i) => g ?? wrap(N().full(outs[i] ? pieceShape(x.shape, d, parts[i]) : [], 0, dtype, device)));
    return [
      wrap(
        N().concat(
          pieces.map((p) => p.handle),
          d,
        ),
      ),
    ];
  });
  return outs;
}

/**
 * A fused-projection split for multi-head attention: x [B, T, parts * heads * hd] (GPT-2's c_attn
 * output, q | k | v) to `parts` views [B, heads, T, hd]. The same values as split along the last dim,
 * reshape to [B, T, heads, hd] and permute to [B, heads, T, hd], as one op: one view per part (the
 * split of the last dim is a view for any layout), and a backward that writes the parts' gradients
 * into one [B, T, parts * heads * hd] tensor with one concatenation instead of a copy per part first.
 */
export function splitHeads(x: Tensor, parts: number, heads: number): Tensor[] {
  check(x.ndim === 3, 'E_SHAPE', () => `splitHeads: x must be [B, T, C], got [${x.shape}]`);
  check(
    Number.isInteger(parts) && parts > 0 && Number.isInteger(heads) && heads > 0,
    'E_ARG',
    `splitHeads: parts and heads must be positive integers, got ${parts} and ${heads}`,
  );
  const shape = x.shape;
  const [B, T, C] = shape;
  check(C % (parts * heads) === 0, 'E_SHAPE', `splitHeads: ${C} features do not split into ${parts} x ${heads} heads`);
  const hd = C / (parts * heads);
  const D = heads * hd;
  const [s0, s1, s2] = x.strides;
  const base = x.offset;
  const outShape = [B, heads, T, hd];
  const outStrides = [s0, hd * s2, s1, s2];
  const outs: Tensor[] = [];
  for (let p = 0; p < parts; p++) outs.push(viewOf(x, outShape, outStrides, base + p * D * s2));
  const dtype = x.dtype;
  const device = x.device;
  record('splitHeads', [x], outs, (grads) => {
    const n = N();
    const pieces: NativeTensor[] = [];
    for (const g of grads) {
      if (g) {
        // [B, H, T, hd] seen as [B, T, H, hd] (a view), as the forward's permute undone.
        const gs = g.strides;
        const h = n.view(g.handle, [B, T, heads, hd], [gs[0], gs[2], gs[1], gs[3]], g.offset);
        pieces.push(h);
      } else {
        const z = n.full([B, T, heads, hd], 0, dtype, device);
        pieces.push(z);
      }
    }
    const cat = n.concat(pieces, 2);
    for (const h of pieces) n.dispose(h);
    const gx = new Tensor(n.view(cat, shape, contiguousStrides(shape), 0), { shape, dtype, device, contiguous: true });
    n.dispose(cat);
    return [gx];
  });
  return outs;
}

function pieceShape(shape: number[], d: number, n: number): number[] {
  const s = shape.slice();
  s[d] = n;
  return s;
}

export function concat(ts: Tensor[], dim = 0): Tensor {
  check(ts.length > 0, 'E_ARG', 'concat: no tensors given');
  const d = normDim(dim, ts[0].ndim, 'concat');
  const y = wrap(
    N().concat(
      ts.map((t) => t.handle),
      d,
    ),
  );
  const sizes = ts.map((t) => t.shape[d]);
  record('concat', ts, [y], ([g]) => {
    const out: Tensor[] = [];
    let start = 0;
    for (const s of sizes) {
      out.push(slice(g!, d, start, start + s));
      start += s;
    }
    return out;
  });
  return y;
}

export function stack(ts: Tensor[], dim = 0): Tensor {
  return concat(
    ts.map((t) => unsqueeze(t, dim)),
    dim,
  );
}

/** A contiguous tensor with x's data: x's own layout (shared storage) when it is contiguous already. */
function contiguousRaw(x: Tensor): Tensor {
  const h = N().contiguous(x.handle);
  if (!x.isContiguous) return fresh(h, x.shape, x.dtype, x.device);
  x.markViewed();
  return new Tensor(h, { shape: x.shape, dtype: x.dtype, device: x.device, strides: x.strides, offset: x.offset });
}

export function contiguous(x: Tensor): Tensor {
  const y = contiguousRaw(x);
  record('contiguous', [x], [y], ([g]) => [g]);
  return y;
}

export function clone(x: Tensor): Tensor {
  const y = fresh(N().clone(x.handle), x.shape, x.dtype, x.device);
  record('clone', [x], [y], ([g]) => [g]);
  return y;
}

export function cast(x: Tensor, dtype: DType): Tensor {
  const from = x.dtype;
  const h = N().cast(x.handle, dtype);
  // Casting to the same dtype gives x's own layout; any other dtype a new contiguous tensor.
  if (from === dtype) x.markViewed();
  const y =
    from === dtype
      ? new Tensor(h, { shape: x.shape, dtype, device: x.device, strides: x.strides, offset: x.offset })
      : fresh(h, x.shape, dtype, x.device);
  if (isFloat(from) && isFloat(dtype)) record('cast', [x], [y], ([g]) => [cast(g!, from)]);
  return y;
}

export function toDevice(x: Tensor, device: string): Tensor {
  const from = x.device;
  if (from === device) return x;
  const y = wrap(N().to(x.handle, device));
  record('to', [x], [y], ([g]) => [toDevice(g!, from)]);
  return y;
}

/** A tensor sharing x's data, without a gradient history. */
export function detach(x: Tensor): Tensor {
  return viewOf(x, x.shape, x.strides, x.offset);
}

export { sameShape };
