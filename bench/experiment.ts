/**
 * The real-data experiment: `npm run experiment -- sst2 --out DIR`. Pre-trains a base model from
 * scratch on the Gutenberg books in ../shared/data (cached in DIR/base: a later run with the same
 * pre-training settings reuses it), measures the gradient quasi-sparsity of that base against a
 * randomly initialised model of the same shape on SST-2, then compares SIFT at the paper's rate,
 * random-sparse at the same count, LoRA at a matched count and full fine-tuning on SST-2: every
 * method searches the same learning-rate grid on a dev split carved from SST-2 train (first seed),
 * then runs every seed at its chosen rate; the table reports the mean and spread of accuracy on
 * SST-2 dev (the held-out test here). Writes DIR/results.json, DIR/report.html and the models.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { SiftError } from '../lib/engine/errors';
import { backends } from '../lib/engine/runtime';
import { tidy } from '../lib/engine/scope';
import { createModel } from '../lib/models';
import type { PreTrainedModel } from '../lib/models/common';
import { planTargets } from '../lib/sift/targets';
import { kForRate } from '../lib/sift/sift';
import { QuasiSparsity, measureQuasiSparsity } from '../lib/sift/quasi';
import { loadRows } from '../lib/train/data';
import { createTask } from '../lib/train/tasks';
import { expandDataPaths } from '../lib/train/stream';
import type { MethodName, Row } from '../lib/train/types';
import { FlagSpec, Parsed, flagHelp, parseFlags } from '../lib/cli/args';
import { deviceFlag, fmtDuration, fmtInt, loadModelForTask, resolveDevice } from '../lib/cli/common';
import { MethodSummary, demoTable, gridAndSeeds, summaryJson } from '../lib/cli/demo';
import { FinetuneSpec, MethodSpec } from '../lib/cli/pipeline';
import { curvesFromLog } from '../lib/cli/finetune';
import { PRETRAIN_SIZES, pretrainFlags, pretrainModel } from '../lib/cli/pretrain';
import { RunData, renderReport } from '../lib/cli/report';
import { quasiTable } from '../lib/cli/select';
import { env } from '../lib/engine/env';

export const experimentFlags: Record<string, FlagSpec> = {
  out: { type: 'string', help: 'output folder (the pre-trained base is cached in OUT/base)' },
  data: { type: 'string', help: 'the shared data folder', default: path.join('..', 'shared', 'data') },
  base: { type: 'string', help: 'use this model folder as the base instead of pre-training one' },
  'pretrain-data': {
    type: 'string',
    help: 'pre-training text: files or folders, comma-separated (default: DATA/gutenberg, all 921 books)',
  },
  architecture: { type: 'string', help: 'architecture of the base', choices: ['gpt2', 'llama'], default: 'gpt2' },
  size: {
    type: 'string',
    help: `size of the base (${Object.keys(PRETRAIN_SIZES).join(', ')}; see docs/pretraining.md)`,
    choices: Object.keys(PRETRAIN_SIZES),
    default: 'mini',
  },
  'pretrain-minutes': { type: 'number', help: 'pre-training wall time (with --pretrain-steps: a cap)', default: 60, min: 0 },
  'pretrain-steps': {
    type: 'number',
    help: 'pre-training steps (default: as many as --pretrain-minutes allow, constant rate after warmup)',
    integer: true,
    min: 1,
  },
  'pretrain-batch': { type: 'number', help: 'pre-training sequences per step', default: 16, integer: true, min: 1 },
  'pretrain-lr': { type: 'number', help: 'pre-training peak learning rate', default: 1e-3 },
  block: { type: 'number', help: 'pre-training block size (tokens)', default: 128, integer: true, min: 2 },
  'tokenizer-vocab': { type: 'number', help: 'BPE vocabulary size', default: 8192, integer: true, min: 260 },
  'tokenizer-sample-mb': { type: 'number', help: 'megabytes of the books the tokenizer is trained on', default: 10 },
  'train-size': {
    type: 'number',
    help: 'SST-2 train rows used for fine-tuning (0: all but the dev split)',
    default: 0,
    integer: true,
    min: 0,
  },
  'dev-size': { type: 'number', help: 'rows of SST-2 train held out to choose learning rates', default: 2000, integer: true, min: 1 },
  'test-size': { type: 'number', help: 'SST-2 dev rows scored as the held-out test (0: all 6,735)', default: 0, integer: true, min: 0 },
  steps: { type: 'number', help: 'fine-tuning optimizer steps per run', default: 1000, integer: true, min: 1 },
  batch: { type: 'number', help: 'fine-tuning batch size', default: 32, integer: true, min: 1 },
  'max-length': { type: 'number', help: 'fine-tuning max tokens per sentence', default: 64, integer: true, min: 2 },
  'sparse-rate': { type: 'number', help: "SIFT and random-sparse budget (the paper's 1%)", default: 0.01 },
  'selection-batches': {
    type: 'number',
    help: "SIFT's selection batches (also the quasi-sparsity measurement's)",
    default: 1,
    integer: true,
    min: 1,
  },
  lrs: { type: 'string', help: 'the learning-rate grid every method searches, comma-separated', default: '1e-4,3e-4,1e-3,3e-3,1e-2' },
  seeds: { type: 'number', help: 'fine-tuning seeds per method at its chosen rate', default: 3, integer: true, min: 1 },
  methods: { type: 'string', help: 'methods, comma-separated', default: 'sift,random-sparse,lora,full' },
  seed: { type: 'number', help: 'seed', default: 1, integer: true },
  device: deviceFlag,
  quiet: { type: 'boolean', help: 'no progress output' },
};

function shuffled<T>(a: T[], seed: number): T[] {
  const out = [...a];
  let s = seed >>> 0 || 1;
  for (let i = out.length - 1; i > 0; i--) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/** SIFT's and LoRA's targets: every linear layer but the LM and classification heads. */
