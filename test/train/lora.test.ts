import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { createModel, HFConfig, tidy, noGrad, tensor, SiftError, loadSafetensors, stateDict } from '../../lib';
import { applyLora } from '../../lib/train/lora';

const gpt2: HFConfig = {
  model_type: 'gpt2',
  vocab_size: 40,
  n_positions: 16,
  n_embd: 16,
  n_layer: 2,
  n_head: 2,
  embd_pdrop: 0,
  attn_pdrop: 0,
  resid_pdrop: 0,
};
const llama: HFConfig = {
  model_type: 'llama',
  vocab_size: 40,
  max_position_embeddings: 16,
  hidden_size: 16,
  intermediate_size: 32,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  num_key_value_heads: 1,
};
const ids = [
  [1, 2, 3, 4, 5, 6],
  [7, 8, 9, 10, 11, 12],
];

function logitsOf(model: ReturnType<typeof createModel>): Float32Array {
  return tidy(() => noGrad(() => model.forward({ inputIds: ids }).logits.toArray() as Float32Array));
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function randomizeB(adapters: ReturnType<typeof applyLora>): void {
  noGrad(() => {
    adapters.layers.forEach((l, i) => {
      const n = l.B.size;
      const v = Float32Array.from({ length: n }, (_, j) => Math.sin(j * 1.7 + i) * 0.3);
      const t = tensor(v, l.B.shape);
      l.B.copy_(t);
      t.dispose();
    });
  });
}

describe('LoRA', () => {
  test('Conv1D (GPT-2): zero B leaves the output unchanged; names as PEFT; A within the kaiming bound', () => {
    const model = createModel(gpt2, { task: 'causal-lm', seed: 1 });
    const before = logitsOf(model);
    const lora = applyLora(model, { rank: 4, alpha: 8 });
    expect(lora.layers.map((l) => l.name)).toEqual(['transformer.h.0.attn.c_attn', 'transformer.h.1.attn.c_attn']);
    expect(lora.namedParameters().map(([n, t]) => [n, t.shape])).toEqual([
      ['transformer.h.0.attn.c_attn.lora_A.weight', [4, 16]],
      ['transformer.h.0.attn.c_attn.lora_B.weight', [48, 4]],
      ['transformer.h.1.attn.c_attn.lora_A.weight', [4, 16]],
      ['transformer.h.1.attn.c_attn.lora_B.weight', [48, 4]],
    ]);
    const a = lora.layers[0].A.toArray() as Float32Array;
    expect(Math.max(...Array.from(a, Math.abs))).toBeLessThanOrEqual(1 / 4);
    expect(Math.max(...Array.from(a, Math.abs))).toBeGreaterThan(0.1);
    expect(maxDiff(before, logitsOf(model))).toBe(0);
    // The model's own parameters are untouched by the wrapping and frozen.
    expect([...stateDict(model).keys()].some((k) => k.includes('lora'))).toBe(false);
    expect(model.parameters().every((p) => !p.requiresGrad)).toBe(true);
    lora.dispose();
    model.dispose();
  });

  test('merged forward equals the adapter forward (Conv1D and Linear); unmerge restores', () => {
    for (const [cfg, targets] of [
      [gpt2, ['c_attn', 'c_fc']],
      [llama, ['q_proj', 'v_proj', 'down_proj']],
    ] as const) {
      const model = createModel(cfg, { task: 'causal-lm', seed: 2 });
      const base = logitsOf(model);
      const lora = applyLora(model, { rank: 2, alpha: 4, targetModules: [...targets] });
      randomizeB(lora);
      const adapted = logitsOf(model);
      expect(maxDiff(base, adapted)).toBeGreaterThan(1e-3);
      lora.merge();
      expect(lora.isMerged).toBe(true);
      expect(maxDiff(adapted, logitsOf(model))).toBeLessThan(1e-4);
      lora.unmerge();
      expect(maxDiff(adapted, logitsOf(model))).toBeLessThan(1e-5);
      lora.dispose();
      expect(maxDiff(base, logitsOf(model))).toBeLessThan(1e-5);
      model.dispose();
    }
  });

  test('gradients reach only the adapters', () => {
    const model = createModel(gpt2, { task: 'causal-lm', seed: 3 });
    const lora = applyLora(model, { rank: 2, dropout: 0.1, seed: 5 });
    randomizeB(lora);
    tidy(() => model.forward({ inputIds: ids, labels: ids }).loss!.backward());
    for (const p of model.parameters()) expect(p.grad).toBeNull();
    for (const p of lora.parameters()) {
      expect(p.grad).not.toBeNull();
      p.zeroGrad();
    }
    lora.dispose();
    model.dispose();
  });

  test('saveAdapter writes PEFT keys and adapter_config.json; loadAdapter reads them back', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-lora-'));
    try {
      const model = createModel(gpt2, { task: 'causal-lm', seed: 4 });
      const lora = applyLora(model, { rank: 2, alpha: 2 });
      randomizeB(lora);
      const file = path.join(dir, 'adapter_model.safetensors');
      lora.saveAdapter(file);
      const { tensors } = loadSafetensors(file);
      expect([...tensors.keys()].sort()).toEqual(
        lora
          .namedParameters()
          .map(([n]) => `base_model.model.${n}`)
          .sort(),
      );
      for (const t of tensors.values()) t.dispose();
      const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'));
      expect(cfg).toMatchObject({ peft_type: 'LORA', r: 2, lora_alpha: 2, target_modules: ['c_attn'], fan_in_fan_out: true });
      const adapted = logitsOf(model);
      const model2 = createModel(gpt2, { task: 'causal-lm', seed: 4 });
      const lora2 = applyLora(model2, { rank: 2, alpha: 2 });
      lora2.loadAdapter(file);
      expect(maxDiff(adapted, logitsOf(model2))).toBe(0);
      for (const x of [lora, lora2, model, model2]) x.dispose();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('bad options and no match are E_ARG', () => {
    const model = createModel(gpt2, { task: 'causal-lm', seed: 5 });
    const code = (fn: () => unknown) => {
      try {
        fn();
      } catch (e) {
        return (e as SiftError).code;
      }
      return undefined;
    };
    expect(code(() => applyLora(model, { rank: 0 }))).toBe('E_ARG');
    expect(code(() => applyLora(model, { dropout: 1 }))).toBe('E_ARG');
    expect(code(() => applyLora(model, { targetModules: ['nothing'] }))).toBe('E_ARG');
    model.dispose();
  });
});
