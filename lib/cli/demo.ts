/**
 * `sift-ft demo`: everything in-package, no network. Makes review text from a seed, trains a
 * byte-level BPE tokenizer on it, pre-trains a small GPT-2 from scratch on product and film reviews
 * that end with a verdict word (so that it learns sentiment), then adapts it to the sentiment of
 * restaurant reviews (a new domain, mostly new adjectives) with SIFT, full fine-tuning and
 * random-sparse (SIFT's ablation: random entries at the same budget). Each method gets its best
 * learning rate on a dev split from a small grid; the table reports a held-out test split.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { resetPeakMemory } from '../engine/runtime';
import { trainByteBpe } from '../tokenizers';
import type { MethodName, Row } from '../train/types';
import type { FlagSpec, Parsed } from './args';
import { deviceFlag, fmtDuration, resolveDevice, writeJson } from './common';
import { pretrainCorpus, sentimentDataset } from './corpus';
import { MethodResult, MethodSpec, evaluateBase, finetuneMethod, pretrain, resultsTable } from './pipeline';
import { renderReport } from './report';
import { SiftError } from '../engine/errors';

export const demoFlags: Record<string, FlagSpec> = {
  out: { type: 'string', help: 'output folder (default: a new temporary folder)' },
  quick: { type: 'boolean', help: 'a much smaller and shorter run (seconds; used by the tests)' },
  'sparse-rate': { type: 'number', help: 'SIFT and random-sparse budget (share of the targeted weights)', default: 0.02 },
  methods: { type: 'string', help: 'methods to compare, comma-separated', default: 'sift,full,random-sparse' },
  seed: { type: 'number', help: 'seed of the corpus, the initialisation and the training', default: 1 },
  device: deviceFlag,
  json: { type: 'boolean', help: 'print the results as JSON' },
  quiet: { type: 'boolean', help: 'no progress output' },
};

export const demoHelp = 'Pre-trains a tiny model on generated text and adapts it to a new domain\'s sentiment with SIFT, full fine-tuning and random-sparse (no downloads; about 2.5 min on 2 CPU cores).';

interface DemoSize {
  docs: number;
  vocab: number;
  config: Record<string, unknown>;
  pretrainSteps: number;
  pretrainBatch: number;
  block: number;
  train: number;
  dev: number;
  test: number;
  steps: number;
  batch: number;
  selectionBatches: number;
  /** Learning rates tried per method (the dev split picks one). */
  lrs: Record<'full' | 'sparse' | 'lora', number[]>;
}

const FULL: DemoSize = {
  docs: 3000, vocab: 600,
  config: { model_type: 'gpt2', n_embd: 128, n_layer: 2, n_head: 4, n_inner: 512, n_positions: 64, resid_pdrop: 0, embd_pdrop: 0, attn_pdrop: 0 },
  pretrainSteps: 800, pretrainBatch: 16, block: 64,
  train: 2000, dev: 300, test: 500, steps: 150, batch: 16, selectionBatches: 16,
  // One grid for SIFT and random-sparse (same budget, same choices); full fine-tuning moves every
  // weight at once and wants steps about ten times smaller.
  lrs: { full: [3e-4, 1e-3, 3e-3], sparse: [5e-3, 1.5e-2, 5e-2], lora: [3e-3, 1e-2, 3e-2] },
};

const QUICK: DemoSize = {
  docs: 200, vocab: 300,
  config: { model_type: 'gpt2', n_embd: 32, n_layer: 1, n_head: 2, n_inner: 64, n_positions: 32, resid_pdrop: 0, embd_pdrop: 0, attn_pdrop: 0 },
  pretrainSteps: 8, pretrainBatch: 8, block: 32,
  train: 64, dev: 16, test: 32, steps: 6, batch: 8, selectionBatches: 2,
  lrs: { full: [1e-3], sparse: [1e-2], lora: [1e-2] },
};

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

