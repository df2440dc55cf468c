/**
 * Pieces the subcommands share: the --device flag, loading a model folder for a task (with a fresh
 * head for classification when the checkpoint has none), label discovery, and plain-text tables.
 */
import * as fs from 'fs';
import * as path from 'path';
import { SiftError } from '../engine/errors';
import { backends } from '../engine/runtime';
import { loadModelFolder } from '../io/hf';
import { createModel, loadStateDictInto } from '../models';
import type { HFConfig, ModelTask, PreTrainedModel } from '../models/common';
import { loadTokenizer } from '../tokenizers';
import { loadOnnxModel } from '../onnx/import';
import type { HfTokenizer } from '../tokenizers';
import type { Row, SparseGradientPaths, TaskName } from '../train/types';
import type { FlagSpec, Parsed } from './args';
import { Linear } from '../nn/layers';
import { parseQuantFormat } from '../autograd/quant';

export const TASKS: TaskName[] = ['classify', 'regress', 'causal-lm', 'instruct', 'chat'];

export const deviceFlag: FlagSpec = { type: 'string', help: 'cpu or cuda (default: cuda when usable)', choices: ['cpu', 'cuda'] };

export const mixedPrecisionFlag: FlagSpec = {
  type: 'string',
  help: 'bf16 weights and activations (default: bf16 on CUDA, none on CPU)',
  choices: ['bf16', 'none'],
};
export const activationCheckpointingFlag: FlagSpec = { type: 'boolean', help: 'recompute block activations in the backward' };
export const gradAccumFlag: FlagSpec = { type: 'number', help: 'micro-batches per optimizer step', default: 1, integer: true, min: 1 };
export const logEveryFlag: FlagSpec = { type: 'number', help: 'log every N optimizer steps', default: 1, integer: true, min: 1 };
export const resumeFlag: FlagSpec = { type: 'boolean', help: 'continue from the newest checkpoint in --out' };

export const quantizeFlag: FlagSpec = {
  type: 'string',
  help: 'store the frozen linear weights quantized: int8 (per-row absmax) or nf4 (NF4, blocks of 64, double-quantized scales)',
  choices: ['int8', 'nf4'],
};

/**
 * Applies --quantize: stores the model's Linear weights quantized; with `frozenOnly`, only those
 * that do not train (requiresGrad false: SIFT's non-targets, LoRA's base). Returns the paths.
 */
export function quantizeModel(model: PreTrainedModel, flag: unknown, frozenOnly: boolean): string[] {
  if (flag === undefined) return [];
  const format = parseQuantFormat(flag, '--quantize');
  const modules = new Map(model.namedModules());
  const trains = (p: string) => {
    const m = modules.get(p);
    return m instanceof Linear && !m.quantized && m.weight.requiresGrad;
  };
  return model.quantize(format, frozenOnly ? { keep: trains } : {});
}

/** The data-column flags shared by finetune, eval and select. */
export const columnFlags: Record<string, FlagSpec> = {
  'text-column': { type: 'string', help: 'column holding the text (default: text or sentence)' },
  'text-pair-column': { type: 'string', help: 'column holding the second text of a pair' },
  'label-column': { type: 'string', help: 'column holding the label (default: label)' },
};

/** The columns named by --text-column, --text-pair-column and --label-column. */
export function columnsOf(f: Parsed): { textColumn?: string; textPairColumn?: string; labelColumn?: string } {
  return {
    textColumn: f['text-column'] as string | undefined,
    textPairColumn: f['text-pair-column'] as string | undefined,
    labelColumn: f['label-column'] as string | undefined,
  };
}

/** 'cpu' or 'cuda:0'; asking for CUDA where it cannot run is an error, not a silent fallback. */
export function resolveDevice(flag: unknown): string {
  const b = backends();
  if (flag === undefined) return b.cuda.usable ? 'cuda:0' : 'cpu';
  if (flag === 'cpu') return 'cpu';
  if (!b.cuda.usable) throw new SiftError('E_DEVICE', `--device cuda: CUDA is not usable here (${b.cuda.status}); use --device cpu`);
  return 'cuda:0';
}

export function modelTaskFor(task: TaskName): ModelTask {
  return task === 'classify' || task === 'regress' ? 'sequence-classification' : 'causal-lm';
}

export function requireFlag<T>(value: T | undefined, name: string, what: string): T {
  if (value === undefined || value === '') throw new SiftError('E_ARG', `missing --${name} (${what})`);
  return value;
}

export function requireTask(v: unknown): TaskName {
  const t = requireFlag(v as string | undefined, 'task', TASKS.join(', '));
  if (!TASKS.includes(t as TaskName)) throw new SiftError('E_ARG', `flag --task must be one of ${TASKS.join(', ')}; got '${t}'`);
  return t as TaskName;
}