function linearTargets(model: PreTrainedModel): string[] {
  return model
    .namedModules()
    .filter(
      ([p, m]) => p && (m.kind === 'Linear' || m.kind === 'Conv1D') && !p.endsWith('lm_head') && p !== 'score' && !p.startsWith('score.'),
    )
    .map(([p]) => p);
}

/** The LoRA rank whose adapters (r x (in + out) per target) come closest to SIFT's sparse budget. */
export function matchedLoraRank(
  config: Record<string, unknown>,
  rate: number,
): { rank: number; siftSparse: number; loraPerRank: number; targets: string[] } {
  const model = createModel({ ...config, num_labels: 2 }, { task: 'sequence-classification', device: 'cpu', seed: 0 });
  try {
    const targets = linearTargets(model);
    const plan = planTargets(model, targets, undefined);
    let siftSparse = 0;
    let loraPerRank = 0;
    for (const [, t] of plan.sparse) {
      siftSparse += kForRate(rate, t.size);
      // Biases are not adapted by LoRA; weight matrices get A (r x in) and B (out x r).
      if (t.shape.length === 2) loraPerRank += t.shape[0] + t.shape[1];
    }
    return { rank: Math.max(1, Math.round(siftSparse / loraPerRank)), siftSparse, loraPerRank, targets };
  } finally {
    model.dispose();
  }
}

/** Quasi-sparsity of a classifier's target gradients, accumulated over the first batches of rows. */
async function classifierQuasiSparsity(
  model: PreTrainedModel,
  tokenizer: ReturnType<typeof loadModelForTask>['tokenizer'],
  rows: Row[],
  o: { batches: number; batch: number; maxLength: number; device: string },
): Promise<QuasiSparsity> {
  const task = createTask('classify', { tokenizer, config: model.config, maxLength: o.maxLength, labels: ['0', '1'] });
  const ex = task.prepare(rows.slice(0, o.batches * o.batch));
  const params = planTargets(model, linearTargets(model), undefined).sparse;
  model.train();
  return measureQuasiSparsity(params, () => {
    for (let i = 0; i < o.batches; i++) {
      const b = task.collate(ex.slice(i * o.batch, (i + 1) * o.batch), o.device);
      try {
        tidy(() => task.forward(model, b).loss!.backward());
      } finally {
        b.dispose();
      }
    }
  });
}

