/**
 * Attention and what goes with it: scaled dot-product attention (fused, memory-efficient: the
 * [T, T] score matrix is never stored for the backward, which recomputes it from the saved
 * log-sum-exp), rotary position embedding, and seeded dropout.
 */
import { Tensor } from '../engine/tensor';
import { SiftError, check } from '../engine/errors';
import { isInt } from '../engine/dtype';
import { record } from './tape';
import { N, wrap, fresh } from './util';
import { drawSeed } from './creation';

export interface AttentionOptions {
  /** bool [B, Tk] key padding mask (true = attend) or an additive float mask broadcastable to [B, H, Tq, Tk]. */
  mask?: Tensor | null;
  causal?: boolean;
  /** Default 1/sqrt(head dim). */
  scale?: number;
  /** Dropout on the attention weights (training only). */
  dropoutP?: number;
  seed?: number | bigint;
  /**
   * Logit soft-capping (Gemma 2's attn_logit_softcapping), 0 or undefined = off: the scores
   * become softcap * tanh(scale * q k^T / softcap) before the mask is added.
   */
  softcap?: number;
  /**
   * Sliding window (Mistral, Gemma 2, Phi-3, Qwen2's sliding_window), 0 or undefined = off; needs
   * `causal`. As transformers' sliding_window_causal_mask_function: query i, at absolute position
   * a = i + Tk - Tq (queries are aligned to the end of the keys, as with a KV cache), sees key j
   * iff j <= a and a - j < window, so a query sees itself and the window - 1 keys before it.
   */
  window?: number;
}

/** softmax(softcap(q k^T * scale) + mask) v for q [B, H, Tq, D], k and v [B, Hkv, Tk, D] (grouped-query when Hkv < H). */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): Tensor {
  check(
    q.ndim === 4 && k.ndim === 4 && v.ndim === 4,
    'E_SHAPE',
    `attention: q, k, v must be 4-D [B, H, T, D], got [${q.shape}], [${k.shape}], [${v.shape}]`,
  );
  const scale = opts.scale ?? 1 / Math.sqrt(q.shape[3]);
  const p = opts.dropoutP ?? 0;
  check(p >= 0 && p < 1, 'E_ARG', `attention: dropoutP must be in [0, 1), got ${p}`);
  const seed = p > 0 ? (opts.seed ?? drawSeed()) : 0;
  const mask = opts.mask ?? null;
  const causal = opts.causal ?? false;
  const softcap = opts.softcap ?? 0;
  const window = opts.window ?? 0;
  check(Number.isFinite(softcap) && softcap >= 0, 'E_ARG', `attention: softcap must be a finite number >= 0 (0 = off), got ${softcap}`);
  check(Number.isSafeInteger(window) && window >= 0, 'E_ARG', `attention: window must be an integer >= 0 (0 = off), got ${window}`);
  check(
    window === 0 || causal,
    'E_ARG',
    `attention: a sliding window (window ${window}) applies on top of the causal mask; pass causal: true`,
  );
  const [outh, lseh] = N().attention(q.handle, k.handle, v.handle, mask?.handle ?? null, causal, scale, p, seed, softcap, window);
  // Fresh contiguous outputs whose metadata is known here: no native calls to read it later.
  const { dtype, device } = q;
  const qs = q.shape,
    ks = k.shape,
    vs = v.shape;
  const out = fresh(outh, qs.slice(), dtype, device);
  const lse = fresh(lseh, [qs[0], qs[1], qs[2]], dtype === 'f64' ? 'f64' : 'f32', device);
  record(
    'attention',
    [q, k, v],
    [out],
    ([g]) => {
      const [gq, gk, gv] = N().attentionBackward(
        g!.handle,
        q.handle,
        k.handle,
        v.handle,
        out.handle,
        lse.handle,
        mask?.handle ?? null,
        causal,
        scale,
        p,
        seed,
        softcap,
        window,
      );
      return [fresh(gq, qs.slice(), dtype, device), fresh(gk, ks.slice(), dtype, device), fresh(gv, vs.slice(), dtype, device)];
    },
    [lse],
  );
  return out;
}

/** Inverse frequencies of rotary embeddings: theta^(-2i/d) for i < d/2 (f32). */
export function rotaryInvFreq(headDim: number, theta = 10000, device = 'cpu'): Tensor {
  check(headDim % 2 === 0, 'E_SHAPE', `rotary: head dim must be even, got ${headDim}`);
  const f = new Float32Array(headDim / 2);
  for (let i = 0; i < headDim / 2; i++) f[i] = Math.pow(theta, -(2 * i) / headDim);
  return wrap(N().fromBuffer(f, [headDim / 2], 'f32', device));
}

/** Rotates x [B, H, T, D] by position (rotate-half convention of LLaMA and GPT-NeoX). */
export function rotaryEmbedding(x: Tensor, positions: Tensor, invFreq: Tensor): Tensor {
  check(isInt(positions.dtype), 'E_DTYPE', `rotary: positions must be i32 or i64, got ${positions.dtype}`);
  const { dtype, device } = x;
  const shape = x.shape;
  const y = fresh(N().rotary(x.handle, positions.handle, invFreq.handle, false), shape.slice(), dtype, device);
  record('rotary', [x], [y], ([g]) => [fresh(N().rotary(g!.handle, positions.handle, invFreq.handle, true), shape.slice(), dtype, device)]);
  return y;
}

export interface DropoutOptions {
  training?: boolean;
  seed?: number | bigint;
}

/** Zeroes elements with probability p and scales the rest by 1/(1-p); identity when not training. */
export function dropout(x: Tensor, p: number, opts: DropoutOptions = {}): Tensor {
  if (!(p >= 0 && p < 1)) throw new SiftError('E_ARG', `dropout: p must be in [0, 1), got ${p}`);
  if (opts.training === false || p === 0) return x;
  const seed = opts.seed ?? drawSeed();
  const { dtype, device } = x;
  const shape = x.shape;
  const y = fresh(N().dropout(x.handle, p, seed), shape.slice(), dtype, device);
  record('dropout', [x], [y], ([g]) => [fresh(N().dropout(g!.handle, p, seed), shape.slice(), g!.dtype, device)]);
  return y;
}
