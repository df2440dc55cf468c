/**
 * Quantized weights against a reference written here (float64 host code that follows
 * bitsandbytes' definitions with float32 rounding where the kernels round): int8 codes and row
 * absmax, NF4 codes (two per byte, first element in the high nibble), double-quantized block
 * absmax, dequantized values and their error bounds; the quantized linear product and its input
 * gradient against the dense product on the dequantized weight (one tile and several tiles);
 * models with quantized Linear layers; CUDA against the CPU.
 */
import {
  Tensor,
  tidy,
  SiftError,
  QuantizedWeight,
  quantLinear,
  quantizedBytes,
  linear,
  backward,
  toDevice,
  createModel,
  liveTensors,
  stateDict,
  loadStateDictInto,
  tensor,
} from '../../lib';
import type { TrainedEntries } from '../../lib/autograd/quant';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { native } from '../../lib/engine/native';
import { loadModel } from '../../lib/load';
import { saveModelFolder } from '../../lib/io/hf';
import type { PreTrainedModel } from '../../lib/models/common';
import { randomTensor, expectClose, describeCuda } from '../helpers/gradcheck';

const f = Math.fround;
const NF4 = [
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334, -0.09105003625154495,
  0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
  0.7229568362236023, 1.0,
].map(f);

/** bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8) in float32 steps. */
function dynamicMap(): number[] {
  const lin = (a: number, b: number, n: number) => {
    const step = f((f(b) - f(a)) / (n - 1));
    return Array.from({ length: n }, (_, i) => (i < n >> 1 ? f(f(a) + f(step * i)) : f(f(b) - f(step * (n - 1 - i)))));
  };
  const data: number[] = [];
  for (let i = 0; i < 7; i++) {
    const b = lin(0.1, 1, 2 ** i + 1);
    const s = f(10 ** (-6 + i));
    for (let j = 0; j + 1 < b.length; j++) {
      const mean = f(f(b[j] + b[j + 1]) / 2);
      data.push(f(s * mean), f(-s * mean));
    }
  }
  data.push(0, 1);
  return data.sort((a, b) => a - b);
}
const DYN = dynamicMap();

function nearest(table: number[], x: number, lowerOnTie: 'mid' | 'dist'): number {
  if (lowerOnTie === 'mid') {
    let c = 0;
    for (let i = 1; i < table.length; i++) if (x > f(f(table[i - 1] + table[i]) * 0.5)) c = i;
    return c;
  }
  let best = 0;
  for (let i = 1; i < table.length; i++) if (Math.abs(x - table[i]) < Math.abs(x - table[best])) best = i;
  return best;
}

function refInt8(w: Float32Array, R: number, C: number) {
  const q = new Int8Array(R * C),
    absmax = new Float32Array(R),
    deq = new Float64Array(R * C);
  for (let r = 0; r < R; r++) {
    let m = 0;
    for (let c = 0; c < C; c++) m = Math.max(m, Math.abs(w[r * C + c]));
    absmax[r] = m;
    const inv = m > 0 ? f(127 / m) : 0;
    const s = f(m / 127);
    for (let c = 0; c < C; c++) {
      const x = f(w[r * C + c] * inv);
      let v = Math.round(x);
      if (Math.abs(x - Math.trunc(x)) === 0.5) v = 2 * Math.round(x / 2); // half to even
      q[r * C + c] = Math.max(-127, Math.min(127, v));
      deq[r * C + c] = f(q[r * C + c] * s);
    }
  }
  return { q, absmax, deq };
}

