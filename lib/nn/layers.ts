/** Basic layers with transformers' parameter names (weight, bias) and layouts. */
import { Tensor } from '../engine/tensor';
import { Module } from './module';
import { linear } from '../autograd/matmul';
import { embedding } from '../autograd/nn';
import { layerNorm, rmsNorm } from '../autograd/nn';
import { dropout } from '../autograd/attention';
import { zeros, ones, randn, isShapeOnly } from '../autograd/creation';
import { mul } from '../autograd/elementwise';
import { noGrad } from '../autograd/tape';
import { QuantizedWeight, QuantFormat, TrainedEntries, quantLinear } from '../autograd/quant';
import { SiftError } from '../engine/errors';

export interface InitOptions {
  device?: string;
  dtype?: 'f32' | 'f16' | 'bf16' | 'f64';
  seed?: number;
  /** Standard deviation of the normal init (transformers' initializer_range, 0.02 by default). */
  std?: number;
}

function normalInit(shape: number[], opts: InitOptions): Tensor {
  return noGrad(() => {
    const r = randn(shape, { seed: opts.seed, device: opts.device, dtype: opts.dtype ?? 'f32' });
    if (isShapeOnly()) return r;
    const t = mul(r, opts.std ?? 0.02);
    r.dispose();
    return t;
  });
}

/** y = x W^T + b with W [out, in] (torch.nn.Linear). */
export class Linear extends Module {
  weight: Tensor;
  bias: Tensor | null;
  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    opts: InitOptions & { bias?: boolean } = {},
  ) {
    super();
    this.weight = this.registerParameter('weight', normalInit([outFeatures, inFeatures], opts))!;
    this.bias = this.registerParameter(
      'bias',
      opts.bias === false ? null : zeros([outFeatures], { device: opts.device, dtype: opts.dtype }),
    );
  }
  /** The frozen weight in quantized form, once quantize() ran (then `weight` is no parameter). */
  quantized: QuantizedWeight | null = null;
  /** Trained entries of the quantized weight (SIFT on a quantized target), set by their owner. */
  trainedEntries: TrainedEntries | null = null;

  /**
   * Stores the weight quantized (int8 or NF4) and frees the dense one. The weight is frozen from
   * then on: it leaves the parameters; the bias stays a parameter.
   */
  quantize(format: QuantFormat): this {
    if (this.quantized) throw new SiftError('E_ARG', `this Linear is already quantized (${this.quantized.format})`);
    const q = QuantizedWeight.from(this.weight, format);
    const dense = this.weight;
    this.unregisterParameter('weight');
    dense.dispose();
    this.quantized = q;
    Object.defineProperty(this, 'weight', {
      configurable: true,
      get: () => {
        throw new SiftError('E_UNSUPPORTED', `this Linear's weight is stored quantized (${format}); use quantized.dequantize()`);
      },
    });
    return this;
  }

  forward(x: Tensor): Tensor {
    if (this.quantized) return quantLinear(x, this.quantized, this.bias, this.trainedEntries);
    return linear(x, this.weight, this.bias);
  }

  protected override moveOwned(device: string): void {
    this.quantized?.to(device);
  }

  protected override disposeOwned(): void {
    this.quantized?.dispose();
    this.trainedEntries?.dispose?.();
    this.trainedEntries = null;
  }
}

export class Embedding extends Module {
  weight: Tensor;
  constructor(
    readonly numEmbeddings: number,
    readonly dim: number,
    opts: InitOptions = {},
  ) {
    super();
    this.weight = this.registerParameter('weight', normalInit([numEmbeddings, dim], opts))!;
  }
  forward(ids: Tensor): Tensor {
    return embedding(this.weight, ids);
  }
}

export class LayerNorm extends Module {
  weight: Tensor | null;
  bias: Tensor | null;
  constructor(
    readonly dim: number,
    readonly eps = 1e-5,
    opts: InitOptions & { affine?: boolean; bias?: boolean } = {},
  ) {
    super();
    const affine = opts.affine !== false;
    this.weight = this.registerParameter('weight', affine ? ones([dim], { device: opts.device, dtype: opts.dtype }) : null);
    this.bias = this.registerParameter(
      'bias',
      affine && opts.bias !== false ? zeros([dim], { device: opts.device, dtype: opts.dtype }) : null,
    );
  }
  forward(x: Tensor): Tensor {
    return layerNorm(x, this.weight, this.bias, this.eps);
  }
}

export class RMSNorm extends Module {
  weight: Tensor;
  constructor(
    readonly dim: number,
    readonly eps = 1e-6,
    opts: InitOptions = {},
  ) {
    super();
    this.weight = this.registerParameter('weight', ones([dim], { device: opts.device, dtype: opts.dtype }))!;
  }
  forward(x: Tensor): Tensor {
    return rmsNorm(x, this.weight, this.eps);
  }
}

export class Dropout extends Module {
  constructor(readonly p: number) {
    super();
  }
  forward(x: Tensor, seed?: number): Tensor {
    return dropout(x, this.p, { training: this.training, seed });
  }
}