const NAMES: Record<MethodName, string> = { sift: 'SIFT', full: 'full fine-tuning', 'random-sparse': 'random-sparse', lora: 'LoRA' };
const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

/** What the numbers say, against the issue's two criteria; computed from them. */
export function experimentVerdict(
  results: MethodSummary[],
  qs: { base: QuasiSparsity; random: QuasiSparsity } | null,
  majority?: number,
): string[] {
  const lines: string[] = [];
  // Runs that do not beat always answering the test split's majority class learned nothing to compare.
  const learned = majority === undefined || !results.length || Math.max(...results.map((r) => r.mean)) > majority + 0.02;
  const by = (m: MethodName) => results.find((r) => r.method === m);
  const fmt = (r: MethodSummary) => `${pct(r.mean)} ± ${pct(r.std)} (range ${pct(r.min)}-${pct(r.max)})`;
  if (results.length)
    lines.push(
      `Test accuracy, mean ± standard deviation over ${Math.min(...results.map((r) => r.seeds.length))} seeds: ${results.map((r) => `${NAMES[r.method]} ${fmt(r)}`).join('; ')}.`,
    );
  const s = by('sift');
  const rnd = by('random-sparse');
  const full = by('full');
  if (!learned) {
    lines.push(
      `No method got more than 2 points above the majority class of the test split (${pct(majority!)}): the base and the fine-tuning budget are too small for SST-2 here, so this run tests the path, not the method.`,
    );
  }
  if (learned && s && rnd) {
    const d = s.mean - rnd.mean;
    lines.push(
      `SIFT ${d >= 0 ? 'is at or above' : 'is below'} random-sparse at the same count by ${pct(Math.abs(d))}${Math.abs(d) <= Math.max(s.std, rnd.std) ? ', within the seed-to-seed spread' : ''}.`,
    );
  }
  if (learned && s && full) {
    const d = full.mean - s.mean;
    lines.push(
      `Full fine-tuning ${d >= 0 ? 'leads' : 'trails'} SIFT by ${(100 * Math.abs(d)).toFixed(1)} points (the criterion is within 1.5 points): ${Math.abs(d) <= 0.015 || d < 0 ? 'met' : 'not met'}.`,
    );
  }
  if (qs) {
    const i = qs.base.fractions.indexOf(0.01);
    const b = qs.base.overall.shares[i];
    const r = qs.random.overall.shares[i];
    lines.push(
      `Quasi-sparsity on SST-2: the top 1% of the gradient's entries carry ${pct(b)} of its squared norm on the pre-trained base and ${pct(r)} on a random initialisation of the same shape: ${b > r ? 'higher on the pre-trained base' : 'not higher on the pre-trained base'}.`,
    );
  }
  return lines;
}

