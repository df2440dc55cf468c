/**
 * Activation memory of a training step: the tensors each op keeps for its backward, per decoder
 * block, read off the block's forward (lib/models/llama.ts, gpt2.ts) and checked against
 * liveTensors().peakBytes on the CPU backend (test/plan/plan.test.ts, docs/memory.md). The block's
 * dimensions come from its parameters' shapes in the shape-only module tree, so a config's
 * head_dim, grouped KV heads or intermediate size are read the way the model reads them.
 *
 * The peak of a step comes at the start of the backward: every block's saved tensors, the output
 * layer's logits and their gradient. With activation checkpointing a block keeps only its input,
 * and the block being recomputed holds its full set during its backward.
 */
import { SiftError } from '../engine/errors';
import type { PreTrainedModel } from '../models/common';
import type { TaskName } from '../train/types';

export interface ActivationInput {
  batchSize: number;
  seqLength: number;
  /** Bytes per activation entry (the weights' dtype: 4 for f32, 2 for bf16). */
  actSize: number;
  checkpointing: boolean;
  task: TaskName;
  /** LoRA: [in, out, rank] of each adapted layer. */
  adapters?: [number, number, number][];
}

export interface ActivationEstimate {
  family: 'llama' | 'gpt2';
  /** Saved tensors of one block (bytes). */
  perBlock: number;
  blocks: number;
  /** Kept for the backward at the peak. */
  saved: number;
  /** Output-layer and block-backward transients at the peak. */
  workspace: number;
}

interface BlockShape {
  family: 'llama' | 'gpt2';
  /** LLaMA-layout variants (the shared decoder of Qwen, Mistral, Gemma, Phi-3): q/k/v in one projection, per-head q/k norms, norms around both branches, Gemma's f32 norms. */
  fusedQkv?: boolean;
  qkNorm?: boolean;
  sandwichNorms?: boolean;
  f32Norms?: boolean;
  kvHeads?: number;
  D: number;
  /** Query width (heads x head dim) and key/value width (KV heads x head dim). */
  qWidth: number;
  kvWidth: number;
  heads: number;
  inner: number;
}

function shapeOf(model: PreTrainedModel, name: string): number[] | null {
  const p = model.namedParameters().find(([n]) => n === name);
  return p ? p[1].shape : null;
}

/** Blocks in the list whose first block's prefix is `prefix` ('model.layers.0.'). */
function countBlocks(names: string[], prefix: string): number {
  const base = prefix.slice(0, prefix.length - 2);
  const ids = new Set<string>();
  for (const n of names) {
    if (!n.startsWith(base)) continue;
    const m = /^(\d+)\./.exec(n.slice(base.length));
    if (m) ids.add(m[1]);
  }
  return ids.size;
}

/** The first block's prefix and dimensions, found by the parameter names the families use. */
function blockShape(model: PreTrainedModel): { prefix: string; blocks: number; shape: BlockShape } {
  const names = model.namedParameters().map(([n]) => n);
  const cfg = model.config;
  const heads = Number(cfg.num_attention_heads ?? cfg.n_head ?? 1);
  const attn = names.find((n) => /(^|\.)layers\.0\.self_attn\.(q|qkv)_proj\.weight$/.test(n));
  const prefix = attn ? attn.slice(0, attn.lastIndexOf('self_attn.')) : '';
  const gateUp = attn && (shapeOf(model, `${prefix}mlp.gate_proj.weight`) ?? shapeOf(model, `${prefix}mlp.gate_up_proj.weight`));
  if (attn && gateUp) {
    const fusedQkv = attn.endsWith('qkv_proj.weight');
    const D = shapeOf(model, attn)![1];
    const o = shapeOf(model, `${prefix}self_attn.o_proj.weight`)!;
    const qWidth = o[1];
    const kvWidth = fusedQkv ? (shapeOf(model, attn)![0] - qWidth) / 2 : shapeOf(model, `${prefix}self_attn.k_proj.weight`)![0];
    const inner = names.includes(`${prefix}mlp.gate_up_proj.weight`) ? gateUp[0] / 2 : gateUp[0];
    const kinds = new Map(model.namedModules().map(([p, m]) => [p, m.kind]));
    const headDim = qWidth / heads;
    return {
      prefix,
      blocks: countBlocks(names, prefix),
      shape: {
        family: 'llama',
        D,
        qWidth,
        kvWidth,
        heads,
        inner,
        fusedQkv,
        kvHeads: kvWidth / headDim,
        qkNorm: names.includes(`${prefix}self_attn.q_norm.weight`),
        sandwichNorms: names.includes(`${prefix}pre_feedforward_layernorm.weight`),
        f32Norms: kinds.get(`${prefix}input_layernorm`) === 'GemmaRMSNorm',
      },
    };
  }
  const gpt2 = names.find((n) => /(^|\.)h\.0\.attn\.c_attn\.weight$/.test(n));
  if (gpt2) {
    const prefix = gpt2.slice(0, gpt2.length - 'attn.c_attn.weight'.length);
    const a = shapeOf(model, `${prefix}attn.c_attn.weight`)!;
    const f = shapeOf(model, `${prefix}mlp.c_fc.weight`)!;
    return {
      prefix,
      blocks: countBlocks(names, prefix),
      shape: { family: 'gpt2', D: a[0], qWidth: a[0], kvWidth: a[0], heads, inner: f[1] },
    };
  }
  throw new SiftError(
    'E_UNSUPPORTED',
    `plan: no activation formula for model type '${String(cfg.model_type)}' (decoder blocks of the LLaMA or GPT-2 layout)`,
  );
}

