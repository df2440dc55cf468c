/**
 * The LLaMA-lineage decoder families (qwen2, qwen3, mistral, gemma, gemma2, phi3) beside parity:
 * transformers' parameter names and class names, the registry by model_type and architectures,
 * what is refused by name, tied checkpoints without lm_head, bf16 sharded folders saved and loaded
 * in the same layout, PEFT's target-module names ("all-linear" and LoRA defaults), a SIFT step, a
 * LoRA merge, and KV-cache decoding equal to the full forward (also past sliding windows).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { tidy, noGrad, SiftError, Tensor, Sift, SparseAdamW, kForRate } from '../../lib';
import { createModel, resolveModelClass, HFConfig, PreTrainedModel, loadStateDictInto, stateDict, ModelInputs } from '../../lib/models';
import { saveModelFolder } from '../../lib/io/hf';
import { loadModel } from '../../lib/load';
import { planTargets } from '../../lib/sift/targets';
import { applyLora, defaultLoraTargets } from '../../lib/train/lora';
import { decoderParams } from '../../lib/models/decoder';
import { loadFixture } from './fixtures';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-families-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const base = {
  vocab_size: 48,
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 64,
  pad_token_id: 0,
  initializer_range: 0.2,
};
const CONFIGS: Record<string, HFConfig> = {
  qwen2: { ...base, model_type: 'qwen2', tie_word_embeddings: true, use_sliding_window: false, sliding_window: 4096 },
  qwen3: { ...base, model_type: 'qwen3', head_dim: 6 },
  mistral: { ...base, model_type: 'mistral', head_dim: 6, sliding_window: 5 },
  gemma: { ...base, model_type: 'gemma', head_dim: 6 },
  gemma2: {
    ...base,
    model_type: 'gemma2',
    head_dim: 6,
    query_pre_attn_scalar: 8,
    attn_logit_softcapping: 4,
    final_logit_softcapping: 6,
    sliding_window: 5,
  },
  phi3: { ...base, model_type: 'phi3', partial_rotary_factor: 0.5, sliding_window: 5 },
};

const created: PreTrainedModel[] = [];
function make(cfg: HFConfig, opts: Parameters<typeof createModel>[1] = {}): PreTrainedModel {
  const m = createModel(cfg, { seed: 7, ...opts });
  created.push(m);
  return m;
}
afterAll(() => created.forEach((m) => m.dispose()));

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SiftError);
    return (e as SiftError).code;
  }
  return undefined;
}

function values(t: Tensor): number[] {
  return Array.from(t.toArray() as ArrayLike<number>, Number);
}

function maxAbsDiff(a: number[], b: number[]): number {
  expect(a.length).toBe(b.length);
  return a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
}

const layerKeys = (family: string, p: string): string[] => {
  const attn =
    family === 'phi3'
      ? ['self_attn.qkv_proj.weight']
      : family === 'qwen2'
        ? [
            'self_attn.q_proj.weight',
            'self_attn.q_proj.bias',
            'self_attn.k_proj.weight',
            'self_attn.k_proj.bias',
            'self_attn.v_proj.weight',
            'self_attn.v_proj.bias',
          ]
        : ['self_attn.q_proj.weight', 'self_attn.k_proj.weight', 'self_attn.v_proj.weight'];
  const norms = family === 'qwen3' ? ['self_attn.q_norm.weight', 'self_attn.k_norm.weight'] : [];
  const mlp = family === 'phi3' ? ['mlp.gate_up_proj.weight'] : ['mlp.gate_proj.weight', 'mlp.up_proj.weight'];
  const sandwich = family === 'gemma2' ? ['pre_feedforward_layernorm.weight', 'post_feedforward_layernorm.weight'] : [];
  return [
    ...attn,
    'self_attn.o_proj.weight',
    ...norms,
    ...mlp,
    'mlp.down_proj.weight',
    'input_layernorm.weight',
    'post_attention_layernorm.weight',
    ...sandwich,
  ].map((k) => p + k);
};

describe('names and registry', () => {
  test.each(Object.keys(CONFIGS))('%s: transformers state-dict keys and class names', (family) => {
    const cfg = CONFIGS[family];
    const lm = make(cfg);
    const tied = family === 'qwen2' || family.startsWith('gemma');
    const body = [
      'model.embed_tokens.weight',
      ...layerKeys(family, 'model.layers.0.'),
      ...layerKeys(family, 'model.layers.1.'),
      'model.norm.weight',
    ];
    expect(
      lm
        .namedParameters()
        .map(([k]) => k)
        .sort(),
    ).toEqual([...body, ...(tied ? [] : ['lm_head.weight'])].sort());
    expect(lm.tiedParameters()).toEqual(tied ? { 'lm_head.weight': 'model.embed_tokens.weight' } : {});
    const prefix = { qwen2: 'Qwen2', qwen3: 'Qwen3', mistral: 'Mistral', gemma: 'Gemma', gemma2: 'Gemma2', phi3: 'Phi3' }[family]!;
    expect(lm.architecture).toBe(`${prefix}ForCausalLM`);
    const cls = make({ ...cfg, num_labels: 3 }, { task: 'sequence-classification' });
    expect(cls.architecture).toBe(`${prefix}ForSequenceClassification`);
    expect(cls.namedParameters().map(([k]) => k)).toContain('score.weight');
    expect(make(cfg, { task: 'base' }).architecture).toBe(`${prefix}Model`);
    // A config with architectures and no model_type resolves to the family.
    const { model_type: _drop, ...noType } = cfg;
    void _drop;
    expect(resolveModelClass({ ...noType, architectures: [`${prefix}ForSequenceClassification`] })).toMatchObject({
      modelType: family,
      task: 'sequence-classification',
    });
  });

  test('gemma norms start at 0 (scale 1 + weight); other families at 1', () => {
    const g = new Map(make(CONFIGS.gemma2).namedParameters());
    expect(values(g.get('model.layers.0.post_feedforward_layernorm.weight')!).every((v) => v === 0)).toBe(true);
    const q = new Map(make(CONFIGS.qwen3).namedParameters());
    expect(values(q.get('model.layers.0.self_attn.q_norm.weight')!).every((v) => v === 1)).toBe(true);
  });

  test('what is not implemented is refused by name', () => {
    const err = (fn: () => unknown) => {
      try {
        fn();
      } catch (e) {
        return e as SiftError;
      }
      throw new Error('no error');
    };
    const e1 = err(() => createModel({ ...CONFIGS.qwen3, rope_scaling: { rope_type: 'mrope', factor: 2 } }));
    expect(e1.code).toBe('E_UNSUPPORTED');
    expect(e1.message).toContain("'mrope'");
    expect(codeOf(() => createModel({ ...CONFIGS.mistral, layer_types: ['chunked_attention', 'full_attention'] }))).toBe('E_UNSUPPORTED');
    expect(codeOf(() => createModel({ ...CONFIGS.phi3, rope_scaling: { type: 'longrope', short_factor: [1], long_factor: [1, 2] } }))).toBe(
      'E_ARG',
    );
    expect(codeOf(() => createModel({ ...CONFIGS.qwen2, layer_types: ['sliding_attention', 'full_attention'] }))).toBe('E_ARG');
    expect(codeOf(() => createModel({ ...CONFIGS.gemma, hidden_activation: 'swiglu_v9' }))).toBe('E_UNSUPPORTED');
    expect(codeOf(() => createModel({ ...CONFIGS.mistral, model_type: 'mixtral' }))).toBe('E_UNSUPPORTED');
  });

  test('layer windows: layer_types first, then the family rule', () => {
    const windows = (cfg: HFConfig) =>
      (make(cfg) as unknown as { model: { layers: { items: { window: number | null }[] } } }).model.layers.items.map((l) => l.window);
    expect(windows(CONFIGS.gemma2)).toEqual([5, null]);
    expect(windows(CONFIGS.mistral)).toEqual([5, 5]);
    expect(windows({ ...CONFIGS.mistral, sliding_window: null })).toEqual([null, null]);
    expect(windows(CONFIGS.qwen2)).toEqual([null, null]);
    expect(windows({ ...CONFIGS.qwen2, use_sliding_window: true, sliding_window: 5, max_window_layers: 1 })).toEqual([null, 5]);
    expect(windows({ ...CONFIGS.gemma2, layer_types: ['full_attention', 'sliding_attention'] })).toEqual([null, 5]);
  });

  test("keys config.json lacks take their config class's defaults (Gemma2Config's softcaps and window, MistralConfig's window); null turns them off", () => {
    const { sliding_window: _sw, attn_logit_softcapping: _a, final_logit_softcapping: _f, ...gemma2 } = CONFIGS.gemma2;
    const g = decoderParams(gemma2);
    expect([g.attnSoftcap, g.finalSoftcap, g.windows]).toEqual([50, 30, [4096, null]]);
    const off = decoderParams({ ...gemma2, attn_logit_softcapping: null, final_logit_softcapping: null, sliding_window: null });
    expect([off.attnSoftcap, off.finalSoftcap, off.windows]).toEqual([null, null, [null, null]]);
    const { sliding_window: _m, ...mistral } = CONFIGS.mistral;
    expect(decoderParams(mistral).windows).toEqual([4096, 4096]);
    expect(decoderParams(CONFIGS.qwen3).windows).toEqual([null, null]);
    expect(decoderParams(CONFIGS.phi3).windows).toEqual([5, 5]);
  });
});

describe('rope_parameters (transformers 5 configs)', () => {
  test('rope_parameters decides theta, scaling and partial_rotary_factor; per-layer-type parameters are refused', () => {
    const logits = (cfg: HFConfig) =>
      tidy(() =>
        values(
          make(cfg)
            .eval()
            .forward({ inputIds: [[5, 9, 12, 3, 17, 22, 8, 30, 11]] }).logits,
        ),
      );
    const { rope_theta: _t, ...qwen2 } = { ...CONFIGS.qwen2, rope_theta: 1 };
    const v4 = logits({ ...qwen2, rope_theta: 50, rope_scaling: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 16 } });
    const v5 = logits({
      ...qwen2,
      rope_parameters: { rope_type: 'yarn', rope_theta: 50, factor: 4, original_max_position_embeddings: 16 },
    });
    expect(v5).toEqual(v4);
    // The theta of rope_parameters, not the family's default (10000), with no scaling.
    const plain = logits({ ...qwen2, rope_parameters: { rope_type: 'default', rope_theta: 50 } });
    expect(plain).toEqual(logits({ ...qwen2, rope_theta: 50 }));
    expect(maxAbsDiff(plain, logits(qwen2))).toBeGreaterThan(1e-4);
    expect(
      decoderParams({
        ...CONFIGS.phi3,
        partial_rotary_factor: undefined,
        rope_parameters: { rope_type: 'default', rope_theta: 10000, partial_rotary_factor: 0.5 },
      }).rope.rotaryDim,
    ).toBe(2);
    expect(
      codeOf(() =>
        decoderParams({
          ...CONFIGS.gemma2,
          rope_parameters: {
            full_attention: { rope_type: 'default', rope_theta: 1e6 },
            sliding_attention: { rope_type: 'default', rope_theta: 1e4 },
          },
        }),
      ),
    ).toBe('E_UNSUPPORTED');
  });
});

describe('checkpoints', () => {
  test('a tied checkpoint without lm_head.weight loads; an extra lm_head.weight is tolerated', () => {
    const src = make(CONFIGS.gemma, { seed: 3 });
    const sd = stateDict(src);
    expect(sd.has('lm_head.weight')).toBe(false);
    const dst = make(CONFIGS.gemma, { seed: 4 });
    const r = loadStateDictInto(dst, sd);
    expect(r.missing).toEqual([]);
    const withHead = new Map(sd);
    withHead.set('lm_head.weight', sd.get('model.embed_tokens.weight')!);
    expect(loadStateDictInto(dst, withHead).unexpected).toEqual([]);
  });

  test.each(['qwen2', 'phi3', 'gemma2'])('%s: bf16 sharded folder saved and loaded in the same layout', (family) => {
    const src = make(CONFIGS[family], { seed: 5 });
    const out = path.join(dir, `${family}-bf16`);
    const saved = saveModelFolder(out, { config: src.config, stateDict: stateDict(src), dtype: 'bf16', maxShardSize: 4000 });
    expect(saved.weightFiles.length).toBeGreaterThan(1);
    expect(fs.existsSync(path.join(out, 'model.safetensors.index.json'))).toBe(true);
    const back = loadModel(out, { dtype: 'bf16' }) as PreTrainedModel;
    created.push(back);
    expect(back.architecture).toBe(src.architecture);
    expect(back.dtype).toBe('bf16');
    const a = new Map(src.namedParameters());
    for (const [k, t] of back.namedParameters()) {
      const ref = values(a.get(k)!);
      expect(maxAbsDiff(values(t), ref)).toBeLessThanOrEqual(Math.max(...ref.map(Math.abs)) / 128);
    }
  });
});

describe('target modules, SIFT and LoRA', () => {
  test('"all-linear" takes the projections (fused ones included), not norms or the head; LoRA defaults follow PEFT', () => {
    const phi = make({ ...CONFIGS.phi3, tie_word_embeddings: false });
    const plan = planTargets(phi, 'all-linear', undefined);
    const names = plan.sparse.map(([n]) => n.replace(/^model\.layers\.\d+\./, ''));
    expect([...new Set(names)].sort()).toEqual([
      'mlp.down_proj.weight',
      'mlp.gate_up_proj.weight',
      'self_attn.o_proj.weight',
      'self_attn.qkv_proj.weight',
    ]);
    const q = planTargets(make(CONFIGS.qwen3), 'all-linear', undefined).sparse.map(([n]) => n);
    expect(q.some((n) => n.includes('q_norm') || n.includes('lm_head'))).toBe(false);
    expect(planTargets(make(CONFIGS.qwen2), ['q_proj'], undefined).sparse.map(([n]) => n.replace(/^model\.layers\.\d+\./, ''))).toEqual([
      'self_attn.q_proj.weight',
      'self_attn.q_proj.bias',
      'self_attn.q_proj.weight',
      'self_attn.q_proj.bias',
    ]);
    expect(defaultLoraTargets('phi3')).toEqual(['qkv_proj']);
    for (const t of ['qwen2', 'qwen3', 'mistral', 'gemma', 'gemma2']) expect(defaultLoraTargets(t)).toEqual(['q_proj', 'v_proj']);
  });

  const FIXTURES = ['qwen2-lm', 'qwen3-lm', 'mistral-lm', 'gemma-lm', 'gemma2-lm', 'phi3-lm'];

  test.each(FIXTURES)('%s: SIFT selects 5%% of each fused or plain target and lowers the loss', (name) => {
    const fx = loadFixture(name);
    const m = make(fx.config);
    loadStateDictInto(m, fx.params);
    fx.dispose();
    const fixture = loadFixture(name);
    const inputs: ModelInputs = {
      inputIds: fixture.inputs.get('input_ids')!,
      attentionMask: fixture.inputs.get('attention_mask')!,
      labels: fixture.inputs.get('labels')!,
    };
    const sift = new Sift(m, { sparseRate: 0.05, targetModules: 'all-linear' });
    const opt = (() => {
      const lossOf = (back: boolean) =>
        tidy(() => {
          const out = m.forward(inputs);
          if (back) out.loss!.backward();
          return out.loss!.item();
        });
      const first = lossOf(true);
      sift.select();
      const o = new SparseAdamW(sift, { lr: 3e-2, weightDecay: 0 });
      let last = first;
      for (let i = 0; i < 5; i++) {
        lossOf(true);
        o.step();
        last = lossOf(false);
      }
      return { o, first, last };
    })();
    try {
      for (const t of sift.targets) expect(t.k).toBe(kForRate(0.05, t.param.size));
      expect(opt.last).toBeLessThan(opt.first);
    } finally {
      opt.o.dispose();
      sift.dispose();
      fixture.dispose();
    }
  });

  test.each(['phi3', 'gemma2', 'qwen2'])('%s: LoRA on the default targets, merged, gives the adapted outputs', (family) => {
    const m = make({ ...CONFIGS[family], sliding_window: null }).eval();
    const lora = applyLora(m, { rank: 2, alpha: 4, seed: 1 });
    expect(lora.layers.map((l) => l.name.replace(/^model\.layers\.\d+\./, ''))).toEqual(
      family === 'phi3'
        ? ['self_attn.qkv_proj', 'self_attn.qkv_proj']
        : ['self_attn.q_proj', 'self_attn.v_proj', 'self_attn.q_proj', 'self_attn.v_proj'],
    );
    noGrad(() => {
      for (const l of lora.layers) l.B.fill_(0.05);
    });
    const ids = [[3, 9, 4, 7]];
    const adapted = tidy(() => values(m.forward({ inputIds: ids }).logits));
    lora.merge();
    const merged = tidy(() => values(m.forward({ inputIds: ids }).logits));
    expect(maxAbsDiff(merged, adapted)).toBeLessThan(1e-4);
    lora.dispose();
  });
});

describe('KV cache', () => {
  test.each(Object.keys(CONFIGS))('%s: step-by-step decoding with a cache equals the full forward (past the sliding window)', (family) => {
    const m = make({ ...CONFIGS[family], num_hidden_layers: 2 }).eval();
    const ids = [[5, 9, 12, 3, 17, 22, 8, 30, 11]];
    tidy(() => {
      const full = m.forward({ inputIds: ids }).logits;
      const V = full.shape[2];
      const ref = values(full);
      let out = m.forward({ inputIds: [ids[0].slice(0, 4)], useCache: true });
      const got = values(out.logits);
      for (let t = 4; t < ids[0].length; t++) {
        out = m.forward({ inputIds: [[ids[0][t]]], cache: out.cache });
        got.push(...values(out.logits));
      }
      expect(got.length).toBe(ref.length);
      expect(maxAbsDiff(got, ref)).toBeLessThan(1e-4 * Math.max(1, ...ref.slice(0, V).map(Math.abs)));
    });
  });
});
