/**
 * PEFT adapters: a SIFT increment exported as SUPERTUNING (keys, dtypes, layout and config fields
 * as PEFT's supertuning tuner reads them), applied back in PEFT's way onto the base and compared
 * with applyIncrement bit for bit; a trained head in modules_to_save; GPT-2's Conv1D refused; a
 * LoRA adapter re-written with PEFT's task_type and LoraConfig fields and applied like PEFT's merge.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { createModel, stateDict } from '../../lib/models';
import { saveModelFolder } from '../../lib/io/hf';
import { SafetensorsReader } from '../../lib/io/safetensors';
import { createByteTokenizer } from '../../lib/tokenizers';
import { Trainer } from '../../lib/train/trainer';
import type { Row, TrainerOptions } from '../../lib/train/types';
import { applyIncrement } from '../../lib/sift/increment';
import { SiftError } from '../../lib/engine/errors';
import { applyPeftAdapter, peftTargetModules, supertuningCount, supertuningSparsity } from '../../lib/io/peft';
import { exportPeft } from '../../lib/cli/export-peft';
import { loadModelForTask } from '../../lib/cli/common';
import { loadWithDelta } from '../../lib/cli/delta';
import { runCli } from '../helpers/cli';
import { tinyGpt2Config } from '../helpers/tiny-configs';

const cliRun = runCli;

/** The dataclass fields of PEFT's PeftConfig (peft/config.py) and SupertuningConfig (peft/tuners/supertuning/config.py). */
const PEFT_CONFIG_FIELDS = ['peft_type', 'task_type', 'base_model_name_or_path', 'revision', 'inference_mode', 'auto_mapping'];
const SUPERTUNING_FIELDS = [
  'target_modules',
  'modules_to_save',
  'sparsity',
  'select_top',
  'r',
  'lora_alpha',
  'lora_dropout',
  'init_weights',
  'save_precomputed_indices',
];
/** LoraConfig fields (peft/tuners/lora/config.py) this product writes. */
const LORA_FIELDS = [
  'r',
  'lora_alpha',
  'lora_dropout',
  'target_modules',
  'fan_in_fan_out',
  'bias',
  'modules_to_save',
  'init_lora_weights',
  'layers_to_transform',
  'layers_pattern',
  'rank_pattern',
  'alpha_pattern',
  'use_rslora',
  'use_dora',
];

let tmp: string;
let llama: string;
let gpt2: string;
const tok = createByteTokenizer();
const texts = [
  'the cat sat on the mat',
  'a dog ran in the park',
  'birds sing at dawn',
  'fish swim in the sea',
  'the sun is warm today',
  'rain falls on the roof',
  'snow on the hills',
  'wind in the trees',
];
const lmRows: Row[] = texts.map((text) => ({ text }));
const clsRows: Row[] = texts.map((text, i) => ({ text, label: i % 2 }));

function folder(name: string, config: Record<string, unknown>): string {
  const model = createModel(config, { task: 'causal-lm', seed: 5 });
  const dir = path.join(tmp, name);
  saveModelFolder(dir, { config: model.config, stateDict: stateDict(model), tokenizerFiles: tok.toFiles() });
  model.dispose();
  return dir;
}

async function train(base: string, out: string, opts: Partial<TrainerOptions>, rows: Row[] = lmRows): Promise<void> {
  const task = opts.task ?? 'causal-lm';
  const loaded = loadModelForTask(base, { task, device: 'cpu', labels: task === 'classify' ? ['0', '1'] : undefined });
  const t = new Trainer(loaded.model, loaded.tokenizer, {
    task,
    steps: 3,
    batchSize: 4,
    lr: 5e-2,
    seed: 2,
    device: 'cpu',
    outDir: out,
    maxLength: 16,
    labels: loaded.labels,
    ...opts,
  });
  try {
    for await (const e of t.fit(rows)) void e;
    t.save(out);
  } finally {
    t.dispose();
    loaded.model.dispose();
  }
}

function params(m: { namedParameters(): [string, { toArray(): ArrayLike<number> }][] }): Map<string, Float32Array> {
  return new Map(m.namedParameters().map(([n, t]) => [n, Float32Array.from(t.toArray() as Float32Array)]));
}