function refNf4(w: Float32Array) {
  const n = w.length,
    nb = Math.ceil(n / 64),
    nb2 = Math.ceil(nb / 256);
  const packed = new Uint8Array(Math.ceil(n / 2)),
    amax = new Float32Array(nb);
  for (let b = 0; b < nb; b++) {
    let m = 0;
    for (let i = b * 64; i < Math.min(n, b * 64 + 64); i++) m = Math.max(m, Math.abs(w[i]));
    amax[b] = m;
    const inv = m > 0 ? f(1 / m) : 0;
    for (let i = b * 64; i < Math.min(n, b * 64 + 64); i++) {
      const c = nearest(NF4, f(w[i] * inv), 'mid');
      packed[i >> 1] |= i % 2 === 0 ? c << 4 : c;
    }
  }
  let sum = 0;
  for (const m of amax) sum += m;
  const offset = f(sum / nb);
  const aq = new Uint8Array(nb),
    ascale = new Float32Array(nb2);
  for (let b2 = 0; b2 < nb2; b2++) {
    let m = 0;
    for (let i = b2 * 256; i < Math.min(nb, b2 * 256 + 256); i++) m = Math.max(m, Math.abs(f(amax[i] - offset)));
    ascale[b2] = m;
    const inv = m > 0 ? f(1 / m) : 0;
    for (let i = b2 * 256; i < Math.min(nb, b2 * 256 + 256); i++) aq[i] = nearest(DYN, f(f(amax[i] - offset) * inv), 'dist');
  }
  const deq = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const b = Math.floor(i / 64);
    const m = f(f(DYN[aq[b]] * ascale[b >> 8]) + offset);
    const code = i % 2 === 0 ? packed[i >> 1] >> 4 : packed[i >> 1] & 15;
    deq[i] = f(NF4[code] * m);
  }
  return { packed, aq, ascale, offset, amax, deq };
}

function stateArrays(q: QuantizedWeight): ArrayLike<number>[] {
  return q.handles.map((h) => new Tensor(h).toArray() as unknown as ArrayLike<number>);
}

describe('quantize / dequantize (CPU) vs the reference', () => {
  test.each([
    [3, 5],
    [16, 64],
    [7, 300],
    [40, 129],
  ])('int8 [%i, %i]: codes, absmax, values, error bound', (R, C) =>
    tidy(() => {
      const w = randomTensor([R, C], R * 31 + C, { dtype: 'f32' });
      const wa = w.toArray() as Float32Array;
      const ref = refInt8(wa, R, C);
      const q = QuantizedWeight.from(w, 'int8');
      const [codes, absmax] = stateArrays(q);
      expect(Array.from(new Int8Array(Uint8Array.from(codes).buffer))).toEqual(Array.from(ref.q));
      expectClose(absmax, ref.absmax, { atol: 0, rtol: 0 });
      const d = q.dequantize();
      expect(d.shape).toEqual([R, C]);
      const da = d.toArray() as Float32Array;
      expectClose(da, ref.deq, { atol: 0, rtol: 0 });
      let worst = -Infinity;
      for (let r = 0; r < R; r++)
        for (let c = 0; c < C; c++) {
          worst = Math.max(worst, Math.abs(da[r * C + c] - wa[r * C + c]) - ((ref.absmax[r] / 254) * (1 + 1e-5) + 1e-12));
        }
      expect(worst).toBeLessThanOrEqual(0);
      expect(q.bytes).toBe(quantizedBytes('int8', R, C));
      q.dispose();
    }),
  );

  test.each([
    [1, 7],
    [4, 64],
    [33, 129],
    [300, 300],
  ])('nf4 [%i, %i]: packed codes, double-quantized absmax, values, error bound', (R, C) =>
    tidy(() => {
      const w = randomTensor([R, C], R * 7 + C, { dtype: 'f32', scale: 0.3 });
      const wa = w.toArray() as Float32Array;
      const ref = refNf4(wa);
      const q = QuantizedWeight.from(w, 'nf4');
      const [packed, aq, ascale, offset] = stateArrays(q);
      expect(Array.from(packed)).toEqual(Array.from(ref.packed));
      expect(Array.from(aq)).toEqual(Array.from(ref.aq));
      expectClose(ascale, ref.ascale, { atol: 0, rtol: 0 });
      expectClose(offset, [ref.offset], { atol: 0, rtol: 1e-7 });
      const da = q.dequantize().toArray() as Float32Array;
      expectClose(da, ref.deq, { atol: 1e-7, rtol: 1e-6 });
      // Error bound: half the widest NF4 gap (0.3038) times the block absmax, plus the absmax error.
      let worst = -Infinity;
      for (let i = 0; i < wa.length; i++) {
        const m = ref.amax[Math.floor(i / 64)];
        worst = Math.max(worst, Math.abs(da[i] - wa[i]) - (m * (0.3038 / 2) + m * 0.02 + 1e-6));
      }
      expect(worst).toBeLessThanOrEqual(0);
      expect(q.bytes).toBe(quantizedBytes('nf4', R, C));
      q.dispose();
    }),
  );

  test('all-zero rows and blocks dequantize to zeros', () =>
    tidy(() => {
      const z = randomTensor([4, 128], 3, { dtype: 'f32', scale: 0 });
      for (const fmt of ['int8', 'nf4'] as const) {
        const q = QuantizedWeight.from(z, fmt);
        expect(Array.from(q.dequantize().toArray() as Float32Array).every((v) => v === 0)).toBe(true);
        q.dispose();
      }
    }));

  test('bad input is a SiftError', () =>
    tidy(() => {
      expect(() => QuantizedWeight.from(randomTensor([8], 1, { dtype: 'f32' }), 'int8')).toThrow(SiftError);
      expect(() => QuantizedWeight.from(randomTensor([2, 8], 1, { dtype: 'f32' }), 'int4' as never)).toThrow(/int8' or 'nf4/);
      const q = QuantizedWeight.from(randomTensor([4, 8], 1, { dtype: 'f32' }), 'nf4');
      expect(() => quantLinear(randomTensor([2, 7], 2, { dtype: 'f32' }), q)).toThrow(/does not end in 8 features/);
      q.dispose();
      expect(() => q.dequantize()).toThrow(/disposed/);
    }));
});

