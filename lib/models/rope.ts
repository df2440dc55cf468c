/**
 * Rotary position embeddings as transformers' modeling_rope_utils.py computes them: the inverse
 * frequencies of the rotated features (rotary_dim = head_dim * partial_rotary_factor) in f32, and
 * the attention factor that multiplies cos and sin, for rope_scaling types default, linear,
 * dynamic, yarn, longrope (and Phi-3's older name for it, su) and llama3. Anything else is refused
 * by name.
 *
 * Two types depend on the sequence at run time, as transformers' rotary modules do: 'dynamic'
 * recomputes the base from the longest position seen in the forward when it exceeds
 * max_position_embeddings, and 'longrope' uses long_factor when the forward reaches past
 * original_max_position_embeddings, short_factor otherwise.
 */
import { SiftError } from '../engine/errors';
import type { HFConfig } from './common';

export type RopeType = 'default' | 'linear' | 'dynamic' | 'yarn' | 'longrope' | 'llama3';

export interface RopeSpec {
  type: RopeType;
  theta: number;
  /** Features rotated per head (the first rotaryDim of head_dim). */
  rotaryDim: number;
  /** max_position_embeddings of the config. */
  maxPositions: number;
  /** rope_scaling as given (null for none). */
  scaling: Record<string, unknown> | null;
  /** Multiplies cos and sin (yarn, longrope); 1 otherwise. */
  attentionFactor: number;
  /** longrope: original_max_position_embeddings, the length past which long_factor applies. */
  originalMax: number;
}

const SUPPORTED = 'default, linear, dynamic, yarn, longrope (su), llama3';

function num(rs: Record<string, unknown>, key: string, dflt?: number): number {
  const v = rs[key];
  if (v === undefined || v === null) {
    if (dflt === undefined) throw new SiftError('E_ARG', `config.json: rope_scaling needs '${key}'`);
    return dflt;
  }
  if (typeof v !== 'number' || !Number.isFinite(v))
    throw new SiftError('E_ARG', `config.json: rope_scaling.${key} must be a number, got ${JSON.stringify(v)}`);
  return v;
}

function factorList(rs: Record<string, unknown>, key: string, n: number): number[] {
  const v = rs[key];
  if (!Array.isArray(v) || v.length !== n || !v.every((x) => typeof x === 'number' && Number.isFinite(x) && x > 0)) {
    throw new SiftError('E_ARG', `config.json: rope_scaling.${key} must be a list of ${n} positive numbers (rotary dim / 2)`);
  }
  return v as number[];
}

/**
 * The config with rope_theta, rope_scaling and partial_rotary_factor as transformers 4 writes
 * them. transformers 5 saves them in one `rope_parameters` object ({rope_type, rope_theta, factor,
 * ...}); where it is present it decides. Per-layer-type rope parameters (an object per attention
 * type) are refused by name.
 */
export function ropeFields(cfg: HFConfig): HFConfig {
  const rp = cfg.rope_parameters;
  if (rp === undefined || rp === null) return cfg;
  if (typeof rp !== 'object' || Array.isArray(rp))
    throw new SiftError('E_ARG', `config.json: rope_parameters must be an object or null, got ${JSON.stringify(rp)}`);
  const r = rp as Record<string, unknown>;
  const nested = Object.keys(r).filter((k) => r[k] !== null && typeof r[k] === 'object' && !Array.isArray(r[k]));
  if (nested.length)
    throw new SiftError('E_UNSUPPORTED', `config.json: rope_parameters per layer type (${nested.join(', ')}) are not supported`);
  const out: HFConfig = { ...cfg };
  if (r.rope_theta !== undefined) out.rope_theta = r.rope_theta;
  if (r.partial_rotary_factor !== undefined) out.partial_rotary_factor = r.partial_rotary_factor;
  const { rope_theta: _t, partial_rotary_factor: _p, ...scaling } = r;
  const type = scaling.rope_type ?? scaling.type ?? 'default';
  out.rope_scaling = type === 'default' ? null : scaling;
  return out;
}

