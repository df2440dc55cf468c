/**
 * The ONNX lowering of attention soft-capping (Div, Tanh, Mul) and of the sliding window (a band of
 * two Trilu masks): a small graph (embedding rows as q, k, v, a padding mask, attention, merged
 * heads) written by the exporter's Emitter, run in onnxruntime-node and by the importer's
 * interpreter (forward and gradients), against the fused scaledDotProductAttention.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { tensor, tidy, Tensor, scaledDotProductAttention, transpose, reshape, embedding } from '../../lib';
import { PreTrainedModel } from '../../lib/models/common';
import { Emitter } from '../../lib/onnx/export';
import { ONNX_DTYPE, LazyInitializer } from '../../lib/onnx/builder';
import { onnxType, encodeMessage } from '../../lib/onnx/proto';
import { loadOnnxModelFromBuffer } from '../../lib/onnx';
import { randomTensor, expectClose } from '../helpers/gradcheck';
import { ortAvailable, ortMissing, runOrt } from './ort';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-onnx-attn-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
if (!ortAvailable) console.warn(`onnxruntime-node cannot load here (${ortMissing}): ONNX Runtime checks skipped`);

const V = 11,
  H = 2,
  D = 4;
const nums = (t: Tensor) => Array.from(t.toArray() as ArrayLike<number>, Number);

/** ONNX bytes of: q, k, v = rows of three tables; attention(mask, causal, window, softcap); merged heads as 'logits'. */
function buildGraph(weights: Tensor[], causal: boolean, window: number, softcap: number): Uint8Array {
  const named: [string, Tensor][] = weights.map((w, i) => [`${'qkv'[i]}.weight`, w]);
  const e = new Emitter({ namedParameters: () => named } as unknown as PreTrainedModel, 17);
  const ids = e.g.input('input_ids', 'i64', ['batch_size', 'sequence_length']);
  const mask = e.g.input('attention_mask', 'i64', ['batch_size', 'sequence_length']);
  const T = e.dim(ids, 1);
  const [q, k, v] = weights.map((w) => e.heads(e.op('Gather', [e.w(w), ids]), H, D));
  const allowed = e.attentionMask(mask, T, causal, window);
  const out = e.merge(e.attention(q, k, v, allowed, 1 / Math.sqrt(D), softcap), H * D);
  e.g.output(out, 'logits', 'f32', ['batch_size', 'sequence_length', H * D]);
  const tensorProto = (init: LazyInitializer) => ({
    name: init.name,
    dims: init.dims,
    data_type: ONNX_DTYPE[init.dtype],
    raw_data: init.bytes(),
  });
  return encodeMessage(onnxType('ModelProto'), e.g.modelObject('attention', tensorProto, {}));
}

/** The same computation with the fused op. */
function fused(weights: Tensor[], ids: number[][], mask: number[][], causal: boolean, window: number, softcap: number): Tensor {
  const B = ids.length,
    T = ids[0].length;
  const idt = tensor(ids.flat(), [B, T], { dtype: 'i64' });
  const [q, k, v] = weights.map((w) => transpose(reshape(embedding(w, idt), [B, T, H, D]), 1, 2));
  const m = tensor(mask.flat(), [B, T], { dtype: 'bool' });
  const a = scaledDotProductAttention(q, k, v, { mask: m, causal, window, softcap });
  return reshape(transpose(a, 1, 2), [B, T, H * D]);
}

// Two padded keys at the end: with windows of 3 or more every query still sees a key (the graph
// fills masked scores with the lowest f32, so a row with no visible key would differ from the
// fused op's zeros).
const ids = [
  [1, 5, 3, 9, 2, 7, 4, 10, 6],
  [8, 2, 2, 4, 0, 1, 3, 5, 5],
];
const mask = [
  [1, 1, 1, 1, 1, 1, 1, 1, 1],
  [1, 1, 1, 1, 1, 1, 1, 0, 0],
];
const settings = [
  { causal: true, window: 3, softcap: 0 },
  { causal: true, window: 0, softcap: 1.5 },
  { causal: true, window: 4, softcap: 2 },
  { causal: true, window: 20, softcap: 0 }, // larger than the sequence: plain causal
  { causal: false, window: 0, softcap: 0.7 },
];

describe('ONNX lowering of attention softcap and window', () => {
  for (const s of settings) {
    test(`${JSON.stringify(s)}: onnxruntime and the importer match the fused op (forward and gradients)`, () => {
      const weights = [21, 22, 23].map((seed) => randomTensor([V, H * D], seed, { dtype: 'f32', scale: 2 }));
      const bytes = buildGraph(weights, s.causal, s.window, s.softcap);
      const ref = tidy(() => nums(fused(weights, ids, mask, s.causal, s.window, s.softcap)));
      if (ortAvailable) {
        const file = path.join(dir, `attn-${s.window}-${s.softcap}-${s.causal}.onnx`);
        fs.writeFileSync(file, bytes);
        const r = runOrt(file, { input_ids: ids, attention_mask: mask });
        expect(r.outputs.logits.dims).toEqual([2, 9, H * D]);
        expectClose(r.outputs.logits.data, ref, { atol: 1e-5, rtol: 1e-4, label: 'onnxruntime' });
      }
      // The importer: the same forward, and the gradients of the three tables equal the fused op's.
      const m = loadOnnxModelFromBuffer(bytes);
      try {
        const g = randomTensor([2, 9, H * D], 5, { dtype: 'f32' });
        const params = new Map(m.namedParameters());
        for (const p of params.values()) p.grad = null;
        tidy(() => {
          const out = m.forward({ inputIds: ids, attentionMask: mask }).logits;
          expectClose(nums(out), ref, { atol: 1e-5, rtol: 1e-4, label: 'importer' });
          out.backward(g);
        });
        const leaves = weights.map((w) => w.detach());
        for (const w of leaves) w.requiresGrad = true;
        tidy(() => fused(leaves, ids, mask, s.causal, s.window, s.softcap).backward(g));
        ['q.weight', 'k.weight', 'v.weight'].forEach((n, i) => {
          const gi = params.get(n)?.grad;
          expect(gi).toBeTruthy();
          expectClose(nums(gi!), nums(leaves[i].grad!), { atol: 1e-5, rtol: 1e-4, label: `gradient of ${n}` });
        });
        for (const t of [g, ...leaves, ...weights]) t.dispose();
      } finally {
        m.dispose();
      }
    });
  }

  test('a window without the causal mask is refused', () => {
    const w = randomTensor([V, H * D], 1, { dtype: 'f32' });
    expect(() => buildGraph([w, w, w], false, 3, 0)).toThrow(/sliding window/);
    w.dispose();
  });
});
