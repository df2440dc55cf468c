/**
 * LoRA (Hu et al., 2021) as PEFT implements it, the baseline SIFT is compared with: each matched
 * Linear (weight [out, in]) or GPT-2 Conv1D (weight [in, out]) computes
 * base(x) + (alpha / rank) * B(A(dropout(x))) with A [r, in] drawn like PEFT's kaiming_uniform
 * (a = sqrt(5): U(-1/sqrt(in), 1/sqrt(in))) and B [out, r] zero, so the model is unchanged at the
 * start. The adapters live outside the model's parameter tree (its state dict stays transformers'),
 * under PEFT's names `<module>.lora_A.weight` / `<module>.lora_B.weight`; the base is frozen.
 */
import * as fs from 'fs';
import * as path from 'path';
import { Tensor } from '../engine/tensor';
import { SiftError, check } from '../engine/errors';
import { keep, tidy } from '../engine/scope';
import { rand, zeros } from '../autograd/creation';
import { add, mul } from '../autograd/elementwise';
import { linear, matmul } from '../autograd/matmul';
import { cast, contiguous, transpose } from '../autograd/shape';
import { dropout } from '../autograd/attention';
import { noGrad } from '../autograd/tape';
import { Linear } from '../nn/layers';
import { Conv1D } from '../models/layers';
import type { Module } from '../nn/module';
import { moduleMatcher, ModuleSelector } from '../sift/targets';
import { saveSafetensors, loadSafetensors } from '../io/safetensors';
import { writeFileAtomic } from '../io/atomic';
import { loraPeftConfig } from '../io/peft';
import { deriveSeed } from './batching';

export interface LoraOptions {
  rank?: number;
  alpha?: number;
  dropout?: number;
  /** Modules to adapt (PEFT matching: names, suffixes, a regex string or "all-linear"); default by architecture. */
  targetModules?: ModuleSelector;
  /** Seed of A's initialisation. */
  seed?: number;
  /** Freeze every base parameter (default true). */
  freezeBase?: boolean;
}

/** PEFT's default target modules per architecture. */
export function defaultLoraTargets(modelType: string | undefined): ModuleSelector {
  switch (modelType) {
    case 'gpt2':
      return ['c_attn'];
    case 'bert':
    case 'roberta':
      return ['query', 'value'];
    case 'llama':
    case 'mistral':
    case 'qwen2':
    case 'qwen3':
    case 'gemma':
    case 'gemma2':
      return ['q_proj', 'v_proj'];
    case 'phi3':
      return ['qkv_proj'];
    default:
      return 'all-linear';
  }
}

export interface LoraLayer {
  /** Module path, e.g. `transformer.h.0.attn.c_attn`. */
  name: string;
  module: Module;
  /** True for GPT-2's Conv1D ([in, out] weight). */
  conv1d: boolean;
  A: Tensor;
  B: Tensor;
}

type Forward = (x: Tensor) => Tensor;

export class LoraAdapters {
  readonly layers: LoraLayer[] = [];
  readonly scale: number;
  private merged = false;
  private disposed = false;
  private readonly restore: (() => void)[] = [];

  constructor(
    readonly model: Module,
    readonly options: Required<Omit<LoraOptions, 'seed' | 'freezeBase'>> & { seed: number },
  ) {
    this.scale = options.alpha / options.rank;
  }

  /** Whether the adapters are folded into the base weights now. */
  get isMerged(): boolean {
    return this.merged;
  }

