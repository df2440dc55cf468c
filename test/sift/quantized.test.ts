/**
 * SIFT on quantized targets: the weights stored as int8/NF4 codes, the selected entries trained as
 * f32 values beside them. A step must equal the same step on a dense model whose targets hold the
 * dequantized weights; the increment applies to the original (unquantized) base.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  Sift,
  SparseAdamW,
  Linear,
  Tensor,
  SiftError,
  backward,
  createModel,
  saveIncrement,
  loadIncrement,
  applyIncrement,
  unmergeIncrement,
  noGrad,
} from '../../lib';
import { native } from '../../lib/engine/native';
import type { HFConfig } from '../../lib/models/common';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-quant-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const cfg = {
  model_type: 'llama',
  vocab_size: 48,
  hidden_size: 64,
  intermediate_size: 160,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 32,
  tie_word_embeddings: false,
} as HFConfig;

const batches = [
  [
    [1, 5, 9, 13, 17, 21, 25, 29],
    [2, 4, 8, 16, 32, 3, 6, 12],
  ],
  [
    [7, 14, 21, 28, 35, 42, 1, 8],
    [11, 22, 33, 44, 5, 16, 27, 38],
  ],
  [
    [3, 1, 4, 1, 5, 9, 2, 6],
    [2, 7, 1, 8, 2, 8, 1, 8],
  ],
];

type Model = ReturnType<typeof createModel>;

function lossOf(model: Model, ids: number[][]): number {
  const out = model.forward({ inputIds: ids, labels: ids });
  const v = out.loss!.item();
  backward(out.loss!);
  out.logits.dispose();
  out.loss!.dispose();
  return v;
}

function modules(model: Model): Map<string, unknown> {
  return new Map<string, unknown>(model.namedModules());
}

function arr(t: Tensor): number[] {
  return Array.from(t.toArray() as ArrayLike<number | bigint>, Number);
}

/** Copies each quantized target's dequantized weight into the same parameter of `dense`. */
function copyDequantized(sift: Sift, dense: Model): void {
  const params = new Map(dense.namedParameters());
  noGrad(() => {
    for (const t of sift.targets) {
      if (!t.quant) continue;
      const w = t.quant.layer.quantized!.dequantize();
      native().copy_(params.get(t.name)!.handle, w.handle);
      w.dispose();
    }
  });
}