export async function runExperiment(f: Parsed): Promise<number> {
  const name = f._[0];
  if (name !== 'sst2') throw new SiftError('E_ARG', `unknown experiment '${name ?? ''}' (available: sst2)`);
  const t0 = Date.now();
  const out = path.resolve((f.out as string | undefined) ?? fs.mkdtempSync(path.join(os.tmpdir(), 'sift-ft-sst2-')));
  fs.mkdirSync(out, { recursive: true });
  const device = resolveDevice(f.device);
  const dataDir = path.resolve(f.data as string);
  const seed = f.seed as number;
  const rate = f['sparse-rate'] as number;
  if (!(rate > 0 && rate <= 1)) throw new SiftError('E_ARG', `flag --sparse-rate must be in (0, 1], got ${rate}`);
  const quiet = !!f.quiet;
  const log = (s: string) => process.stderr.write(`experiment: ${s}\n`);
  const methods = [
    ...new Set(
      String(f.methods)
        .split(',')
        .map((m) => m.trim())
        .filter(Boolean),
    ),
  ] as MethodName[];
  for (const m of methods)
    if (!['sift', 'full', 'lora', 'random-sparse'].includes(m)) throw new SiftError('E_ARG', `flag --methods: unknown method '${m}'`);
  methods.sort((a, b) => (a === 'sift' ? -1 : b === 'sift' ? 1 : 0));
  const lrs = String(f.lrs)
    .split(',')
    .map((x) => Number(x.trim()));
  if (!lrs.length || lrs.some((x) => !(x > 0)))
    throw new SiftError('E_ARG', `flag --lrs: positive numbers, comma-separated, got '${f.lrs}'`);
  const sst2 = path.join(dataDir, 'sst2');
  if (!fs.existsSync(path.join(sst2, 'train.tsv')))
    throw new SiftError('E_IO', `${sst2}/train.tsv not found: the experiment reads ../shared/data (see its README); pass --data DIR`);
  log(`output in ${out}`);

  // 1. The base: pre-trained on the books, or reused from the cache / --base.
  let baseDir: string;
  let pretrainInfo: Record<string, unknown> | null = null;
  let pretrainRun: RunData | undefined;
  if (f.base !== undefined) {
    baseDir = path.resolve(String(f.base));
  } else {
    baseDir = path.join(out, 'base');
    const settings = {
      architecture: f.architecture,
      size: f.size,
      minutes: f['pretrain-minutes'],
      steps: f['pretrain-steps'],
      batch: f['pretrain-batch'],
      lr: f['pretrain-lr'],
      block: f.block,
      vocab: f['tokenizer-vocab'],
      sample: f['tokenizer-sample-mb'],
      data: f['pretrain-data'] ?? 'gutenberg',
      seed,
    };
    const cacheFile = path.join(baseDir, 'experiment-pretrain.json');
    const cached = fs.existsSync(cacheFile) ? JSON.parse(fs.readFileSync(cacheFile, 'utf8')) : null;
    if (cached && JSON.stringify(cached.settings) === JSON.stringify(settings) && fs.existsSync(path.join(baseDir, 'model.safetensors'))) {
      log(`reusing the pre-trained base in ${baseDir} (same pre-training settings)`);
      pretrainInfo = cached.result;
      // The cached run's curve, from its log.
      pretrainRun = curvesFromLog(path.join(baseDir, 'log.jsonl'))?.run('pre-training (cached)', settings, pretrainInfo ?? {});
    } else {
      const files = expandDataPaths(
        f['pretrain-data'] !== undefined
          ? String(f['pretrain-data'])
              .split(',')
              .map((x) => x.trim())
          : [path.join(dataDir, 'gutenberg')],
      );
      const pf: Parsed = { _: [] };
      for (const [k, spec] of Object.entries(pretrainFlags)) if (spec.default !== undefined) pf[k] = spec.default;
      Object.assign(pf, {
        architecture: f.architecture,
        size: f.size,
        out: baseDir,
        'tokenizer-vocab': f['tokenizer-vocab'],
        'tokenizer-sample-mb': f['tokenizer-sample-mb'],
        'block-size': f.block,
        'batch-size': f['pretrain-batch'],
        lr: f['pretrain-lr'],
        seed,
        device,
        quiet,
        minutes: f['pretrain-minutes'],
        'checkpoint-every': 500,
        'save-total-limit': 1,
      });
      if (f['pretrain-steps'] !== undefined) pf.steps = f['pretrain-steps'];
      const r = await pretrainModel(pf, files, log);
      if (r.interrupted) throw new SiftError('E_ARG', 'pre-training was interrupted; run again to start it over');
      pretrainInfo = {
        parameters: r.parameters,
        steps: r.steps,
        tokens: r.tokens,
        firstLoss: r.firstLoss,
        finalLoss: r.finalLoss,
        tokensPerSec: r.tokensPerSec,
        seconds: r.seconds,
        timeUp: r.timeUp,
        vocab: r.tokenizer.vocabSize,
        files: files.map((x) => path.basename(x)),
      };
      pretrainRun = r.run;
      fs.writeFileSync(cacheFile, JSON.stringify({ settings, result: pretrainInfo }, null, 2) + '\n');
      log(
        `pre-trained ${fmtInt(r.parameters)} parameters on ${fmtInt(r.tokens)} tokens in ${fmtDuration(r.seconds)}: loss ${r.firstLoss.toFixed(3)} -> ${r.finalLoss.toFixed(3)}`,
      );
    }
  }

  // 2. SST-2: train (minus a dev split that picks learning rates), dev as the held-out test.
  const all = shuffled(
    (await loadRows(path.join(sst2, 'train.tsv'))).map((r) => ({ text: r.sentence, label: r.label })),
    seed + 2,
  );
  const devN = f['dev-size'] as number;
  const dev = all.slice(0, devN);
  let train = all.slice(devN);
  if ((f['train-size'] as number) > 0) train = train.slice(0, f['train-size'] as number);
  let test: Row[] = (await loadRows(path.join(sst2, 'dev.tsv'))).map((r) => ({ text: r.sentence, label: r.label }));
  if ((f['test-size'] as number) > 0) test = test.slice(0, f['test-size'] as number);

  // 3. Quasi-sparsity: the base against a random initialisation of the same shape, same batches and head seed.
  const qOpts = { batches: f['selection-batches'] as number, batch: f.batch as number, maxLength: f['max-length'] as number, device };
  const base = loadModelForTask(baseDir, { task: 'classify', device, labels: ['0', '1'], seed });
  let qs: { base: QuasiSparsity; random: QuasiSparsity };
  try {
    const qBase = await classifierQuasiSparsity(base.model, base.tokenizer, train, qOpts);
    const fresh = createModel({ ...base.model.config }, { task: 'sequence-classification', device, seed });
    try {
      qs = { base: qBase, random: await classifierQuasiSparsity(fresh, base.tokenizer, train, qOpts) };
    } finally {
      fresh.dispose();
    }
  } finally {
    base.model.dispose();
  }
  log(
    `quasi-sparsity, top 1% of entries: pre-trained ${pct(qs.base.overall.shares[1])}, random initialisation ${pct(qs.random.overall.shares[1])}`,
  );

  // 4. The comparison.
  const config = JSON.parse(fs.readFileSync(path.join(baseDir, 'config.json'), 'utf8')) as Record<string, unknown>;
  const lora = matchedLoraRank(config, rate);
  log(
    `SST-2: ${train.length} train, ${dev.length} dev (learning rates), ${test.length} test rows; SIFT trains ${fmtInt(lora.siftSparse)} sparse entries, LoRA rank ${lora.rank} ${fmtInt(lora.rank * lora.loraPerRank)} (the head trained densely in both)`,
  );
  const common = {
    steps: f.steps as number,
    batchSize: f.batch as number,
    evalEvery: 0,
    lrSchedule: 'linear' as const,
    warmupSteps: Math.round((f.steps as number) * 0.06),
    weightDecay: 0,
    maxGradNorm: 1,
    seed,
    maxLength: f['max-length'] as number,
    logEvery: 1,
    evalBatchSize: 64,
  };
  const spec = (m: MethodName, lr: number): MethodSpec => {
    const sel = { batches: f['selection-batches'] as number };
    switch (m) {
      case 'sift':
        return {
          method: 'sift',
          options: { lr, sift: { sparseRate: rate, targetModules: lora.targets, denseModules: ['score'], selection: sel } },
        };
      case 'random-sparse':
        return {
          method: 'random-sparse',
          options: { lr, sift: { sparseRate: rate, targetModules: lora.targets, denseModules: ['score'], selection: { score: 'random' } } },
        };
      case 'lora':
        return {
          method: 'lora',
          options: { lr, lora: { rank: lora.rank, alpha: 2 * lora.rank, targetModules: lora.targets, denseModules: ['score'] } },
        };
      default:
        return { method: 'full', options: { lr } };
    }
  };
  const seeds = Array.from({ length: f.seeds as number }, (_, i) => seed + i);
  const ft: FinetuneSpec = {
    baseDir,
    task: 'classify',
    train,
    eval: dev,
    test,
    labels: ['0', '1'],
    device,
    outDir: path.join(out, 'runs'),
    common,
    quiet,
  };
  const summaries: MethodSummary[] = [];
  for (const m of methods) {
    const r = await gridAndSeeds(ft, m, (lr) => spec(m, lr), lrs, seeds, log, m === 'lora' ? lora.rank : undefined);
    summaries.push(r);
    log(
      `${m}: lr ${r.lr} chosen on dev; test accuracy ${r.seeds.map((x) => pct(x.test)).join(', ')} (mean ${pct(r.mean)}, std ${pct(r.std)})`,
    );
  }

  const seconds = (Date.now() - t0) / 1000;
  const b = backends();
  const machine =
    device === 'cpu'
      ? `${os.cpus()[0]?.model ?? 'CPU'} (${b.cpu.threads} threads), ${os.platform()}`
      : `${b.cuda.devices[0]?.name ?? 'CUDA GPU'}`;
  const positives = test.filter((r) => String(r.label) === '1').length / test.length;
  const verdictLines = experimentVerdict(summaries, qs, Math.max(positives, 1 - positives));
  const tableText = demoTable(summaries);
  const summary = {
    experiment: 'sst2',
    machine,
    device,
    seconds,
    out,
    base: baseDir,
    settings: Object.fromEntries(Object.entries(f).filter(([k]) => k !== '_')),
    pretrain: pretrainInfo,
    loraRank: lora.rank,
    siftSparse: lora.siftSparse,
    grid: lrs,
    seeds,
    split: { train: train.length, dev: dev.length, test: test.length },
    quasiSparsity: {
      fractions: qs.base.fractions,
      base: qs.base.overall.shares,
      random: qs.random.overall.shares,
      layers: { base: qs.base.layers, random: qs.random.layers },
    },
    results: summaries.map((r) => summaryJson(r)),
    verdict: verdictLines,
  };
  fs.writeFileSync(path.join(out, 'results.json'), JSON.stringify(summary, null, 2) + '\n');
  fs.writeFileSync(
    path.join(out, 'report.html'),
    renderReport({
      title: 'sift-ft: SST-2 on a base pre-trained on the Gutenberg books',
      subtitle: `${config.model_type} base (${pretrainInfo ? `${fmtInt(Number(pretrainInfo.parameters))} parameters, ${fmtInt(Number(pretrainInfo.tokens))} pre-training tokens` : baseDir}); ${test.length} SST-2 dev rows as the test; ${machine}; ${fmtDuration(seconds)}`,
      notes: [...verdictLines, ...tableText.split('\n')],
      runs: summaries.map((r) => ({ ...r.run.run, name: `${r.method} (lr ${r.lr}, seed ${seeds[0]})` })),
      pretrain: pretrainRun,
      quasiSparsity: [
        { name: 'pre-trained base', qs: qs.base },
        { name: 'random initialisation', qs: qs.random },
      ],
    }),
  );
  if (!quiet) {
    process.stdout.write(
      `\nQuasi-sparsity of the pre-trained base on SST-2:\n${quasiTable(qs.base)}\n\nand of a random initialisation of the same shape:\n${quasiTable(qs.random)}\n\n`,
    );
  }
  process.stdout.write(
    `\nSST-2 (${test.length} test rows), ${machine}, ${fmtDuration(seconds)} in all\n\n${tableText}\n\n${verdictLines.join('\n')}\n\n` +
      `results: ${path.join(out, 'results.json')}\nreport: ${path.join(out, 'report.html')}\n`,
  );
  return 0;
}

export async function experimentMain(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h') || argv.length === 0) {
    process.stdout.write(`Usage: npm run experiment -- sst2 --out DIR [flags]\n\nFlags:\n${flagHelp(experimentFlags)}\n`);
    return argv.length === 0 ? 2 : 0;
  }
  try {
    return await runExperiment(parseFlags(argv, experimentFlags, { positionals: 1 }));
  } catch (e) {
    const err = e as Error;
    process.stderr.write(`experiment: ${err.message}${e instanceof SiftError ? ` [${e.code}]` : ''}\n`);
    if (env('SIFT_FT_DEBUG')) process.stderr.write(`${err.stack}\n`);
    return 1;
  }
}

if (require.main === module) {
  experimentMain(process.argv.slice(2)).then((code) => (process.exitCode = code));
}