/** What the numbers show, in words (computed from them, so that it never claims more than they do). */
export function verdict(results: MethodResult[], zeroShot?: number, testSize?: number): string {
  const acc = (m: MethodName) => {
    const r = results.find((x) => x.method === m);
    return (r?.testMetrics ?? r?.metrics)?.accuracy;
  };
  const s = acc('sift');
  const full = acc('full');
  const rnd = acc('random-sparse');
  const lines: string[] = [];
  // Differences below about two standard errors of an accuracy on this many reviews are noise.
  const noise = testSize ? Math.max(0.01, 2 * Math.sqrt(0.9 * 0.1 / testSize)) : 0.02;
  const accs = results.map((r) => (r.testMetrics ?? r.metrics).accuracy).filter((a): a is number => a !== undefined);
  if (zeroShot !== undefined) lines.push(`Before fine-tuning, the pre-trained model's own verdict word ("good"/"bad") is right on ${pct(zeroShot)} of the held-out restaurant reviews: a domain and adjectives it never read.`);
  if (accs.length && Math.max(...accs) < 0.6) {
    lines.push('No method got far above chance in this run (too few steps for the task): the table shows the mechanics, not a comparison.');
    return lines.join('\n');
  }
  if (s !== undefined && full !== undefined) {
    const d = s - full;
    lines.push(Math.abs(d) <= noise ? `SIFT reached ${pct(s)} accuracy, within ${pct(Math.abs(d))} of full fine-tuning (${pct(full)}), training a small share of the weights.`
      : d > 0 ? `SIFT reached ${pct(s)} accuracy, above full fine-tuning (${pct(full)}) in this short run.`
        : `SIFT reached ${pct(s)} accuracy, ${pct(-d)} below full fine-tuning (${pct(full)}), which also updates the embeddings of the new words.`);
  }
  if (s !== undefined && rnd !== undefined) {
    lines.push(s > rnd + noise ? `Gradient-chosen entries beat random ones at the same budget and the same learning-rate search (${pct(s)} vs ${pct(rnd)}).`
      : s > rnd ? `Gradient-chosen entries did slightly better than random ones at the same budget (${pct(s)} vs ${pct(rnd)}), within this test set's noise (about ${pct(noise)}).`
        : `Random entries did as well as gradient-chosen ones here (${pct(rnd)} vs ${pct(s)}): this run does not separate them.`);
  }
  const sp = results.find((r) => r.method === 'sift')?.meanGradProportion;
  const rp = results.find((r) => r.method === 'random-sparse')?.meanGradProportion;
  if (sp !== undefined) lines.push(`The selected entries carried ${pct(sp)} of the gradient's squared norm on average${rp !== undefined ? ` (random entries: ${pct(rp)})` : ''}: the gradient is concentrated on few weights.`);
  const lrs = results.filter((r) => r.lr !== undefined).map((r) => `${r.name} ${r.lr!.toExponential(0)}`);
  if (lrs.length) lines.push(`Learning rates (each method's best on the dev split among its grid): ${lrs.join(', ')}.`);
  lines.push(`A demo on generated text with a tiny model and one seed: it shows the mechanics and the trend, not the paper's numbers${testSize ? ` (differences under ~${pct(noise)} on ${testSize} test reviews are noise)` : ''}.`);
  return lines.join('\n');
}

