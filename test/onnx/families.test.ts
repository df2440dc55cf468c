/**
 * ONNX export of the decoder families against the PyTorch reference: each parity fixture of a
 * LLaMA-lineage decoder (qwen2, qwen3, mistral, gemma, gemma2, phi3, llama with yarn) is built,
 * loaded with the fixture's weights, exported, and run in onnxruntime-node on the fixture's padded
 * batch; its logits must match the reference logits (which cover soft-capping, sliding windows,
 * fused projections, partial rotary and the rope scalings) to 1e-4 of their largest magnitude.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { createModel, loadStateDictInto, PreTrainedModel } from '../../lib/models';
import { exportOnnx } from '../../lib/onnx';
import { loadFixture, missingFixtures, relError } from '../models/fixtures';
import { ortAvailable, ortMissing, runOrt } from './ort';

const DECODER_FIXTURES = [
  'llama-lm-yarn',
  'qwen2-lm',
  'qwen2-cls',
  'qwen3-lm',
  'qwen3-cls',
  'mistral-lm',
  'mistral-cls',
  'gemma-lm',
  'gemma-cls',
  'gemma2-lm',
  'gemma2-cls',
  'phi3-lm',
  'phi3-lm-short',
  'phi3-cls',
];

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-onnx-families-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const missing = missingFixtures().filter((n) => DECODER_FIXTURES.includes(n));
const skip = !ortAvailable
  ? `onnxruntime-node cannot load here (${ortMissing})`
  : missing.length
    ? `fixtures missing: ${missing.join(', ')}`
    : '';
const d = skip ? describe.skip : describe;
if (skip) console.warn(`decoder ONNX parity skipped: ${skip}`);

function rows(t: { shape: number[]; toArray(): ArrayLike<number | bigint> }): number[][] {
  const flat = Array.from(t.toArray(), Number);
  const [B, T] = t.shape;
  return Array.from({ length: B }, (_, b) => flat.slice(b * T, (b + 1) * T));
}

d('ONNX export of the decoder families matches the PyTorch reference in onnxruntime-node', () => {
  test.each(DECODER_FIXTURES)('%s', (name) => {
    const fx = loadFixture(name);
    let m: PreTrainedModel | null = null;
    try {
      m = createModel(fx.config, { seed: 1 }).eval();
      loadStateDictInto(m, fx.params);
      const file = path.join(dir, `${name}.onnx`);
      exportOnnx(m, file);
      const r = runOrt(file, { input_ids: rows(fx.inputs.get('input_ids')!), attention_mask: rows(fx.inputs.get('attention_mask')!) });
      const ref = fx.outputs.get('logits')!;
      expect(r.outputs.logits.dims).toEqual(ref.shape);
      const err = relError(r.outputs.logits.data, Array.from(ref.toArray() as Float32Array));
      if (!(err <= 1e-4)) throw new Error(`${name}: ONNX logits differ from the reference by ${err.toExponential(2)} (relative)`);
    } finally {
      m?.dispose();
      fx.dispose();
    }
  });
});
