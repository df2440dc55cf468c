/**
 * `sift-ft export-peft --model DIR --delta FILE --out DIR`: writes a Hugging Face PEFT adapter
 * folder. A SIFT (or random-sparse) increment becomes a SUPERTUNING adapter; a LoRA adapter written
 * by sift-ft (its folder, adapter_model.safetensors or a finetune output folder) is re-written in
 * LoraConfig's exact format. The base model folder is the one the run was trained from: its weights
 * are checked against the increment's fingerprints, and its modules decide what PEFT can hold.
 */
import * as fs from 'fs';
import * as path from 'path';
import { SiftError } from '../engine/errors';
import { loadIncrement, INCREMENT_FORMAT } from '../sift/increment';
import { SafetensorsReader } from '../io/safetensors';
import {
  PEFT_CONFIG_FILE, PeftAdapterFiles, loraPeftConfig, peftTargetModules, peftTaskType, readPeftAdapter,
  supertuningFromIncrement, writePeftAdapter,
} from '../io/peft';
import type { TaskName } from '../train/types';
import type { FlagSpec, Parsed } from './args';
import { fmtInt, loadModelForTask, requireFile, requireFlag, writeJson } from './common';

export const exportPeftFlags: Record<string, FlagSpec> = {
  model: { type: 'string', help: 'base model folder the increment or adapter was trained from' },
  delta: { type: 'string', help: 'SIFT increment (delta.safetensors), or a LoRA adapter (folder or adapter_model.safetensors)' },
  out: { type: 'string', help: 'output folder for adapter_config.json and adapter_model.safetensors' },
  'base-model': { type: 'string', help: 'base_model_name_or_path written in adapter_config.json (default: the --model folder\'s absolute path)' },
  json: { type: 'boolean', help: 'print what was written as JSON' },
};

export const exportPeftHelp = 'Writes an increment as a Hugging Face PEFT adapter (SUPERTUNING), or a LoRA adapter in PEFT\'s exact format.';

const TASKS: TaskName[] = ['classify', 'regress', 'causal-lm', 'instruct'];

/** The task of a run from its increment metadata or adapter config (sift-ft's own keys), else causal-lm. */
function taskOf(v: unknown, peftTask: unknown): TaskName {
  if (typeof v === 'string' && (TASKS as string[]).includes(v)) return v as TaskName;
  // Chat runs train a causal LM (their loss masking does not change the model).
  if (v === 'chat') return 'causal-lm';
  return peftTask === 'SEQ_CLS' ? 'classify' : 'causal-lm';
}

function labelsOf(raw: unknown): string[] | undefined {
  if (Array.isArray(raw)) return raw.map(String);
  if (typeof raw !== 'string') return undefined;
  try {
    const v = JSON.parse(raw);
    return Array.isArray(v) ? v.map(String) : undefined;
  } catch {
    return undefined;
  }
}

type Source = { kind: 'increment'; file: string } | { kind: 'lora'; dir: string };

/** What --delta points at: an increment file, or a LoRA adapter (a folder, its weights, or a run folder holding either). */
function sourceOf(p: string): Source {
  if (fs.statSync(p).isDirectory()) {
    if (fs.existsSync(path.join(p, PEFT_CONFIG_FILE))) return { kind: 'lora', dir: p };
    if (fs.existsSync(path.join(p, 'delta.safetensors'))) return { kind: 'increment', file: path.join(p, 'delta.safetensors') };
    throw new SiftError('E_IO', `--delta ${p}: the folder has neither ${PEFT_CONFIG_FILE} nor delta.safetensors`);
  }
  if (path.basename(p) === PEFT_CONFIG_FILE) return { kind: 'lora', dir: path.dirname(p) };
  const r = SafetensorsReader.open(p);
  const format = r.metadata.format;
  r.close();
  if (format === INCREMENT_FORMAT) return { kind: 'increment', file: p };
  if (fs.existsSync(path.join(path.dirname(p), PEFT_CONFIG_FILE))) return { kind: 'lora', dir: path.dirname(p) };
  throw new SiftError('E_FORMAT', `--delta ${p}: neither a sift-ft increment nor a LoRA adapter (no ${PEFT_CONFIG_FILE} beside it)`);
}

function headModules(modules: [string, { kind: string }][]): string[] {
  return modules.map(([n]) => n).filter((n) => n === 'score' || n === 'classifier');
}