describe('quantLinear vs the dense product on the dequantized weight', () => {
  // [rows, cols]: one tile, and 1100 x 1024 (> 2^20 elements: several CPU tiles).
  test.each([
    ['int8', 24, 40],
    ['nf4', 24, 40],
    ['int8', 1100, 1024],
    ['nf4', 1100, 1024],
  ] as const)('%s [%i, %i]: forward, input and bias gradients', (fmt, R, C) =>
    tidy(() => {
      const w = randomTensor([R, C], 5, { dtype: 'f32', scale: 0.05 });
      const q = QuantizedWeight.from(w, fmt);
      const wd = q.dequantize();
      const x = randomTensor([3, 5, C], 6, { dtype: 'f32', requiresGrad: true });
      const b = randomTensor([R], 7, { dtype: 'f32', requiresGrad: true });
      const y = quantLinear(x, q, b);
      expect(y.shape).toEqual([3, 5, R]);
      const g = randomTensor([3, 5, R], 8, { dtype: 'f32' });
      const [gx, gb] = backwardGrads(y, g, [x, b]);
      const x2 = randomTensor([3, 5, C], 6, { dtype: 'f32', requiresGrad: true });
      const b2 = randomTensor([R], 7, { dtype: 'f32', requiresGrad: true });
      const y2 = linear(x2, wd, b2);
      const [gx2, gb2] = backwardGrads(y2, g, [x2, b2]);
      const tol = { atol: 2e-5 * Math.sqrt(C / 40), rtol: 1e-4 };
      expectClose(y.toArray() as Float32Array, y2.toArray() as Float32Array, tol);
      expectClose(gx.toArray() as Float32Array, gx2.toArray() as Float32Array, { atol: 2e-5 * Math.sqrt(R / 24), rtol: 1e-4 });
      expectClose(gb.toArray() as Float32Array, gb2.toArray() as Float32Array, { atol: 1e-5, rtol: 1e-5 });
      q.dispose();
    }),
  );

  test('bf16 input gives a bf16 output', () =>
    tidy(() => {
      const q = QuantizedWeight.from(randomTensor([6, 64], 1, { dtype: 'f32' }), 'nf4');
      const x = randomTensor([2, 64], 2, { dtype: 'bf16' });
      const y = quantLinear(x, q);
      expect(y.dtype).toBe('bf16');
      expect(y.shape).toEqual([2, 6]);
      q.dispose();
    }));
});

/** Sorted distinct flat indices spread over [0, n) (every `step`-th entry, shifted by `start`). */
function spreadIndices(n: number, k: number, dtype: 'i32' | 'i64'): Tensor {
  const step = Math.floor(n / k);
  const v = Array.from({ length: k }, (_, j) => j * step + ((j * 7) % step));
  return tensor(dtype === 'i64' ? BigInt64Array.from(v, BigInt) : Int32Array.from(v), [k], { dtype });
}

