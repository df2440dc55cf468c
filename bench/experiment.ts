/**
 * The real-data experiment: `npm run experiment -- sst2 --out DIR`. Pre-trains a small GPT-2 on
 * the text in ../shared/data (Tiny Shakespeare and AG News by default), fine-tunes it on SST-2
 * train with SIFT at 1%, full fine-tuning, LoRA with a matched trainable-parameter count and
 * random-sparse, evaluates on SST-2 dev, and writes DIR/results.json, DIR/report.html and per
 * method a full model folder DIR/<method>/ that `sift-ft eval` loads. Every size is a flag.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { SiftError } from '../lib/engine/errors';
import { backends, resetPeakMemory } from '../lib/engine/runtime';
import { createModel } from '../lib/models';
import { planTargets } from '../lib/sift/targets';
import { kForRate } from '../lib/sift/sift';
import { trainByteBpe } from '../lib/tokenizers';
import { loadRows } from '../lib/train/data';
import type { MethodName, Row } from '../lib/train/types';
import { FlagSpec, Parsed, flagHelp, parseFlags } from '../lib/cli/args';
import { deviceFlag, fmtDuration, resolveDevice } from '../lib/cli/common';
import { MethodResult, MethodSpec, finetuneMethod, pretrain, resultsTable } from '../lib/cli/pipeline';
import { renderReport } from '../lib/cli/report';
import { env } from '../lib/engine/env';

export const experimentFlags: Record<string, FlagSpec> = {
  out: { type: 'string', help: 'output folder' },
  data: { type: 'string', help: 'the shared data folder', default: path.join('..', 'shared', 'data') },
  'pretrain-sources': { type: 'string', help: "pre-training text: any of shakespeare, agnews, sst2 (SST-2 train sentences without labels)", default: 'shakespeare,agnews' },
  vocab: { type: 'number', help: 'BPE vocabulary size', default: 2048 },
  'n-embd': { type: 'number', help: 'model width', default: 128 },
  'n-layer': { type: 'number', help: 'transformer blocks', default: 4 },
  'n-head': { type: 'number', help: 'attention heads', default: 4 },
  block: { type: 'number', help: 'pre-training block size (tokens)', default: 64 },
  'pretrain-steps': { type: 'number', help: 'pre-training optimizer steps', default: 1500 },
  'pretrain-batch': { type: 'number', help: 'pre-training batch size', default: 32 },
  'pretrain-lr': { type: 'number', help: 'pre-training peak learning rate', default: 2e-3 },
  'train-size': { type: 'number', help: 'SST-2 train rows used (0: all 60,614)', default: 0 },
  'eval-size': { type: 'number', help: 'SST-2 dev rows evaluated (0: all 6,735)', default: 0 },
  steps: { type: 'number', help: 'fine-tuning optimizer steps per method', default: 1000 },
  batch: { type: 'number', help: 'fine-tuning batch size', default: 32 },
  'max-length': { type: 'number', help: 'fine-tuning max tokens per sentence', default: 64 },
  'eval-every': { type: 'number', help: 'evaluate on the dev rows every N steps (0: only at the end)', default: 0 },
  'sparse-rate': { type: 'number', help: 'SIFT and random-sparse budget', default: 0.01 },
  methods: { type: 'string', help: 'methods, comma-separated', default: 'sift,full,lora,random-sparse' },
  'lr-sift': { type: 'number', help: 'SIFT / random-sparse learning rate', default: 5e-3 },
  'lr-full': { type: 'number', help: 'full fine-tuning learning rate', default: 5e-4 },
  'lr-lora': { type: 'number', help: 'LoRA learning rate', default: 3e-3 },
  seed: { type: 'number', help: 'seed', default: 1 },
  device: deviceFlag,
  quiet: { type: 'boolean', help: 'no progress output' },
};

const TARGETS = ['c_attn', 'c_proj', 'c_fc'];

function readLines(file: string): string[] {
  if (!fs.existsSync(file)) throw new SiftError('E_IO', `${file} not found: the experiment reads ../shared/data (see its README); pass --data DIR`);
  return fs.readFileSync(file, 'utf8').split('\n');
}

/** Pre-training documents: Shakespeare in chunks of ~12 lines, AG News articles, optionally SST-2 sentences. */
async function pretrainTexts(dataDir: string, sources: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const s of sources) {
    if (s === 'shakespeare') {
      const lines = readLines(path.join(dataDir, 'tinyshakespeare', 'input.txt'));
      for (let i = 0; i < lines.length; i += 12) out.push(lines.slice(i, i + 12).join('\n'));
    } else if (s === 'agnews') {
      for (const f of ['dev.tsv', 'test.tsv']) {
        const rows = await loadRows(path.join(dataDir, 'agnews', f), { header: false, columns: ['text', 'label'] });
        for (const r of rows) out.push(String(r.text).replace(/ #39;/g, "'").replace(/#39;/g, "'"));
      }
    } else if (s === 'sst2') {
      for (const r of await loadRows(path.join(dataDir, 'sst2', 'train.tsv'))) out.push(String(r.sentence));
    } else {
      throw new SiftError('E_ARG', `flag --pretrain-sources: unknown source '${s}' (allowed: shakespeare, agnews, sst2)`);
    }
  }
  return out;
}

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

/** The LoRA rank whose adapters (r x (in + out) per target) come closest to SIFT's sparse budget. */
export function matchedLoraRank(config: Record<string, unknown>, rate: number): { rank: number; siftSparse: number; loraPerRank: number } {
  const model = createModel({ ...config, num_labels: 2 }, { task: 'sequence-classification', device: 'cpu', seed: 0 });
  try {
    const plan = planTargets(model, TARGETS, undefined);
    let siftSparse = 0;
    let loraPerRank = 0;
    for (const [, t] of plan.sparse) {
      siftSparse += kForRate(rate, t.size);
      // Biases are not adapted by LoRA; weight matrices get A (r x in) and B (out x r).
      if (t.shape.length === 2) loraPerRank += t.shape[0] + t.shape[1];
    }
    return { rank: Math.max(1, Math.round(siftSparse / loraPerRank)), siftSparse, loraPerRank };
  } finally {
    model.dispose();
  }
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
  const quiet = !!f.quiet;
  const log = (s: string) => process.stderr.write(`experiment: ${s}\n`);
  const methods = String(f.methods).split(',').map((m) => m.trim()).filter(Boolean) as MethodName[];
  for (const m of methods) if (!['sift', 'full', 'lora', 'random-sparse'].includes(m)) throw new SiftError('E_ARG', `flag --methods: unknown method '${m}'`);
  log(`output in ${out}`);

  const texts = await pretrainTexts(dataDir, String(f['pretrain-sources']).split(',').map((s) => s.trim()).filter(Boolean));
  const tk0 = Date.now();
  // The merges are learned from a sample: word counts saturate long before the whole text is read.
  const sample = shuffled(texts, seed).slice(0, 6000);
  const tokenizer = trainByteBpe(sample, f.vocab as number);
  log(`${texts.length} pre-training documents; BPE tokenizer of ${tokenizer.vocabSize} tokens trained in ${fmtDuration((Date.now() - tk0) / 1000)}`);

  const config = {
    model_type: 'gpt2', vocab_size: tokenizer.vocabSize, n_embd: f['n-embd'], n_layer: f['n-layer'], n_head: f['n-head'],
    n_inner: 4 * (f['n-embd'] as number), n_positions: Math.max(f.block as number, f['max-length'] as number),
    resid_pdrop: 0.1, embd_pdrop: 0.1, attn_pdrop: 0.1,
  };
  const pre = await pretrain({
    config, tokenizer, texts: shuffled(texts, seed + 1).map((text) => ({ text })), outDir: out, device,
    steps: f['pretrain-steps'] as number, batchSize: f['pretrain-batch'] as number, blockSize: f.block as number, lr: f['pretrain-lr'] as number, seed, quiet,
  }, log);

  let train: Row[] = (await loadRows(path.join(dataDir, 'sst2', 'train.tsv'))).map((r) => ({ text: r.sentence, label: r.label }));
  let dev: Row[] = (await loadRows(path.join(dataDir, 'sst2', 'dev.tsv'))).map((r) => ({ text: r.sentence, label: r.label }));
  if ((f['train-size'] as number) > 0) train = shuffled(train, seed + 2).slice(0, f['train-size'] as number);
  if ((f['eval-size'] as number) > 0) dev = dev.slice(0, f['eval-size'] as number);
  const lora = matchedLoraRank(config, rate);
  log(`SST-2: ${train.length} train rows, ${dev.length} dev rows; SIFT trains ${lora.siftSparse.toLocaleString('en-US')} sparse entries, LoRA rank ${lora.rank} trains ${(lora.rank * lora.loraPerRank).toLocaleString('en-US')} (plus the head in both)`);

  const common = {
    steps: f.steps as number, batchSize: f.batch as number, evalEvery: f['eval-every'] as number, lrSchedule: 'linear' as const,
    warmupSteps: Math.round((f.steps as number) * 0.06), weightDecay: 0, maxGradNorm: 1, seed, maxLength: f['max-length'] as number, logEvery: 1,
    evalBatchSize: 64,
  };
  const specs: Record<string, MethodSpec> = {
    sift: { method: 'sift', options: { lr: f['lr-sift'] as number, sift: { sparseRate: rate, targetModules: TARGETS, denseModules: ['score'] } } },
    'random-sparse': { method: 'random-sparse', options: { lr: f['lr-sift'] as number, sift: { sparseRate: rate, targetModules: TARGETS, denseModules: ['score'], selection: { score: 'random' } } } },
    full: { method: 'full', options: { lr: f['lr-full'] as number } },
    lora: { method: 'lora', options: { lr: f['lr-lora'] as number, lora: { rank: lora.rank, alpha: 2 * lora.rank, targetModules: TARGETS, denseModules: ['score'] } } },
  };
  const results: MethodResult[] = [];
  for (const m of methods) {
    resetPeakMemory();
    results.push(await finetuneMethod({ baseDir: pre.dir, task: 'classify', train, eval: dev, labels: ['0', '1'], device, outDir: out, common, quiet, saveMerged: true }, specs[m], log));
  }
  const seconds = (Date.now() - t0) / 1000;
  const b = backends();
  const machine = device === 'cpu' ? `${os.cpus()[0]?.model ?? 'CPU'} (${b.cpu.threads} threads), ${os.platform()}` : `${b.cuda.devices[0]?.name ?? 'CUDA GPU'}`;
  const summary = {
    experiment: 'sst2', machine, device, seconds, out,
    settings: Object.fromEntries(Object.entries(f).filter(([k]) => k !== '_')),
    pretrain: { parameters: pre.parameters, documents: texts.length, steps: f['pretrain-steps'], firstLoss: pre.firstLoss, finalLoss: pre.finalLoss, seconds: pre.seconds, tokensPerSec: pre.tokensPerSec },
    loraRank: lora.rank,
    results: results.map((r) => ({
      method: r.name, trainable: r.trainable, total: r.total, peakMemoryBytes: r.peakMemoryBytes, tokensPerSec: r.tokensPerSec, seconds: r.seconds,
      metrics: r.metrics, meanGradProportion: r.meanGradProportion, model: r.outDir,
    })),
  };
  fs.writeFileSync(path.join(out, 'results.json'), JSON.stringify(summary, null, 2) + '\n');
  fs.writeFileSync(path.join(out, 'report.html'), renderReport({
    title: 'sift-ft: SST-2 experiment',
    subtitle: `GPT-2 (${pre.parameters.toLocaleString('en-US')} parameters) pre-trained on ${f['pretrain-sources']}, fine-tuned on SST-2; dev accuracy; ${machine}; ${fmtDuration(seconds)}`,
    runs: results.map((r) => r.run),
    pretrain: pre.run,
  }));
  process.stdout.write(`\nSST-2 dev (${dev.length} rows), ${machine}, ${fmtDuration(seconds)} in all; pre-training loss ${pre.firstLoss.toFixed(2)} -> ${pre.finalLoss.toFixed(2)}\n\n${resultsTable(results)}\n\n`
    + `results: ${path.join(out, 'results.json')}\nreport: ${path.join(out, 'report.html')}\nmodels: ${results.map((r) => r.outDir).join(', ')}\n`);
  return 0;
}

export async function experimentMain(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h') || argv.length === 0) {
    process.stdout.write(`Usage: npm run experiment -- sst2 --out DIR [flags]\n\nFlags:\n${flagHelp(experimentFlags)}\n`);
    return argv.length === 0 ? 2 : 0;
  }
  try {
    return await runExperiment(parseFlags(argv, experimentFlags));
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
