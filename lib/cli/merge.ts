/** `sift-ft merge`: applies an increment to a base model folder and writes a full Hugging Face folder. */
import * as fs from 'fs';
import * as path from 'path';
import { loadModelFolder, saveModelFolder } from '../io/hf';
import { createModel, loadStateDictInto, stateDict } from '../models';
import { applyIncrement } from '../sift/increment';
import { TOKENIZER_FILE_NAMES } from '../io/hf';
import type { FlagSpec, Parsed } from './args';
import { requireFile, requireFlag, writeJson } from './common';

export const mergeFlags: Record<string, FlagSpec> = {
  model: { type: 'string', help: 'base model folder' },
  delta: { type: 'string', help: 'the increment (delta.safetensors)' },
  out: { type: 'string', help: 'output folder for the merged model' },
  json: { type: 'boolean', help: 'print what was written as JSON' },
};

export const mergeHelp = 'Merges an increment into its base model and writes a full model folder (config, safetensors, tokenizer).';

export function runMerge(f: Parsed): number {
  const modelDir = requireFile(f.model, 'model', 'the base model folder');
  const delta = requireFile(f.delta, 'delta', 'the increment file');
  const out = requireFlag(f.out as string | undefined, 'out', 'the output folder');
  // On the CPU: merging is a scatter-add, and the weights go to disk anyway.
  const { config, stateDict: sd } = loadModelFolder(modelDir);
  const model = createModel(config, { device: 'cpu' });
  try {
    loadStateDictInto(model, sd, { disposeSource: true });
    applyIncrement(model, delta);
    const tokFiles = TOKENIZER_FILE_NAMES.map((n) => path.join(modelDir, n)).filter((p) => fs.existsSync(p));
    const saved = saveModelFolder(out, { config: model.config, stateDict: stateDict(model), tokenizerFiles: tokFiles });
    if (f.json) writeJson({ out: saved.dir, files: saved.files, bytes: saved.totalSize });
    else process.stdout.write(`merged ${path.basename(delta)} into ${modelDir}: ${saved.dir} (${saved.files.join(', ')})\n`);
    return 0;
  } finally {
    model.dispose();
  }
}
