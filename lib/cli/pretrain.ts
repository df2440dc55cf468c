/**
 * `sift-ft pretrain`: trains a causal language model from scratch (or continues pre-training an
 * existing one) on text files streamed from disk, and writes a Hugging Face model folder
 * (config.json, model.safetensors, tokenizer.json, tokenizer_config.json) with log.jsonl,
 * report.html and checkpoint-<step>/ folders beside it. See docs/pretraining.md.
 */
import * as fs from 'fs';
import * as path from 'path';
import { SiftError } from '../engine/errors';
import { distEnv } from '../dist/group';
import { readJsonObject } from '../io/hf';
import { writeFileAtomic } from '../io/atomic';
import { createModel } from '../models';
import type { HFConfig, PreTrainedModel } from '../models/common';
import { HfTokenizer, trainByteBpe } from '../tokenizers';
import { Trainer, latestCheckpoint } from '../train/trainer';
import { TokenBlockStream, expandDataPaths, sampleText } from '../train/stream';
import { loadRows } from '../train/data';
import type { Row, TrainerEvent, TrainerOptions } from '../train/types';
import type { FlagSpec, ParseResult, Parsed } from './args';
import {
  activationCheckpointingFlag,
  deviceFlag,
  fmtDuration,
  fmtInt,
  gradAccumFlag,
  loadModelForTask,
  logEveryFlag,
  mixedPrecisionFlag,
  resolveDevice,
  resumeFlag,
  writeJson,
} from './common';
import { curvesFromLog, flatOptions, withInterrupts } from './finetune';
import { Progress, fmtMetrics } from './progress';
import { RunData, RunRecorder, renderReport } from './report';

/** Model sizes by name: width, depth, heads and context; the same shape for both architectures. */
export const PRETRAIN_SIZES: Record<string, { width: number; layers: number; heads: number; context: number }> = {
  tiny: { width: 64, layers: 2, heads: 2, context: 128 },
  mini: { width: 128, layers: 4, heads: 4, context: 256 },
  small: { width: 256, layers: 6, heads: 8, context: 512 },
  base: { width: 512, layers: 8, heads: 8, context: 1024 },
  large: { width: 768, layers: 12, heads: 12, context: 1024 },
};

/** config.json of a fresh model of an architecture and size (vocabulary and special ids filled in later). */
export function configFor(architecture: string, size: string): HFConfig {
  const s = PRETRAIN_SIZES[size];
  if (!s) throw new SiftError('E_ARG', `unknown size '${size}' (sizes: ${Object.keys(PRETRAIN_SIZES).join(', ')})`);
  if (architecture === 'gpt2') {
    return {
      model_type: 'gpt2',
      n_embd: s.width,
      n_layer: s.layers,
      n_head: s.heads,
      n_inner: 4 * s.width,
      n_positions: s.context,
      activation_function: 'gelu_new',
      resid_pdrop: 0,
      embd_pdrop: 0,
      attn_pdrop: 0,
      layer_norm_epsilon: 1e-5,
      initializer_range: 0.02,
      tie_word_embeddings: true,
    };
  }
  if (architecture === 'llama') {
    // SwiGLU's hidden size: 8/3 of the width, rounded up to a multiple of 64 (LLaMA's rule).
    const inter = Math.ceil((8 * s.width) / 3 / 64) * 64;
    return {
      model_type: 'llama',
      hidden_size: s.width,
      intermediate_size: inter,
      num_hidden_layers: s.layers,
      num_attention_heads: s.heads,
      num_key_value_heads: s.heads,
      max_position_embeddings: s.context,
      rms_norm_eps: 1e-5,
      rope_theta: 10000,
      hidden_act: 'silu',
      attention_bias: false,
      mlp_bias: false,
      attention_dropout: 0,
      initializer_range: 0.02,
      tie_word_embeddings: true,
    };
  }
  throw new SiftError('E_ARG', `unknown architecture '${architecture}' (expected gpt2 or llama)`);
}