export async function runDemo(f: Parsed): Promise<number> {
  const t0 = Date.now();
  const device = resolveDevice(f.device);
  const size = f.quick ? QUICK : FULL;
  const seed = f.seed as number;
  const rate = f['sparse-rate'] as number;
  if (!(rate > 0 && rate <= 1)) throw new SiftError('E_ARG', `flag --sparse-rate must be in (0, 1], got ${rate}`);
  const methods = String(f.methods).split(',').map((m) => m.trim()).filter(Boolean) as MethodName[];
  for (const m of methods) {
    if (!['sift', 'full', 'lora', 'random-sparse'].includes(m)) throw new SiftError('E_ARG', `flag --methods: unknown method '${m}' (allowed: sift, full, lora, random-sparse)`);
  }
  const out = path.resolve((f.out as string | undefined) ?? fs.mkdtempSync(path.join(os.tmpdir(), 'sift-ft-demo-')));
  fs.mkdirSync(out, { recursive: true });
  const quiet = !!f.quiet || !!f.json;
  const log = (s: string) => {
    if (!quiet) process.stderr.write(`demo: ${s}\n`);
  };
  log(`output in ${out}`);

  // 1. Text and tokenizer.
  const docs = pretrainCorpus(seed, size.docs);
  const tokenizer = trainByteBpe(docs, size.vocab);
  log(`generated ${docs.length} documents; trained a byte-level BPE tokenizer of ${tokenizer.vocabSize} tokens`);

  // 2. Pre-training from scratch.
  const pre = await pretrain({
    config: { ...size.config, vocab_size: tokenizer.vocabSize }, tokenizer, texts: docs.map((text) => ({ text })), outDir: out, device,
    steps: size.pretrainSteps, batchSize: size.pretrainBatch, blockSize: size.block, lr: 3e-3, seed, quiet,
  }, log);

  // 3. Downstream task: sentiment of restaurant reviews, a domain (and adjectives) absent from the
  // pre-training text. Train / dev (picks each method's learning rate) / test (reported).
  const all = sentimentDataset(seed + 1000, size.train + size.dev + size.test, true, 'restaurant');
  const toRow = (r: { text: string; label: number }): Row => ({ text: r.text, label: r.label });
  const train = all.slice(0, size.train).map(toRow);
  const dev = all.slice(size.train, size.train + size.dev).map(toRow);
  const test = all.slice(size.train + size.dev).map(toRow);
  fs.writeFileSync(path.join(out, 'train.jsonl'), train.map((r) => JSON.stringify(r)).join('\n') + '\n');
  fs.writeFileSync(path.join(out, 'dev.jsonl'), dev.map((r) => JSON.stringify(r)).join('\n') + '\n');
  fs.writeFileSync(path.join(out, 'test.jsonl'), test.map((r) => JSON.stringify(r)).join('\n') + '\n');

  const common = {
    steps: size.steps, batchSize: size.batch, evalEvery: 0, lrSchedule: 'linear' as const, warmupSteps: Math.round(size.steps * 0.06),
    weightDecay: 0, maxGradNorm: 1, seed, maxLength: Math.min(48, size.config.n_positions as number), logEvery: 1, evalBatchSize: 50,
  };
  // The classifier starts as the language model's own prediction of the verdict word (its output
  // rows for " bad" and " good"), so every method begins from what pre-training learned. The sparse
  // methods and LoRA leave that head as it is and adapt the body; full fine-tuning trains everything.
  const verbalizer = ['bad', 'good'].map((w) => tokenizer.encode(` ${w}`).inputIds);
  if (!verbalizer.every((ids) => ids.length === 1)) throw new SiftError('E_INTERNAL', 'demo: the verdict words are not single tokens');
  const base = { baseDir: pre.dir, task: 'classify' as const, train, eval: dev, test, labels: ['0', '1'], device, outDir: out, common, quiet, verbalizer: verbalizer.map((ids) => ids[0]) };
  const zeroShot = (await evaluateBase(base, test)).accuracy;
  if (zeroShot !== undefined) log(`zero-shot accuracy of the pre-trained model on the test split: ${pct(zeroShot)}`);

  const spec = (m: MethodName, lr: number): MethodSpec => {
    switch (m) {
      case 'sift': return { method: 'sift', options: { lr, sift: { sparseRate: rate, denseModules: [], selection: { batches: size.selectionBatches, scope: 'global' } } } };
      case 'random-sparse': return { method: 'random-sparse', options: { lr, sift: { sparseRate: rate, denseModules: [], selection: { score: 'random' } } } };
      case 'lora': return { method: 'lora', options: { lr, lora: { rank: 4, denseModules: [] } } };
      default: return { method: 'full', options: { lr } };
    }
  };
  const results: MethodResult[] = [];
  for (const m of methods) {
    const grid = m === 'full' ? size.lrs.full : m === 'lora' ? size.lrs.lora : size.lrs.sparse;
    let best: MethodResult | undefined;
    for (const lr of grid) {
      resetPeakMemory();
      const r = await finetuneMethod({ ...base }, { ...spec(m, lr), name: grid.length > 1 ? `${m}@${lr}` : m }, log);
      if (!best || (r.metrics.accuracy ?? 0) > (best.metrics.accuracy ?? 0)) best = r;
    }
    best!.name = m;
    results.push(best!);
  }
  const seconds = (Date.now() - t0) / 1000;
  const text = verdict(results, zeroShot, test.length);
  const reportPath = path.join(out, 'report.html');
  fs.writeFileSync(reportPath, renderReport({
    title: 'sift-ft demo: SIFT vs full fine-tuning vs random-sparse',
    subtitle: `GPT-2 (${pre.parameters.toLocaleString('en-US')} parameters) pre-trained from scratch on generated product and film reviews, fine-tuned for the sentiment of restaurant reviews; ${device}; ${fmtDuration(seconds)} in all`,
    notes: text.split('\n'),
    runs: results.map((r) => r.run),
    pretrain: pre.run,
  }));
  const summary = {
    out, device, seconds, report: reportPath,
    pretrain: { parameters: pre.parameters, steps: size.pretrainSteps, firstLoss: pre.firstLoss, finalLoss: pre.finalLoss, seconds: pre.seconds, dir: pre.dir },
    zeroShotAccuracy: zeroShot,
    results: results.map((r) => ({ method: r.name, lr: r.lr, trainable: r.trainable, total: r.total, peakMemoryBytes: r.peakMemoryBytes, tokensPerSec: r.tokensPerSec, seconds: r.seconds, metrics: r.testMetrics ?? r.metrics, devMetrics: r.metrics, meanGradProportion: r.meanGradProportion, report: path.join(r.outDir, 'report.html') })),
    verdict: text,
  };
  fs.writeFileSync(path.join(out, 'results.json'), JSON.stringify(summary, null, 2) + '\n');
  if (f.json) {
    writeJson(summary);
    return 0;
  }
  process.stdout.write(`\nsift-ft demo (${device}, ${fmtDuration(seconds)}): GPT-2 with ${pre.parameters.toLocaleString('en-US')} parameters pre-trained on product and film reviews, loss ${pre.firstLoss.toFixed(2)} -> ${pre.finalLoss.toFixed(2)}; `
    + `fine-tuned for restaurant-review sentiment, ${size.train} train / ${size.dev} dev / ${size.test} test reviews, ${size.steps} steps, sparse rate ${(100 * rate).toFixed(1)}% of the targeted weights; accuracy on the test split\n\n`);
  process.stdout.write(resultsTable(results, 'accuracy', { lr: true }) + '\n\n' + text + '\n\n');
  process.stdout.write(`report: ${reportPath}\nper method: ${results.map((r) => path.join(r.outDir, 'report.html')).join(', ')}\n`);
  return 0;
}
