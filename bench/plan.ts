/**
 * `sift-ft plan` against what the same run measures, the table of docs/memory.md: one short
 * training run per case (GPT-2 and LLaMA, and the other decoder families where the build has them;
 * sift / full / lora; with and without activation checkpointing; f32 and bf16) in a child process
 * on the built package with SIFT_FT_CPU_QUEUE=1 (tensors live as on a CUDA stream), its
 * peakMemoryBytes beside planMemory's peak. `npm run bench -- plan` prints the table;
 * test/plan/plan.test.ts asserts every row within 15%.
 */
import * as fs from 'fs';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { planMemory } from '../lib/plan/plan';
import { supportedModelTypes } from '../lib/models';
import type { HFConfig } from '../lib/models/common';

export const description = "plan vs measured peak memory per model, method, checkpointing and precision (docs/memory.md's table)";

const small = {
  vocab_size: 97,
  hidden_size: 64,
  intermediate_size: 176,
  num_hidden_layers: 3,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 128,
  head_dim: 16,
  tie_word_embeddings: false,
};
/** The other decoder families at the same small shape: each case runs where this build has the family. */
export const FAMILIES: Record<string, HFConfig> = {
  qwen2: { model_type: 'qwen2', ...small },
  qwen3: { model_type: 'qwen3', ...small },
  mistral: { model_type: 'mistral', ...small },
  gemma: { model_type: 'gemma', ...small, hidden_activation: 'gelu_pytorch_tanh' },
  gemma2: {
    model_type: 'gemma2',
    ...small,
    hidden_activation: 'gelu_pytorch_tanh',
    query_pre_attn_scalar: 16,
    final_logit_softcapping: 30,
    attn_logit_softcapping: 50,
    sliding_window: 16,
  },
  phi3: { model_type: 'phi3', ...small, resid_pdrop: 0, attention_dropout: 0, embd_pdrop: 0 },
};
export const CONFIGS: Record<string, HFConfig> = {
  ...FAMILIES,
  // Wider, with an output layer that dominates (4000 tokens) and grouped KV heads.
  'gpt2-wide': {
    model_type: 'gpt2',
    vocab_size: 4000,
    n_positions: 256,
    n_embd: 128,
    n_layer: 2,
    n_head: 8,
    embd_pdrop: 0,
    attn_pdrop: 0,
    resid_pdrop: 0,
  },
  'llama-wide': {
    model_type: 'llama',
    vocab_size: 4000,
    hidden_size: 128,
    intermediate_size: 352,
    num_hidden_layers: 2,
    num_attention_heads: 8,
    num_key_value_heads: 2,
    max_position_embeddings: 256,
    tie_word_embeddings: false,
  },
  gpt2: {
    model_type: 'gpt2',
    vocab_size: 97,
    n_positions: 128,
    n_embd: 64,
    n_layer: 3,
    n_head: 4,
    embd_pdrop: 0,
    attn_pdrop: 0,
    resid_pdrop: 0,
  },
  // The small shape (head_dim 16 is LLaMA's default for it: hidden 64 over 4 heads).
  llama: { model_type: 'llama', ...small },
};

export type PlanCase = [model: string, method: 'sift' | 'full' | 'lora', checkpointing: boolean, precision: 'bf16' | 'none'];

/** The cases: GPT-2 and LLaMA at both shapes, then each decoder family this build has. */
export function planCases(have: Set<string> = new Set(supportedModelTypes())): PlanCase[] {
  const cases: PlanCase[] = [];
  for (const fam of ['gpt2', 'llama'])
    for (const m of ['sift', 'full', 'lora'] as const)
      for (const ck of [false, true]) for (const mp of ['none', 'bf16'] as const) cases.push([fam, m, ck, mp]);
  for (const m of ['sift', 'full', 'lora'] as const)
    for (const ck of [false, true]) cases.push(['gpt2-wide', m, ck, 'none'], ['llama-wide', m, ck, 'bf16']);
  for (const fam of Object.keys(FAMILIES).filter((f) => have.has(f)))
    for (const m of ['sift', 'full', 'lora'] as const)
      for (const ck of [false, true]) for (const mp of ['none', 'bf16'] as const) cases.push([fam, m, ck, mp]);
  return cases;
}

/**
 * One short run per case in a child process on the built package (dist/), with SIFT_FT_CPU_QUEUE=1:
 * the CPU executor reads it when it starts, which this process may have done already.
 */
const MEASURE = `
const { createModel, liveTensors } = require(process.argv[1] + '/dist/lib');
const { Trainer } = require(process.argv[1] + '/dist/lib/train/trainer');
const [cfg, opts] = JSON.parse(process.argv[2]);
(async () => {
  const baseline = liveTensors().cpu.bytes;
  const model = createModel(cfg, { task: 'causal-lm', seed: 1 });
  const rows = Array.from({ length: 4 }, (_, i) => ({ input_ids: Array.from({ length: opts.maxLength }, (_, j) => (i * 7 + j * 3) % cfg.vocab_size) }));
  const t = new Trainer(model, null, { ...opts, steps: 2, lr: 1e-3, sift: { sparseRate: 0.01 }, lora: { rank: 8 } });
  let peak = 0;
  for await (const e of t.fit(rows)) if (e.type === 'done') peak = e.peakMemoryBytes - baseline;
  process.stdout.write(String(peak));
})();
`;

/** The repository root (the folder with package.json), from bench/ or dist/bench/. */
export function repoRoot(): string {
  let d = __dirname;
  while (!fs.existsSync(path.join(d, 'package.json')) && path.dirname(d) !== d) d = path.dirname(d);
  return d;
}

export interface PlanRow {
  plan: number;
  peak: number;
  ratio: number;
  /** Anything the child process wrote to stderr (empty when it ran cleanly). */
  stderr: string;
  /** The row of docs/memory.md's table. */
  line: string;
}

/** Plans and measures one case (the package must be built: dist/), optionally on a quantized base. */
export function measureCase([fam, method, ck, mp]: PlanCase, quantize?: 'int8' | 'nf4'): PlanRow {
  const opts = {
    task: 'causal-lm' as const,
    method,
    batchSize: 2,
    maxLength: fam.endsWith('wide') ? 128 : 32,
    activationCheckpointing: ck,
    mixedPrecision: mp,
    ...(quantize ? { quantize } : {}),
  };
  const plan = planMemory(CONFIGS[fam], opts).peakBytes;
  const r = spawnSync(process.execPath, ['-e', MEASURE, repoRoot(), JSON.stringify([CONFIGS[fam], opts])], {
    encoding: 'utf8',
    env: { ...process.env, SIFT_FT_CPU_QUEUE: '1' },
  });
  const peak = Number(r.stdout);
  const ratio = plan / peak;
  const line = `| ${fam}${quantize ? ` ${quantize}` : ''} | ${opts.maxLength} | ${method} | ${ck ? 'yes' : 'no'} | ${mp} | ${plan} | ${peak} | ${ratio.toFixed(3)} |`;
  return { plan, peak, ratio, stderr: r.stderr, line };
}

export function run(args: string[]): void {
  const only = args
    .find((a) => a.startsWith('--models='))
    ?.split('=')[1]
    .split(',');
  console.log('| model | tokens | method | checkpointing | precision | plan (bytes) | measured (bytes) | plan / measured |');
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const c of planCases()) {
    if (only && !only.includes(c[0])) continue;
    const r = measureCase(c);
    if (r.stderr) console.error(r.stderr);
    console.log(r.line);
  }
}