describe('quantLinear with trained entries (SIFT on a quantized weight)', () => {
  // 1100 x 1024 spans several CPU tiles: entries on tile boundaries must land in the right tile.
  test.each([
    ['nf4', 40, 64, 'i32'],
    ['int8', 1100, 1024, 'i32'],
    ['nf4', 1100, 1024, 'i64'],
  ] as const)('%s [%i, %i] %s indices: forward, input gradient and the weight gradient at the entries', (fmt, R, C, idt) =>
    tidy(() => {
      const w = randomTensor([R, C], 21, { dtype: 'f32', scale: 0.05 });
      const q = QuantizedWeight.from(w, fmt);
      const k = Math.floor((R * C) / 97);
      const idx = spreadIndices(R * C, k, idt);
      const vals = randomTensor([k], 22, { dtype: 'f32' });
      const marker = randomTensor([k], 23, { dtype: 'f32', requiresGrad: true });
      let gotX: Float32Array | null = null;
      let gotDy: Float32Array | null = null;
      const entries: TrainedEntries = {
        marker,
        entries: () => ({ idx, values: vals }),
        weightGrad: (xs, dys) => {
          gotX = xs.toArray() as Float32Array;
          gotDy = dys.toArray() as Float32Array;
        },
      };
      const x = randomTensor([2, 3, C], 24, { dtype: 'f32', requiresGrad: true });
      const y = quantLinear(x, q, null, entries);
      const g = randomTensor([2, 3, R], 25, { dtype: 'f32' });
      const [gx] = backwardGrads(y, g, [x]);
      // The reference: the dequantized weight with the entries set, as a dense f32 weight.
      const wd = q.dequantize();
      native().scatterInto(wd.handle, idx.handle, vals.handle, 'set');
      wd.requiresGrad = true;
      const x2 = randomTensor([2, 3, C], 24, { dtype: 'f32', requiresGrad: true });
      const y2 = linear(x2, wd, null);
      const [gx2, gw2] = backwardGrads(y2, g, [x2, wd]);
      expectClose(y.toArray() as Float32Array, y2.toArray() as Float32Array, { atol: 2e-5 * Math.sqrt(C / 40), rtol: 1e-4 });
      expectClose(gx.toArray() as Float32Array, gx2.toArray() as Float32Array, { atol: 2e-5 * Math.sqrt(R / 24), rtol: 1e-4 });
      // The factors handed to weightGrad give the weight's gradient: dy^T x.
      expect(gotX).not.toBeNull();
      const M = 6;
      const gw = gw2.toArray() as Float32Array;
      const ix = Array.from(idx.toArray() as ArrayLike<number | bigint>, Number);
      for (const flat of ix.filter((_, j) => j % 13 === 0)) {
        const r = Math.floor(flat / C),
          c = flat % C;
        let s = 0;
        for (let m = 0; m < M; m++) s += gotDy![m * R + r] * gotX![m * C + c];
        expect(Math.abs(s - gw[flat])).toBeLessThan(1e-4);
      }
      q.dispose();
    }),
  );

  test('bad entries are SiftErrors', () =>
    tidy(() => {
      const q = QuantizedWeight.from(randomTensor([8, 16], 1, { dtype: 'f32' }), 'nf4');
      const x = randomTensor([2, 16], 2, { dtype: 'f32' });
      const N = native();
      const idx = tensor(Int32Array.from([1, 5]), [2], { dtype: 'i32' });
      const code = (fn: () => unknown) => {
        try {
          fn();
        } catch (e) {
          return (e as SiftError).code;
        }
        return undefined;
      };
      expect(
        code(() => N.quantLinear(x.handle, q.handles, 'nf4', 8, 16, false, idx.handle, randomTensor([3], 3, { dtype: 'f32' }).handle)),
      ).toBe('E_SHAPE');
      expect(
        code(() =>
          N.quantLinear(
            x.handle,
            q.handles,
            'nf4',
            8,
            16,
            false,
            randomTensor([2], 3, { dtype: 'f32' }).handle,
            randomTensor([2], 3, { dtype: 'f32' }).handle,
          ),
        ),
      ).toBe('E_DTYPE');
      q.dispose();
    }));
});

function backwardGrads(y: Tensor, g: Tensor, wrt: Tensor[]): Tensor[] {
  backward(y, g);
  return wrt.map((t) => t.grad!);
}