/** Vocabulary of the output layer: the lm_head's rows (or the tied embedding's). */
function vocabOf(model: PreTrainedModel): number {
  const head = model.namedParameters().find(([n]) => /(^|\.)(lm_head|embed_tokens|wte)\.weight$/.test(n));
  return head ? head[1].shape[0] : 0;
}

export function activationBytes(model: PreTrainedModel, o: ActivationInput): ActivationEstimate {
  const { blocks, shape: s } = blockShape(model);
  const a = o.actSize;
  const BT = o.batchSize * o.seqLength;
  // Per-row statistics are f32 whatever the activations' dtype: a norm's rstd (and mean), attention's log-sum-exp.
  const lse = 4 * o.batchSize * s.heads * o.seqLength;
  let perBlock: number;
  let blockTransient: number;
  if (s.family === 'llama') {
    // input (norm 1), norm 1 out (q/k/v), rotated q and k, v, attention out, merged heads (o_proj),
    // h = x + attn (norm 2), norm 2 out (gate/up), gate out (the activation), activation out and up
    // out (mul), product (down). A fused q/k/v keeps its whole output alive (v is a view of it) besides
    // the rotated q and k; q/k norms keep the projections they normalise; norms around both branches
    // keep the attention and MLP outputs they read. Gemma's norms on bf16 activations compute in f32:
    // the f32 input (read by the backward) and the f32 output live on.
    const Q = s.qWidth,
      K = s.kvWidth;
    const qkv = s.fusedQkv ? Q + 2 * K + Q + K : Q + 2 * K;
    const norms = s.sandwichNorms ? 4 : 2;
    perBlock =
      a * BT * (4 * s.D + qkv + (s.qkNorm ? Q + K : 0) + 2 * Q + 4 * s.inner + (s.sandwichNorms ? 2 * s.D : 0)) +
      norms * 4 * BT +
      lse +
      (s.qkNorm ? 4 * BT * (s.heads + (s.kvHeads ?? s.heads)) : 0) +
      (s.f32Norms && a < 4 ? norms * 8 * BT * s.D : 0);
    // Backward of the MLP: gradients of the product, the gate and up outputs live together.
    blockTransient = a * BT * 3 * s.inner;
  } else {
    // input (ln_1), ln_1 out (c_attn), q, k, v, attention out, merged heads (c_proj), h (ln_2), ln_2 out (c_fc),
    // c_fc out (gelu), gelu out (c_proj).
    perBlock = a * BT * (8 * s.D + 2 * s.inner) + 2 * 8 * BT + lse;
    blockTransient = a * BT * 2 * s.inner;
  }
  // LoRA: base(x) + scale * B(A x) keeps the base output, B's product, its scaled copy and A x (B's
  // input) until the step's scope ends, and (measured) one more tensor of the layer's input size.
  const adapterBytes = (o.adapters ?? []).reduce((acc, [inF, outF, r]) => acc + a * BT * (inF + 3 * outF + r), 0);
  perBlock += adapterBytes / blocks;
  // Saved through the whole backward: every block's tensors, or only its input when checkpointed.
  const blocksKept = o.checkpointing ? a * BT * s.D * blocks : perBlock * blocks;
  let headKept: number;
  let logits: number;
  if (o.task === 'causal-lm' || o.task === 'instruct' || o.task === 'chat') {
    // ids, positions and shifted targets (i64), the final norm's output (lm_head) and statistics; the logits (cross-entropy).
    headKept = 3 * 8 * BT + a * BT * s.D + 4 * BT;
    logits = a * BT * vocabOf(model);
  } else {
    headKept = 2 * 8 * BT + a * BT * s.D + 4 * BT;
    logits = 0;
  }
  // Two moments compete for the peak: the output layer's backward (the logits and their gradient
  // alive; no block recomputed yet), and a block's backward (the logits gone; the block's own
  // tensors recomputed when checkpointed, the gradient flowing in, its intermediates).
  const atHead = { saved: blocksKept + headKept + logits, workspace: Math.max(logits, a * BT * s.D) };
  const atBlock = { saved: blocksKept + headKept + (o.checkpointing ? perBlock : 0), workspace: a * BT * s.D + blockTransient };
  const peak = atHead.saved + atHead.workspace >= atBlock.saved + atBlock.workspace ? atHead : atBlock;
  return { family: s.family, perBlock, blocks, saved: peak.saved, workspace: peak.workspace };
}