function contextOf(cfg: HFConfig): number | undefined {
  const v = cfg.n_positions ?? cfg.max_position_embeddings;
  return typeof v === 'number' ? v : undefined;
}

export const pretrainFlags: Record<string, FlagSpec> = {
  architecture: { type: 'string', help: 'a new model of this architecture (or --model, or --config)', choices: ['gpt2', 'llama'] },
  size: {
    type: 'string',
    help: `size of a new model: ${Object.entries(PRETRAIN_SIZES)
      .map(([k, s]) => `${k} (${s.width} wide, ${s.layers} layers, ${s.heads} heads, context ${s.context})`)
      .join(', ')}`,
    choices: Object.keys(PRETRAIN_SIZES),
    default: 'small',
  },
  config: {
    type: 'string',
    help: 'config.json of a new model (instead of --architecture/--size; vocab_size and special ids are set from the tokenizer)',
  },
  model: { type: 'string', help: 'continue pre-training this model folder (its tokenizer too)' },
  data: {
    type: 'string',
    help: 'text to train on: .jsonl / .txt files (gzipped or not) or folders of them; several as --data A B C or A,B,C',
  },
  'text-column': { type: 'string', help: 'JSON lines: the field holding the text', default: 'text' },
  tokenizer: { type: 'string', help: 'a folder with tokenizer.json to use instead of training one' },
  'tokenizer-vocab': {
    type: 'number',
    help: 'vocabulary size of the byte-level BPE tokenizer trained on the data',
    default: 8192,
    integer: true,
    min: 260,
  },
  'tokenizer-sample-mb': {
    type: 'number',
    help: 'megabytes of text (spread over the files) the tokenizer is trained on',
    default: 10,
    min: 0.001,
  },
  'block-size': { type: 'number', help: "tokens per training sequence (default: the model's context, at most 512)", integer: true, min: 2 },
  steps: { type: 'number', help: 'optimizer steps', integer: true, min: 1 },
  tokens: { type: 'number', help: 'train on this many tokens (steps = tokens / (batch x accumulation x block), rounded up)', min: 1 },
  minutes: {
    type: 'number',
    help: 'stop after this many minutes of training, at a step boundary, and write the model (alone: a constant learning rate after warmup)',
    min: 0,
  },
  'batch-size': { type: 'number', help: 'sequences per micro-batch', default: 16, integer: true, min: 1 },
  'grad-accum': gradAccumFlag,
  lr: { type: 'number', help: 'peak learning rate', default: 1e-3 },
  'lr-schedule': {
    type: 'string',
    help: 'learning-rate schedule (default cosine; constant with --minutes alone)',
    choices: ['constant', 'linear', 'cosine'],
  },
  'warmup-steps': {
    type: 'number',
    help: 'warmup steps (default: 5% of the steps, at most 500; 100 with --minutes alone)',
    integer: true,
    min: 0,
  },
  'weight-decay': { type: 'number', help: 'AdamW weight decay', default: 0.1, min: 0 },
  'max-grad-norm': { type: 'number', help: 'gradient clipping norm (0 = off)', default: 1, min: 0 },
  'shuffle-buffer': { type: 'number', help: 'blocks held to shuffle the stream (1: file order)', default: 2048, integer: true, min: 1 },
  seed: { type: 'number', help: 'seed of initialisation and shuffling', default: 42, integer: true },
  'eval-data': { type: 'string', help: 'held-out text (.jsonl or .txt) for validation loss and perplexity' },
  'eval-every': { type: 'number', help: 'evaluate every N steps (0: only at the end)', default: 0, integer: true, min: 0 },
  'checkpoint-every': {
    type: 'number',
    help: 'write OUT/checkpoint-<step> every N steps (0: at the end and on interruption)',
    default: 0,
    integer: true,
    min: 0,
  },
  'save-total-limit': { type: 'number', help: 'keep at most N checkpoint folders', integer: true, min: 1 },
  resume: resumeFlag,
  out: { type: 'string', help: 'output folder: the model, log.jsonl, report.html, checkpoints' },
  'mixed-precision': mixedPrecisionFlag,
  'activation-checkpointing': activationCheckpointingFlag,
  'log-every': logEveryFlag,
  'report-to': {
    type: 'string',
    help: "'tensorboard' also writes event files to --out",
    choices: ['none', 'tensorboard'],
    default: 'none',
  },
  device: deviceFlag,
  json: { type: 'boolean', help: 'print the summary as JSON' },
  quiet: { type: 'boolean', help: 'no progress output' },
};