function readConfig(dir: string): Record<string, unknown> {
  return JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'));
}

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-peft-'));
  llama = folder('llama', {
    model_type: 'llama',
    vocab_size: tok.vocabSize,
    hidden_size: 16,
    intermediate_size: 24,
    num_hidden_layers: 2,
    num_attention_heads: 2,
    num_key_value_heads: 1,
    max_position_embeddings: 32,
    tie_word_embeddings: false,
    eos_token_id: tok.eosTokenId,
    bos_token_id: tok.bosTokenId,
    pad_token_id: tok.padTokenId,
  });
  gpt2 = folder('gpt2', tinyGpt2Config(tok));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('SUPERTUNING count', () => {
  test("one sparsity gives every layer at least its entries, in Python's double arithmetic, with little padding on real sizes", () => {
    for (const rate of [0.01, 0.02, 0.05, 0.1, 0.3]) {
      const layers = [
        [4096, 4096],
        [1024, 4096],
        [14336, 4096],
        [896, 896],
        [128, 896],
        [4864, 896],
      ].map(([o, i], j) => {
        const numel = o * i;
        return { name: `l${j}.weight`, numel, k: Math.min(Math.floor(rate * numel) + 1, numel) };
      });
      const { sparsity, padding } = supertuningSparsity(layers);
      expect(sparsity).toBeGreaterThanOrEqual(0);
      expect(sparsity).toBeLessThan(1);
      // int(num_params * (1 - sparsity)) as PEFT's layer computes it; JSON round-trips the same double.
      const back = JSON.parse(JSON.stringify(sparsity));
      let pad = 0;
      for (const l of layers) {
        const count = supertuningCount(l.numel, back);
        expect(count).toBeGreaterThanOrEqual(l.k);
        pad += count - l.k;
      }
      expect(pad).toBe(padding);
      const total = layers.reduce((a, l) => a + l.k, 0);
      expect(padding).toBeLessThanOrEqual(Math.max(1e-3 * total, layers.length));
    }
  });

  test('layers no single sparsity fits exactly (tiny ones, a global top-k) are padded, never cut', () => {
    const layers = [
      { name: 'a.weight', numel: 256, k: 13 },
      { name: 'b.weight', numel: 128, k: 7 },
      { name: 'c.weight', numel: 1000, k: 300 },
    ];
    const { sparsity } = supertuningSparsity(layers);
    for (const l of layers) expect(supertuningCount(l.numel, sparsity)).toBeGreaterThanOrEqual(l.k);
    expect(supertuningCount(1000, sparsity)).toBe(300);
  });

  test('target_modules: short names when they pick exactly the targets, else full paths', () => {
    const mods: [string, { kind: string }][] = ['a.0.q_proj', 'a.0.v_proj', 'a.1.q_proj', 'a.1.v_proj'].map((p) => [p, { kind: 'Linear' }]);
    expect(peftTargetModules(['a.0.q_proj', 'a.1.q_proj'], mods)).toEqual(['q_proj']);
    expect(peftTargetModules(['a.0.q_proj', 'a.1.v_proj'], mods)).toEqual(['a.0.q_proj', 'a.1.v_proj']);
  });
});

