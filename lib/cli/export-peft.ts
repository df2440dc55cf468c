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
import { loadIncrement } from '../sift/increment';
import type { Tensor } from '../engine/tensor';
import {
  PeftAdapterFiles,
  loraPeftConfig,
  peftTargetModules,
  peftTaskType,
  readPeftAdapter,
  supertuningFromIncrement,
  writePeftAdapter,
} from '../io/peft';
import type { TaskName } from '../train/types';
import type { FlagSpec, Parsed } from './args';
import { LoadedModel, fmtInt, loadModelForTask, requireFile, requireFlag, writeJson } from './common';
import { DeltaInfo, inspectDelta, taskFor, taskOfFolder } from './delta';

export const exportPeftFlags: Record<string, FlagSpec> = {
  model: { type: 'string', help: 'base model folder the increment or adapter was trained from' },
  delta: { type: 'string', help: 'SIFT increment (delta.safetensors), or a LoRA adapter (folder or adapter_model.safetensors)' },
  out: { type: 'string', help: 'output folder for adapter_config.json and adapter_model.safetensors' },
  'base-model': {
    type: 'string',
    help: "base_model_name_or_path written in adapter_config.json (default: the --model folder's absolute path)",
  },
  json: { type: 'boolean', help: 'print what was written as JSON' },
};

export const exportPeftHelp = "Writes an increment as a Hugging Face PEFT adapter (SUPERTUNING), or a LoRA adapter in PEFT's exact format.";

function headModules(modules: [string, { kind: string }][]): string[] {
  return modules.map(([n]) => n).filter((n) => n === 'score' || n === 'classifier');
}

/** Full tensors the adapter carries (a trained head, modules_to_save) must have their parameter's shape. */
function checkShapes(what: string, tensors: Iterable<[string, Tensor]>, params: Map<string, Tensor>, modelDir: string): void {
  for (const [k, t] of tensors) {
    const p = params.get(k);
    if (!p) throw new SiftError('E_MISMATCH', `${what}: '${k}' is not a parameter of ${modelDir}`);
    if (p.shape.join() !== t.shape.join()) {
      throw new SiftError(
        'E_MISMATCH',
        `${what}: '${k}' has shape [${t.shape}], ${modelDir}'s has [${p.shape}]${/^(score|classifier)\./.test(k) ? ' (another number of labels?)' : ''}`,
      );
    }
  }
}

/** The base model with the head the delta was trained with (as --delta rebuilds it elsewhere), without the delta applied. */
function baseFor(modelDir: string, info: DeltaInfo, task: TaskName): LoadedModel {
  return loadModelForTask(modelDir, {
    task,
    device: 'cpu',
    head: info.head,
    seed: typeof info.head?.seed === 'number' ? info.head.seed : undefined,
  });
}