export const pretrainHelp =
  'Pre-trains a GPT-2 or LLaMA model from scratch (or continues pre-training one) on text streamed from .jsonl/.txt files, gzipped or not, and writes a Hugging Face model folder.';

export interface PretrainOutcome {
  out: string;
  steps: number;
  totalSteps: number;
  parameters: number;
  tokens: number;
  firstLoss: number;
  finalLoss: number;
  tokensPerSec: number;
  seconds: number;
  /** Stopped by --minutes. */
  timeUp: boolean;
  /** Stopped by a signal (a checkpoint was written; resume to finish). */
  interrupted: boolean;
  evalMetrics?: Record<string, number | undefined>;
  tokenizer: { vocabSize: number; trained: boolean; seconds: number };
  config: HFConfig;
  run: RunData;
}

/** The data files of --data: the flag's value (comma-separated) and the words right after it. */
function dataFiles(f: Parsed, argv: string[]): string[] {
  const given = String(f.data)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const extra = f._;
  if (extra.length) {
    // Positional words are accepted only as more --data files, right after it.
    const i = argv.findIndex((a) => a === '--data' || a.startsWith('--data='));
    const after = i < 0 ? [] : argv.slice(i + (argv[i].includes('=') ? 1 : 2), i + (argv[i].includes('=') ? 1 : 2) + extra.length);
    if (after.join('\0') !== extra.join('\0'))
      throw new SiftError('E_ARG', `unexpected argument '${extra[0]}' (more data files go right after --data)`);
    given.push(...extra);
  }
  return expandDataPaths(given);
}

export async function runPretrain(f: Parsed, argv: string[] = [], _parsed?: ParseResult): Promise<number> {
  // Under sift-ft launch or torchrun every process would run the whole pre-training and write --out.
  const group = distEnv();
  if (group && group.worldSize > 1)
    throw new SiftError(
      'E_UNSUPPORTED',
      `pretrain does not train as a data-parallel group (this process is rank ${group.rank} of ${group.worldSize}); run it as one process (finetune trains as a group)`,
    );
  if (f.data === undefined)
    throw new SiftError('E_ARG', 'missing --data (the text to train on: .jsonl or .txt files, gzipped or not, or folders of them)');
  if (f.out === undefined) throw new SiftError('E_ARG', 'missing --out (the output folder)');
  const files = dataFiles(f, argv);
  const r = await pretrainModel(f, files);
  if (f.json) {
    const { run: _run, ...rest } = r;
    writeJson(rest);
  } else {
    const lines = [
      `${r.timeUp ? `time up (--minutes ${f.minutes}) at step ${r.steps}` : r.interrupted ? `interrupted at step ${r.steps}` : `${r.steps} steps`} of ${r.totalSteps >= UNBOUNDED ? 'an open-ended run' : r.totalSteps}: ` +
        `${fmtInt(r.parameters)} parameters, ${fmtInt(r.tokens)} tokens in ${fmtDuration(r.seconds)} (${Math.round(r.tokensPerSec)} tokens/s), loss ${r.firstLoss.toFixed(3)} -> ${r.finalLoss.toFixed(3)}`,
    ];
    if (r.evalMetrics) lines.push(`eval: ${fmtMetrics(r.evalMetrics)}`);
    lines.push(
      `model: ${r.out} (config.json, model.safetensors, tokenizer.json)`,
      `log: ${path.join(r.out, 'log.jsonl')}`,
      `report: ${path.join(r.out, 'report.html')}`,
    );
    if (r.interrupted) lines.push('run the same command with --resume to finish');
    process.stdout.write(lines.join('\n') + '\n');
  }
  return r.interrupted ? 130 : 0;
}

