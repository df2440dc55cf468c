/**
 * Model graphs besides parity: parameter names equal transformers' state-dict keys, the registry,
 * module kinds for "all-linear", transformers' initialisation scheme (seeded), dropout in train()
 * only, and loading state dicts (prefixes, tied keys, buffers, dtype conversion, errors).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { tidy, manualSeed, SiftError, tensor, Tensor, liveTensors, saveSafetensors, SafetensorsReader } from '../../lib';
import {
  createModel,
  loadStateDictInto,
  stateDict,
  resolveModelClass,
  HFConfig,
  PreTrainedModel,
  robertaPositions,
} from '../../lib/models';
import { moduleMatcher } from '../../lib/sift/targets';

const gpt2: HFConfig = { model_type: 'gpt2', vocab_size: 50, n_positions: 16, n_embd: 16, n_layer: 1, n_head: 2 };
const bert: HFConfig = {
  model_type: 'bert',
  vocab_size: 40,
  hidden_size: 16,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  intermediate_size: 24,
  max_position_embeddings: 16,
  type_vocab_size: 2,
  num_labels: 3,
};
const roberta: HFConfig = { ...bert, model_type: 'roberta', pad_token_id: 1, type_vocab_size: 1, num_labels: 2 };
const llama: HFConfig = {
  model_type: 'llama',
  vocab_size: 48,
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 1,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 32,
  pad_token_id: 0,
};

function keys(m: PreTrainedModel): string[] {
  return m.namedParameters().map(([k]) => k);
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SiftError);
    return (e as SiftError).code;
  }
  return undefined;
}

const created: PreTrainedModel[] = [];
function make(cfg: HFConfig, opts: Parameters<typeof createModel>[1] = {}): PreTrainedModel {
  const m = createModel(cfg, { seed: 7, ...opts });
  created.push(m);
  return m;
}
afterAll(() => created.forEach((m) => m.dispose()));

const gptBlock = (p: string) => [
  `${p}ln_1.weight`,
  `${p}ln_1.bias`,
  `${p}attn.c_attn.weight`,
  `${p}attn.c_attn.bias`,
  `${p}attn.c_proj.weight`,
  `${p}attn.c_proj.bias`,
  `${p}ln_2.weight`,
  `${p}ln_2.bias`,
  `${p}mlp.c_fc.weight`,
  `${p}mlp.c_fc.bias`,
  `${p}mlp.c_proj.weight`,
  `${p}mlp.c_proj.bias`,
];
const bertEmb = (p: string) => [
  `${p}embeddings.word_embeddings.weight`,
  `${p}embeddings.position_embeddings.weight`,
  `${p}embeddings.token_type_embeddings.weight`,
  `${p}embeddings.LayerNorm.weight`,
  `${p}embeddings.LayerNorm.bias`,
];
const bertLayer = (p: string) => [
  `${p}attention.self.query.weight`,
  `${p}attention.self.query.bias`,
  `${p}attention.self.key.weight`,
  `${p}attention.self.key.bias`,
  `${p}attention.self.value.weight`,
  `${p}attention.self.value.bias`,
  `${p}attention.output.dense.weight`,
  `${p}attention.output.dense.bias`,
  `${p}attention.output.LayerNorm.weight`,
  `${p}attention.output.LayerNorm.bias`,
  `${p}intermediate.dense.weight`,
  `${p}intermediate.dense.bias`,
  `${p}output.dense.weight`,
  `${p}output.dense.bias`,
  `${p}output.LayerNorm.weight`,
  `${p}output.LayerNorm.bias`,
];
const llamaLayer = (p: string) => [
  `${p}self_attn.q_proj.weight`,
  `${p}self_attn.k_proj.weight`,
  `${p}self_attn.v_proj.weight`,
  `${p}self_attn.o_proj.weight`,
  `${p}mlp.gate_proj.weight`,
  `${p}mlp.up_proj.weight`,
  `${p}mlp.down_proj.weight`,
  `${p}input_layernorm.weight`,
  `${p}post_attention_layernorm.weight`,
];

describe('parameter names are transformers state-dict keys, in its order', () => {
  test('GPT2LMHeadModel (tied lm_head listed once, as transformer.wte.weight)', () => {
    expect(keys(make(gpt2))).toEqual([
      'transformer.wte.weight',
      'transformer.wpe.weight',
      ...gptBlock('transformer.h.0.'),
      'transformer.ln_f.weight',
      'transformer.ln_f.bias',
    ]);
  });
  test('GPT2Model and GPT2ForSequenceClassification', () => {
    expect(keys(make(gpt2, { task: 'base' }))).toEqual(['wte.weight', 'wpe.weight', ...gptBlock('h.0.'), 'ln_f.weight', 'ln_f.bias']);
    expect(keys(make({ ...gpt2, num_labels: 2 }, { task: 'sequence-classification' })).slice(-1)).toEqual(['score.weight']);
  });
  test('GPT-2 with tie_word_embeddings false has its own lm_head.weight', () => {
    const m = make({ ...gpt2, tie_word_embeddings: false });
    expect(keys(m).slice(-1)).toEqual(['lm_head.weight']);
  });
  test('BertForSequenceClassification and BertModel', () => {
    expect(keys(make(bert, { task: 'sequence-classification' }))).toEqual([
      ...bertEmb('bert.'),
      ...bertLayer('bert.encoder.layer.0.'),
      'bert.pooler.dense.weight',
      'bert.pooler.dense.bias',
      'classifier.weight',
      'classifier.bias',
    ]);
    expect(keys(make(bert, { task: 'base' }))).toEqual([
      ...bertEmb(''),
      ...bertLayer('encoder.layer.0.'),
      'pooler.dense.weight',
      'pooler.dense.bias',
    ]);
  });
  test('RobertaForSequenceClassification (no pooler; dense/out_proj head)', () => {
    expect(keys(make(roberta, { task: 'sequence-classification' }))).toEqual([
      ...bertEmb('roberta.'),
      ...bertLayer('roberta.encoder.layer.0.'),
      'classifier.dense.weight',
      'classifier.dense.bias',
      'classifier.out_proj.weight',
      'classifier.out_proj.bias',
    ]);
  });
  test('LlamaForCausalLM (untied and tied), LlamaForSequenceClassification, LlamaModel', () => {
    expect(keys(make(llama))).toEqual([
      'model.embed_tokens.weight',
      ...llamaLayer('model.layers.0.'),
      'model.norm.weight',
      'lm_head.weight',
    ]);
    expect(keys(make({ ...llama, tie_word_embeddings: true }))).toEqual([
      'model.embed_tokens.weight',
      ...llamaLayer('model.layers.0.'),
      'model.norm.weight',
    ]);
    expect(keys(make(llama, { task: 'sequence-classification' })).slice(-1)).toEqual(['score.weight']);
    expect(keys(make(llama, { task: 'base' }))).toEqual(['embed_tokens.weight', ...llamaLayer('layers.0.'), 'norm.weight']);
  });
  test('shapes: Conv1D keeps [in, out]; GQA k_proj is [kv_heads * head_dim, hidden]', () => {
    const g = new Map(make(gpt2).namedParameters());
    expect(g.get('transformer.h.0.attn.c_attn.weight')!.shape).toEqual([16, 48]);
    expect(g.get('transformer.h.0.mlp.c_fc.weight')!.shape).toEqual([16, 64]);
    expect(g.get('transformer.h.0.mlp.c_proj.weight')!.shape).toEqual([64, 16]);
    const l = new Map(make(llama).namedParameters());
    expect(l.get('model.layers.0.self_attn.k_proj.weight')!.shape).toEqual([8, 16]);
    expect(l.get('model.layers.0.self_attn.q_proj.weight')!.shape).toEqual([16, 16]);
  });
});

describe('registry and module kinds', () => {
  test('architectures pick the head; task overrides; model.config records it', () => {
    expect(resolveModelClass({ ...bert, architectures: ['BertForSequenceClassification'] }).task).toBe('sequence-classification');
    expect(resolveModelClass({ ...bert, architectures: ['BertForMaskedLM'] }).architecture).toBe('BertModel');
    expect(resolveModelClass({ architectures: ['LlamaForCausalLM'], hidden_size: 8 }).modelType).toBe('llama');
    const m = make(llama, { task: 'sequence-classification' });
    expect(m.config.architectures).toEqual(['LlamaForSequenceClassification']);
    expect(m.config.model_type).toBe('llama');
    expect(m.task).toBe('sequence-classification');
  });
  test('unsupported types, heads and configs are clear errors', () => {
    expect(codeOf(() => createModel({ model_type: 't5' }))).toBe('E_UNSUPPORTED');
    expect(codeOf(() => createModel(bert, { task: 'causal-lm' }))).toBe('E_UNSUPPORTED');
    expect(codeOf(() => createModel({ ...gpt2, n_head: 3 }))).toBe('E_ARG');
    expect(codeOf(() => createModel({ ...llama, num_key_value_heads: 3 }))).toBe('E_ARG');
    expect(codeOf(() => createModel({ ...gpt2, n_embd: 'big' }))).toBe('E_ARG');
    expect(codeOf(() => createModel({ ...bert, hidden_act: 'mish' }))).toBe('E_UNSUPPORTED');
  });
  test('kinds: Conv1D and Linear are found by "all-linear", lm_head is not', () => {
    const g = make(gpt2);
    const kinds = new Map(g.namedModules().map(([p, m]) => [p, m.kind]));
    expect(kinds.get('transformer.h.0.attn.c_attn')).toBe('Conv1D');
    expect(kinds.get('lm_head')).toBe('Linear');
    const match = moduleMatcher('all-linear', g, 'targetModules')!;
    const linear = g
      .namedModules()
      .map(([p]) => p)
      .filter(match);
    expect(linear).toEqual([
      'transformer.h.0.attn.c_attn',
      'transformer.h.0.attn.c_proj',
      'transformer.h.0.mlp.c_fc',
      'transformer.h.0.mlp.c_proj',
    ]);
    const l = make(llama);
    const lm = moduleMatcher('all-linear', l, 'targetModules')!;
    expect(
      l
        .namedModules()
        .map(([p]) => p)
        .filter(lm).length,
    ).toBe(7);
  });
});

function stats(t: Tensor): { mean: number; std: number; min: number; max: number } {
  const a = Array.from(t.toArray() as Float32Array);
  const mean = a.reduce((s, v) => s + v, 0) / a.length;
  const std = Math.sqrt(a.reduce((s, v) => s + (v - mean) ** 2, 0) / a.length);
  return { mean, std, min: Math.min(...a), max: Math.max(...a) };
}

describe('initialisation (transformers scheme, seeded)', () => {
  const big = { ...gpt2, vocab_size: 400, n_embd: 64, n_layer: 2, n_head: 4, n_positions: 64, initializer_range: 0.05 };
  test('GPT-2: normal(0, initializer_range), c_proj scaled by 1/sqrt(2 n_layer), zero biases, LayerNorm ones', () => {
    const p = new Map(make(big).namedParameters());
    const wte = stats(p.get('transformer.wte.weight')!);
    expect(Math.abs(wte.mean)).toBeLessThan(0.005);
    expect(wte.std).toBeGreaterThan(0.047);
    expect(wte.std).toBeLessThan(0.053);
    const proj = stats(p.get('transformer.h.1.mlp.c_proj.weight')!);
    expect((proj.std / 0.05) * Math.sqrt(4)).toBeGreaterThan(0.93);
    expect((proj.std / 0.05) * Math.sqrt(4)).toBeLessThan(1.07);
    const attnProj = stats(p.get('transformer.h.0.attn.c_proj.weight')!);
    expect(attnProj.std).toBeLessThan(0.03);
    expect(stats(p.get('transformer.h.0.attn.c_attn.weight')!).std).toBeGreaterThan(0.045);
    expect(stats(p.get('transformer.h.0.attn.c_attn.bias')!)).toEqual({ mean: 0, std: 0, min: 0, max: 0 });
    expect(stats(p.get('transformer.ln_f.weight')!)).toEqual({ mean: 1, std: 0, min: 1, max: 1 });
  });
  test('same seed, same weights; another seed or another layer, other weights', () => {
    const a = make(big, { seed: 11 });
    const b = make(big, { seed: 11 });
    const c = make(big, { seed: 12 });
    const get = (m: PreTrainedModel, k: string) => Array.from(new Map(m.namedParameters()).get(k)!.toArray() as Float32Array);
    expect(get(a, 'transformer.h.0.attn.c_attn.weight')).toEqual(get(b, 'transformer.h.0.attn.c_attn.weight'));
    expect(get(a, 'transformer.h.0.attn.c_attn.weight')).not.toEqual(get(c, 'transformer.h.0.attn.c_attn.weight'));
    expect(get(a, 'transformer.h.0.mlp.c_fc.weight').slice(0, 64)).not.toEqual(get(a, 'transformer.h.1.mlp.c_fc.weight').slice(0, 64));
  });
  test('BERT/RoBERTa/LLaMA: padding_idx rows are zero', () => {
    const row = (t: Tensor, r: number) => Array.from(t.toArray() as Float32Array).slice(r * t.shape[1], (r + 1) * t.shape[1]);
    const b = new Map(make({ ...bert, pad_token_id: 0 }, { task: 'sequence-classification' }).namedParameters());
    expect(row(b.get('bert.embeddings.word_embeddings.weight')!, 0).every((v) => v === 0)).toBe(true);
    expect(row(b.get('bert.embeddings.word_embeddings.weight')!, 1).some((v) => v !== 0)).toBe(true);
    expect(row(b.get('bert.embeddings.position_embeddings.weight')!, 0).some((v) => v !== 0)).toBe(true);
    const r = new Map(make(roberta, { task: 'sequence-classification' }).namedParameters());
    expect(row(r.get('roberta.embeddings.word_embeddings.weight')!, 1).every((v) => v === 0)).toBe(true);
    expect(row(r.get('roberta.embeddings.position_embeddings.weight')!, 1).every((v) => v === 0)).toBe(true);
    const l = new Map(make(llama).namedParameters());
    expect(row(l.get('model.embed_tokens.weight')!, 0).every((v) => v === 0)).toBe(true);
    expect(stats(l.get('model.norm.weight')!)).toEqual({ mean: 1, std: 0, min: 1, max: 1 });
  });
});

describe('RoBERTa positions (create_position_ids_from_input_ids)', () => {
  test('start at pad + 1 and skip padding', () => {
    const t = robertaPositions(
      [
        [0, 5, 6, 2, 1, 1],
        [1, 0, 7, 1, 8, 2],
      ],
      1,
      'cpu',
    );
    expect(t.tolist()).toEqual([
      [2, 3, 4, 5, 1, 1],
      [1, 2, 3, 1, 4, 5],
    ]);
    t.dispose();
  });
});

describe('dropout follows train() and eval()', () => {
  const cfg = { ...bert, hidden_dropout_prob: 0.2, attention_probs_dropout_prob: 0.2 };
  const batch = {
    inputIds: [
      [2, 5, 7, 9, 3],
      [2, 6, 8, 0, 0],
    ],
    attentionMask: [
      [1, 1, 1, 1, 1],
      [1, 1, 1, 0, 0],
    ],
    tokenTypeIds: [
      [0, 0, 1, 1, 1],
      [0, 0, 1, 0, 0],
    ],
  };
  const run = (m: PreTrainedModel) => tidy(() => Array.from(m.forward(batch).logits.toArray() as Float32Array));
  test('eval: deterministic; train: random, reproducible from the engine seed', () => {
    const m = make(cfg, { task: 'sequence-classification' });
    m.eval();
    const e1 = run(m);
    expect(run(m)).toEqual(e1);
    m.train();
    manualSeed(42);
    const t1 = run(m);
    const t2 = run(m);
    expect(t1).not.toEqual(e1);
    expect(t2).not.toEqual(t1);
    manualSeed(42);
    expect(run(m)).toEqual(t1);
    expect(m.namedModules().every(([, x]) => x.training)).toBe(true);
  });
  test('train() with zero dropout in the config equals eval()', () => {
    const m = make({ ...bert, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 }, { task: 'sequence-classification' });
    m.eval();
    const e = run(m);
    m.train();
    expect(run(m)).toEqual(e);
  });
  test('GPT-2 and LLaMA attention dropout in training only', () => {
    const g = make({ ...gpt2, attn_pdrop: 0.3, resid_pdrop: 0, embd_pdrop: 0 });
    const ids = { inputIds: [[1, 2, 3, 4, 5, 6]] };
    const out = (m: PreTrainedModel) => tidy(() => Array.from(m.forward(ids).logits.toArray() as Float32Array));
    g.eval();
    const e = out(g);
    g.train();
    expect(out(g)).not.toEqual(e);
    const l = make({ ...llama, attention_dropout: 0.3 });
    l.eval();
    const le = out(l);
    l.train();
    expect(out(l)).not.toEqual(le);
  });
});

describe('losses', () => {
  test('classification: cross-entropy for int labels, MSE for regression, BCE for multi-label', () => {
    const batch = {
      inputIds: [
        [2, 5, 7, 9],
        [2, 6, 8, 3],
      ],
    };
    const cls = make(bert, { task: 'sequence-classification' });
    cls.eval();
    tidy(() => {
      const out = cls.forward({ ...batch, labels: [0, 2] });
      const lg = out.logits.tolist() as number[][];
      const ce = [0, 2].map((y, b) => {
        const m = Math.max(...lg[b]);
        const lse = m + Math.log(lg[b].reduce((s, v) => s + Math.exp(v - m), 0));
        return lse - lg[b][y];
      });
      expect(out.loss!.item()).toBeCloseTo((ce[0] + ce[1]) / 2, 5);
    });
    const reg = make({ ...bert, num_labels: 1 }, { task: 'sequence-classification' });
    reg.eval();
    tidy(() => {
      const out = reg.forward({ ...batch, labels: tensor([0.5, -1], [2]) });
      const lg = out.logits.toArray() as Float32Array;
      expect(out.logits.shape).toEqual([2, 1]);
      expect(out.loss!.item()).toBeCloseTo(((lg[0] - 0.5) ** 2 + (lg[1] + 1) ** 2) / 2, 5);
    });
    const ml = make({ ...bert, problem_type: 'multi_label_classification' }, { task: 'sequence-classification' });
    ml.eval();
    tidy(() => {
      const y = [
        [1, 0, 1],
        [0, 0, 1],
      ];
      const out = ml.forward({ ...batch, labels: tensor(y, [2, 3]) });
      const lg = out.logits.tolist() as number[][];
      let s = 0;
      lg.forEach((r, b) =>
        r.forEach((x, j) => {
          s += -(y[b][j] * Math.log(1 / (1 + Math.exp(-x))) + (1 - y[b][j]) * Math.log(1 - 1 / (1 + Math.exp(-x))));
        }),
      );
      expect(out.loss!.item()).toBeCloseTo(s / 6, 5);
    });
  });
  test('causal LM: labels -100 are ignored; shifting is done inside', () => {
    const m = make(gpt2);
    m.eval();
    tidy(() => {
      const a = m.forward({ inputIds: [[3, 4, 5, 6]], labels: [[3, 4, 5, 6]] }).loss!.item();
      const b = m.forward({ inputIds: [[3, 4, 5, 6]], labels: [[-100, 4, 5, -100]] }).loss!.item();
      const lg = m.forward({ inputIds: [[3, 4, 5, 6]] }).logits.tolist() as number[][][];
      const nll = (t: number, y: number) => {
        const r = lg[0][t];
        const mx = Math.max(...r);
        return mx + Math.log(r.reduce((s, v) => s + Math.exp(v - mx), 0)) - r[y];
      };
      expect(a).toBeCloseTo((nll(0, 4) + nll(1, 5) + nll(2, 6)) / 3, 5);
      expect(b).toBeCloseTo((nll(0, 4) + nll(1, 5)) / 2, 5);
    });
  });
});

describe('loading state dicts', () => {
  test('round trip through stateDict; hub-style GPT-2 keys without prefix; buffers ignored', () => {
    const src = make(gpt2, { seed: 1 });
    const dst = make(gpt2, { seed: 2 });
    const sd = stateDict(src);
    expect([...sd.keys()]).not.toContain('lm_head.weight');
    const hub = new Map([...sd].map(([k, t]) => [k.replace(/^transformer\./, ''), t]));
    const buf = tensor([1], [1]);
    hub.set('h.0.attn.bias', buf);
    hub.set('lm_head.weight', sd.get('transformer.wte.weight')!);
    const r = loadStateDictInto(dst, hub);
    expect(r.missing).toEqual([]);
    expect(r.unexpected).toEqual([]);
    buf.dispose();
    for (const [k, t] of dst.namedParameters())
      expect(Array.from(t.toArray() as Float32Array)).toEqual(Array.from(sd.get(k)!.toArray() as Float32Array));
    // The tied head reads the loaded embedding.
    tidy(() => {
      const a = src
        .eval()
        .forward({ inputIds: [[1, 2, 3]] })
        .logits.toArray();
      const b = dst
        .eval()
        .forward({ inputIds: [[1, 2, 3]] })
        .logits.toArray();
      expect(Array.from(b as Float32Array)).toEqual(Array.from(a as Float32Array));
    });
  });
  test('legacy gamma/beta names, base checkpoints into a classifier (allowMissing), dtype conversion', () => {
    const base = make(bert, { task: 'base', seed: 5 });
    const sd = new Map(
      [...stateDict(base)].map(([k, t]) => [
        `bert.${k.replace(/LayerNorm\.weight$/, 'LayerNorm.gamma').replace(/LayerNorm\.bias$/, 'LayerNorm.beta')}`,
        t,
      ]),
    );
    const cls = make(bert, { task: 'sequence-classification', dtype: 'f64' });
    expect(codeOf(() => loadStateDictInto(cls, sd))).toBe('E_FORMAT');
    const r = loadStateDictInto(cls, sd, { allowMissing: [/^classifier\./] });
    expect(r.missing.sort()).toEqual(['classifier.bias', 'classifier.weight']);
    const p = new Map(cls.namedParameters()).get('bert.encoder.layer.0.output.LayerNorm.weight')!;
    expect(p.dtype).toBe('f64');
    const q = new Map(base.namedParameters()).get('encoder.layer.0.output.LayerNorm.weight')!;
    expect(Array.from(p.toArray() as Float64Array)).toEqual(Array.from(q.toArray() as Float32Array));
  });
  test('streaming sources (a lazy reader, a generator) are read one tensor at a time and disposed', () => {
    const src = make(llama, { seed: 21 });
    const file = path.join(os.tmpdir(), `sift-models-${process.pid}.safetensors`);
    saveSafetensors(file, stateDict(src));
    const reader = SafetensorsReader.open(file);
    const want = (m: PreTrainedModel) => m.namedParameters().map(([, t]) => Array.from(t.toArray() as Float32Array));
    try {
      const live = liveTensors().cpu.count;
      const a = make(llama, { seed: 22 });
      const afterModel = liveTensors().cpu.count;
      loadStateDictInto(a, { keys: reader.names(), get: (k) => reader.tensor(k) });
      expect(liveTensors().cpu.count).toBeLessThanOrEqual(afterModel);
      expect(want(a)).toEqual(want(src));
      const b = make(llama, { seed: 23, dtype: 'bf16' });
      function* entries(): Generator<[string, Tensor]> {
        for (const k of reader.names()) yield [k, reader.tensor(k)];
      }
      loadStateDictInto(b, entries());
      expect(liveTensors().cpu.count).toBeLessThanOrEqual(afterModel + (afterModel - live));
      expect(b.dtype).toBe('bf16');
    } finally {
      reader.close();
      fs.rmSync(file, { force: true });
    }
  });
  test('errors: unexpected keys and wrong shapes', () => {
    const m = make(llama);
    const sd = new Map(stateDict(make(llama)));
    const extra = tensor([1, 2], [2]);
    sd.set('model.layers.9.mlp.up_proj.weight', extra);
    expect(codeOf(() => loadStateDictInto(m, sd))).toBe('E_FORMAT');
    expect(loadStateDictInto(m, sd, { strict: false }).unexpected).toEqual(['model.layers.9.mlp.up_proj.weight']);
    sd.delete('model.layers.9.mlp.up_proj.weight');
    sd.set('model.norm.weight', extra);
    expect(codeOf(() => loadStateDictInto(m, sd))).toBe('E_SHAPE');
    extra.dispose();
  });
});

describe('dtypes and devices', () => {
  const lg = (m: PreTrainedModel, batch: object) =>
    tidy(() => Array.from(m.forward(batch as never).logits.toArray() as Float32Array, Number));
  const rel = (a: number[], b: number[]) => Math.max(...a.map((v, i) => Math.abs(v - b[i]))) / Math.max(...b.map(Math.abs));
  test.each([
    ['bf16', 3e-2],
    ['f16', 5e-3],
  ] as const)('%s models follow the f32 model (forward and backward)', (dtype, tol) => {
    const batch = {
      inputIds: [
        [3, 9, 14, 2, 7],
        [8, 1, 30, 0, 0],
      ],
      attentionMask: [
        [1, 1, 1, 1, 1],
        [1, 1, 1, 0, 0],
      ],
      labels: [
        [3, 9, 14, 2, 7],
        [8, 1, 30, -100, -100],
      ],
    };
    for (const cfg of [
      { ...llama, initializer_range: 0.1 },
      { ...gpt2, initializer_range: 0.1 },
    ]) {
      const ref = make(cfg).eval();
      const low = make(cfg, { dtype }).eval();
      loadStateDictInto(low, stateDict(ref));
      expect(low.dtype).toBe(dtype);
      expect(rel(lg(low, batch), lg(ref, batch))).toBeLessThan(tol);
      tidy(() => {
        const out = low.forward(batch);
        expect(out.loss!.dtype).toBe('f32');
        out.loss!.backward();
      });
      for (const [, p] of low.namedParameters()) {
        expect(p.grad?.dtype).toBe(dtype);
        p.zeroGrad();
      }
    }
  });
  test('to() converts in place; the tied head follows the embedding', () => {
    const m = make({ ...gpt2, initializer_range: 0.1 }).eval();
    const batch = { inputIds: [[3, 9, 14, 2, 7]] };
    const a = lg(m, batch);
    m.to('f64');
    expect(m.dtype).toBe('f64');
    expect(m.device).toBe('cpu');
    expect(rel(lg(m, batch), a)).toBeLessThan(1e-5);
  });
});
