/**
 * A checkpoint folder of each decoder family (qwen2, qwen3, mistral, gemma, gemma2, phi3) works with
 * the same commands as LLaMA: finetune (SIFT on "all-linear", with --merge) -> eval with the delta
 * -> merge -> generate -> export-onnx, and LoRA with PEFT's default targets. Tiny random models
 * with sliding windows shorter than the sequences, made here with a byte tokenizer.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { HFConfig } from '../../lib/models';
import { createByteTokenizer } from '../../lib/tokenizers';
import { cliJson, evalMetrics, finetuneRun, runCli, saveRandomModel, writeJsonl } from '../helpers/cli';

const cli = runCli;

const tok = createByteTokenizer();
const common = {
  vocab_size: tok.vocabSize,
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 64,
  initializer_range: 0.2,
  eos_token_id: tok.eosTokenId,
  bos_token_id: tok.bosTokenId,
  pad_token_id: tok.padTokenId,
};
const FAMILIES: Record<string, HFConfig> = {
  qwen2: { ...common, model_type: 'qwen2', tie_word_embeddings: true, use_sliding_window: true, sliding_window: 6, max_window_layers: 1 },
  qwen3: { ...common, model_type: 'qwen3', head_dim: 6 },
  mistral: { ...common, model_type: 'mistral', head_dim: 6, sliding_window: 6 },
  gemma: { ...common, model_type: 'gemma', head_dim: 6 },
  gemma2: {
    ...common,
    model_type: 'gemma2',
    head_dim: 6,
    query_pre_attn_scalar: 8,
    attn_logit_softcapping: 20,
    final_logit_softcapping: 15,
    sliding_window: 6,
  },
  phi3: {
    ...common,
    model_type: 'phi3',
    hidden_size: 32,
    partial_rotary_factor: 0.5,
    sliding_window: 6,
    rope_scaling: { type: 'longrope', short_factor: [1, 1.2], long_factor: [2, 4] },
    original_max_position_embeddings: 8,
  },
};

let tmp: string;
let data: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-cli-families-'));
  const texts = ['the cat sat on the mat', 'a dog ran in the park', 'birds sing at dawn', 'fish swim in the sea'];
  data = writeJsonl(
    path.join(tmp, 'lm.jsonl'),
    texts.map((text) => ({ text })),
  );
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe.each(Object.keys(FAMILIES))('%s folder', (family) => {
  test('finetune (sift, all-linear, --merge) -> eval -> merge -> generate -> export-onnx; lora', async () => {
    const base = saveRandomModel(path.join(tmp, family), FAMILIES[family], tok.toFiles(), 'bf16');
    const lm = { data, task: 'causal-lm', 'max-length': 16, device: 'cpu' };
    const { result, delta } = await finetuneRun({
      ...lm,
      'batch-size': 2,
      model: base,
      method: 'sift',
      'target-modules': 'all-linear',
      out: path.join(tmp, `${family}-ft`),
      steps: 2,
      lr: 1e-2,
      'sparse-rate': 0.05,
      merge: true,
    });
    expect(result.trainable).toBeGreaterThan(0);
    const withDelta = (await evalMetrics({ ...lm, model: base, delta })).loss;
    expect(Number.isFinite(withDelta)).toBe(true);
    const merged = path.join(tmp, `${family}-merged`);
    await cliJson('merge', { model: base, delta, out: merged });
    expect((await evalMetrics({ ...lm, model: merged })).loss).toBeCloseTo(withDelta, 2);
    let r = await cli('generate', '--model', merged, '--prompt', 'the cat sat', '--max-new-tokens', '8', '--device', 'cpu', '--json');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out).tokens.length).toBeGreaterThan(0);
    r = await cli('export-onnx', '--model', merged, '--out', path.join(tmp, `${family}.onnx`));
    expect(r.code).toBe(0);
    expect(fs.statSync(path.join(tmp, `${family}.onnx`)).size).toBeGreaterThan(1000);
    await finetuneRun({ ...lm, 'batch-size': 2, model: base, method: 'lora', out: path.join(tmp, `${family}-lora`), steps: 1 });
  }, 120000);
});
