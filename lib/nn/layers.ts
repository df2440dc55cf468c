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
  constructor(readonly inFeatures: number, readonly outFeatures: number, opts: InitOptions & { bias?: boolean } = {}) {
    super();
    this.weight = this.registerParameter('weight', normalInit([outFeatures, inFeatures], opts))!;
    this.bias = this.registerParameter('bias', opts.bias === false ? null : zeros([outFeatures], { device: opts.device, dtype: opts.dtype }));
  }
  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias);
  }
}

export class Embedding extends Module {
  weight: Tensor;
  constructor(readonly numEmbeddings: number, readonly dim: number, opts: InitOptions = {}) {
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
  constructor(readonly dim: number, readonly eps = 1e-5, opts: InitOptions & { affine?: boolean; bias?: boolean } = {}) {
    super();
    const affine = opts.affine !== false;
    this.weight = this.registerParameter('weight', affine ? ones([dim], { device: opts.device, dtype: opts.dtype }) : null);
    this.bias = this.registerParameter('bias', affine && opts.bias !== false ? zeros([dim], { device: opts.device, dtype: opts.dtype }) : null);
  }
  forward(x: Tensor): Tensor {
    return layerNorm(x, this.weight, this.bias, this.eps);
  }
}

export class RMSNorm extends Module {
  weight: Tensor;
  constructor(readonly dim: number, readonly eps = 1e-6, opts: InitOptions = {}) {
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
