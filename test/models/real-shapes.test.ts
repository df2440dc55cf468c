/**
 * Each family at the shape of its smallest public model, from the model's config.json
 * (test/fixtures/configs: Qwen2.5-0.5B, Qwen3-0.6B, Gemma-2B, Gemma-2-2B, Phi-3-mini-4k and -128k,
 * Mistral-7B-v0.3), with random bf16 weights on the CPU: the full model's parameter count (from
 * one block and the embeddings) equals the published one, and a SIFT step (selection, one sparse
 * AdamW update that moves only selected entries) runs at the real widths, for Phi-3-mini-128k at
 * positions past 4096 (longrope's long factors). To stay fast the stack is cut to one block (two
 * for Gemma 2, a sliding and a global one), the vocabulary to 4096 rows and the batch to 1 x 8.
 * The test suite runs the two sub-billion shapes (a few seconds each); the 2-7B shapes take one to
 * two minutes each on two cores: `npm run bench -- families` runs them (at full depth and
 * vocabulary).
 */
import * as fs from 'fs';
import * as path from 'path';
import { tidy, Sift, SparseAdamW } from '../../lib';
import { createModel, HFConfig, PreTrainedModel } from '../../lib/models';

const CONFIG_DIR = path.join(__dirname, '..', 'fixtures', 'configs');

/** Parameters of the published checkpoints (transformers' num_parameters(), tied weights once). */
const PUBLISHED: Record<string, number> = {
  'qwen2.5-0.5b': 494_032_768,
  'qwen3-0.6b': 596_049_920,
  'gemma-2b': 2_506_172_416,
  'gemma-2-2b': 2_614_341_888,
  'phi-3-mini-128k': 3_821_079_552,
  'mistral-7b-v0.3': 7_248_023_552,
};

test('Phi-3-mini-4k and -128k have the same shapes (the 128k one differs in rope and window only)', () => {
  const a = readConfig('phi-3-mini-4k');
  const b = readConfig('phi-3-mini-128k');
  for (const k of [
    'hidden_size',
    'intermediate_size',
    'num_attention_heads',
    'num_key_value_heads',
    'num_hidden_layers',
    'vocab_size',
    'tie_word_embeddings',
  ])
    expect(b[k]).toEqual(a[k]);
  const m = createModel(
    { ...a, num_hidden_layers: 1, vocab_size: 64, hidden_size: 96, intermediate_size: 64, num_attention_heads: 4, num_key_value_heads: 4 },
    { seed: 1 },
  );
  expect(m.architecture).toBe('Phi3ForCausalLM');
  m.dispose();
});

const VOCAB = 4096;

function readConfig(name: string): HFConfig {
  return JSON.parse(fs.readFileSync(path.join(CONFIG_DIR, `${name}.json`), 'utf8')) as HFConfig;
}

const SUITE_SHAPES = ['qwen2.5-0.5b', 'qwen3-0.6b'];

describe.each(SUITE_SHAPES)('%s', (name) => {
  test('parameter count of the full model and a SIFT step at the real widths (bf16, CPU)', () => {
    const full = readConfig(name);
    const layers = full.model_type === 'gemma2' ? 2 : 1;
    const cfg: HFConfig = { ...full, num_hidden_layers: layers, vocab_size: VOCAB };
    let m: PreTrainedModel | null = null;
    let sift: Sift | null = null;
    let opt: SparseAdamW | null = null;
    try {
      m = createModel(cfg, { dtype: 'bf16', seed: 1 });
      expect(m.architecture).toBe((full.architectures as string[])[0]);
      // Full size: the non-block parameters scale with the vocabulary, the blocks with the depth.
      const D = Number(full.hidden_size);
      let block = 0;
      let rest = 0;
      for (const [k, t] of m.namedParameters()) {
        if (k.startsWith('model.layers.0.')) block += t.size;
        else if (!k.startsWith('model.layers.')) rest += t.size;
      }
      const perVocabRow = m.namedParameters().filter(([k]) => k === 'model.embed_tokens.weight' || k === 'lm_head.weight').length * D;
      const total = rest + (Number(full.vocab_size) - VOCAB) * perVocabRow + block * Number(full.num_hidden_layers);
      expect(total).toBe(PUBLISHED[name]);

      const T = 8;
      // Phi-3-mini-128k: positions past original_max_position_embeddings (4096) take the long factors.
      const offset = full.model_type === 'phi3' ? 4100 : 0;
      const ids = [Array.from({ length: T }, (_, t) => (t * 97 + 13) % VOCAB)];
      const positionIds = [Array.from({ length: T }, (_, t) => offset + t)];
      const model = m;
      const step = () =>
        tidy(() => {
          const out = model.forward({ inputIds: ids, positionIds, labels: ids });
          out.loss!.backward();
          return out.loss!.item();
        });
      sift = new Sift(m, { sparseRate: 0.001, targetModules: 'all-linear' });
      const first = step();
      sift.select();
      expect(
        sift.targets
          .map((t) => t.name.replace(/^model\.layers\.\d+\./, ''))
          .filter((n) => n.endsWith('.weight'))
          .slice(0, 4),
      ).toEqual(
        full.model_type === 'phi3'
          ? ['self_attn.qkv_proj.weight', 'self_attn.o_proj.weight', 'mlp.gate_up_proj.weight', 'mlp.down_proj.weight']
          : ['self_attn.q_proj.weight', 'self_attn.k_proj.weight', 'self_attn.v_proj.weight', 'self_attn.o_proj.weight'],
      );
      const target = sift.targets[0];
      const before = Array.from(target.param.toArray() as Float32Array);
      opt = new SparseAdamW(sift, { lr: 1e-2, weightDecay: 0 });
      const second = step();
      opt.step();
      const after = Array.from(target.param.toArray() as Float32Array);
      const changed = after.filter((v, i) => v !== before[i]).length;
      expect(changed).toBeGreaterThan(0);
      expect(changed).toBeLessThanOrEqual(target.k);
      expect([first, second].every(Number.isFinite)).toBe(true);
    } finally {
      opt?.dispose();
      sift?.dispose();
      m?.dispose();
    }
  }, 240000);
});