/** Exports an increment or a LoRA adapter as a PEFT adapter folder. */
export function exportPeft(opts: { modelDir: string; delta: string; out: string; baseModel?: string }): PeftAdapterFiles & { source: 'increment' | 'lora'; padding?: number } {
  const src = sourceOf(opts.delta);
  const baseModel = opts.baseModel ?? path.resolve(opts.modelDir);
  if (src.kind === 'increment') {
    const inc = loadIncrement(src.file);
    try {
      const task = taskOf(inc.metadata.task, undefined);
      const loaded = loadModelForTask(opts.modelDir, { task, device: 'cpu', labels: labelsOf(inc.metadata.labels) });
      try {
        const { config, entries, owned, padding } = supertuningFromIncrement(loaded.model, inc, {
          baseModel, taskType: peftTaskType(task), headModules: headModules(loaded.model.namedModules()),
        });
        try {
          return { ...writePeftAdapter(opts.out, config, entries), source: 'increment', padding };
        } finally {
          owned.forEach((t) => t.dispose());
        }
      } finally {
        loaded.model.dispose();
      }
    } finally {
      inc.dispose();
    }
  }
  const a = readPeftAdapter(src.dir);
  try {
    if (a.config.peft_type !== 'LORA') throw new SiftError('E_UNSUPPORTED', `${src.dir}: peft_type ${JSON.stringify(a.config.peft_type)}; export-peft re-writes LORA adapters and exports sift-ft increments`);
    const task = taskOf(a.config.sift_ft_task, a.config.task_type);
    const loaded = loadModelForTask(opts.modelDir, { task, device: 'cpu', labels: labelsOf(a.config.sift_ft_labels) });
    try {
      const modules = loaded.model.namedModules();
      const kinds = new Map(modules);
      const params = new Map(loaded.model.namedParameters());
      const layers = [...a.tensors.keys()].filter((k) => k.endsWith('.lora_A.weight')).map((k) => k.slice(0, -'.lora_A.weight'.length));
      if (!layers.length) throw new SiftError('E_FORMAT', `${src.dir}: the adapter has no lora_A weights`);
      const r = a.tensors.get(`${layers[0]}.lora_A.weight`)!.shape[0];
      for (const m of layers) {
        const kind = kinds.get(m)?.kind;
        if (kind !== 'Linear' && kind !== 'Conv1D') throw new SiftError('E_MISMATCH', `${src.dir}: adapted module '${m}' is not a Linear or Conv1D module of ${opts.modelDir}`);
        const w = params.get(`${m}.weight`)!;
        const [outF, inF] = kind === 'Conv1D' ? [w.shape[1], w.shape[0]] : [w.shape[0], w.shape[1]];
        const A = a.tensors.get(`${m}.lora_A.weight`)!;
        const B = a.tensors.get(`${m}.lora_B.weight`);
        if (!B || A.shape.join() !== `${r},${inF}` || B.shape.join() !== `${outF},${r}`) {
          throw new SiftError('E_MISMATCH', `${src.dir}: '${m}' has lora_A [${A.shape}] and lora_B [${B?.shape ?? 'missing'}], expected [${r},${inF}] and [${outF},${r}] (rank ${r})`);
        }
      }
      const adapterKeys = new Set(layers.flatMap((m) => [`${m}.lora_A.weight`, `${m}.lora_B.weight`]));
      const heads = headModules(modules);
      const toSave = new Set<string>((a.config.modules_to_save as string[] | null | undefined) ?? []);
      for (const k of a.tensors.keys()) {
        if (adapterKeys.has(k)) continue;
        if (!params.has(k)) throw new SiftError('E_MISMATCH', `${src.dir}: '${k}' is not a parameter of ${opts.modelDir}`);
        if (![...toSave].some((m) => k.startsWith(`${m}.`))) toSave.add(heads.find((h) => k.startsWith(`${h}.`)) ?? k.slice(0, k.lastIndexOf('.')));
      }
      const alpha = typeof a.config.lora_alpha === 'number' ? a.config.lora_alpha : r;
      const config = loraPeftConfig({
        r, lora_alpha: alpha, lora_dropout: typeof a.config.lora_dropout === 'number' ? a.config.lora_dropout : 0,
        target_modules: peftTargetModules(layers, modules.filter(([, m]) => m.kind === 'Linear' || m.kind === 'Conv1D')),
        fan_in_fan_out: layers.some((m) => kinds.get(m)?.kind === 'Conv1D'),
        modules_to_save: [...toSave],
      }, peftTaskType(task), baseModel);
      const entries = [...a.tensors].map(([k, t]) => [`base_model.model.${k}`, t] as [string, typeof t]);
      return { ...writePeftAdapter(opts.out, config, entries), source: 'lora' };
    } finally {
      loaded.model.dispose();
    }
  } finally {
    a.dispose();
  }
}

export function runExportPeft(f: Parsed): number {
  const modelDir = requireFile(f.model, 'model', 'the base model folder');
  const delta = requireFile(f.delta, 'delta', 'the increment or LoRA adapter');
  const out = requireFlag(f.out as string | undefined, 'out', 'the output folder');
  // The adapter is read in full before anything is written (atomically), so a LoRA folder can be re-written in place.
  if (fs.existsSync(out) && !fs.statSync(out).isDirectory()) throw new SiftError('E_ARG', `--out ${out}: a file exists there; give a folder for the adapter`);
  const r = exportPeft({ modelDir, delta, out, baseModel: f['base-model'] as string | undefined });
  const c = r.config;
  if (f.json) {
    writeJson({ out: path.resolve(r.dir), files: r.files, source: r.source, peft_type: c.peft_type, task_type: c.task_type, target_modules: c.target_modules, modules_to_save: c.modules_to_save, sparsity: c.sparsity, padding: r.padding, tensors: r.tensors });
  } else {
    const what = c.peft_type === 'SUPERTUNING' ? `sparsity ${c.sparsity}` : `rank ${c.r}, alpha ${c.lora_alpha}`;
    process.stdout.write(`export-peft: ${c.peft_type} adapter (${what}, task ${c.task_type ?? 'none'}) for ${(c.target_modules as string[]).join(', ')}`
      + `${c.modules_to_save ? `; modules_to_save ${(c.modules_to_save as string[]).join(', ')}` : ''}: ${path.resolve(r.dir)} (${r.files.join(', ')}, ${fmtInt(r.tensors)} tensors)\n`);
    // PEFT's one sparsity gives each layer int(numel * (1 - sparsity)) entries; the extra ones add -0.
    if (r.padding) process.stdout.write(`export-peft: ${fmtInt(r.padding)} zero-valued entries fill the layers up to PEFT's count for sparsity ${c.sparsity} (the weights are unchanged)\n`);
  }
  return 0;
}