/** The rope of a decoder config (head_dim is the model's, partial_rotary_factor applied here). */
export function ropeSpec(cfg: HFConfig, headDim: number, theta: number, maxPositions: number): RopeSpec {
  const prf = cfg.partial_rotary_factor ?? 1;
  if (typeof prf !== 'number' || !(prf > 0 && prf <= 1))
    throw new SiftError('E_ARG', `config.json: partial_rotary_factor must be in (0, 1], got ${JSON.stringify(prf)}`);
  const rotaryDim = Math.floor(headDim * prf);
  if (rotaryDim % 2 !== 0 || rotaryDim === 0)
    throw new SiftError(
      'E_ARG',
      `config.json: rotary dim ${rotaryDim} (head_dim ${headDim} x partial_rotary_factor ${prf}) must be even and positive`,
    );
  const raw = cfg.rope_scaling;
  if (raw !== undefined && raw !== null && (typeof raw !== 'object' || Array.isArray(raw)))
    throw new SiftError('E_ARG', `config.json: rope_scaling must be an object or null, got ${JSON.stringify(raw)}`);
  const rs = (raw ?? null) as Record<string, unknown> | null;
  let type = String(rs ? (rs.rope_type ?? rs.type ?? 'default') : 'default');
  if (type === 'su') type = 'longrope';
  const spec: RopeSpec = {
    type: type as RopeType,
    theta,
    rotaryDim,
    maxPositions,
    scaling: rs,
    attentionFactor: 1,
    originalMax: maxPositions,
  };
  switch (type) {
    case 'default':
      return spec;
    case 'linear':
    case 'dynamic':
      num(rs!, 'factor');
      return spec;
    case 'llama3':
      num(rs!, 'factor');
      return spec;
    case 'yarn': {
      let factor = num(rs!, 'factor');
      const orig = rs!.original_max_position_embeddings;
      if (typeof orig === 'number') {
        // transformers: with original_max_position_embeddings the factor is the ratio of the lengths.
        factor = maxPositions / orig;
      }
      let af = rs!.attention_factor as number | null | undefined;
      if (af === undefined || af === null) {
        const mscale = (s: number, m = 1) => (s <= 1 ? 1 : 0.1 * m * Math.log(s) + 1);
        const m = rs!.mscale as number | undefined,
          mall = rs!.mscale_all_dim as number | undefined;
        af = m && mall ? mscale(factor, m) / mscale(factor, mall) : mscale(factor);
      }
      spec.attentionFactor = Number(af);
      return spec;
    }
    case 'longrope': {
      factorList(rs!, 'short_factor', rotaryDim / 2);
      factorList(rs!, 'long_factor', rotaryDim / 2);
      const topOrig = cfg.original_max_position_embeddings;
      let factor: number;
      let orig: number;
      if (typeof topOrig === 'number' && topOrig > 0) {
        orig = topOrig;
        factor = maxPositions / topOrig;
      } else {
        orig = maxPositions;
        factor = num(rs!, 'factor', 1);
      }
      spec.originalMax = orig;
      let af = rs!.attention_factor as number | null | undefined;
      if (af === undefined || af === null) af = factor <= 1 ? 1 : Math.sqrt(1 + Math.log(factor) / Math.log(orig));
      spec.attentionFactor = Number(af);
      return spec;
    }
    default:
      throw new SiftError('E_UNSUPPORTED', `rope_scaling type '${type}' is not supported (supported: ${SUPPORTED})`);
  }
}

/** 1 / base^(2i/d) in f32 as transformers computes it (torch.arange(0, d, 2).float() / d, then pow, then reciprocal). */
function baseInvFreq(base: number, d: number): Float32Array {
  const f = new Float32Array(d / 2);
  const b = Math.fround(base);
  for (let i = 0; i < d / 2; i++) f[i] = Math.fround(1 / Math.fround(Math.pow(b, Math.fround((2 * i) / d))));
  return f;
}

/**
 * The key of the inverse frequencies a forward uses, given the largest position it reaches plus
 * one (transformers' seq_len = max(position_ids) + 1). Forwards with the same key share them.
 */