  /** @internal */
  wrap(name: string, module: Module, conv1d: boolean, index: number): void {
    // A quantized base (QLoRA-style) has no dense weight: its shape and device come from the codes.
    const q = module instanceof Linear ? module.quantized : null;
    const w = q ? { shape: q.shape, device: q.device, dtype: 'f32' as const } : (module as unknown as { weight: Tensor }).weight;
    const [inF, outF] = conv1d ? w.shape : [w.shape[1], w.shape[0]];
    const r = this.options.rank;
    const { A, B } = tidy(() =>
      noGrad(() => {
        const bound = 1 / Math.sqrt(inF);
        const u = rand([r, inF], { seed: deriveSeed(this.options.seed, index, 0x10a), device: w.device, dtype: 'f32' });
        const a32 = mul(add(mul(u, 2), -1), bound);
        const a = w.dtype === 'f32' ? a32 : cast(a32, w.dtype);
        const b = zeros([outF, r], { device: w.device, dtype: w.dtype });
        return { A: keep(a.requiresGrad_(true)), B: keep(b.requiresGrad_(true)) };
      }),
    );
    A.name = `${name}.lora_A.weight`;
    B.name = `${name}.lora_B.weight`;
    const layer: LoraLayer = { name, module, conv1d, A, B };
    this.layers.push(layer);
    const target = module as unknown as { forward: Forward };
    const own = Object.hasOwn(target, 'forward');
    const prev = target.forward;
    const base: Forward = prev.bind(module);
    const p = this.options.dropout;
    target.forward = (x: Tensor): Tensor => {
      const y = base(x);
      if (this.merged || this.disposed) return y;
      const xd = p > 0 ? dropout(x, p, { training: module.training }) : x;
      return add(y, mul(linear(linear(xd, layer.A), layer.B), this.scale));
    };
    this.restore.push(() => {
      if (own) target.forward = prev;
      else delete (target as { forward?: Forward }).forward;
    });
  }

  /** Adapter tensors by PEFT's names. */
  namedParameters(): [string, Tensor][] {
    return this.layers.flatMap(
      (l) =>
        [
          [`${l.name}.lora_A.weight`, l.A],
          [`${l.name}.lora_B.weight`, l.B],
        ] as [string, Tensor][],
    );
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, t]) => t);
  }

  numParameters(): number {
    return this.parameters().reduce((a, t) => a + t.size, 0);
  }

  /** scale * B @ A in the layout of the base weight (f32). */
  private delta(l: LoraLayer): Tensor {
    const d = matmul(l.B.dtype === 'f32' ? l.B : cast(l.B, 'f32'), l.A.dtype === 'f32' ? l.A : cast(l.A, 'f32'));
    const s = mul(d, this.scale);
    return l.conv1d ? contiguous(transpose(s, 0, 1)) : s;
  }

  private fold(sign: 1 | -1): void {
    check(
      !this.layers.some((l) => l.module instanceof Linear && l.module.quantized),
      'E_UNSUPPORTED',
      'LoRA adapters cannot be merged into a quantized base; save the adapter and apply it to the original weights',
    );
    noGrad(() => {
      for (const l of this.layers) {
        const w = (l.module as unknown as { weight: Tensor }).weight;
        const d = this.delta(l);
        const dd = w.dtype === 'f32' ? d : cast(d, w.dtype);
        w.addInplace(dd, sign);
        if (dd !== d) dd.dispose();
        d.dispose();
      }
    });
  }

  /** Adds the adapters into the base weights; the forward then skips them. */
  merge(): void {
    check(!this.disposed, 'E_DISPOSED', 'these LoRA adapters were disposed');
    if (this.merged) return;
    this.fold(1);
    this.merged = true;
  }

  /** Subtracts the adapters from the base weights again (exact in f32 up to rounding). */
  unmerge(): void {
    check(!this.disposed, 'E_DISPOSED', 'these LoRA adapters were disposed');
    if (!this.merged) return;
    this.fold(-1);
    this.merged = false;
  }

  /**
   * The model's state dict with the adapters folded into copies of the adapted weights (the model
   * itself is not touched). Call the returned dispose() after saving to free the copies.
   */
  mergedStateDict(base: Map<string, Tensor>): { stateDict: Map<string, Tensor>; dispose(): void } {
    check(!this.disposed, 'E_DISPOSED', 'these LoRA adapters were disposed');
    const out = new Map(base);
    const owned: Tensor[] = [];
    if (!this.merged) {
      noGrad(() => {
        for (const l of this.layers) {
          const key = `${l.name}.weight`;
          const w = out.get(key);
          if (!w) continue;
          const m = tidy(() => {
            const w32 = w.dtype === 'f32' ? w : cast(w, 'f32');
            const sum = add(w32, this.delta(l));
            return keep(w.dtype === 'f32' ? sum : cast(sum, w.dtype));
          });
          owned.push(m);
          out.set(key, m);
        }
      });
    }
    return { stateDict: out, dispose: () => owned.forEach((t) => t.dispose()) };
  }

  /**
   * Writes the adapters as PEFT does (adapter_model.safetensors keys `base_model.model.<module>.lora_A.weight`),
   * and adapter_config.json beside it.
   */
  saveAdapter(file: string, opts: { baseModel?: string; extraConfig?: Record<string, unknown> } = {}): void {
    check(!this.disposed, 'E_DISPOSED', 'these LoRA adapters were disposed');
    const entries: [string, Tensor][] = this.namedParameters().map(([n, t]) => [`base_model.model.${n}`, t]);
    saveSafetensors(file, entries, { format: 'pt' });
    const cfg = {
      ...loraPeftConfig(
        {
          r: this.options.rank,
          lora_alpha: this.options.alpha,
          lora_dropout: this.options.dropout,
          target_modules: [...new Set(this.layers.map((l) => l.name.slice(l.name.lastIndexOf('.') + 1)))],
          fan_in_fan_out: this.layers.some((l) => l.conv1d),
        },
        null,
        opts.baseModel ?? null,
      ),
      ...opts.extraConfig,
    };
    writeFileAtomic(path.join(path.dirname(file), 'adapter_config.json'), [JSON.stringify(cfg, null, 2) + '\n']);
  }

  /** Loads adapter weights saved by saveAdapter (or PEFT), with or without the base_model.model. prefix. */
  loadAdapter(file: string): void {
    check(fs.existsSync(file), 'E_IO', `no adapter file ${file}`);
    const { tensors } = loadSafetensors(file);
    try {
      const byName = new Map<string, Tensor>();
      for (const [k, t] of tensors) byName.set(k.replace(/^base_model\.model\./, '').replace('.default.weight', '.weight'), t);
      noGrad(() => {
        for (const [n, p] of this.namedParameters()) {
          const src = byName.get(n);
          if (!src) throw new SiftError('E_FORMAT', `${file}: no tensor '${n}'`);
          if (src.shape.join() !== p.shape.join())
            throw new SiftError('E_MISMATCH', `${file}: '${n}' has shape [${src.shape}], expected [${p.shape}]`);
          p.copy_(src.dtype === p.dtype ? src : cast(src, p.dtype));
        }
      });
    } finally {
      for (const t of tensors.values()) t.dispose();
    }
  }

  /** Restores the modules' forwards and frees the adapters (merged weights stay merged). */
  dispose(): void {
    if (this.disposed) return;
    for (const r of this.restore) r();
    for (const l of this.layers) {
      l.A.dispose();
      l.B.dispose();
    }
    this.disposed = true;
  }
}