describe('export-peft', () => {
  test('a SIFT increment becomes a SUPERTUNING adapter that applies to the same weights as applyIncrement', async () => {
    const run = path.join(tmp, 'sift-lm');
    await train(llama, run, { method: 'sift', sift: { sparseRate: 0.05 } });
    const out = path.join(tmp, 'peft-lm');
    const r = exportPeft({ modelDir: llama, delta: path.join(run, 'delta.safetensors'), out });
    expect(r.source).toBe('increment');
    const cfg = readConfig(out);
    expect(Object.keys(cfg).sort()).toEqual([...PEFT_CONFIG_FIELDS, ...SUPERTUNING_FIELDS].sort());
    expect(cfg.peft_type).toBe('SUPERTUNING');
    expect(cfg.task_type).toBe('CAUSAL_LM');
    expect(cfg.base_model_name_or_path).toBe(path.resolve(llama));
    expect(cfg.modules_to_save).toBeNull();
    expect(cfg.r).toBeNull();
    expect(cfg.target_modules).toEqual(['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']);
    // As PEFT's save_pretrained sorts the keys.
    expect(Object.keys(cfg)).toEqual(Object.keys(cfg).slice().sort());

    const reader = SafetensorsReader.open(path.join(out, 'adapter_model.safetensors'));
    const base = loadModelForTask(llama, { task: 'causal-lm', device: 'cpu' });
    try {
      expect(reader.metadata.format).toBe('pt');
      const names = reader.names();
      const sizes = new Map(base.model.namedParameters().map(([n, t]) => [n, t.size]));
      const mods = names
        .filter((n) => n.endsWith('.supertuning_values'))
        .map((n) => n.slice('base_model.model.'.length, -'.supertuning_values'.length));
      expect(mods.length).toBe(2 * 7);
      expect(names.length).toBe(2 * mods.length);
      for (const m of mods) {
        const ii = reader.info(`base_model.model.${m}.supertuning_indices`);
        const vi = reader.info(`base_model.model.${m}.supertuning_values`);
        expect(ii.fileDType).toBe('I32');
        expect(vi.fileDType).toBe('F32');
        expect(ii.shape.length).toBe(1);
        expect(ii.shape).toEqual(vi.shape);
        // PEFT sizes the buffers to int(numel * (1 - sparsity)) before loading the file into them.
        expect(ii.shape[0]).toBe(Math.trunc(sizes.get(`${m}.weight`)! * (1 - (cfg.sparsity as number))));
        const idx = [...(reader.tensor(`base_model.model.${m}.supertuning_indices`).toArray() as Int32Array)];
        expect(new Set(idx).size).toBe(idx.length);
        expect(idx.every((v, i) => v >= 0 && v < sizes.get(`${m}.weight`)! && (i === 0 || v > idx[i - 1]))).toBe(true);
      }
    } finally {
      reader.close();
      base.model.dispose();
    }

    const a = loadModelForTask(llama, { task: 'causal-lm', device: 'cpu' });
    const b = loadModelForTask(llama, { task: 'causal-lm', device: 'cpu' });
    try {
      const before = params(a.model);
      applyIncrement(a.model, path.join(run, 'delta.safetensors'));
      applyPeftAdapter(b.model, out);
      const pa = params(a.model);
      const pb = params(b.model);
      let changed = 0;
      for (const [n, v] of pa) {
        expect(Buffer.from(pb.get(n)!.buffer).equals(Buffer.from(v.buffer))).toBe(true);
        if (!Buffer.from(before.get(n)!.buffer).equals(Buffer.from(v.buffer))) changed++;
      }
      expect(changed).toBe(14);
    } finally {
      a.model.dispose();
      b.model.dispose();
    }
  });

  test('a classification increment puts the trained head in modules_to_save as PEFT stores it', async () => {
    const run = path.join(tmp, 'sift-cls');
    await train(llama, run, { task: 'classify', method: 'sift', sift: { sparseRate: 0.05 } }, clsRows);
    const out = path.join(tmp, 'peft-cls');
    exportPeft({ modelDir: llama, delta: run, out });
    const cfg = readConfig(out);
    expect(cfg.task_type).toBe('SEQ_CLS');
    expect(cfg.modules_to_save).toEqual(['score']);
    const reader = SafetensorsReader.open(path.join(out, 'adapter_model.safetensors'));
    try {
      expect(reader.names()).toContain('base_model.model.score.weight');
      expect(reader.names().some((n) => n.includes('modules_to_save') || n.includes('.default'))).toBe(false);
    } finally {
      reader.close();
    }
    const a = loadModelForTask(llama, { task: 'classify', device: 'cpu', labels: ['0', '1'] });
    const b = loadModelForTask(llama, { task: 'classify', device: 'cpu', labels: ['0', '1'], seed: 99 });
    try {
      // The head of b starts elsewhere (another seed): modules_to_save replaces it.
      applyIncrement(a.model, path.join(run, 'delta.safetensors'));
      applyPeftAdapter(b.model, out);
      const pa = params(a.model);
      const pb = params(b.model);
      for (const [n, v] of pa) expect(Buffer.from(pb.get(n)!.buffer).equals(Buffer.from(v.buffer))).toBe(true);
    } finally {
      a.model.dispose();
      b.model.dispose();
    }
  });

  test("GPT-2's Conv1D layers are E_UNSUPPORTED, named", async () => {
    const run = path.join(tmp, 'sift-gpt2');
    await train(gpt2, run, { method: 'sift', sift: { sparseRate: 0.05 } });
    let err: unknown;
    try {
      exportPeft({ modelDir: gpt2, delta: path.join(run, 'delta.safetensors'), out: path.join(tmp, 'peft-gpt2') });
    } catch (e) {
      err = e;
    }
    expect((err as SiftError).code).toBe('E_UNSUPPORTED');
    expect((err as Error).message).toMatch(/Conv1D.*transformer\.h\.0\.attn\.c_attn/);
    expect((err as Error).message).toMatch(/LoRA/);
    expect(fs.existsSync(path.join(tmp, 'peft-gpt2', 'adapter_model.safetensors'))).toBe(false);
  });

  test('an increment of another base is E_MISMATCH', async () => {
    const other = folder('llama-other', { ...JSON.parse(fs.readFileSync(path.join(llama, 'config.json'), 'utf8')) });
    // Same shapes, other weights (saved from seed 5 again, then perturbed by a different init seed).
    const m = createModel(JSON.parse(fs.readFileSync(path.join(other, 'config.json'), 'utf8')), { task: 'causal-lm', seed: 6 });
    saveModelFolder(other, { config: m.config, stateDict: stateDict(m), tokenizerFiles: tok.toFiles() });
    m.dispose();
    let err: unknown;
    try {
      exportPeft({ modelDir: other, delta: path.join(tmp, 'sift-lm', 'delta.safetensors'), out: path.join(tmp, 'peft-other') });
    } catch (e) {
      err = e;
    }
    expect((err as SiftError).code).toBe('E_MISMATCH');
  });

  test("a LoRA adapter gets PEFT's task_type and LoraConfig fields, and applies like PEFT's merge", async () => {
    const run = path.join(tmp, 'lora-lm');
    await train(llama, run, { method: 'lora', lora: { rank: 2, alpha: 4 } });
    // The trainer's own adapter_config.json already carries the task type.
    expect(readConfig(run).task_type).toBe('CAUSAL_LM');
    const out = path.join(tmp, 'peft-lora');
    const res = await cliRun('export-peft', '--model', llama, '--delta', run, '--out', out, '--json');
    expect(res.code).toBe(0);
    expect(JSON.parse(res.out).source).toBe('lora');
    const cfg = readConfig(out);
    expect(Object.keys(cfg).sort()).toEqual([...PEFT_CONFIG_FIELDS, ...LORA_FIELDS].sort());
    expect(cfg).toMatchObject({
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      r: 2,
      lora_alpha: 4,
      fan_in_fan_out: false,
      bias: 'none',
      target_modules: ['q_proj', 'v_proj'],
    });
    // Re-written in place: the run folder's own config loses sift-ft's keys and keeps its weights.
    expect(readConfig(run).sift_ft_task).toBe('causal-lm');
    expect((await cliRun('export-peft', '--model', llama, '--delta', run, '--out', run)).code).toBe(0);
    expect(Object.keys(readConfig(run)).sort()).toEqual([...PEFT_CONFIG_FIELDS, ...LORA_FIELDS].sort());
    expect(
      fs.readFileSync(path.join(run, 'adapter_model.safetensors')).equals(fs.readFileSync(path.join(out, 'adapter_model.safetensors'))),
    ).toBe(true);
    const reader = SafetensorsReader.open(path.join(out, 'adapter_model.safetensors'));
    try {
      expect(reader.names().sort()).toEqual(
        ['0', '1']
          .flatMap((l) =>
            ['q_proj', 'v_proj'].flatMap((p) =>
              ['A', 'B'].map((x) => `base_model.model.model.layers.${l}.self_attn.${p}.lora_${x}.weight`),
            ),
          )
          .sort(),
      );
    } finally {
      reader.close();
    }
    // Trainer-merged weights (the product's merge) against PEFT's merge rule applied to the exported adapter.
    const loaded = loadModelForTask(llama, { task: 'causal-lm', device: 'cpu' });
    const t = new Trainer(loaded.model, loaded.tokenizer, {
      task: 'causal-lm',
      method: 'lora',
      lora: { rank: 2, alpha: 4 },
      steps: 3,
      batchSize: 4,
      lr: 5e-2,
      seed: 2,
      device: 'cpu',
      maxLength: 16,
    });
    const b = loadModelForTask(llama, { task: 'causal-lm', device: 'cpu' });
    try {
      for await (const e of t.fit(lmRows)) void e;
      const merged = path.join(tmp, 'lora-merged');
      t.saveMerged(merged);
      const ref = loadModelForTask(merged, { task: 'causal-lm', device: 'cpu' });
      applyPeftAdapter(b.model, out);
      const pr = params(ref.model);
      for (const [n, v] of params(b.model)) {
        const w = pr.get(n)!;
        for (let i = 0; i < v.length; i++) expect(Math.abs(v[i] - w[i])).toBeLessThanOrEqual(1e-6 * (1 + Math.abs(w[i])));
      }
      ref.model.dispose();
    } finally {
      t.dispose();
      loaded.model.dispose();
      b.model.dispose();
    }
  });

  test('--delta of a PEFT LoRA adapter (eval, generate, merge, export-onnx) merges as PEFT does: rsLoRA scale, DoRA refused', async () => {
    const run = path.join(tmp, 'lora-rs');
    await train(llama, run, { method: 'lora', lora: { rank: 4, alpha: 4 } });
    const cfgFile = path.join(run, 'adapter_config.json');
    const cfg = readConfig(run);
    fs.writeFileSync(cfgFile, JSON.stringify({ ...cfg, use_rslora: true }));
    const bm = loadModelForTask(llama, { task: 'causal-lm', device: 'cpu' }).model;
    const base = params(bm);
    bm.dispose();
    const r = SafetensorsReader.open(path.join(run, 'adapter_model.safetensors'));
    const get = (k: string) => {
      const t = r.tensor(`base_model.model.model.layers.0.self_attn.q_proj.${k}.weight`);
      const v = { shape: t.shape.slice(), data: Float32Array.from(t.toArray() as Float32Array) };
      t.dispose();
      return v;
    };
    const A = get('lora_A');
    const B = get('lora_B');
    r.close();
    const [rank, inF] = A.shape;
    const outF = B.shape[0];
    const scale = 4 / Math.sqrt(rank); // use_rslora: lora_alpha / sqrt(r), not lora_alpha / r
    const w0 = base.get('model.layers.0.self_attn.q_proj.weight')!;
    const expected = Float32Array.from(w0, (w, idx) => {
      const o = Math.floor(idx / inF);
      const i = idx % inF;
      let d = 0;
      for (let k = 0; k < rank; k++) d += B.data[o * rank + k] * A.data[k * inF + i];
      return w + scale * d;
    });
    expect(outF * inF).toBe(w0.length);
    const loaded = loadWithDelta(llama, run, { task: 'causal-lm', device: 'cpu' });
    try {
      const got = params(loaded.model).get('model.layers.0.self_attn.q_proj.weight')!;
      for (let i = 0; i < got.length; i++) expect(Math.abs(got[i] - expected[i])).toBeLessThanOrEqual(1e-5 * (1 + Math.abs(expected[i])));
    } finally {
      loaded.model.dispose();
    }
    fs.writeFileSync(cfgFile, JSON.stringify({ ...cfg, use_dora: true }));
    expect(() => loadWithDelta(llama, run, { task: 'causal-lm', device: 'cpu' })).toThrow(
      expect.objectContaining({ code: 'E_UNSUPPORTED' }),
    );
  });

  test('--delta takes the SUPERTUNING adapter export-peft wrote: the same weights as the increment, bit for bit', async () => {
    const run = path.join(tmp, 'sift-lm-delta');
    await train(llama, run, { method: 'sift', sift: { sparseRate: 0.05 } });
    const out = path.join(tmp, 'peft-lm-delta');
    exportPeft({ modelDir: llama, delta: run, out });
    const fromIncrement = loadWithDelta(llama, run, { task: 'causal-lm', device: 'cpu' });
    const fromAdapter = loadWithDelta(llama, out, { task: 'causal-lm', device: 'cpu' });
    try {
      expect(fromAdapter.delta?.kind).toBe('supertuning');
      const a = params(fromAdapter.model);
      const b = params(fromIncrement.model);
      const base = loadModelForTask(llama, { task: 'causal-lm', device: 'cpu' });
      const c = params(base.model);
      base.model.dispose();
      let changed = 0;
      for (const [n, v] of b) {
        expect(a.get(n)).toEqual(v);
        if (c.get(n)!.some((x, i) => x !== v[i])) changed++;
      }
      expect(changed).toBe(2 * 7);
    } finally {
      fromIncrement.model.dispose();
      fromAdapter.model.dispose();
    }
    // A PEFT method sift-ft does not apply is named.
    const other = path.join(tmp, 'ia3');
    fs.mkdirSync(other);
    fs.copyFileSync(path.join(out, 'adapter_model.safetensors'), path.join(other, 'adapter_model.safetensors'));
    fs.writeFileSync(path.join(other, 'adapter_config.json'), JSON.stringify({ ...readConfig(out), peft_type: 'IA3' }));
    expect(() => loadWithDelta(llama, other, { task: 'causal-lm', device: 'cpu' })).toThrow(
      expect.objectContaining({ code: 'E_UNSUPPORTED' }),
    );
  });

  test('a LoRA classifier of three labels exports with the head its adapter records; a head of another label count is E_MISMATCH', async () => {
    const run = path.join(tmp, 'lora-cls3');
    const loaded = loadModelForTask(llama, { task: 'classify', device: 'cpu', labels: ['a', 'b', 'c'] });
    const t = new Trainer(loaded.model, loaded.tokenizer, {
      task: 'classify',
      method: 'lora',
      lora: { rank: 2, alpha: 4 },
      steps: 2,
      batchSize: 4,
      lr: 5e-2,
      seed: 2,
      device: 'cpu',
      outDir: run,
      maxLength: 16,
      labels: loaded.labels,
    });
    try {
      for await (const e of t.fit(texts.map((text, i) => ({ text, label: ['a', 'b', 'c'][i % 3] })))) void e;
      t.save(run);
    } finally {
      t.dispose();
      loaded.model.dispose();
    }
    const out = path.join(tmp, 'peft-cls3');
    exportPeft({ modelDir: llama, delta: run, out });
    expect(readConfig(out)).toMatchObject({ peft_type: 'LORA', task_type: 'SEQ_CLS', modules_to_save: ['score'] });
    const reader = SafetensorsReader.open(path.join(out, 'adapter_model.safetensors'));
    try {
      expect(reader.info('base_model.model.score.weight').shape).toEqual([3, 16]);
    } finally {
      reader.close();
    }
    // The adapter says four labels while its score weight has three rows.
    const cfg = readConfig(run);
    fs.writeFileSync(
      path.join(run, 'adapter_config.json'),
      JSON.stringify({ ...cfg, sift_ft_head: { task: 'classify', num_labels: 4, id2label: { 0: 'a', 1: 'b', 2: 'c', 3: 'd' } } }),
    );
    expect(() => exportPeft({ modelDir: llama, delta: run, out: path.join(tmp, 'peft-cls4') })).toThrow(
      expect.objectContaining({ code: 'E_MISMATCH', message: expect.stringMatching(/score\.weight.*\[3,16\].*\[4,16\]/) }),
    );
    expect(fs.existsSync(path.join(tmp, 'peft-cls4'))).toBe(false);
  });

  test('CLI: flags checked, one-line errors', async () => {
    expect((await cliRun('export-peft', '--model', llama, '--out', path.join(tmp, 'x'))).code).toBe(2);
    const bad = await cliRun(
      'export-peft',
      '--model',
      llama,
      '--delta',
      path.join(tmp, 'llama', 'config.json'),
      '--out',
      path.join(tmp, 'x'),
    );
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/\[E_(FORMAT|IO)\]/);
    const onFile = await cliRun(
      'export-peft',
      '--model',
      llama,
      '--delta',
      path.join(tmp, 'sift-lm', 'delta.safetensors'),
      '--out',
      path.join(tmp, 'llama', 'config.json'),
    );
    expect([onFile.code, /\[E_ARG\]/.test(onFile.err)]).toEqual([2, true]);
    const help = await cliRun('export-peft', '--help');
    expect(help.out).toMatch(/--delta/);
  });
});
