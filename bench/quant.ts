/**
 * Quantized frozen base: quality and memory on the CPU backend.
 *
 * Quality: pre-trains a small byte-level Llama on tiny Shakespeare (../shared/data), then compares
 * the held-out loss of the model with its Linear weights stored as int8 and as NF4 to the dense
 * model's (goals: within 1% and 5%). Memory: peak bytes (liveTensors().cpu.peakBytes) of one LoRA
 * step and one SIFT step at the same shape with a dense and a quantized base (SIFT's targets
 * quantized too), against the plan (lib/plan/plan.ts).
 *
 *   npm run bench -- quant [--memory-only]   (or node dist/bench/quant.js [--steps 300] [--memory-only])
 */
import * as fs from 'fs';
import * as path from 'path';
import {
  createModel,
  stateDict,
  loadStateDictInto,
  DenseAdamW,
  applyLora,
  Sift,
  SparseAdamW,
  tidy,
  backward,
  liveTensors,
  resetPeakMemory,
  synchronize,
  PreTrainedModel,
  QuantFormat,
} from '../lib';
import { planMemory } from '../lib/plan/plan';

export const description = 'quantized base: held-out loss of int8/NF4 vs dense, and LoRA/SIFT step peaks (dense vs quantized) against plan';

let args = process.argv.slice(2);
const flag = (name: string, dflt: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const steps = () => flag('steps', 300);
const B = 8,
  T = 64;
// ../shared/data relative to the project root (run from the root).
const DATA = path.resolve(process.cwd(), '..', 'shared', 'data', 'tinyshakespeare', 'input.txt');

const config = {
  model_type: 'llama',
  vocab_size: 256,
  hidden_size: 128,
  intermediate_size: 384,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_key_value_heads: 4,
  max_position_embeddings: T,
  rms_norm_eps: 1e-5,
  tie_word_embeddings: false,
};

function batches(bytes: Uint8Array, n: number, seed: number): number[][][] {
  let s = seed >>> 0 || 1;
  const rnd = () => (s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32;
  return Array.from({ length: n }, () =>
    Array.from({ length: B }, () => {
      const o = Math.floor(rnd() * (bytes.length - T - 1));
      return Array.from(bytes.subarray(o, o + T));
    }),
  );
}

function heldOutLoss(model: PreTrainedModel, data: number[][][]): number {
  let sum = 0;
  for (const ids of data) sum += tidy(() => model.forward({ inputIds: ids, labels: ids }).loss!.item());
  return sum / data.length;
}

function peakOfStep(model: PreTrainedModel, ids: number[][], step: () => void): number {
  synchronize();
  resetPeakMemory();
  tidy(() => {
    const loss = model.forward({ inputIds: ids, labels: ids }).loss!;
    backward(loss);
  });
  step();
  synchronize();
  return liveTensors().cpu.peakBytes;
}

function measureQuality(train: Uint8Array, held: Uint8Array) {
  const model = createModel(config, { seed: 1 });
  const opt = new DenseAdamW(model.namedParameters(), { lr: 3e-3, weightDecay: 0 });
  const t0 = Date.now();
  for (const ids of batches(train, steps(), 7)) {
    tidy(() => backward(model.forward({ inputIds: ids, labels: ids }).loss!));
    opt.step();
  }
  opt.dispose?.();
  const evalData = batches(held, 32, 11);
  const results: Record<string, number> = { dense: heldOutLoss(model, evalData) };
  const sd = stateDict(model);
  for (const fmt of ['int8', 'nf4'] as QuantFormat[]) {
    const m = createModel(config, { seed: 1 });
    loadStateDictInto(m, sd);
    m.quantize(fmt);
    results[fmt] = heldOutLoss(m, evalData);
    m.dispose();
  }
  model.dispose();
  return {
    steps: steps(),
    trainSeconds: (Date.now() - t0) / 1000,
    loss: results,
    int8RelDiff: Math.abs(results.int8 - results.dense) / results.dense,
    nf4RelDiff: Math.abs(results.nf4 - results.dense) / results.dense,
  };
}

export function run(argv: string[]): void {
  args = argv;
  main();
}

function main(): void {
  if (!fs.existsSync(DATA)) {
    console.log(`skipped: ${DATA} is absent (see shared/data/README.md)`);
    return;
  }
  const text = fs.readFileSync(DATA);
  const memoryOnly = args.includes('--memory-only');
  const split = Math.floor(text.length * 0.9);
  const train = new Uint8Array(text.subarray(0, split)),
    held = new Uint8Array(text.subarray(split));
  const quality = memoryOnly ? null : measureQuality(train, held);

  // Memory at one shape: a wider model so that weights dominate, as in the large models.
  const big = {
    ...config,
    hidden_size: 1024,
    intermediate_size: 2816,
    num_hidden_layers: 4,
    num_attention_heads: 16,
    num_key_value_heads: 16,
  };
  const ids = batches(train, 1, 3)[0].slice(0, 2);
  const memory: Record<string, number> = {};
  // Bytes live before each model is built (counted out of its peak).
  const baseline = () => {
    synchronize();
    return liveTensors().cpu.bytes;
  };
  for (const q of [null, 'nf4'] as (QuantFormat | null)[]) {
    const b0 = baseline();
    const m = createModel(big, { seed: 2 });
    const lora = applyLora(m, { rank: 8 });
    if (q) m.quantize(q);
    const o = new DenseAdamW(lora.namedParameters(), { lr: 1e-4 });
    memory[`lora_${q ?? 'dense'}`] = peakOfStep(m, ids, () => o.step()) - b0;
    o.dispose?.();
    lora.dispose();
    m.dispose();
  }
  // SIFT 1% on every linear layer (the default targets); with a quantized base the targets are
  // codes too, their selected entries f32 values beside them. Peak of a training step (what
  // finetune --json reports), of the whole run from the selection step on, and the plan's peak.
  const plans: Record<string, number> = {};
  for (const q of [null, 'int8', 'nf4'] as (QuantFormat | null)[]) {
    const key = q ?? 'dense';
    const b0 = baseline();
    const m = createModel(big, { seed: 2 });
    const sift = new Sift(m, { sparseRate: 0.01, ...(q ? { quantize: q } : {}) });
    // (The model is built dense, then quantized: a run loads its weights before it starts.)
    synchronize();
    resetPeakMemory();
    tidy(() => backward(m.forward({ inputIds: ids, labels: ids }).loss!));
    sift.select();
    const o = new SparseAdamW(sift, { lr: 1e-4 });
    synchronize();
    const selectionPeak = liveTensors().cpu.peakBytes - b0;
    memory[`sift_${key}`] = peakOfStep(m, ids, () => o.step()) - b0;
    memory[`sift_${key}_with_selection`] = Math.max(selectionPeak, memory[`sift_${key}`]);
    plans[`sift_${key}`] = planMemory(big, {
      task: 'causal-lm',
      method: 'sift',
      sparseRate: 0.01,
      batchSize: ids.length,
      maxLength: ids[0].length,
      mixedPrecision: 'none',
      ...(q ? { quantize: q } : {}),
    }).peakBytes;
    o.dispose?.();
    sift.dispose();
    m.dispose();
  }
  const report = {
    quality,
    memory: {
      ...memory,
      loraNf4OverDense: memory.lora_nf4 / memory.lora_dense,
      siftNf4OverDense: memory.sift_nf4 / memory.sift_dense,
      siftInt8OverDense: memory.sift_int8 / memory.sift_dense,
      siftNf4OverDenseWithSelection: memory.sift_nf4_with_selection / memory.sift_dense_with_selection,
    },
    plan: { ...plans, ...Object.fromEntries(Object.keys(plans).map((k) => [`${k}_planOverMeasured`, plans[k] / memory[k]])) },
  };
  console.log(JSON.stringify(report, null, 2));
}

if (require.main === module) main();