/** Total steps of an open-ended run (--minutes alone): the clock stops it. */
const UNBOUNDED = 1_000_000_000;

/** The pre-training run behind the command (the experiment calls it too), from parsed flags. */
export async function pretrainModel(
  f: Parsed,
  files: string[],
  log: (s: string) => void = (s) => process.stderr.write(`sift-ft pretrain: ${s}\n`),
): Promise<PretrainOutcome> {
  const t0 = Date.now();
  const out = path.resolve(String(f.out));
  const device = resolveDevice(f.device);
  const quiet = !!f.quiet || !!f.json;
  const say = (s: string) => (quiet ? undefined : log(s));
  const seed = f.seed as number;
  const sources = [
    f.model !== undefined && '--model',
    f.architecture !== undefined && '--architecture',
    f.config !== undefined && '--config',
  ].filter(Boolean);
  if (sources.length !== 1)
    throw new SiftError(
      'E_ARG',
      sources.length
        ? `give one of ${sources.join(', ')}, not several`
        : 'give --architecture gpt2|llama (with --size), --config config.json, or --model DIR to continue pre-training',
    );
  if (f.model !== undefined && f.tokenizer !== undefined)
    throw new SiftError('E_ARG', '--model brings its own tokenizer: --tokenizer is for a new model');
  const nStop = [f.steps, f.tokens, f.minutes].filter((v) => v !== undefined).length;
  if (!nStop) throw new SiftError('E_ARG', 'say how long to train: --steps N, --tokens N or --minutes M');
  if (f.steps !== undefined && f.tokens !== undefined) throw new SiftError('E_ARG', 'give --steps or --tokens, not both');
  if (f.minutes !== undefined && !((f.minutes as number) > 0)) throw new SiftError('E_ARG', `--minutes must be positive, got ${f.minutes}`);
  if (!((f.lr as number) > 0)) throw new SiftError('E_ARG', `--lr must be positive, got ${f.lr}`);
  if (f.resume && !latestCheckpoint(out)) throw new SiftError('E_IO', `--resume: no checkpoint in ${out}`);
  fs.mkdirSync(out, { recursive: true });

  // 1. Tokenizer and model.
  let tokenizer: HfTokenizer;
  let model: PreTrainedModel;
  const tk0 = Date.now();
  let trainedTokenizer = false;
  if (f.model !== undefined) {
    const loaded = loadModelForTask(String(f.model), { task: 'causal-lm', device, seed });
    if (!loaded.tokenizer) throw new SiftError('E_FORMAT', `${f.model}: no tokenizer files (tokenizer.json) in the model folder`);
    tokenizer = loaded.tokenizer;
    model = loaded.model;
  } else {
    const own = path.join(out, 'tokenizer.json');
    if (f.tokenizer !== undefined) {
      tokenizer = HfTokenizer.fromFolder(String(f.tokenizer));
    } else if (f.resume && fs.existsSync(own)) {
      // The resumed run's tokenizer is the one its model was trained with.
      tokenizer = HfTokenizer.fromFolder(out);
    } else {
      const bytes = Math.round((f['tokenizer-sample-mb'] as number) * 1e6);
      const sample = await sampleText(files, bytes, { textColumn: f['text-column'] as string });
      tokenizer = trainByteBpe(sample, f['tokenizer-vocab'] as number);
      trainedTokenizer = true;
      // Saved at once: a resumed run reads it back instead of training it again.
      for (const [name, text] of Object.entries(tokenizer.toFiles())) writeFileAtomic(path.join(out, name), [text]);
      say(
        `trained a byte-level BPE tokenizer of ${fmtInt(tokenizer.vocabSize)} tokens on ${(sample.reduce((a, s) => a + s.length, 0) / 1e6).toFixed(1)} MB of the data in ${fmtDuration((Date.now() - tk0) / 1000)}`,
      );
    }
    const base: HFConfig =
      f.config !== undefined ? (readJsonObject(String(f.config)) as HFConfig) : configFor(String(f.architecture), String(f.size));
    const config: HFConfig = {
      ...base,
      vocab_size: tokenizer.vocabSize,
      bos_token_id: tokenizer.bosTokenId ?? null,
      eos_token_id: tokenizer.eosTokenId ?? null,
      pad_token_id: tokenizer.padTokenId ?? tokenizer.eosTokenId ?? null,
    };
    model = createModel(config, { task: 'causal-lm', device, seed });
  }
  const tokenizerSeconds = (Date.now() - tk0) / 1000;
  const ctx = contextOf(model.config);
  const block = (f['block-size'] as number | undefined) ?? Math.min(ctx ?? 512, 512);
  if (ctx !== undefined && block > ctx)
    throw new SiftError('E_ARG', `--block-size ${block} exceeds the model's context of ${ctx} positions`);

  // 2. How long.
  const batch = f['batch-size'] as number;
  const accum = f['grad-accum'] as number;
  let steps: number;
  if (f.steps !== undefined) steps = f.steps as number;
  else if (f.tokens !== undefined) steps = Math.max(1, Math.ceil((f.tokens as number) / (batch * accum * block)));
  else steps = UNBOUNDED;
  const openEnded = steps === UNBOUNDED;
  const warmup = (f['warmup-steps'] as number | undefined) ?? (openEnded ? 100 : Math.min(500, Math.ceil(0.05 * steps)));
  const opts: TrainerOptions = {
    task: 'causal-lm',
    method: 'full',
    steps,
    batchSize: batch,
    gradAccum: accum,
    lr: f.lr as number,
    lrSchedule: (f['lr-schedule'] as 'cosine' | undefined) ?? (openEnded ? 'constant' : 'cosine'),
    warmupSteps: warmup,
    weightDecay: f['weight-decay'] as number,
    maxGradNorm: f['max-grad-norm'] as number,
    seed,
    device,
    maxLength: block,
    packing: true,
    outDir: out,
    checkpointEvery: f['checkpoint-every'] as number,
    saveTotalLimit: f['save-total-limit'] as number | undefined,
    resume: !!f.resume,
    logEvery: f['log-every'] as number,
    reportTo: (f['report-to'] as 'none') ?? 'none',
    evalEvery: f['eval-every'] as number,
    mixedPrecision: f['mixed-precision'] as 'bf16' | undefined,
    activationCheckpointing: !!f['activation-checkpointing'],
    evalBatchSize: batch,
  };
  const evalRows: Row[] | undefined = f['eval-data'] !== undefined ? await loadRows(String(f['eval-data'])) : undefined;
  const stream = new TokenBlockStream(files, tokenizer, {
    blockSize: block,
    shuffleBuffer: f['shuffle-buffer'] as number,
    seed,
    textColumn: f['text-column'] as string,
  });
  const parameters = model.numParameters();
  say(
    `${f.model !== undefined ? `continuing ${f.model}` : `a new ${model.config.model_type} model`}: ${fmtInt(parameters)} parameters; ${files.length} data file(s) streamed in blocks of ${block} tokens; ` +
      `${openEnded ? `until ${f.minutes} minutes have passed` : `${steps} steps of ${batch * accum} x ${block} tokens`}${f.minutes !== undefined && !openEnded ? ` or ${f.minutes} minutes` : ''}`,
  );

  // 3. Training: --minutes and signals both abort at a step boundary (a checkpoint is written).
  const controller = new AbortController();
  opts.signal = controller.signal;
  let timeUp = false;
  const limitSec = f.minutes !== undefined ? (f.minutes as number) * 60 : null;
  const deadline = limitSec !== null ? { at: Date.now() + limitSec * 1000, seconds: limitSec } : undefined;
  const timer =
    limitSec !== null
      ? setTimeout(() => {
          timeUp = true;
          controller.abort();
        }, limitSec * 1000)
      : null;
  const trainer = new Trainer(model, tokenizer, opts);
  const progress = quiet
    ? null
    : new Progress(process.stderr, 'pretrain', undefined, {
        openEnded,
        tokens: f.tokens !== undefined ? { total: f.tokens as number, perStep: batch * accum * block } : undefined,
        deadline,
      });
  const rec = new RunRecorder();
  let tokensPerSec = 0;
  const t1 = Date.now();
  try {
    await withInterrupts(
      controller,
      (s) => (progress ? progress.note(s) : say(s)),
      async () => {
        for await (const e of trainer.fit(stream, evalRows) as AsyncGenerator<TrainerEvent>) {
          rec.add(e);
          if (e.type === 'step') {
            tokensPerSec = e.tokensPerSec;
            progress?.step(e);
          } else if (e.type === 'eval') {
            progress?.note(`eval at step ${e.step}: ${fmtMetrics(e.metrics)}`);
          } else if (e.type === 'checkpoint') {
            progress?.note(`checkpoint at step ${e.step}: ${e.path}`);
          }
        }
      },
    );
    progress?.end();
    if (timer) clearTimeout(timer);
    const done = rec.done;
    const interrupted = !!done?.interrupted && !timeUp;
    let evalMetrics = done?.metrics;
    if (!evalMetrics && evalRows && done?.interrupted) evalMetrics = await trainer.evaluate(evalRows);
    // The model folder: config.json, model.safetensors, tokenizer files.
    trainer.save(out);
    const seconds = (Date.now() - t0) / 1000;
    const fromLog = curvesFromLog(path.join(out, 'log.jsonl')) ?? rec;
    const losses = fromLog.steps.map((s) => s.loss);
    const k = Math.max(1, Math.min(20, Math.floor(losses.length / 5)));
    const avg = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
    const trainedSteps = trainer.stepCount;
    const outcome: PretrainOutcome = {
      out,
      steps: trainedSteps,
      totalSteps: steps,
      parameters,
      tokens: trainedSteps * batch * accum * block,
      firstLoss: avg(losses.slice(0, k)),
      finalLoss: avg(losses.slice(-k)),
      tokensPerSec,
      seconds,
      timeUp,
      interrupted,
      evalMetrics,
      tokenizer: { vocabSize: tokenizer.vocabSize, trained: trainedTokenizer, seconds: tokenizerSeconds },
      config: model.config,
      run: fromLog.run('pre-training', {}, {}),
    };
    const config = { data: files.join(', '), device, ...flatOptions(opts), minutes: f.minutes, tokenizerVocab: tokenizer.vocabSize };
    const summary = {
      parameters,
      'optimizer steps': trainedSteps,
      tokens: outcome.tokens,
      'first loss': outcome.firstLoss,
      'final loss': outcome.finalLoss,
      'tokens/s': Math.round(tokensPerSec),
      'training time': fmtDuration((Date.now() - t1) / 1000),
      'wall time': fmtDuration(seconds),
      ...(timeUp ? { stopped: `--minutes ${f.minutes}` } : {}),
      ...Object.fromEntries(Object.entries(evalMetrics ?? {}).map(([key, v]) => [`eval ${key}`, v])),
    };
    outcome.run = fromLog.run(`pre-training (${model.config.model_type})`, config, summary);
    fs.writeFileSync(
      path.join(out, 'report.html'),
      renderReport({
        title: `sift-ft pretrain: ${model.config.model_type}, ${fmtInt(parameters)} parameters`,
        subtitle: `${files.map((x) => path.basename(x)).join(', ')}; ${trainedSteps} steps in ${fmtDuration(seconds)} on ${device}`,
        runs: [outcome.run],
      }),
    );
    return outcome;
  } finally {
    if (timer) clearTimeout(timer);
    stream.close();
    trainer.dispose();
    model.dispose();
  }
}
