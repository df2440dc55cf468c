/**
 * Quantized frozen weights and the linear product over them. A QuantizedWeight holds a 2-D
 * weight [out, in] as int8 codes with a per-row absmax, or as bitsandbytes' NF4 (blocks of 64,
 * double-quantized absmax); layouts in native/ops/quant.h. quantLinear computes x deq(W)^T + b
 * with W dequantized by tiles inside the native op; its backward gives the input and bias
 * gradients. The weight itself is frozen, except for SIFT's trained entries (TrainedEntries): f32
 * values that replace the dequantized ones at their indices, in every tile the forward and the
 * input gradient read, and whose gradient the backward hands to their owner.
 */
import type { QuantFormat } from '../engine/addon-types';
import { Tensor } from '../engine/tensor';
import { SiftError } from '../engine/errors';
import { keep } from '../engine/scope';
import { record } from './tape';
import { N, fresh, sumToShape } from './util';

export type { QuantFormat };
export const QUANT_FORMATS: readonly QuantFormat[] = ['int8', 'nf4'];

export function parseQuantFormat(v: unknown, what = 'quantize'): QuantFormat {
  if (v === 'int8' || v === 'nf4') return v;
  throw new SiftError('E_ARG', `${what} must be 'int8' or 'nf4', got ${JSON.stringify(v)}`);
}

/** Bytes a weight of `rows` x `cols` takes in a format (codes and scales), as stored on the device. */
export function quantizedBytes(format: QuantFormat, rows: number, cols: number): number {
  const n = rows * cols;
  if (format === 'int8') return n + 4 * rows;
  const blocks = Math.ceil(n / 64);
  return Math.ceil(n / 2) + blocks + 4 * Math.ceil(blocks / 256) + 4;
}

export class QuantizedWeight {
  private state: Tensor[];
  private constructor(
    readonly format: QuantFormat,
    readonly shape: [number, number],
    state: Tensor[],
  ) {
    this.state = state.map((t) => keep(t));
  }

  /** Quantizes a 2-D float weight [out, in] (the weight itself is left as it is). */
  static from(weight: Tensor, format: QuantFormat): QuantizedWeight {
    parseQuantFormat(format);
    if (weight.ndim !== 2) throw new SiftError('E_SHAPE', `quantize: weight must be 2-D, got [${weight.shape}]`);
    const hs = N().quantize(weight.handle, format);
    return new QuantizedWeight(
      format,
      [weight.shape[0], weight.shape[1]],
      hs.map((h) => new Tensor(h)),
    );
  }

  get device(): string {
    return this.state[0].device;
  }

  /** Bytes of the codes and scales. */
  get bytes(): number {
    return this.state.reduce((a, t) => a + t.size * (t.dtype === 'f32' ? 4 : 1), 0);
  }

  get isDisposed(): boolean {
    return this.state.length === 0 || this.state[0].isDisposed;
  }

  /** @internal Native handles of the state, in the order of native/ops/quant.h. */
  get handles() {
    if (this.isDisposed) throw new SiftError('E_DISPOSED', 'this quantized weight was disposed');
    return this.state.map((t) => t.handle);
  }

  /** The dequantized weight, f32 [out, in] (a new tensor). */
  dequantize(): Tensor {
    return fresh(N().dequantize(this.handles, this.format, this.shape[0], this.shape[1]), this.shape.slice(), 'f32', this.device);
  }

  /** Moves the codes and scales to a device, in place. */
  to(device: string): this {
    const moved = this.state.map((t) => keep(new Tensor(N().to(t.handle, device))));
    for (const t of this.state) t.dispose();
    this.state = moved;
    return this;
  }

  dispose(): void {
    for (const t of this.state) t.dispose();
    this.state = [];
  }
}

/**
 * Trained entries of a quantized weight (lib/sift/sift.ts makes them for SIFT's quantized targets).
 */
export interface TrainedEntries {
  /** A tensor with requiresGrad that makes the tape run this op's backward (it gets no gradient). */
  readonly marker: Tensor;
  /** Sorted flat indices into [out, in] and their f32 values; null while none are chosen. */
  entries(): { idx: Tensor; values: Tensor } | null;
  /** Receives the weight's gradient of one backward as its factors: x [M, in] and dy [M, out] (f32). */
  weightGrad(x: Tensor, dy: Tensor): void;
  /** Frees the entries when their owner is the layer (after training). */
  dispose?(): void;
}

/** x [..., F] as a contiguous f32 [M, F] (a new tensor). */
function rowsF32(x: Tensor): Tensor {
  const F = x.shape[x.ndim - 1];
  const c = fresh(N().contiguous(x.handle), x.shape.slice(), x.dtype, x.device);
  const f = x.dtype === 'f32' ? c : fresh(N().cast(c.handle, 'f32'), x.shape.slice(), 'f32', x.device);
  if (f !== c) c.dispose();
  const out = fresh(N().view(f.handle, [f.size / F, F], [F, 1], f.offset), [f.size / F, F], 'f32', x.device);
  f.dispose();
  return out;
}

/**
 * y = x deq(W)^T + bias for a quantized W [out, in]; gradients flow to x and the bias, and, with
 * `trained`, the weight's gradient goes to trained.weightGrad.
 */
export function quantLinear(x: Tensor, weight: QuantizedWeight, bias?: Tensor | null, trained?: TrainedEntries | null): Tensor {
  const [outF, inF] = weight.shape;
  if (x.ndim === 0 || x.shape[x.ndim - 1] !== inF) {
    throw new SiftError('E_SHAPE', `quantLinear: input [${x.shape}] does not end in ${inF} features (weight [${weight.shape}])`);
  }
  if (x.device !== weight.device) throw new SiftError('E_DEVICE', `quantLinear: input on ${x.device}, weight on ${weight.device}`);
  if (bias) {
    if (bias.ndim !== 1 || bias.shape[0] !== outF)
      throw new SiftError('E_SHAPE', `quantLinear: bias must be [${outF}], got [${bias.shape}]`);
    if (bias.dtype !== x.dtype) throw new SiftError('E_DTYPE', `quantLinear: bias is ${bias.dtype}, input ${x.dtype}`);
  }
  const yShape = [...x.shape.slice(0, -1), outF];
  const e = trained?.entries() ?? null;
  const product = (input: Tensor, transpose: boolean) =>
    e
      ? N().quantLinear(input.handle, weight.handles, weight.format, outF, inF, transpose, e.idx.handle, e.values.handle)
      : N().quantLinear(input.handle, weight.handles, weight.format, outF, inF, transpose);
  const y = fresh(product(x, false), yShape, x.dtype, x.device);
  if (bias) N().addInplace(y.handle, bias.handle, 1);
  record('quantLinear', [x, bias, trained?.marker], [y], ([g]) => {
    if (trained && trained.marker.requiresGrad) {
      const xs = rowsF32(x);
      const gs = rowsF32(g!);
      try {
        trained.weightGrad(xs, gs);
      } finally {
        xs.dispose();
        gs.dispose();
      }
    }
    const gx = x.requiresGrad ? fresh(product(g!, true), x.shape.slice(), x.dtype, x.device) : null;
    const gb = bias && bias.requiresGrad ? sumToShape(g!, [outF]) : null;
    return [gx, gb, null];
  });
  return y;
}
