/**
 * `sift-ft demo`: everything in-package, no network. Makes review text from a seed, trains a
 * byte-level BPE tokenizer on it, pre-trains a small GPT-2 from scratch on product and film reviews
 * that end with a verdict word (so that it learns sentiment), then adapts it to the sentiment of
 * restaurant reviews (a new domain, mostly new adjectives) with SIFT, full fine-tuning,
 * random-sparse (SIFT's ablation: random entries at the same budget) and LoRA at about SIFT's
 * trainable count. Every method searches the same learning-rate grid on a dev split (first
 * fine-tuning seed); at the chosen rate it runs three fine-tuning seeds (initial selection or
 * adapter, data order) on the one pre-trained base, and the table reports the mean and spread of
 * accuracy on a held-out test split. The verdict sentences are computed from those numbers.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { resetPeakMemory } from '../engine/runtime';
import { trainByteBpe } from '../tokenizers';
import type { MethodName, Row } from '../train/types';
import type { FlagSpec, Parsed } from './args';
import { deviceFlag, fmtBytes, fmtDuration, fmtInt, loadModelForTask, resolveDevice, table, writeJson } from './common';
import { pretrainCorpus, sentimentDataset } from './corpus';
import { FinetuneSpec, MethodResult, MethodSpec, evaluateBase, finetuneMethod, pretrain } from './pipeline';
import { renderReport } from './report';
import { SiftError } from '../engine/errors';

export const demoFlags: Record<string, FlagSpec> = {
  out: { type: 'string', help: 'output folder (default: a new temporary folder)' },
  quick: { type: 'boolean', help: 'a much smaller and shorter run (seconds; used by the tests)' },
  'sparse-rate': { type: 'number', help: 'SIFT and random-sparse budget (share of the targeted weights)', default: 0.02 },
  methods: {
    type: 'string',
    help: "methods to compare, comma-separated (lora gets about SIFT's trainable count)",
    default: 'sift,full,random-sparse,lora',
  },
  seeds: { type: 'number', help: 'fine-tuning seeds per method at its chosen learning rate', default: 3 },
  seed: { type: 'number', help: 'seed of the corpus, the pre-training and the first fine-tuning seed', default: 1 },
  device: deviceFlag,
  json: { type: 'boolean', help: 'print the results as JSON' },
  quiet: { type: 'boolean', help: 'no progress output' },
};

export const demoHelp =
  "Pre-trains a tiny model on generated text and adapts it to a new domain's sentiment with SIFT, full fine-tuning, random-sparse and LoRA: one learning-rate grid, three seeds (no downloads; about 2.5 min on 2 CPU cores).";

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
  /** The learning rates every method tries (the dev split picks one per method). */
  lrs: number[];
}