/** Exports an increment or a LoRA adapter as a PEFT adapter folder. */
export function exportPeft(opts: {
  modelDir: string;
  delta: string;
  out: string;
  baseModel?: string;
}): PeftAdapterFiles & { source: 'increment' | 'lora'; padding?: number } {
  const info = inspectDelta(opts.delta);
  const baseModel = opts.baseModel ?? path.resolve(opts.modelDir);
  const task = taskFor(undefined, info, taskOfFolder(opts.modelDir));
  if (info.kind === 'supertuning') {
    throw new SiftError(
      'E_UNSUPPORTED',
      `${info.file}: already a PEFT SUPERTUNING adapter; export-peft re-writes LORA adapters and exports sift-ft increments`,
    );
  }
  if (info.kind === 'increment') {
    const inc = loadIncrement(info.file);
    try {
      const loaded = baseFor(opts.modelDir, info, task);
      try {
        checkShapes(
          info.file,
          [...inc.dense].map(([k, d]) => [k, d.value] as [string, Tensor]),
          new Map(loaded.model.namedParameters()),
          opts.modelDir,
        );
        const { config, entries, owned, padding } = supertuningFromIncrement(loaded.model, inc, {
          baseModel,
          taskType: peftTaskType(task),
          headModules: headModules(loaded.model.namedModules()),
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
  const dir = path.dirname(info.file);
  const a = readPeftAdapter(info.file);
  try {
    const loaded = baseFor(opts.modelDir, info, task);
    try {
      const modules = loaded.model.namedModules();
      const kinds = new Map(modules);
      const params = new Map(loaded.model.namedParameters());
      const layers = [...a.tensors.keys()].filter((k) => k.endsWith('.lora_A.weight')).map((k) => k.slice(0, -'.lora_A.weight'.length));
      if (!layers.length) throw new SiftError('E_FORMAT', `${dir}: the adapter has no lora_A weights`);
      const r = a.tensors.get(`${layers[0]}.lora_A.weight`)!.shape[0];
      for (const m of layers) {
        const kind = kinds.get(m)?.kind;
        if (kind !== 'Linear' && kind !== 'Conv1D')
          throw new SiftError('E_MISMATCH', `${dir}: adapted module '${m}' is not a Linear or Conv1D module of ${opts.modelDir}`);
        const w = params.get(`${m}.weight`)!;
        const [outF, inF] = kind === 'Conv1D' ? [w.shape[1], w.shape[0]] : [w.shape[0], w.shape[1]];
        const A = a.tensors.get(`${m}.lora_A.weight`)!;
        const B = a.tensors.get(`${m}.lora_B.weight`);
        if (!B || A.shape.join() !== `${r},${inF}` || B.shape.join() !== `${outF},${r}`) {
          throw new SiftError(
            'E_MISMATCH',
            `${dir}: '${m}' has lora_A [${A.shape}] and lora_B [${B?.shape ?? 'missing'}], expected [${r},${inF}] and [${outF},${r}] (rank ${r})`,
          );
        }
      }
      const adapterKeys = new Set(layers.flatMap((m) => [`${m}.lora_A.weight`, `${m}.lora_B.weight`]));
      const heads = headModules(modules);
      const toSave = new Set<string>((a.config.modules_to_save as string[] | null | undefined) ?? []);
      checkShapes(
        dir,
        [...a.tensors].filter(([k]) => !adapterKeys.has(k)),
        params,
        opts.modelDir,
      );
      for (const k of a.tensors.keys()) {
        if (adapterKeys.has(k)) continue;
        if (![...toSave].some((m) => k.startsWith(`${m}.`)))
          toSave.add(heads.find((h) => k.startsWith(`${h}.`)) ?? k.slice(0, k.lastIndexOf('.')));
      }
      const alpha = typeof a.config.lora_alpha === 'number' ? a.config.lora_alpha : r;
      const config = loraPeftConfig(
        {
          r,
          lora_alpha: alpha,
          lora_dropout: typeof a.config.lora_dropout === 'number' ? a.config.lora_dropout : 0,
          target_modules: peftTargetModules(
            layers,
            modules.filter(([, m]) => m.kind === 'Linear' || m.kind === 'Conv1D'),
          ),
          fan_in_fan_out: layers.some((m) => kinds.get(m)?.kind === 'Conv1D'),
          modules_to_save: [...toSave],
        },
        peftTaskType(task),
        baseModel,
      );
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
  if (fs.existsSync(out) && !fs.statSync(out).isDirectory())
    throw new SiftError('E_ARG', `--out ${out}: a file exists there; give a folder for the adapter`);
  const r = exportPeft({ modelDir, delta, out, baseModel: f['base-model'] as string | undefined });
  const c = r.config;
  if (f.json) {
    writeJson({
      out: path.resolve(r.dir),
      files: r.files,
      source: r.source,
      peft_type: c.peft_type,
      task_type: c.task_type,
      target_modules: c.target_modules,
      modules_to_save: c.modules_to_save,
      sparsity: c.sparsity,
      padding: r.padding,
      tensors: r.tensors,
    });
  } else {
    const what = c.peft_type === 'SUPERTUNING' ? `sparsity ${c.sparsity}` : `rank ${c.r}, alpha ${c.lora_alpha}`;
    process.stdout.write(
      `export-peft: ${c.peft_type} adapter (${what}, task ${c.task_type ?? 'none'}) for ${(c.target_modules as string[]).join(', ')}` +
        `${c.modules_to_save ? `; modules_to_save ${(c.modules_to_save as string[]).join(', ')}` : ''}: ${path.resolve(r.dir)} (${r.files.join(', ')}, ${fmtInt(r.tensors)} tensors)\n`,
    );
    // PEFT's one sparsity gives each layer int(numel * (1 - sparsity)) entries; the extra ones add -0.
    if (r.padding)
      process.stdout.write(
        `export-peft: ${fmtInt(r.padding)} zero-valued entries fill the layers up to PEFT's count for sparsity ${c.sparsity} (the weights are unchanged)\n`,
      );
  }
  return 0;
}