export function ropeVariant(spec: RopeSpec, seqLen: number): string {
  if (spec.type === 'dynamic') return seqLen > spec.maxPositions ? `dynamic:${seqLen}` : 'base';
  if (spec.type === 'longrope') return seqLen > spec.originalMax ? 'long' : 'short';
  return 'base';
}

/** True when the frequencies depend on the sequence length. */
export function ropeIsDynamic(spec: RopeSpec): boolean {
  return spec.type === 'dynamic' || spec.type === 'longrope';
}

/** Inverse frequencies (f32, rotaryDim / 2 of them) for a forward whose positions reach seqLen - 1. */
export function ropeInvFreq(spec: RopeSpec, seqLen = 0): Float32Array {
  const d = spec.rotaryDim;
  const rs = spec.scaling;
  switch (spec.type) {
    case 'default':
      return baseInvFreq(spec.theta, d);
    case 'linear': {
      const factor = num(rs!, 'factor');
      return baseInvFreq(spec.theta, d).map((v) => v / factor);
    }
    case 'dynamic': {
      const factor = num(rs!, 'factor');
      const L = Math.max(seqLen, spec.maxPositions);
      const base = spec.theta * Math.pow((factor * L) / spec.maxPositions - (factor - 1), d / (d - 2));
      return baseInvFreq(base, d);
    }
    case 'yarn': {
      let factor = num(rs!, 'factor');
      const origRaw = rs!.original_max_position_embeddings;
      const orig = typeof origRaw === 'number' ? origRaw : spec.maxPositions;
      if (typeof origRaw === 'number') factor = spec.maxPositions / origRaw;
      const betaFast = (rs!.beta_fast as number) || 32;
      const betaSlow = (rs!.beta_slow as number) || 1;
      const truncate = rs!.truncate === undefined || rs!.truncate === null ? true : !!rs!.truncate;
      const corr = (rot: number) => (d * Math.log(orig / (rot * 2 * Math.PI))) / (2 * Math.log(spec.theta));
      let low = corr(betaFast);
      let high = corr(betaSlow);
      if (truncate) {
        low = Math.floor(low);
        high = Math.ceil(high);
      }
      low = Math.max(low, 0);
      high = Math.min(high, d - 1);
      if (low === high) high += 0.001;
      const out = new Float32Array(d / 2);
      const b = Math.fround(spec.theta);
      for (let i = 0; i < d / 2; i++) {
        const pos = Math.fround(Math.pow(b, Math.fround((2 * i) / d)));
        const extra = Math.fround(1 / pos);
        const inter = Math.fround(1 / Math.fround(factor * pos));
        const ramp = Math.fround(Math.min(1, Math.max(0, Math.fround(Math.fround(i - low) / Math.fround(high - low)))));
        const extraFactor = Math.fround(1 - ramp);
        out[i] = Math.fround(Math.fround(inter * Math.fround(1 - extraFactor)) + Math.fround(extra * extraFactor));
      }
      return out;
    }
    case 'longrope': {
      const ext = factorList(rs!, seqLen > spec.originalMax ? 'long_factor' : 'short_factor', d / 2);
      const out = new Float32Array(d / 2);
      const b = Math.fround(spec.theta);
      for (let i = 0; i < d / 2; i++)
        out[i] = Math.fround(1 / Math.fround(Math.fround(ext[i]) * Math.fround(Math.pow(b, Math.fround((2 * i) / d)))));
      return out;
    }
    case 'llama3': {
      const f = baseInvFreq(spec.theta, d);
      const factor = num(rs!, 'factor');
      const low = num(rs!, 'low_freq_factor', 1);
      const high = num(rs!, 'high_freq_factor', 4);
      const oldCtx = num(rs!, 'original_max_position_embeddings', 8192);
      const lowWave = oldCtx / low;
      const highWave = oldCtx / high;
      return f.map((v) => {
        const wave = (2 * Math.PI) / v;
        if (wave < highWave) return v;
        if (wave > lowWave) return v / factor;
        const smooth = (oldCtx / wave - low) / (high - low);
        return (1 - smooth) * (v / factor) + smooth * v;
      });
    }
  }
}