const FULL: DemoSize = {
  docs: 3000,
  vocab: 600,
  config: {
    model_type: 'gpt2',
    n_embd: 128,
    n_layer: 2,
    n_head: 4,
    n_inner: 512,
    n_positions: 64,
    resid_pdrop: 0,
    embd_pdrop: 0,
    attn_pdrop: 0,
  },
  pretrainSteps: 800,
  pretrainBatch: 16,
  block: 64,
  train: 2000,
  dev: 300,
  test: 500,
  steps: 150,
  batch: 16,
  selectionBatches: 16,
  // Wide enough for all: full fine-tuning moves every weight and wants small steps, the sparse
  // methods and LoRA larger ones (each method's choice lies inside the grid on this task).
  lrs: [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
};

const QUICK: DemoSize = {
  docs: 200,
  vocab: 300,
  config: {
    model_type: 'gpt2',
    n_embd: 32,
    n_layer: 1,
    n_head: 2,
    n_inner: 64,
    n_positions: 32,
    resid_pdrop: 0,
    embd_pdrop: 0,
    attn_pdrop: 0,
  },
  pretrainSteps: 8,
  pretrainBatch: 8,
  block: 32,
  train: 64,
  dev: 16,
  test: 32,
  steps: 6,
  batch: 8,
  selectionBatches: 2,
  lrs: [3e-3, 3e-2],
};

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
const NAMES: Record<MethodName, string> = { sift: 'SIFT', full: 'full fine-tuning', 'random-sparse': 'random-sparse', lora: 'LoRA' };

/** One method's runs: the learning-rate search on dev, then every seed at the chosen rate. */
export interface MethodSummary {
  method: MethodName;
  lr: number;
  /** Dev accuracy per learning rate of the search (first seed). */
  search: { lr: number; devAccuracy: number | undefined }[];
  seeds: { seed: number; test: number; dev: number | undefined }[];
  mean: number;
  /** Sample standard deviation over seeds (0 for one seed). */
  std: number;
  min: number;
  max: number;
  trainable: number;
  total: number;
  /** Mean over seeds of SIFT's gradient proportion (sparse methods). */
  gradProportion?: number;
  /** LoRA's rank (chosen to match SIFT's trainable count). */
  rank?: number;
  peakMemoryBytes: number;
  tokensPerSec: number;
  seconds: number;
  /** The first seed's run at the chosen rate (for the report's curves). */
  run: MethodResult;
}

/**
 * One method's entry in results.json (the demo's and the SST-2 experiment's): the summary without
 * the run itself, and with `report` the path of the first seed's report.html.
 */
export function summaryJson(r: MethodSummary, opts: { report?: boolean } = {}) {
  return {
    method: r.method,
    lr: r.lr,
    search: r.search,
    seeds: r.seeds,
    mean: r.mean,
    std: r.std,
    min: r.min,
    max: r.max,
    trainable: r.trainable,
    total: r.total,
    rank: r.rank,
    meanGradProportion: r.gradProportion,
    peakMemoryBytes: r.peakMemoryBytes,
    tokensPerSec: r.tokensPerSec,
    seconds: r.seconds,
    ...(opts.report ? { report: path.join(r.run.outDir, 'report.html') } : {}),
  };
}

export function spreadOf(xs: number[]): { mean: number; std: number; min: number; max: number } {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const std = xs.length > 1 ? Math.sqrt(xs.reduce((a, x) => a + (x - mean) ** 2, 0) / (xs.length - 1)) : 0;
  return { mean, std, min: Math.min(...xs), max: Math.max(...xs) };
}

/** What the numbers show, in words (computed from them, so that it never claims more than they do). */
export function verdict(results: MethodSummary[], opts: { zeroShot?: number; testSize?: number; grid?: number[] } = {}): string {
  const lines: string[] = [];
  const by = (m: MethodName) => results.find((r) => r.method === m);
  const nSeeds = Math.min(...results.map((r) => r.seeds.length));
  const fmt = (r: MethodSummary) => `${pct(r.mean)}${r.seeds.length > 1 ? ` ± ${pct(r.std)}` : ''}`;
  if (opts.zeroShot !== undefined)
    lines.push(
      `Before fine-tuning, the pre-trained model's own verdict word ("good"/"bad") is right on ${pct(opts.zeroShot)} of the held-out restaurant reviews: a domain and adjectives it never read.`,
    );
  if (!results.length) return lines.join('\n');
  if (Math.max(...results.map((r) => r.mean)) < 0.6) {
    lines.push('No method got far above chance in this run (too few steps for the task): the table shows the mechanics, not a comparison.');
    return lines.join('\n');
  }
  const ranked = [...results].sort((a, b) => b.mean - a.mean);
  lines.push(
    `Mean test accuracy over ${nSeeds} seed${nSeeds > 1 ? 's' : ''}${nSeeds > 1 ? ' (± standard deviation)' : ''}: ${ranked.map((r) => `${NAMES[r.method]} ${fmt(r)}`).join(', ')}.`,
  );
  // Two methods are told apart when every seed of one beats every seed of the other and the gap
  // between the means exceeds both spreads; otherwise the run does not separate them.
  const compare = (a: MethodSummary, b: MethodSummary): string => {
    const d = a.mean - b.mean;
    const separated = nSeeds > 1 ? (a.min > b.max || b.min > a.max) && Math.abs(d) > Math.max(a.std, b.std) : Math.abs(d) > 0.02;
    if (!separated) {
      return `${NAMES[a.method]} (${fmt(a)}) and ${NAMES[b.method]} (${fmt(b)}) are within each other's seed-to-seed spread (ranges ${pct(a.min)}-${pct(a.max)} and ${pct(b.min)}-${pct(b.max)}): this run does not separate them.`;
    }
    const [w, l] = d > 0 ? [a, b] : [b, a];
    return `${NAMES[w.method]} beats ${NAMES[l.method]} on every seed (${fmt(w)} vs ${fmt(l)}, ${pct(Math.abs(d))} apart, beyond the spread).`;
  };
  const s = by('sift');
  if (s) {
    for (const m of ['full', 'random-sparse', 'lora'] as MethodName[]) {
      const o = by(m);
      if (o) lines.push(compare(s, o));
    }
    const rnd = by('random-sparse');
    if (s.gradProportion !== undefined) {
      // Concentrated only if the chosen entries carry well over what as many random entries carry
      // (measured by random-sparse, else their share of the entries).
      const chance = rnd?.gradProportion ?? s.trainable / s.total;
      const concentrated = s.gradProportion > 2 * chance;
      lines.push(
        `SIFT's selected entries carried ${pct(s.gradProportion)} of the gradient's squared norm on average${rnd?.gradProportion !== undefined ? ` (random entries: ${pct(rnd.gradProportion)})` : ''}: ` +
          (concentrated
            ? `the gradient is concentrated on few weights${rnd && rnd.mean > s.mean ? ', though here that did not make the chosen entries the better ones to train' : ''}.`
            : `not much more than as many random entries carry (${pct(chance)}), so this run does not show the gradient concentrated on few weights.`),
      );
    }
  } else if (results.length > 1) {
    lines.push(compare(ranked[0], ranked[1]));
  }
  const lora = by('lora');
  if (lora?.rank !== undefined && s)
    lines.push(`LoRA ran at rank ${lora.rank}, ${fmtInt(lora.trainable)} trainable parameters against SIFT's ${fmtInt(s.trainable)}.`);
  const grid = opts.grid ?? [];
  const edge = results.filter((r) => grid.length > 1 && (r.lr === grid[0] || r.lr === grid[grid.length - 1]));
  lines.push(
    `Learning rates, each method's best on the dev split from the same grid (${grid.map((x) => x.toExponential(0)).join(', ')}): ${results.map((r) => `${NAMES[r.method]} ${r.lr.toExponential(0)}`).join(', ')}.` +
      (edge.length
        ? ` ${edge.map((r) => NAMES[r.method]).join(' and ')} chose a rate at the edge of the grid, so a rate outside it might do better.`
        : ''),
  );
  lines.push(
    `A demo on generated text with a tiny model: it shows the mechanics and the trend on this task, not the paper's numbers` +
      `${opts.testSize ? ` (one test split of ${opts.testSize} reviews; a single run's accuracy there has a standard error of about ${pct(Math.sqrt((0.9 * 0.1) / opts.testSize))} at 90%)` : ''}.`,
  );
  return lines.join('\n');
}

/** LoRA rank whose adapters hold about `trainable` parameters over the SIFT target modules of the base. */
function matchedLoraRank(baseDir: string, trainable: number, device: string): { rank: number; targets: string[] } {
  const loaded = loadModelForTask(baseDir, { task: 'classify', device, labels: ['0', '1'] });
  try {
    // SIFT's default targets: every Linear/Conv1D but the output and task heads.
    const mods = loaded.model
      .namedModules()
      .filter(([p, m]) => p && (m.kind === 'Linear' || m.kind === 'Conv1D') && !p.endsWith('lm_head') && p !== 'score');
    const perRank = mods.reduce((a, [, m]) => {
      const w = (m as unknown as { weight: { shape: number[] } }).weight;
      return a + w.shape[0] + w.shape[1];
    }, 0);
    return { rank: Math.max(1, Math.round(trainable / perRank)), targets: mods.map(([p]) => p) };
  } finally {
    loaded.model.dispose();
  }
}

/**
 * One method's runs: the first seed at every learning rate of the grid, judged on the eval split's
 * accuracy (then loss), then every other seed at the chosen rate; test accuracy's mean and spread.
 */
export async function gridAndSeeds(
  base: FinetuneSpec,
  m: MethodName,
  spec: (lr: number) => MethodSpec,
  lrs: number[],
  seeds: number[],
  log: (s: string) => void,
  rank?: number,
): Promise<MethodSummary> {
  const common = base.common;
  const search: MethodResult[] = [];
  for (const lr of lrs) {
    resetPeakMemory();
    search.push(await finetuneMethod({ ...base }, { ...spec(lr), name: `${m}@${lr}-seed${seeds[0]}` }, log));
  }
  const better = (a: MethodResult, b: MethodResult) => {
    const [x, y] = [a.metrics.accuracy ?? -1, b.metrics.accuracy ?? -1];
    return x !== y ? x > y : (a.metrics.loss ?? Infinity) < (b.metrics.loss ?? Infinity);
  };
  const best = search.reduce((a, b) => (better(b, a) ? b : a));
  const lr = best.lr!;
  const runs = [best];
  for (const s of seeds.slice(1)) {
    resetPeakMemory();
    runs.push(await finetuneMethod({ ...base, common: { ...common, seed: s } }, { ...spec(lr), name: `${m}@${lr}-seed${s}` }, log));
  }
  const tests = runs.map((r) => r.testMetrics?.accuracy ?? 0);
  const gp = runs.map((r) => r.meanGradProportion).filter((x): x is number => x !== undefined);
  return {
    method: m,
    lr,
    search: search.map((r) => ({ lr: r.lr!, devAccuracy: r.metrics.accuracy })),
    seeds: runs.map((r, i) => ({ seed: seeds[i], test: tests[i], dev: r.metrics.accuracy })),
    ...spreadOf(tests),
    trainable: best.trainable,
    total: best.total,
    gradProportion: gp.length ? gp.reduce((a, b) => a + b, 0) / gp.length : undefined,
    rank,
    peakMemoryBytes: Math.max(...runs.map((r) => r.peakMemoryBytes)),
    tokensPerSec: runs.reduce((a, r) => a + r.tokensPerSec, 0) / runs.length,
    seconds: [...search, ...runs.slice(1)].reduce((a, r) => a + r.seconds, 0),
    run: best,
  };
}

export async function runDemo(f: Parsed): Promise<number> {
  const t0 = Date.now();
  const device = resolveDevice(f.device);
  const size = f.quick ? QUICK : FULL;
  const seed = f.seed as number;
  const rate = f['sparse-rate'] as number;
  const nSeeds = f.seeds as number;
  if (!(rate > 0 && rate <= 1)) throw new SiftError('E_ARG', `flag --sparse-rate must be in (0, 1], got ${rate}`);
  if (!Number.isInteger(nSeeds) || nSeeds < 1) throw new SiftError('E_ARG', `flag --seeds must be a positive integer, got ${nSeeds}`);
  const methods = [
    ...new Set(
      String(f.methods)
        .split(',')
        .map((m) => m.trim())
        .filter(Boolean),
    ),
  ] as MethodName[];
  for (const m of methods) {
    if (!['sift', 'full', 'lora', 'random-sparse'].includes(m))
      throw new SiftError('E_ARG', `flag --methods: unknown method '${m}' (allowed: sift, full, lora, random-sparse)`);
  }
  if (!methods.length) throw new SiftError('E_ARG', 'flag --methods: no method given');
  // LoRA's rank matches SIFT's trainable count, so SIFT runs first when both are asked for.
  methods.sort((a, b) => (a === 'sift' ? -1 : b === 'sift' ? 1 : 0));
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

  // 2. Pre-training from scratch, once: every method and seed starts from this base.
  const pre = await pretrain(
    {
      config: { ...size.config, vocab_size: tokenizer.vocabSize },
      tokenizer,
      texts: docs.map((text) => ({ text })),
      outDir: out,
      device,
      steps: size.pretrainSteps,
      batchSize: size.pretrainBatch,
      blockSize: size.block,
      lr: 3e-3,
      seed,
      quiet,
    },
    log,
  );

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
    steps: size.steps,
    batchSize: size.batch,
    evalEvery: 0,
    lrSchedule: 'linear' as const,
    warmupSteps: Math.round(size.steps * 0.06),
    weightDecay: 0,
    maxGradNorm: 1,
    seed,
    maxLength: Math.min(48, size.config.n_positions as number),
    logEvery: 1,
    evalBatchSize: 50,
  };
  // The classifier starts as the language model's own prediction of the verdict word (its output
  // rows for " bad" and " good"), so every method begins from what pre-training learned. The sparse
  // methods and LoRA leave that head as it is and adapt the body; full fine-tuning trains everything.
  const verbalizer = ['bad', 'good'].map((w) => tokenizer.encode(` ${w}`).inputIds);
  if (!verbalizer.every((ids) => ids.length === 1)) throw new SiftError('E_INTERNAL', 'demo: the verdict words are not single tokens');
  const base: FinetuneSpec = {
    baseDir: pre.dir,
    task: 'classify',
    train,
    eval: dev,
    test,
    labels: ['0', '1'],
    device,
    outDir: out,
    common,
    quiet,
    verbalizer: verbalizer.map((ids) => ids[0]),
  };
  const zeroShot = (await evaluateBase(base, test)).accuracy;
  if (zeroShot !== undefined) log(`zero-shot accuracy of the pre-trained model on the test split: ${pct(zeroShot)}`);

  let lora: { rank: number; targets: string[] } | undefined;
  const spec = (m: MethodName, lr: number): MethodSpec => {
    switch (m) {
      case 'sift':
        return {
          method: 'sift',
          options: { lr, sift: { sparseRate: rate, denseModules: [], selection: { batches: size.selectionBatches, scope: 'global' } } },
        };
      case 'random-sparse':
        return { method: 'random-sparse', options: { lr, sift: { sparseRate: rate, denseModules: [], selection: { score: 'random' } } } };
      case 'lora':
        return {
          method: 'lora',
          options: { lr, lora: { rank: lora?.rank ?? 4, alpha: 2 * (lora?.rank ?? 4), targetModules: lora?.targets, denseModules: [] } },
        };
      default:
        return { method: 'full', options: { lr } };
    }
  };
  const seeds = Array.from({ length: nSeeds }, (_, i) => seed + i);
  const summaries: MethodSummary[] = [];
  for (const m of methods) {
    if (m === 'lora') {
      const s = summaries.find((x) => x.method === 'sift');
      lora = matchedLoraRank(pre.dir, s?.trainable ?? Math.round(rate * pre.parameters), device);
      log(`LoRA rank ${lora.rank} over ${lora.targets.length} modules, to match ${s ? "SIFT's" : "the sparse budget's"} trainable count`);
    }
    summaries.push(await gridAndSeeds(base, m, (lr) => spec(m, lr), size.lrs, seeds, log, m === 'lora' ? lora?.rank : undefined));
    const last = summaries[summaries.length - 1];
    log(
      `${m}: lr ${last.lr} chosen on dev; test accuracy over seeds ${seeds.join(', ')}: ${last.seeds.map((x) => pct(x.test)).join(', ')} (mean ${pct(last.mean)}, std ${pct(last.std)})`,
    );
  }
  const seconds = (Date.now() - t0) / 1000;
  const text = verdict(summaries, { zeroShot, testSize: test.length, grid: size.lrs });
  const tableText = demoTable(summaries);
  const reportPath = path.join(out, 'report.html');
  fs.writeFileSync(
    reportPath,
    renderReport({
      title: `sift-ft demo: ${methods.map((m) => NAMES[m]).join(' vs ')}`,
      subtitle: `GPT-2 (${pre.parameters.toLocaleString('en-US')} parameters) pre-trained from scratch on generated product and film reviews, fine-tuned for the sentiment of restaurant reviews; ${nSeeds} seed(s) per method; ${device}; ${fmtDuration(seconds)} in all`,
      notes: [...text.split('\n'), ...tableText.split('\n')],
      runs: summaries.map((r) => ({ ...r.run.run, name: `${r.method} (lr ${r.lr}, seed ${seeds[0]})` })),
      pretrain: pre.run,
    }),
  );
  const summary = {
    out,
    device,
    seconds,
    report: reportPath,
    seeds,
    grid: size.lrs,
    sparseRate: rate,
    pretrain: {
      parameters: pre.parameters,
      steps: size.pretrainSteps,
      firstLoss: pre.firstLoss,
      finalLoss: pre.finalLoss,
      seconds: pre.seconds,
      dir: pre.dir,
    },
    split: { train: train.length, dev: dev.length, test: test.length },
    zeroShotAccuracy: zeroShot,
    results: summaries.map((r) => summaryJson(r, { report: true })),
    verdict: text,
  };
  fs.writeFileSync(path.join(out, 'results.json'), JSON.stringify(summary, null, 2) + '\n');
  if (f.json) {
    writeJson(summary);
    return 0;
  }
  process.stdout.write(
    `\nsift-ft demo (${device}, ${fmtDuration(seconds)}): GPT-2 with ${pre.parameters.toLocaleString('en-US')} parameters pre-trained on product and film reviews, loss ${pre.firstLoss.toFixed(2)} -> ${pre.finalLoss.toFixed(2)}; ` +
      `fine-tuned for restaurant-review sentiment, ${size.train} train / ${size.dev} dev / ${size.test} test reviews, ${size.steps} steps, sparse rate ${(100 * rate).toFixed(1)}% of the targeted weights; ` +
      `learning rate chosen per method on dev from ${size.lrs.join(', ')}; test accuracy over seeds ${seeds.join(', ')}\n\n`,
  );
  process.stdout.write(tableText + '\n\n' + text + '\n\n');
  process.stdout.write(`report: ${reportPath}\nresults: ${path.join(out, 'results.json')}\n`);
  return 0;
}

/** The comparison table: mean ± std and range of test accuracy over the seeds, per method. */
export function demoTable(results: MethodSummary[]): string {
  return table(
    [
      'method',
      'trainable params',
      'share',
      'lr',
      'test accuracy',
      'min-max',
      'per seed',
      'grad proportion',
      'peak memory',
      'tokens/s',
      'time',
    ],
    results.map((r) => [
      r.method + (r.rank !== undefined ? ` (r=${r.rank})` : ''),
      fmtInt(r.trainable),
      r.total ? `${((100 * r.trainable) / r.total).toPrecision(3)}%` : '-',
      r.lr.toExponential(0),
      `${(100 * r.mean).toFixed(1)}% ± ${(100 * r.std).toFixed(1)}`,
      `${(100 * r.min).toFixed(1)}-${(100 * r.max).toFixed(1)}%`,
      r.seeds.map((x) => (100 * x.test).toFixed(1)).join(' / '),
      r.gradProportion !== undefined ? pct(r.gradProportion) : r.method === 'full' ? '100% (all)' : '-',
      fmtBytes(r.peakMemoryBytes),
      fmtInt(r.tokensPerSec),
      fmtDuration(r.seconds),
    ]),
  );
}