describe('models with quantized Linear layers', () => {
  const cfg = {
    model_type: 'llama',
    vocab_size: 64,
    hidden_size: 64,
    intermediate_size: 128,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    max_position_embeddings: 32,
    rms_norm_eps: 1e-5,
    tie_word_embeddings: false,
  };
  test.each(['int8', 'nf4'] as const)(
    '%s: projections quantized, embeddings, norms and head dense; loss close to the dense loss',
    (fmt) => {
      const ref = createModel(cfg, { seed: 3 });
      const model = createModel(cfg, { seed: 3, quantize: fmt });
      expect(model.quantization).toBe(fmt);
      const names = model.namedParameters().map(([n]) => n);
      expect(names).toContain('model.embed_tokens.weight');
      expect(names).toContain('lm_head.weight');
      expect(names.some((n) => n.endsWith('q_proj.weight') || n.endsWith('down_proj.weight'))).toBe(false);
      tidy(() => {
        const ids = [[1, 5, 9, 3, 7, 2]];
        const a = ref.forward({ inputIds: ids, labels: ids });
        const b = model.forward({ inputIds: ids, labels: ids });
        const la = a.loss!.item(),
          lb = b.loss!.item();
        expect(Math.abs(lb - la) / la).toBeLessThan(fmt === 'int8' ? 0.01 : 0.05);
      });
      ref.dispose();
      model.dispose();
    },
  );

  test('loadModel(dir, { quantize }) quantizes after loading; bad options are errors', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-quant-load-'));
    try {
      const m = createModel(cfg, { seed: 4 });
      saveModelFolder(dir, { config: m.config, stateDict: stateDict(m) });
      const loaded = loadModel(dir, { quantize: 'nf4' }) as PreTrainedModel;
      expect(loaded.quantization).toBe('nf4');
      tidy(() => {
        const ids = [[3, 1, 4, 1, 5]];
        const la = m.forward({ inputIds: ids, labels: ids }).loss!.item();
        const lb = loaded.forward({ inputIds: ids, labels: ids }).loss!.item();
        expect(Math.abs(lb - la) / la).toBeLessThan(0.05);
      });
      loaded.dispose();
      m.dispose();
      expect(() => loadModel(dir, { quantize: 'fp8' as never })).toThrow(/int8' or 'nf4/);
      expect(() => loadModel(path.join(dir, 'x.onnx'), { quantize: 'int8' })).toThrow(/ONNX/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('dispose() frees the quantized weights; to() moves them', () => {
    const before = liveTensors().cpu.count;
    const model = createModel(cfg, { seed: 3, quantize: 'nf4' });
    expect(liveTensors().cpu.count).toBeGreaterThan(before);
    model.to('cpu');
    model.dispose();
    expect(liveTensors().cpu.count).toBe(before);
  });

  test('loadModel-style quantize after loading weights: same logits as quantizing the loaded model', () => {
    const a = createModel(cfg, { seed: 5 });
    const b = createModel(cfg, { seed: 9 });
    loadStateDictInto(b, stateDict(a));
    a.quantize('int8');
    b.quantize('int8');
    tidy(() => {
      const ids = [[4, 2, 8]];
      const la = a.forward({ inputIds: ids, labels: ids }).loss!.item();
      const lb = b.forward({ inputIds: ids, labels: ids }).loss!.item();
      expect(lb).toBe(la);
    });
    expect(() => (a.namedModules().find(([p]) => p.endsWith('q_proj'))![1] as unknown as { weight: Tensor }).weight).toThrow(
      /stored quantized/,
    );
    a.dispose();
    b.dispose();
  });
});

describeCuda('quantized weights: CUDA vs CPU', () => {
  test.each([
    ['int8', 70, 100, 5, 'i32'],
    ['nf4', 70, 100, 5, 'i64'],
    ['nf4', 1100, 1024, 67, 'i32'],
    ['int8', 129, 4097, 3, 'i64'],
  ] as const)(
    'fused quantized GEMM (setQuantGemm fused) %s [%i, %i], %i rows of x, %s entries: both products vs the CPU',
    (fmt, R, C, M, idt) =>
      tidy(() => {
        const prev = native().setQuantGemm('fused');
        try {
          const w = randomTensor([R, C], 41, { dtype: 'f32', scale: 0.05 });
          const qc = QuantizedWeight.from(w, fmt);
          const qg = QuantizedWeight.from(toDevice(w, 'cuda'), fmt);
          const k = Math.floor((R * C) / 53);
          const idx = spreadIndices(R * C, k, idt);
          const vals = randomTensor([k], 42, { dtype: 'f32' });
          const idxG = toDevice(idx, 'cuda'),
            valsG = toDevice(vals, 'cuda');
          for (const transpose of [false, true]) {
            const x = randomTensor([M, transpose ? R : C], 43, { dtype: 'f32' });
            const xg = toDevice(x, 'cuda');
            for (const withEntries of [false, true]) {
              const yc = withEntries
                ? new Tensor(native().quantLinear(x.handle, qc.handles, fmt, R, C, transpose, idx.handle, vals.handle))
                : new Tensor(native().quantLinear(x.handle, qc.handles, fmt, R, C, transpose));
              const yg = withEntries
                ? new Tensor(native().quantLinear(xg.handle, qg.handles, fmt, R, C, transpose, idxG.handle, valsG.handle))
                : new Tensor(native().quantLinear(xg.handle, qg.handles, fmt, R, C, transpose));
              expectClose(yg.toArray() as Float32Array, yc.toArray() as Float32Array, {
                atol: 1e-4 * Math.sqrt((transpose ? R : C) / 64),
                rtol: 1e-4,
                label: `transpose=${transpose} entries=${withEntries}`,
              });
            }
          }
          qc.dispose();
          qg.dispose();
        } finally {
          native().setQuantGemm(prev);
        }
      }),
  );

  test('quantLinear with trained entries over several tiles (forward and input gradient)', () =>
    tidy(() => {
      const R = 4200,
        C = 4096; // more than one 2^24-element CUDA tile
      const w = randomTensor([R, C], 31, { dtype: 'f32', scale: 0.05 });
      const qc = QuantizedWeight.from(w, 'nf4');
      const qg = QuantizedWeight.from(toDevice(w, 'cuda'), 'nf4');
      const k = 50000;
      const idx = spreadIndices(R * C, k, 'i32');
      const vals = randomTensor([k], 32, { dtype: 'f32' });
      const idxG = toDevice(idx, 'cuda'),
        valsG = toDevice(vals, 'cuda');
      const x = randomTensor([3, C], 33, { dtype: 'f32' });
      const yc = new Tensor(native().quantLinear(x.handle, qc.handles, 'nf4', R, C, false, idx.handle, vals.handle));
      const yg = new Tensor(native().quantLinear(toDevice(x, 'cuda').handle, qg.handles, 'nf4', R, C, false, idxG.handle, valsG.handle));
      expectClose(yg.toArray() as Float32Array, yc.toArray() as Float32Array, { atol: 2e-4, rtol: 1e-4 });
      const dy = randomTensor([3, R], 34, { dtype: 'f32' });
      const gc = new Tensor(native().quantLinear(dy.handle, qc.handles, 'nf4', R, C, true, idx.handle, vals.handle));
      const gg = new Tensor(native().quantLinear(toDevice(dy, 'cuda').handle, qg.handles, 'nf4', R, C, true, idxG.handle, valsG.handle));
      expectClose(gg.toArray() as Float32Array, gc.toArray() as Float32Array, { atol: 2e-4, rtol: 1e-4 });
      qc.dispose();
      qg.dispose();
    }));

  test.each([
    ['int8', 37, 300],
    ['nf4', 37, 300],
    ['nf4', 1100, 1024],
  ] as const)('%s [%i, %i]: codes, dequantized values, quantLinear and its input gradient', (fmt, R, C) =>
    tidy(() => {
      const w = randomTensor([R, C], 11, { dtype: 'f32', scale: 0.1 });
      const qc = QuantizedWeight.from(w, fmt);
      const qg = QuantizedWeight.from(toDevice(w, 'cuda'), fmt);
      const sc = stateArrays(qc),
        sg = stateArrays(qg);
      for (let i = 0; i < sc.length; i++) expectClose(sg[i], sc[i], { atol: 0, rtol: 1e-7, label: `state ${i}` });
      expectClose(qg.dequantize().toArray() as Float32Array, qc.dequantize().toArray() as Float32Array, { atol: 1e-7, rtol: 1e-6 });
      const x = randomTensor([4, C], 12, { dtype: 'f32' });
      const yc = quantLinear(x, qc),
        yg = quantLinear(toDevice(x, 'cuda'), qg);
      expectClose(yg.toArray() as Float32Array, yc.toArray() as Float32Array, { atol: 1e-4, rtol: 1e-4 });
      // The input gradient's product, dy @ W.
      const dy = randomTensor([4, R], 13, { dtype: 'f32' });
      const gc = new Tensor(native().quantLinear(dy.handle, qc.handles, fmt, R, C, true));
      const gg = new Tensor(native().quantLinear(toDevice(dy, 'cuda').handle, qg.handles, fmt, R, C, true));
      expectClose(gg.toArray() as Float32Array, gc.toArray() as Float32Array, { atol: 1e-4, rtol: 1e-4 });
      qc.dispose();
      qg.dispose();
    }),
  );
});
