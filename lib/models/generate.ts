/**
 * Text generation for causal language models: greedy decoding (temperature 0) or seeded sampling
 * with temperature, top-k and top-p, over a KV cache (one token per step after the prompt), stopping
 * at EOS or a length. Prompts of different lengths are left-padded with an attention mask and
 * mask-derived positions, as transformers does. Tokens stream through an async iterator or a
 * callback. Logit processing runs on the host on the last position only.
 */
import { Tensor } from '../engine/tensor';
import { check } from '../engine/errors';
import { tidy } from '../engine/scope';
import { noGrad } from '../autograd/tape';
import { reshape, slice, cast } from '../autograd/shape';
import { PreTrainedModel, KVCache, disposeCache, hostRows } from './common';

export interface GenerateOptions {
  /** Number of tokens to add at most (default 20). */
  maxNewTokens?: number;
  /** 0 (the default) decodes greedily; > 0 samples from softmax(logits / temperature). */
  temperature?: number;
  /** Keep only the k most likely tokens before sampling (0: off). */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches p (1: off). */
  topP?: number;
  /** Seed of the sampler (the same seed gives the same tokens). */
  seed?: number;
  /** Stop a sequence after it emits one of these. */
  eosTokenId?: number | number[] | null;
  /** Padding for left-padded prompts and finished rows (default: pad_token_id, else the first EOS, else 0). */
  padTokenId?: number;
  /** Use the KV cache (default true); false recomputes the whole sequence each step. */
  useCache?: boolean;
  /** Called with the new token of every row after each step; return false to stop early. */
  onToken?: (tokens: number[], step: number) => void | boolean;
}

/** A small seeded generator (splitmix32 mixed, 2^32 period per stream): reproducible across runs and machines. */
export class SeededRandom {
  private state: number;
  constructor(seed = 0) {
    this.state = (Math.floor(seed) ^ 0x9e3779b9) >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x9e3779b9) >>> 0;
    let z = this.state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    z = (z ^ (z >>> 16)) >>> 0;
    return z / 4294967296;
  }
}

/** Index of the largest value (the lowest index on ties). */
export function argmaxOf(v: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
  return best;
}

/** Draws one token from logits with temperature, top-k then top-p (transformers' order). */
export function sampleToken(
  logits: ArrayLike<number>,
  opts: { temperature: number; topK?: number; topP?: number },
  rng: SeededRandom,
): number {
  const { temperature } = opts;
  if (!(temperature > 0)) return argmaxOf(logits);
  const V = logits.length;
  let idx = Array.from({ length: V }, (_, i) => i).filter((i) => Number.isFinite(logits[i]) || logits[i] === Infinity);
  idx.sort((a, b) => logits[b] - logits[a] || a - b);
  const topK = opts.topK ?? 0;
  if (topK > 0 && topK < idx.length) {
    // Keep ties with the k-th value, as transformers' `logits < kth value` filter does.
    const kth = logits[idx[topK - 1]];
    idx = idx.filter((i, r) => r < topK || logits[i] === kth);
  }
  if (idx.length === 0) return argmaxOf(logits);
  const m = logits[idx[0]] / temperature;
  const w = idx.map((i) => Math.exp(logits[i] / temperature - m));
  let total = w.reduce((a, b) => a + b, 0);
  const topP = opts.topP ?? 1;
  let n = idx.length;
  if (topP < 1) {
    let cum = 0;
    n = 0;
    while (n < idx.length && cum < topP * total) cum += w[n++];
    n = Math.max(n, 1);
    total = w.slice(0, n).reduce((a, b) => a + b, 0);
  }
  let u = rng.next() * total;
  for (let r = 0; r < n; r++) {
    u -= w[r];
    if (u < 0) return idx[r];
  }
  return idx[n - 1];
}

/**
 * Generates tokens, yielding the new token of every row after each step. Rows that finished
 * (emitted EOS) yield the padding token until all are done.
 */