export function requireFile(p: unknown, name: string, what: string): string {
  const f = requireFlag(p as string | undefined, name, what);
  if (!fs.existsSync(f)) throw new SiftError('E_IO', `--${name} ${f}: no such file or folder`);
  return f;
}

/** Distinct labels of a column, numbers sorted numerically and strings alphabetically. */
export function labelsOf(rows: Row[], column: string): string[] {
  const seen = new Set<string>();
  for (const r of rows) {
    const v = r[column];
    if (v !== undefined && v !== null && v !== '') seen.add(String(v));
  }
  const all = [...seen];
  const numeric = all.every((s) => /^-?\d+$/.test(s));
  return numeric ? all.sort((a, b) => Number(a) - Number(b)) : all.sort();
}

/** The label column a row set uses: the flag, else 'label' (or 'labels'), else null. */
export function labelColumnOf(rows: Row[], flag: unknown): string | null {
  if (typeof flag === 'string') return flag;
  const first = rows[0] ?? {};
  for (const c of ['label', 'labels']) if (c in first && !Array.isArray(first[c])) return c;
  return null;
}

export interface LoadedModel {
  model: PreTrainedModel;
  tokenizer: HfTokenizer | null;
  config: HFConfig;
  dir: string;
  /** Class names in id order (classify). */
  labels?: string[];
  /** Parameters the checkpoint did not hold (a fresh task head): their initial values are random. */
  initialized: string[];
}

/** The head an increment or adapter was trained with (its `sift_head` metadata). */
export interface HeadInfo {
  task?: TaskName;
  architecture?: string;
  num_labels?: number;
  id2label?: Record<string, string>;
  label2id?: Record<string, number>;
  problem_type?: string;
  /** The seed of the run (which initialised a fresh head). */
  seed?: number;
}

function labelsFromId2Label(m: unknown): string[] | undefined {
  if (!m || typeof m !== 'object') return undefined;
  const e = Object.entries(m as Record<string, string>).map(([k, v]) => [Number(k), String(v)] as [number, string]);
  if (e.length < 1 || e.some(([k]) => !Number.isInteger(k))) return undefined;
  return e.sort((a, b) => a[0] - b[0]).map(([, v]) => v);
}

/**
 * Loads a model folder (or an `.onnx` graph) for a task. For classify, the labels are the head's
 * (an increment's), else the config's label2id, else `labels` (from the data); a causal-LM
 * checkpoint gets a freshly initialised classification head (listed in `initialized`).
 */
export function loadModelForTask(
  dir: string,
  opts: { task: TaskName; device: string; labels?: string[]; seed?: number; head?: HeadInfo },
): LoadedModel {
  if (dir.toLowerCase().endsWith('.onnx')) return loadOnnxForTask(dir, opts);
  const { config, stateDict } = loadModelFolder(dir);
  const cfg: HFConfig = { ...config };
  let labels: string[] | undefined;
  const head = opts.head;
  if (opts.task === 'classify') {
    const l2i = cfg.label2id as Record<string, number> | undefined;
    const fromConfig =
      l2i && typeof l2i === 'object' && Object.keys(l2i).length > 1 && !Object.keys(l2i).every((k) => /^LABEL_\d+$/.test(k))
        ? Object.entries(l2i)
            .sort((a, b) => a[1] - b[1])
            .map(([k]) => k)
        : undefined;
    labels = labelsFromId2Label(head?.id2label) ?? fromConfig ?? opts.labels;
    if (!labels || labels.length < 2) {
      const n = typeof head?.num_labels === 'number' ? head.num_labels : typeof cfg.num_labels === 'number' ? cfg.num_labels : 2;
      labels = fromConfig ?? Array.from({ length: n }, (_, i) => String(i));
    }
    cfg.num_labels = labels.length;
    cfg.id2label = Object.fromEntries(labels.map((l, i) => [String(i), l]));
    cfg.label2id = Object.fromEntries(labels.map((l, i) => [l, i]));
    if (head?.problem_type) cfg.problem_type = head.problem_type;
  } else if (opts.task === 'regress') {
    cfg.num_labels = typeof head?.num_labels === 'number' ? head.num_labels : 1;
    cfg.problem_type = 'regression';
  }
  const task = modelTaskFor(opts.task);
  // A checkpoint of another head (an LM's lm_head, a classifier's score) is loaded through its body.
  const arch = Array.isArray(cfg.architectures) ? cfg.architectures[0] : undefined;
  const sameHead = task === 'causal-lm' ? /(CausalLM|LMHeadModel)$/.test(arch ?? '') : /SequenceClassification$/.test(arch ?? '');
  if (!sameHead) delete cfg.architectures;
  const model = createModel(cfg, { task, device: opts.device, seed: opts.seed ?? 0 });
  let initialized: string[];
  try {
    initialized = loadStateDictInto(model, stateDict, { strict: false, disposeSource: true }).missing;
    // Only a task head the checkpoint was not trained with (and BERT-style poolers) may start fresh:
    // a missing body weight, or a missing head of the checkpoint's own kind (an untied lm_head), is a broken folder.
    const prefix = `${model.baseModelPrefix}.`;
    // A causal LM's head is new only when the checkpoint is a classifier's (a config without architectures is taken for an LM).
    const headMayBeNew = task === 'causal-lm' ? /SequenceClassification$/.test(arch ?? '') : !sameHead;
    const broken = initialized.filter((n) => (n.startsWith(prefix) ? !/(^|\.)pooler\./.test(n) : !headMayBeNew));
    if (broken.length) {
      throw new SiftError(
        'E_FORMAT',
        `${dir}: the checkpoint has no weights for ${broken.slice(0, 5).join(', ')}${broken.length > 5 ? ` and ${broken.length - 5} more` : ''} ` +
          `(a truncated or mismatched checkpoint; only a new task head may start untrained)`,
      );
    }
  } catch (e) {
    model.dispose();
    throw e;
  }
  let tokenizer: HfTokenizer | null = null;
  if (
    fs.existsSync(path.join(dir, 'tokenizer.json')) ||
    fs.existsSync(path.join(dir, 'vocab.json')) ||
    fs.existsSync(path.join(dir, 'vocab.txt'))
  ) {
    tokenizer = loadTokenizer(dir);
  }
  return { model, tokenizer, config: model.config, dir, labels, initialized };
}