/** Wraps the model's matched Linear and Conv1D modules with LoRA adapters. */
export function applyLora(model: Module, opts: LoraOptions = {}): LoraAdapters {
  const rank = opts.rank ?? 8;
  const alpha = opts.alpha ?? rank;
  const p = opts.dropout ?? 0;
  check(Number.isInteger(rank) && rank > 0, 'E_ARG', `LoRA rank must be a positive integer, got ${rank}`);
  check(typeof alpha === 'number' && alpha > 0, 'E_ARG', `LoRA alpha must be positive, got ${alpha}`);
  check(p >= 0 && p < 1, 'E_ARG', `LoRA dropout must be in [0, 1), got ${p}`);
  const modelType = (model as unknown as { config?: { model_type?: string } }).config?.model_type;
  const sel = opts.targetModules ?? defaultLoraTargets(modelType);
  const match = moduleMatcher(sel, model, 'lora.targetModules')!;
  const adapters = new LoraAdapters(model, { rank, alpha, dropout: p, targetModules: sel, seed: opts.seed ?? 0 });
  if (opts.freezeBase !== false) for (const t of model.parameters()) t.requiresGrad = false;
  let i = 0;
  for (const [name, m] of model.namedModules()) {
    if (!name || !match(name)) continue;
    if (m instanceof Linear) adapters.wrap(name, m, false, i++);
    else if (m instanceof Conv1D) adapters.wrap(name, m, true, i++);
  }
  if (!adapters.layers.length) {
    throw new SiftError('E_ARG', `LoRA: no Linear or Conv1D module matches targetModules ${JSON.stringify(sel)}`);
  }
  return adapters;
}