export async function* generateStream(
  model: PreTrainedModel,
  inputIds: number[][] | number[] | Tensor,
  opts: GenerateOptions = {},
): AsyncGenerator<number[]> {
  check(model.task === 'causal-lm', 'E_ARG', `generate: ${model.architecture} is not a causal language model`);
  const maxNew = opts.maxNewTokens ?? 20;
  check(Number.isInteger(maxNew) && maxNew >= 0, 'E_ARG', `generate: maxNewTokens must be a non-negative integer, got ${maxNew}`);
  const temperature = opts.temperature ?? 0;
  check(temperature >= 0, 'E_ARG', `generate: temperature must be >= 0, got ${temperature}`);
  const topP = opts.topP ?? 1;
  check(topP > 0 && topP <= 1, 'E_ARG', `generate: topP must be in (0, 1], got ${topP}`);
  const topK = opts.topK ?? 0;
  check(Number.isInteger(topK) && topK >= 0, 'E_ARG', `generate: topK must be a non-negative integer, got ${topK}`);
  const eos = new Set(
    opts.eosTokenId === null || opts.eosTokenId === undefined ? [] : Array.isArray(opts.eosTokenId) ? opts.eosTokenId : [opts.eosTokenId],
  );
  const cfgPad = typeof model.config.pad_token_id === 'number' ? model.config.pad_token_id : undefined;
  const pad = opts.padTokenId ?? cfgPad ?? (eos.size ? [...eos][0] : 0);
  const useCache = opts.useCache !== false;
  const rng = new SeededRandom(opts.seed ?? 0);

  // Left-pad ragged prompts; mask-derived positions (pad positions get 1, as transformers).
  const prompts =
    inputIds instanceof Tensor
      ? hostRows(inputIds, 'inputIds')
      : Array.isArray(inputIds[0])
        ? (inputIds as number[][])
        : [inputIds as number[]];
  check(prompts.length > 0 && prompts.every((r) => r.length > 0), 'E_ARG', 'generate: every prompt needs at least one token');
  const T0 = Math.max(...prompts.map((r) => r.length));
  const seqs = prompts.map((r) => [...new Array(T0 - r.length).fill(pad), ...r]);
  const mask = prompts.map((r) => [...new Array(T0 - r.length).fill(0), ...new Array(r.length).fill(1)]);
  const padded = prompts.some((r) => r.length < T0);
  const positionsOf = (m: number[][]) =>
    m.map((row) => {
      let c = 0;
      return row.map((v) => (v ? c++ : 1));
    });

  const flags = model.namedModules().map(([, m]) => m.training);
  model.eval();
  let cache: KVCache | undefined;
  const done = prompts.map(() => false);
  try {
    for (let step = 0; step < maxNew; step++) {
      const first = step === 0 || !useCache;
      const ids = first ? seqs : seqs.map((s) => [s[s.length - 1]]);
      const pos = padded ? positionsOf(mask).map((r) => (first ? r : [r[r.length - 1]])) : undefined;
      const prevCache = cache;
      const res = tidy(() =>
        noGrad(() => {
          const out = model.forward({
            inputIds: ids,
            attentionMask: padded ? mask : null,
            positionIds: pos,
            cache: first ? null : prevCache,
            useCache,
          });
          const [B, T, V] = out.logits.shape;
          const last = reshape(slice(out.logits, 1, T - 1, T), [B, V]);
          return { last: last.dtype === 'f32' ? last.contiguous() : cast(last, 'f32'), cache: useCache ? out.cache : undefined };
        }),
      );
      if (prevCache && prevCache !== res.cache) disposeCache(prevCache);
      cache = res.cache;
      const V = res.last.shape[1];
      const flat = (await res.last.data()) as Float32Array;
      res.last.dispose();
      const tokens = seqs.map((_, b) => {
        if (done[b]) return pad;
        const row = flat.subarray(b * V, (b + 1) * V);
        const tok = sampleToken(row, { temperature, topK, topP }, rng);
        if (eos.has(tok)) done[b] = true;
        return tok;
      });
      seqs.forEach((s, b) => s.push(tokens[b]));
      mask.forEach((m) => m.push(1));
      if (!useCache) disposeCache(cache);
      yield tokens;
      if (opts.onToken && opts.onToken(tokens, step) === false) break;
      if (done.every(Boolean)) break;
    }
  } finally {
    disposeCache(cache);
    model.namedModules().forEach(([, m], i) => (m.training = flags[i]));
  }
}

/**
 * Generates up to maxNewTokens tokens per prompt. Returns, per prompt, its tokens followed by the
 * generated ones (up to and including EOS, without padding).
 */
export async function generate(
  model: PreTrainedModel,
  inputIds: number[][] | number[] | Tensor,
  opts: GenerateOptions = {},
): Promise<number[][]> {
  const prompts =
    inputIds instanceof Tensor
      ? hostRows(inputIds, 'inputIds')
      : Array.isArray(inputIds[0])
        ? (inputIds as number[][])
        : [inputIds as number[]];
  const out = prompts.map((r) => [...r]);
  const eos = new Set(
    opts.eosTokenId === null || opts.eosTokenId === undefined ? [] : Array.isArray(opts.eosTokenId) ? opts.eosTokenId : [opts.eosTokenId],
  );
  const done = prompts.map(() => false);
  for await (const tokens of generateStream(model, inputIds, opts)) {
    tokens.forEach((t, b) => {
      if (done[b]) return;
      out[b].push(t);
      if (eos.has(t)) done[b] = true;
    });
  }
  return out;
}