/**
 * An ONNX graph as the model of a task: its head is part of the graph, so the task must be the
 * graph's (a causal LM for causal-lm and instruct, a sequence classifier for classify and regress).
 * The tokenizer is read from the graph's folder.
 */
function loadOnnxForTask(file: string, opts: { task: TaskName; device: string; labels?: string[] }): LoadedModel {
  if (!fs.statSync(file).isFile()) throw new SiftError('E_IO', `${file}: not a file`);
  const want = modelTaskFor(opts.task);
  const model = loadOnnxModel(file, { device: opts.device });
  if (model.task !== want) {
    const has = model.task;
    model.dispose();
    throw new SiftError(
      'E_UNSUPPORTED',
      `${file}: the graph is a ${has} model, task ${opts.task} needs a ${want} graph (an ONNX graph's head cannot be replaced; ` +
        `export the model folder with the head you need, or train from the folder)`,
    );
  }
  const dir = path.dirname(path.resolve(file));
  let tokenizer: HfTokenizer | null = null;
  if (
    fs.existsSync(path.join(dir, 'tokenizer.json')) ||
    fs.existsSync(path.join(dir, 'vocab.json')) ||
    fs.existsSync(path.join(dir, 'vocab.txt'))
  ) {
    tokenizer = loadTokenizer(dir);
  }
  const cfg = model.config as HFConfig;
  const labels = opts.task === 'classify' ? (labelsFromId2Label(cfg.id2label) ?? opts.labels) : undefined;
  return { model: model as unknown as PreTrainedModel, tokenizer, config: cfg, dir: file, labels, initialized: [] };
}

/** The path SIFT's weight gradients took (done event's sparseGradient), in words. */
export function fmtSparseGradient(p: SparseGradientPaths): string {
  if (p.path === 'dense') return `dense, then gathered at the selected entries (${p.targets} targets, ${p.denseSteps} steps)`;
  return (
    `SDDMM (selected entries only) on ${p.sddmmTargets} of ${p.targets} targets, ${p.sddmmSteps} of ${p.sddmmSteps + p.denseSteps} steps` +
    (p.denseSteps ? ` (dense on the ${p.denseSteps} step(s) that measured the gradient proportion)` : '')
  );
}

export function fmtInt(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

export function fmtBytes(n: number): string {
  if (!Number.isFinite(n)) return '-';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${u[i]}`;
}

export function fmtDuration(sec: number): string {
  if (!Number.isFinite(sec) || sec < 0) return '?';
  if (sec < 60) return `${sec.toFixed(0)}s`;
  const m = Math.floor(sec / 60);
  const s = Math.round(sec % 60);
  if (m < 60) return `${m}m${String(s).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/** A plain-text table with right-aligned numeric columns. */
export function table(head: string[], rows: (string | number)[][]): string {
  const cells = [head, ...rows.map((r) => r.map((c) => String(c)))];
  const widths = head.map((_, j) => Math.max(...cells.map((r) => (r[j] ?? '').length)));
  const numeric = head.map((_, j) => rows.every((r) => typeof r[j] === 'number' || /^[-\d.,%]+( \w+)?$/.test(String(r[j]))));
  const line = (r: string[]) => r.map((c, j) => (numeric[j] ? c.padStart(widths[j]) : c.padEnd(widths[j]))).join('  ');
  return [line(cells[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}

export function writeJson(obj: unknown): void {
  process.stdout.write(JSON.stringify(obj, null, 2) + '\n');
}
