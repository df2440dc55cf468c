/**
 * Model-specific layers: GPT-2's Conv1D (a linear layer stored [in, out]) and the output head of
 * language models, which either owns its weight or reads the token embedding's (tied weights are
 * one tensor, listed once under the embedding's key).
 */
import { Tensor } from '../engine/tensor';
import { Module } from '../nn/module';
import { Embedding, InitOptions } from '../nn/layers';
import { linear, conv1d, gemmEpiloguesFused } from '../autograd/matmul';
import { mul } from '../autograd/elementwise';
import { randn, zeros, isShapeOnly } from '../autograd/creation';
import { noGrad, isGradEnabled } from '../autograd/tape';
import { checkpoint } from '../autograd/checkpoint';

export function normalTensor(shape: number[], opts: InitOptions): Tensor {
  return noGrad(() => {
    const r = randn(shape, { seed: opts.seed, device: opts.device, dtype: opts.dtype ?? 'f32' });
    if (isShapeOnly()) return r;
    const t = mul(r, opts.std ?? 0.02);
    r.dispose();
    return t;
  });
}

/** transformers' Conv1D: y = x @ W + b with W [in, out] (GPT-2's c_attn, c_proj, c_fc). */
export class Conv1D extends Module {
  weight: Tensor;
  bias: Tensor;
  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    opts: InitOptions = {},
  ) {
    super();
    this.weight = this.registerParameter('weight', normalTensor([inFeatures, outFeatures], opts))!;
    this.bias = this.registerParameter('bias', zeros([outFeatures], { device: opts.device, dtype: opts.dtype }))!;
  }
  forward(x: Tensor): Tensor {
    return conv1d(x, this.weight, this.bias);
  }
  /**
   * act(forward(x)) with a tanh-GELU `act`: fused into the GEMM's epilogue where the device's GEMMs
   * fuse epilogues and forward is this class's own (an adapter that replaced it is kept in the path).
   */
  forwardGeluTanh(x: Tensor, act: (y: Tensor) => Tensor): Tensor {
    if (this.forward === Conv1D.prototype.forward && gemmEpiloguesFused(x.device))
      return conv1d(x, this.weight, this.bias, { act: 'gelu_tanh' });
    return act(this.forward(x));
  }
}

/**
 * Output projection [vocab, hidden] without bias. Tied: no parameter of its own, the weight is the
 * embedding's current tensor (so loading or moving the embedding moves the head too). Its kind is
 * 'Linear', as transformers' lm_head is an nn.Linear.
 */
export class LMHead extends Module {
  private readonly tiedTo: Embedding | null;
  weight!: Tensor;
  constructor(inFeatures: number, outFeatures: number, tied: Embedding | null, opts: InitOptions = {}) {
    super();
    this.tiedTo = tied;
    if (!tied) this.weight = this.registerParameter('weight', normalTensor([outFeatures, inFeatures], opts))!;
  }
  override get kind(): string {
    return 'Linear';
  }
  get isTied(): boolean {
    return this.tiedTo !== null;
  }
  currentWeight(): Tensor {
    return this.tiedTo ? this.tiedTo.weight : this.weight;
  }
  forward(x: Tensor): Tensor {
    return linear(x, this.currentWeight(), null);
  }
}

/** Children named 0, 1, ... (transformers' nn.ModuleList: `h.0`, `layers.3`, `layer.11`). */
export class ModuleList<M extends Module> extends Module {
  readonly items: M[] = [];
  /** For a stack of transformer blocks: recompute each block's activations in backward (see runBlock). */
  gradientCheckpointing = false;
  constructor(items: M[]) {
    super();
    items.forEach((m, i) => {
      this.registerModule(String(i), m);
      this.items.push(m);
    });
  }
  get length(): number {
    return this.items.length;
  }

  /**
   * One block's forward on the hidden states x: through checkpoint() when gradientCheckpointing is
   * on and gradients are being recorded, directly otherwise. Callers use it only on paths without a
   * KV cache (the cache would hold activations that checkpointing means to drop).
   */
  runBlock(x: Tensor, fn: (x: Tensor) => Tensor): Tensor {
    return this.gradientCheckpointing && isGradEnabled() ? checkpoint(fn, [x]) : fn(x);
  }
}
