/**
 * The float64 attention reference the attention tests share, and their cases' inputs and masks.
 */
import { tensor, Tensor } from '../../lib';
import { randomTensor } from './gradcheck';
import { keeps } from './dropout-ref';

export interface RefOpts {
  causal?: boolean;
  scale?: number;
  softcap?: number;
  window?: number;
  pad?: number[]; // [B, Tk], 1 = attend
  add?: { data: number[]; shape: number[] }; // broadcastable to [B, H, Tq, Tk]
  dropoutP?: number;
  seed?: number;
}

/** Whether query i (of Tq, aligned to the end of Tk keys) sees key j: transformers' sliding_window_causal_mask_function. */
export function visible(i: number, j: number, Tq: number, Tk: number, o: RefOpts): boolean {
  const a = i + Tk - Tq; // absolute position of the query
  if (o.causal && j > a) return false;
  if (o.window && a - j >= o.window) return false;
  return true;
}

/**
 * Forward (out, lse) and, given the output gradient g, the input gradients, in float64 loops:
 * transformers' eager order (scores * scale, then softcap * tanh(. / softcap), then the masks,
 * softmax, dropout with the mask regenerated from the seed).
 */
export function attentionReference(
  q: number[],
  k: number[],
  v: number[],
  g: number[] | null,
  [B, H, Tq, D]: number[],
  [Hkv, Tk]: number[],
  o: RefOpts,
) {
  const scale = o.scale ?? 1 / Math.sqrt(D);
  const out = new Array(B * H * Tq * D).fill(0);
  const lse = new Array(B * H * Tq).fill(-Infinity);
  const gq = new Array(q.length).fill(0),
    gk = new Array(k.length).fill(0),
    gv = new Array(v.length).fill(0);
  const addAt = (b: number, h: number, i: number, j: number): number => {
    if (!o.add) return 0;
    const idx = [b, h, i, j];
    const shp = o.add.shape;
    let off = 0;
    let stride = 1;
    for (let d = shp.length - 1; d >= 0; d--) {
      if (shp[d] !== 1) off += idx[4 - shp.length + d] * stride;
      stride *= shp[d];
    }
    return o.add.data[off];
  };
  const qi = (b: number, h: number, i: number) => ((b * H + h) * Tq + i) * D;
  const kj = (b: number, hk: number, j: number) => ((b * Hkv + hk) * Tk + j) * D;
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++) {
      const hk = Math.floor(h / (H / Hkv));
      for (let i = 0; i < Tq; i++) {
        const row = (b * H + h) * Tq + i;
        const s: number[] = [],
          dcap: number[] = [];
        for (let j = 0; j < Tk; j++) {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[qi(b, h, i) + d] * k[kj(b, hk, j) + d];
          let x = dot * scale;
          let dc = 1;
          if (o.softcap) {
            const t = Math.tanh(x / o.softcap);
            x = o.softcap * t;
            dc = 1 - t * t;
          }
          x += addAt(b, h, i, j);
          if (!visible(i, j, Tq, Tk, o)) x = -Infinity;
          if (o.pad && !o.pad[b * Tk + j]) x = -Infinity;
          s.push(x);
          dcap.push(dc);
        }
        const m = Math.max(...s);
        if (m === -Infinity) continue;
        const e = s.map((x) => Math.exp(x - m));
        const sum = e.reduce((a, c) => a + c, 0);
        lse[row] = m + Math.log(sum);
        const P = e.map((x) => x / sum);
        const Z = P.map((_, j) => (o.dropoutP ? (keeps(o.seed!, row * Tk + j, o.dropoutP) ? 1 / (1 - o.dropoutP) : 0) : 1));
        for (let j = 0; j < Tk; j++) for (let d = 0; d < D; d++) out[row * D + d] += P[j] * Z[j] * v[kj(b, hk, j) + d];
        if (!g) continue;
        // dP_j = Z_j dO . v_j; dS_j = P_j (dP_j - sum_l P_l dP_l); the raw score gradient is dS (1 - tanh^2).
        const dP = P.map((_, j) => {
          let acc = 0;
          for (let d = 0; d < D; d++) acc += g[row * D + d] * v[kj(b, hk, j) + d];
          return acc * Z[j];
        });
        const delta = P.reduce((acc, p, j) => acc + p * dP[j], 0);
        for (let j = 0; j < Tk; j++) {
          const ds = P[j] * (dP[j] - delta) * dcap[j] * scale;
          for (let d = 0; d < D; d++) {
            gq[qi(b, h, i) + d] += ds * k[kj(b, hk, j) + d];
            gk[kj(b, hk, j) + d] += ds * q[qi(b, h, i) + d];
            gv[kj(b, hk, j) + d] += P[j] * Z[j] * g[row * D + d];
          }
        }
      }
    }
  return { out, lse, gq, gk, gv };
}

export const nums = (t: Tensor) => Array.from(t.toArray() as ArrayLike<number>, Number);

/** One attention case: shapes [B, H, Tq, D] for q and [B, Hkv, Tk, D] for k and v, and its options. */
export interface Case {
  name: string;
  B: number;
  H: number;
  Hkv: number;
  Tq: number;
  Tk: number;
  D: number;
  causal?: boolean;
  softcap?: number;
  window?: number;
  pad?: number[];
  add?: { data: number[]; shape: number[] };
  dropoutP?: number;
}

/** q, k, v of a case (seeds 11, 12, 13); q and k scaled by qkScale. */
export function makeInputs(c: Case, qkScale: number, dtype = 'f64', requiresGrad = false) {
  const q = randomTensor([c.B, c.H, c.Tq, c.D], 11, { dtype, requiresGrad, scale: qkScale });
  const k = randomTensor([c.B, c.Hkv, c.Tk, c.D], 12, { dtype, requiresGrad, scale: qkScale });
  const v = randomTensor([c.B, c.Hkv, c.Tk, c.D], 13, { dtype, requiresGrad });
  return { q, k, v };
}

/** The case's padding mask (bool [B, Tk]) or additive mask, or null. */
export function maskTensor(c: Case, dtype = 'f64', device = 'cpu'): Tensor | null {
  if (c.pad) return tensor(c.pad, [c.B, c.Tk], { dtype: 'bool', device });
  if (c.add) return tensor(c.add.data, c.add.shape, { dtype, device });
  return null;
}