describe.each(['nf4', 'int8'] as const)('SIFT with %s targets', (format) => {
  const targetModules = ['q_proj', 'v_proj', 'down_proj'];

  test('selection, steps and increment equal those of the dense model holding the dequantized weights', () => {
    const q = createModel(cfg, { seed: 3 });
    const d = createModel(cfg, { seed: 3 });
    const original = createModel(cfg, { seed: 3 });
    const sq = new Sift(q, { sparseRate: 0.02, targetModules, quantize: format });
    // Every target weight is quantized (biases: Llama has none); its dense copy is gone.
    expect(sq.targets.length).toBe(6);
    for (const t of sq.targets) {
      expect(t.quant).not.toBeNull();
      expect(t.quant!.layer.quantized!.format).toBe(format);
      expect(t.param.shape).toEqual([t.k]);
      expect(t.numel).toBe(t.shape[0] * t.shape[1]);
    }
    copyDequantized(sq, d);
    const sd = new Sift(d, { sparseRate: 0.02, targetModules });

    const lq0 = lossOf(q, batches[0]);
    const ld0 = lossOf(d, batches[0]);
    expect(Math.abs(lq0 - ld0)).toBeLessThan(1e-5);
    sq.select();
    sd.select();
    sq.targets.forEach((t, i) => {
      const u = sd.targets[i];
      expect(t.name).toBe(u.name);
      // The same top-k of the same gradient (computed in another order: ties at the k-th score
      // may swap, so a few entries are allowed to differ).
      const a = new Set(arr(t.idx!));
      const b = arr(u.idx!);
      const common = b.filter((x) => a.has(x)).length;
      expect(common).toBeGreaterThanOrEqual(t.k - 2);
      // The base values are the dequantized weight's at the indices.
      const w = t.quant!.layer.quantized!.dequantize();
      const wv = w.toArray() as Float32Array;
      const base = t.base!.toArray() as Float32Array;
      arr(t.idx!).forEach((ix, j) => expect(base[j]).toBe(wv[ix]));
      w.dispose();
    });
    const oq = new SparseAdamW(sq, { lr: 1e-2, weightDecay: 0 });
    const od = new SparseAdamW(sd, { lr: 1e-2, weightDecay: 0 });
    for (const ids of batches.slice(1)) {
      const a = lossOf(q, ids);
      const b = lossOf(d, ids);
      expect(Math.abs(a - b)).toBeLessThan(1e-4);
      oq.step();
      od.step();
    }
    // The values moved, and they are the dense model's trained weights at the same indices.
    const params = new Map(d.namedParameters());
    sq.targets.forEach((t, i) => {
      const v = t.param.toArray() as Float32Array;
      const base = t.base!.toArray() as Float32Array;
      expect(v.some((x, j) => x !== base[j])).toBe(true);
      const u = sd.targets[i];
      const dv = params.get(u.name)!.toArray() as Float32Array;
      const byIdx = new Map(arr(u.idx!).map((ix) => [ix, dv[ix]]));
      arr(t.idx!).forEach((ix, j) => {
        if (byIdx.has(ix)) expect(Math.abs(v[j] - byIdx.get(ix)!)).toBeLessThan(1e-5);
      });
    });
    // A forward after training reads the trained entries: the same loss as the dense model.
    const after = noGrad(() => {
      const a = q.forward({ inputIds: batches[0], labels: batches[0] });
      const b = d.forward({ inputIds: batches[0], labels: batches[0] });
      const r = [a.loss!.item(), b.loss!.item()];
      for (const o of [a, b]) {
        o.logits.dispose();
        o.loss!.dispose();
      }
      return r;
    });
    expect(Math.abs(after[0] - after[1])).toBeLessThan(1e-4);
    expect(Math.abs(after[0] - lq0)).toBeGreaterThan(1e-4);

    // The increment: trained minus base (the dequantized base), no base values, and it applies to
    // the original weights (their fingerprint, taken before quantizing).
    const file = path.join(dir, `${format}.safetensors`);
    saveIncrement(sq, file);
    const inc = loadIncrement(file);
    try {
      for (const t of sq.targets) {
        const it = inc.targets.get(t.name)!;
        expect(it.base).toBeNull();
        expect(arr(it.idx)).toEqual(arr(t.idx!));
        const val = it.val.toArray() as Float32Array;
        const v = t.param.toArray() as Float32Array;
        const base = t.base!.toArray() as Float32Array;
        // base + value gives the trained value (to the last f32 step where an exact f32 delta
        // does not exist: a value that crossed zero, whose delta is coarser than it).
        val.forEach((x, j) => expect(Math.abs(Math.fround(base[j] + x) - v[j])).toBeLessThanOrEqual(4e-9 + 1e-6 * Math.abs(v[j])));
      }
      const before = new Map(original.namedParameters().map(([n, p]) => [n, p.toArray() as Float32Array]));
      applyIncrement(original, inc);
      const after2 = new Map(original.namedParameters());
      for (const t of sq.targets) {
        const it = inc.targets.get(t.name)!;
        const w0 = before.get(t.name)!;
        const w1 = after2.get(t.name)!.toArray() as Float32Array;
        const val = it.val.toArray() as Float32Array;
        arr(it.idx).forEach((ix, j) => expect(w1[ix]).toBe(Math.fround(w0[ix] + val[j])));
      }
      // Without base values or a trained fingerprint, unmerge is refused (not guessed).
      let code: string | undefined;
      try {
        unmergeIncrement(original, inc);
      } catch (e) {
        code = (e as SiftError).code;
      }
      expect(code).toBe('E_UNSUPPORTED');
    } finally {
      inc.dispose();
    }
    oq.dispose();
    od.dispose();
    // After dispose the layer keeps (and owns) its trained entries.
    sq.dispose();
    const layer = modules(q).get('model.layers.0.self_attn.q_proj') as Linear;
    expect(layer.trainedEntries?.entries()).not.toBeNull();
    const kept = noGrad(() => {
      const o = q.forward({ inputIds: batches[0], labels: batches[0] });
      const v = o.loss!.item();
      o.logits.dispose();
      o.loss!.dispose();
      return v;
    });
    expect(kept).toBeCloseTo(after[0], 6);
    sd.dispose();
    for (const m of [q, d, original]) m.dispose();
  });
});

