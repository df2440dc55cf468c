/**
 * What `--delta` names, recognised by content: a SIFT increment (a safetensors file whose metadata
 * says `format: sift-increment`, or a run folder holding delta.safetensors) or a PEFT adapter, LoRA
 * or SUPERTUNING (a folder with adapter_config.json and adapter_model.safetensors, or that
 * safetensors file itself). sift-ft's carry the head they were trained with (`sift_head` in the
 * increment's metadata, `sift_ft_head` in adapter_config.json), so the base model is rebuilt with
 * that head before the result is applied: a classifier head trained from a language model's body
 * starts from the exact values it was initialised with (the increment stores them).
 */
import * as fs from 'fs';
import * as path from 'path';
import { SiftError } from '../engine/errors';
import { Tensor } from '../engine/tensor';
import { native } from '../engine/native';
import { noGrad } from '../autograd/tape';
import { SafetensorsReader } from '../io/safetensors';
import { applyPeftAdapter, readPeftAdapter } from '../io/peft';
import { applyIncrement, loadIncrement, INCREMENT_FORMAT } from '../sift/increment';
import type { TaskName } from '../train/types';
import { HeadInfo, LoadedModel, TASKS, loadModelForTask } from './common';

export interface DeltaInfo {
  kind: 'increment' | 'lora' | 'supertuning';
  /** The safetensors file. */
  file: string;
  /** The task it was trained for, when recorded. */
  task?: TaskName;
  head?: HeadInfo;
  /** PEFT adapters (LoRA, SUPERTUNING): adapter_config.json. */
  adapterConfig?: Record<string, unknown>;
}

function readJson(file: string): Record<string, unknown> {
  try {
    const v = JSON.parse(fs.readFileSync(file, 'utf8'));
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('not a JSON object');
    return v as Record<string, unknown>;
  } catch (e) {
    throw new SiftError('E_FORMAT', `${file}: ${(e as Error).message}`);
  }
}

function headOf(raw: unknown, task: unknown): HeadInfo | undefined {
  let h: unknown = raw;
  if (typeof raw === 'string') {
    try {
      h = JSON.parse(raw);
    } catch {
      h = undefined;
    }
  }
  const head = h && typeof h === 'object' ? { ...(h as HeadInfo) } : undefined;
  const t = head?.task ?? task;
  if (typeof t === 'string' && TASKS.includes(t as TaskName)) return { ...(head ?? {}), task: t as TaskName };
  return head;
}

function loraInfo(dir: string, file: string): DeltaInfo {
  const cfgFile = path.join(dir, 'adapter_config.json');
  if (!fs.existsSync(cfgFile)) throw new SiftError('E_FORMAT', `${file}: a PEFT adapter needs adapter_config.json beside it`);
  const cfg = readJson(cfgFile);
  if (cfg.peft_type !== 'LORA' && cfg.peft_type !== 'SUPERTUNING') {
    throw new SiftError(
      'E_UNSUPPORTED',
      `${cfgFile}: peft_type ${JSON.stringify(cfg.peft_type)} is not supported here (LORA and SUPERTUNING adapters are)`,
    );
  }
  if (!fs.existsSync(file)) throw new SiftError('E_IO', `${dir}: no adapter_model.safetensors`);
  // PEFT's own task_type names the head when sift-ft did not write the adapter.
  const peftTask = ({ SEQ_CLS: 'classify', CAUSAL_LM: 'causal-lm' } as Record<string, string>)[String(cfg.task_type)];
  const head = headOf(cfg.sift_ft_head, cfg.sift_ft_task ?? peftTask);
  return { kind: cfg.peft_type === 'SUPERTUNING' ? 'supertuning' : 'lora', file, task: head?.task, head, adapterConfig: cfg };
}

/** Recognises an increment or a PEFT adapter (LoRA, SUPERTUNING) by its content. */
export function inspectDelta(p: string): DeltaInfo {
  if (!fs.existsSync(p)) throw new SiftError('E_IO', `--delta ${p}: no such file or folder`);
  if (fs.statSync(p).isDirectory()) {
    if (fs.existsSync(path.join(p, 'adapter_config.json'))) return loraInfo(p, path.join(p, 'adapter_model.safetensors'));
    if (fs.existsSync(path.join(p, 'delta.safetensors'))) return inspectDelta(path.join(p, 'delta.safetensors'));
    if (fs.existsSync(path.join(p, 'config.json'))) {
      throw new SiftError('E_FORMAT', `--delta ${p}: this folder is a full model (a full fine-tuning run writes one): pass it as --model`);
    }
    throw new SiftError(
      'E_FORMAT',
      `--delta ${p}: the folder holds neither an increment (delta.safetensors) nor a PEFT adapter (adapter_config.json)`,
    );
  }
  if (path.basename(p) === 'adapter_config.json') return loraInfo(path.dirname(p), path.join(path.dirname(p), 'adapter_model.safetensors'));
  let meta: Record<string, string>;
  let keys: string[];
  const r = SafetensorsReader.open(p);
  try {
    meta = r.metadata;
    keys = r.names();
  } finally {
    r.close();
  }
  if (meta.format === INCREMENT_FORMAT) {
    const head = headOf(meta.sift_head, meta.task);
    if (head && head.task === 'classify' && !head.id2label && meta.labels) {
      try {
        const labels = JSON.parse(meta.labels) as string[];
        head.id2label = Object.fromEntries(labels.map((l, i) => [String(i), l]));
      } catch {
        // labels are optional
      }
    }
    return { kind: 'increment', file: p, task: head?.task, head };
  }
  if (keys.some((k) => /\.lora_[AB]\.|\.supertuning_(values|indices)$/.test(k))) return loraInfo(path.dirname(p), p);
  throw new SiftError(
    'E_FORMAT',
    `--delta ${p}: neither a sift-ft increment (metadata format '${INCREMENT_FORMAT}') nor a PEFT adapter (lora_A/lora_B or supertuning tensors)`,
  );
}

