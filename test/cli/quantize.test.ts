/**
 * --quantize on finetune (LoRA on an NF4 base; SIFT with the frozen layers quantized), eval,
 * generate and select, on a tiny Llama folder; the increment of a quantized run applies to the
 * original base.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { createModel } from '../../lib/models';
import { createByteTokenizer } from '../../lib/tokenizers';
import { quantizeModel } from '../../lib/cli/common';
import { Sift, Linear, applyLora } from '../../lib';
import { evalMetrics, finetuneRun, flagArgs, runCli, saveRandomModel, writeJsonl } from '../helpers/cli';
import { tinyByteLlamaConfig } from '../helpers/tiny-configs';

const cli = runCli;

let tmp: string;
let base: string;
let data: string;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-quant-cli-'));
  const tok = createByteTokenizer();
  const config = { ...tinyByteLlamaConfig(tok), rms_norm_eps: 1e-5 };
  base = saveRandomModel(path.join(tmp, 'base'), config, tok.toFiles());
  const texts = ['the cat sat on the mat', 'a dog ran in the park', 'birds sing at dawn', 'fish swim in the sea'];
  data = writeJsonl(
    path.join(tmp, 'lm.jsonl'),
    texts.map((text) => ({ text })),
  );
});

afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** The small causal-lm run every finetune here makes. */
const lm = () => ({ data, task: 'causal-lm', device: 'cpu', steps: 2, 'batch-size': 2, 'max-length': 16 });

describe('--quantize', () => {
  test('finetune --method lora on an NF4 base saves an adapter; --merge is refused', async () => {
    const out = path.join(tmp, 'lora');
    await finetuneRun({ ...lm(), model: base, method: 'lora', quantize: 'nf4', out });
    expect(fs.existsSync(path.join(out, 'adapter_model.safetensors')) || fs.existsSync(path.join(out, 'delta.safetensors'))).toBe(true);
    const m = await cli(
      'finetune',
      ...flagArgs({ ...lm(), model: base, method: 'lora', quantize: 'nf4', merge: true, out: path.join(tmp, 'm'), quiet: true }),
    );
    expect(m.code).not.toBe(0);
    expect(m.err).toMatch(/--merge/);
  });

  test('finetune --method sift with the frozen layers in int8; eval --delta --quantize and generate --quantize run', async () => {
    const { delta } = await finetuneRun({
      ...lm(),
      model: base,
      method: 'sift',
      'target-modules': 'q_proj,v_proj',
      quantize: 'int8',
      out: path.join(tmp, 'sift'),
    });
    expect(fs.existsSync(delta)).toBe(true);
    const e = await evalMetrics({ model: base, delta, data, task: 'causal-lm', device: 'cpu', quantize: 'int8' });
    expect(e.loss).toBeGreaterThan(0);
    const g = await cli(
      'generate',
      '--model',
      base,
      '--prompt',
      'the',
      '--max-new-tokens',
      '3',
      '--device',
      'cpu',
      '--quantize',
      'nf4',
      '--json',
    );
    expect(g.code).toBe(0);
  });

  test('select --quantize nf4 keeps the targets dense', async () => {
    const r = await cli(
      'select',
      '--model',
      base,
      '--data',
      data,
      '--task',
      'causal-lm',
      '--device',
      'cpu',
      '--target-modules',
      'q_proj',
      '--batch-size',
      '2',
      '--max-length',
      '16',
      '--quantize',
      'nf4',
      '--out',
      path.join(tmp, 'idx.safetensors'),
      '--json',
    );
    expect(r.code).toBe(0);
    expect(fs.existsSync(path.join(tmp, 'idx.safetensors'))).toBe(true);
  });

  test('with frozenOnly, the layers that train stay dense and the frozen ones are quantized', () => {
    const cfg = {
      model_type: 'llama',
      vocab_size: 32,
      hidden_size: 64,
      intermediate_size: 128,
      num_hidden_layers: 1,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      max_position_embeddings: 16,
      tie_word_embeddings: false,
    };
    const m = createModel(cfg, { seed: 1 });
    const sift = new Sift(m, { sparseRate: 0.01, targetModules: ['q_proj', 'v_proj'] });
    const done = quantizeModel(m, 'nf4', true);
    expect(done.sort()).toEqual([
      'model.layers.0.mlp.down_proj',
      'model.layers.0.mlp.gate_proj',
      'model.layers.0.mlp.up_proj',
      'model.layers.0.self_attn.k_proj',
      'model.layers.0.self_attn.o_proj',
    ]);
    const mods = new Map(m.namedModules());
    expect((mods.get('model.layers.0.self_attn.q_proj') as Linear).quantized).toBeNull();
    sift.dispose();
    m.dispose();
    const m2 = createModel(cfg, { seed: 1 });
    const lora = applyLora(m2, { rank: 4, targetModules: ['q_proj', 'v_proj'] });
    expect(quantizeModel(m2, 'int8', true)).toHaveLength(7);
    lora.dispose();
    m2.dispose();
  });

  test('a bad format is an argument error', async () => {
    const r = await cli('eval', '--model', base, '--data', data, '--task', 'causal-lm', '--quantize', 'int4');
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(/quantize/);
  });
});
