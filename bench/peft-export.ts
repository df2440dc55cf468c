/**
 * Prepares the PEFT check of gpu-check: a small LLaMA folder (random weights), three short runs on
 * it (SIFT causal-lm, SIFT classify with its head, LoRA causal-lm), each exported with export-peft,
 * and the logits our own model gives with the run applied, on fixed inputs. bench/peers/peft_check.py
 * then loads each adapter with Hugging Face PEFT on the base and compares.
 *
 *   node dist/bench/peft-export.js OUTDIR
 */
import * as fs from 'fs';
import * as path from 'path';
import { createModel, stateDict } from '../lib/models';
import { saveModelFolder } from '../lib/io/hf';
import { Trainer } from '../lib/train/trainer';
import type { Row, TrainerOptions } from '../lib/train/types';
import { applyIncrement } from '../lib/sift/increment';
import { exportPeft } from '../lib/cli/export-peft';
import { loadModelForTask } from '../lib/cli/common';
import { noGrad } from '../lib/autograd/tape';
import { tidy } from '../lib/engine/scope';

const VOCAB = 96;
const INPUTS = [
  [5, 17, 33, 9, 70, 41, 12, 88],
  [3, 64, 22, 90, 7, 15, 50, 31],
];

function rows(n: number, seed: number, withLabel: boolean): Row[] {
  let s = seed;
  const r = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
  return Array.from({ length: n }, () => {
    const ids = Array.from({ length: 12 }, () => 1 + Math.floor(r() * (VOCAB - 1)));
    return withLabel ? { input_ids: ids, label: ids[ids.length - 1] % 2 } : { input_ids: ids };
  });
}

function logits(model: { forward(i: { inputIds: number[][] }): { logits: { toArray(): ArrayLike<number>; shape: number[] } } }): {
  shape: number[];
  data: number[];
} {
  return tidy(() =>
    noGrad(() => {
      const out = model.forward({ inputIds: INPUTS }).logits;
      return { shape: out.shape.slice(), data: Array.from(out.toArray()) };
    }),
  );
}

async function run(base: string, out: string, task: 'causal-lm' | 'classify', opts: Partial<TrainerOptions>): Promise<void> {
  const loaded = loadModelForTask(base, { task, device: 'cpu', labels: task === 'classify' ? ['0', '1'] : undefined });
  const t = new Trainer(loaded.model, null, {
    task,
    steps: 6,
    batchSize: 4,
    lr: 2e-2,
    seed: 4,
    device: 'cpu',
    outDir: out,
    labels: loaded.labels,
    lrSchedule: 'constant',
    ...opts,
  });
  try {
    for await (const e of t.fit(rows(32, 9, task === 'classify'))) void e;
    t.save(out);
    if (opts.method === 'lora') t.saveMerged(path.join(out, 'merged'));
  } finally {
    t.dispose();
    loaded.model.dispose();
  }
}

async function main(): Promise<void> {
  const dir = path.resolve(process.argv[2] ?? 'peft-check');
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const config = {
    model_type: 'llama',
    architectures: ['LlamaForCausalLM'],
    vocab_size: VOCAB,
    hidden_size: 64,
    intermediate_size: 96,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    max_position_embeddings: 64,
    rms_norm_eps: 1e-6,
    rope_theta: 10000,
    hidden_act: 'silu',
    tie_word_embeddings: false,
    attention_bias: false,
    mlp_bias: false,
    bos_token_id: 1,
    eos_token_id: 2,
    pad_token_id: 0,
    initializer_range: 0.2,
  };
  const base = path.join(dir, 'base');
  const m = createModel(config, { task: 'causal-lm', seed: 11 });
  saveModelFolder(base, { config: m.config, stateDict: stateDict(m) });
  m.dispose();
  const cases: Record<string, unknown>[] = [];
  for (const [name, task, opts] of [
    ['sift-causal-lm', 'causal-lm', { method: 'sift', sift: { sparseRate: 0.02 } }],
    ['sift-classify', 'classify', { method: 'sift', sift: { sparseRate: 0.02 } }],
    ['lora-causal-lm', 'causal-lm', { method: 'lora', lora: { rank: 4, alpha: 8 } }],
  ] as [string, 'causal-lm' | 'classify', Partial<TrainerOptions>][]) {
    const runDir = path.join(dir, `${name}-run`);
    await run(base, runDir, task, opts);
    const adapter = path.join(dir, name);
    const r = exportPeft({ modelDir: base, delta: runDir, out: adapter });
    let ours: { shape: number[]; data: number[] };
    if (opts.method === 'lora') {
      const merged = loadModelForTask(path.join(runDir, 'merged'), { task, device: 'cpu' });
      ours = logits(merged.model as never);
      merged.model.dispose();
    } else {
      const mm = loadModelForTask(base, { task, device: 'cpu', labels: task === 'classify' ? ['0', '1'] : undefined });
      applyIncrement(mm.model, path.join(runDir, 'delta.safetensors'));
      ours = logits(mm.model as never);
      mm.model.dispose();
    }
    const plain = loadModelForTask(base, { task: 'causal-lm', device: 'cpu' });
    const before = logits(plain.model as never);
    plain.model.dispose();
    cases.push({ name, task, adapter, peft_type: r.config.peft_type, logits: ours, base_logits: task === 'causal-lm' ? before : null });
  }
  fs.writeFileSync(path.join(dir, 'expected.json'), JSON.stringify({ base, input_ids: INPUTS, cases }) + '\n');
  process.stderr.write(`peft-export: ${cases.length} adapters and our logits in ${dir}\n`);
}

main().catch((e) => {
  process.stderr.write(`peft-export: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exitCode = 1;
});