test('quantized targets need one budget per tensor; a bad format is E_ARG', () => {
  const m = createModel(cfg, { seed: 1 });
  const code = (fn: () => unknown) => {
    try {
      fn();
    } catch (e) {
      return (e as SiftError).code;
    }
    return undefined;
  };
  expect(code(() => new Sift(m, { sparseRate: 0.01, quantize: 'nf4', selection: { scope: 'global' } }))).toBe('E_UNSUPPORTED');
  expect(code(() => new Sift(m, { sparseRate: 0.01, quantize: 'int4' as 'nf4' }))).toBe('E_ARG');
  // Nothing was quantized by the refused constructors.
  for (const [, mod] of m.namedModules()) if (mod instanceof Linear) expect(mod.quantized).toBeNull();
  m.dispose();
});

test('the LM head and the non-target layers stay as they are; a magnitude selection reads the dequantized weight', () => {
  const m = createModel(cfg, { seed: 2 });
  const s = new Sift(m, { sparseRate: 0.05, targetModules: 'all-linear', quantize: 'nf4', selection: { score: 'magnitude' } });
  const mods = modules(m);
  // The LM head keeps its dense weight (a parameter) and is no target.
  expect(new Map(m.namedParameters()).has('lm_head.weight')).toBe(true);
  expect(s.targets.some((t) => t.name.startsWith('lm_head'))).toBe(false);
  expect(s.targets.length).toBe(14);
  for (const t of s.targets) expect((mods.get(t.name.slice(0, -'.weight'.length)) as Linear).quantized!.format).toBe('nf4');
  expect(s.selected).toBe(true);
  for (const t of s.targets) {
    const w = t.quant!.layer.quantized!.dequantize();
    const wv = w.toArray() as Float32Array;
    const chosen = arr(t.idx!).map((ix) => Math.abs(wv[ix]));
    const minChosen = Math.min(...chosen);
    const sorted = Array.from(wv, Math.abs).sort((a, b) => b - a);
    // The k largest |deq(W)| (ties at the boundary aside).
    expect(minChosen).toBeGreaterThanOrEqual(sorted[t.k - 1]);
    w.dispose();
  }
  s.dispose();
  m.dispose();
});

test('the trainer option quantize: the frozen base (and SIFT targets) quantized when training starts; refused for full', async () => {
  const { Trainer } = await import('../../lib/train/trainer');
  const rows = Array.from({ length: 4 }, (_, i) => ({ input_ids: Array.from({ length: 8 }, (_, j) => (i * 7 + j * 3) % 48) }));
  for (const method of ['lora', 'sift'] as const) {
    const m = createModel(cfg, { seed: 1 });
    const t = new Trainer(m, null, { task: 'causal-lm', method, steps: 1, quantize: 'nf4', lr: 1e-3, batchSize: 2, maxLength: 8 });
    let loss = NaN;
    for await (const e of t.fit(rows)) if (e.type === 'step') loss = e.loss;
    expect(Number.isFinite(loss)).toBe(true);
    // Every linear layer of the 2 blocks (7 each); the LM head stays dense.
    const quantized = m.namedModules().filter(([, x]) => x instanceof Linear && x.quantized);
    expect(quantized.length).toBe(14);
    m.dispose();
  }
  const full = createModel(cfg, { seed: 1 });
  const t = new Trainer(full, null, { task: 'causal-lm', method: 'full', steps: 1, quantize: 'nf4', batchSize: 2, maxLength: 8 });
  let code: string | undefined;
  try {
    for await (const _ of t.fit(rows)) void _;
  } catch (e) {
    code = (e as SiftError).code;
  }
  expect(code).toBe('E_UNSUPPORTED');
  full.dispose();
});