/** The task of a model folder's own head, for deltas that do not record theirs. */
export function taskOfFolder(modelDir: string): TaskName {
  let cfg: { architectures?: string[] } = {};
  try {
    cfg = JSON.parse(fs.readFileSync(path.join(modelDir, 'config.json'), 'utf8'));
  } catch {
    // loadModelFolder reports a missing or broken config.json
  }
  return /SequenceClassification$/.test(cfg.architectures?.[0] ?? '') ? 'classify' : 'causal-lm';
}

/** The task to run: the flag's, else the one the delta was trained for; both must agree. */
export function taskFor(flag: TaskName | undefined, info: DeltaInfo | null, fallback?: TaskName): TaskName {
  const recorded = info?.task;
  if (flag && recorded && flag !== recorded) {
    throw new SiftError('E_MISMATCH', `--task ${flag}, but ${info!.file} was trained for task ${recorded}`);
  }
  const t = flag ?? recorded ?? fallback;
  if (!t)
    throw new SiftError(
      'E_ARG',
      `missing --task (${TASKS.join(', ')}); ${info ? `${info.file} does not record its task` : 'no --delta to take it from'}`,
    );
  return t;
}

/**
 * Applies an increment or adapter to a loaded model in place. Parameters the base checkpoint did
 * not hold (`loaded.initialized`, a fresh head) take the values the increment was trained from
 * first; PEFT adapters (LoRA, SUPERTUNING) are merged into the weights as PEFT merges them (their
 * modules_to_save copied in).
 */
export function applyDelta(loaded: LoadedModel, info: DeltaInfo): void {
  const model = loaded.model;
  const N = native();
  if (info.kind === 'increment') {
    const inc = loadIncrement(info.file);
    try {
      const params = new Map(model.namedParameters());
      const fresh = new Set(loaded.initialized);
      noGrad(() => {
        for (const [name, d] of inc.dense) {
          if (!fresh.has(name)) continue;
          const p = params.get(name);
          if (!p || !d.base) continue;
          if (p.shape.join() !== d.base.shape.join()) {
            throw new SiftError(
              'E_MISMATCH',
              `'${name}' has shape [${p.shape}], the increment's head has [${d.base.shape}] (another number of labels?)`,
            );
          }
          const b = d.base.dtype === p.dtype ? d.base : new Tensor(N.cast(d.base.handle, p.dtype));
          const bd = b.device === p.device ? b : new Tensor(N.to(b.handle, p.device));
          N.copy_(p.handle, bd.handle);
          if (bd !== b) bd.dispose();
          if (b !== d.base) b.dispose();
        }
      });
      applyIncrement(model, inc);
    } finally {
      inc.dispose();
    }
    return;
  }
  // A PEFT adapter: applied as PEFT merges it (io/peft.ts: LoRA scaling, rsLoRA, Conv1D,
  // SUPERTUNING's counts, modules_to_save; DoRA and per-layer patterns refused), after checking that a head the
  // base checkpoint lacks comes with the adapter.
  const adapter = readPeftAdapter(info.file);
  try {
    const fresh = new Set(loaded.initialized);
    for (const k of adapter.tensors.keys()) fresh.delete(k);
    const cfg = adapter.config;
    const saved = Array.isArray(cfg.modules_to_save) ? (cfg.modules_to_save as string[]) : [];
    const unset = [...fresh].filter((n) => saved.some((m) => n === m || n.startsWith(`${m}.`)) || /^(score|classifier)\./.test(n));
    if (unset.length)
      throw new SiftError('E_FORMAT', `${info.file}: the adapter has no weights for ${unset.join(', ')} (the task head; modules_to_save)`);
    applyPeftAdapter(model, adapter);
  } finally {
    adapter.dispose();
  }
}

/** Loads the base model with the head the delta was trained with, then applies the delta. */
export function loadWithDelta(
  modelDir: string,
  delta: string | undefined,
  opts: { task: TaskName; device: string; labels?: string[]; seed?: number; info?: DeltaInfo | null },
): LoadedModel & { delta: DeltaInfo | null } {
  const info = opts.info ?? (delta ? inspectDelta(delta) : null);
  // Fresh modules (a head, a pooler the checkpoint lacks) are initialised as in the run: with its seed.
  const seed = typeof info?.head?.seed === 'number' ? info.head.seed : opts.seed;
  const loaded = loadModelForTask(modelDir, {
    task: opts.task,
    device: opts.device,
    labels: info?.head?.id2label ? undefined : opts.labels,
    seed,
    head: info?.head,
  });
  try {
    if (info) applyDelta(loaded, info);
  } catch (e) {
    loaded.model.dispose();
    throw e;
  }
  return { ...loaded, delta: info };
}
