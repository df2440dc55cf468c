/**
 * `sift-ft merge`: applies an increment or a LoRA adapter to the base model it was trained from and
 * writes a full Hugging Face folder. The architecture is the one the delta was trained with (a
 * classification run from a language model writes a *ForSequenceClassification folder, its
 * config.json carrying num_labels, id2label/label2id and problem_type).
 */
import * as fs from 'fs';
import * as path from 'path';
import { saveModelFolder, TOKENIZER_FILE_NAMES } from '../io/hf';
import { stateDict } from '../models';
import type { FlagSpec, Parsed } from './args';
import { requireFile, requireFlag, writeJson } from './common';
import { inspectDelta, loadWithDelta, taskOfFolder } from './delta';

export const mergeFlags: Record<string, FlagSpec> = {
  model: { type: 'string', help: 'base model folder' },
  delta: { type: 'string', help: 'the increment (delta.safetensors or its run folder) or a LoRA adapter folder' },
  out: { type: 'string', help: 'output folder for the merged model' },
  json: { type: 'boolean', help: 'print what was written as JSON' },
};

export const mergeHelp =
  'Merges an increment or LoRA adapter into its base model and writes a full model folder (config, safetensors, tokenizer).';

export function runMerge(f: Parsed): number {
  const modelDir = requireFile(f.model, 'model', 'the base model folder');
  const delta = requireFile(f.delta, 'delta', 'the increment file or adapter folder');
  const out = requireFlag(f.out as string | undefined, 'out', 'the output folder');
  const info = inspectDelta(delta);
  // On the CPU: merging is a scatter-add, and the weights go to disk anyway.
  const loaded = loadWithDelta(modelDir, delta, { task: info.task ?? taskOfFolder(modelDir), device: 'cpu', info });
  try {
    const tokFiles = TOKENIZER_FILE_NAMES.map((n) => path.join(modelDir, n)).filter((p) => fs.existsSync(p));
    const saved = saveModelFolder(out, { config: loaded.model.config, stateDict: stateDict(loaded.model), tokenizerFiles: tokFiles });
    if (f.json) writeJson({ out: saved.dir, architecture: loaded.model.architecture, files: saved.files, bytes: saved.totalSize });
    else
      process.stdout.write(
        `merged ${path.basename(delta)} into ${modelDir} as ${loaded.model.architecture}: ${saved.dir} (${saved.files.join(', ')})\n`,
      );
    return 0;
  } finally {
    loaded.model.dispose();
  }
}
