/** `sift-ft generate`: streams a causal LM's continuation of a prompt to stdout, token by token. */
import { SiftError } from '../engine/errors';
import { generateStream } from '../models';
import type { FlagSpec, Parsed } from './args';
import { quantizeFlag, quantizeModel, deviceFlag, requireFile, requireFlag, resolveDevice, writeJson } from './common';
import { inspectDelta, loadWithDelta } from './delta';

export const generateFlags: Record<string, FlagSpec> = {
  model: { type: 'string', help: 'model folder (a causal LM with a tokenizer)' },
  delta: { type: 'string', help: 'an increment or LoRA adapter of a causal-lm or instruct run, trained from --model' },
  prompt: { type: 'string', help: 'the text to continue' },
  'max-new-tokens': { type: 'number', help: 'tokens to add at most', default: 50, integer: true, min: 1 },
  temperature: { type: 'number', help: '0 decodes greedily; > 0 samples', default: 0, min: 0 },
  'top-k': { type: 'number', help: 'sample among the k most likely tokens (0: off)', default: 0, integer: true, min: 0 },
  'top-p': { type: 'number', help: 'nucleus sampling threshold (1: off)', default: 1 },
  seed: { type: 'number', help: 'sampling seed', default: 0 },
  device: deviceFlag,
  quantize: quantizeFlag,
  json: { type: 'boolean', help: 'print {prompt, completion, tokens} as JSON at the end instead of streaming' },
};

export const generateHelp = 'Continues a prompt with a causal LM (optionally with an increment), streaming the tokens.';

export async function runGenerate(f: Parsed): Promise<number> {
  const modelDir = requireFile(f.model, 'model', 'the model folder');
  const prompt = requireFlag(f.prompt as string | undefined, 'prompt', 'the text to continue');
  const delta = f.delta === undefined ? undefined : requireFile(f.delta, 'delta', 'an increment file or adapter folder');
  const info = delta ? inspectDelta(delta) : null;
  // A classifier's increment changes the body for its head: generating with the LM head on that
  // body would be text from a model nobody trained. Such deltas are evaluated, not generated from.
  if (info?.task === 'classify' || info?.task === 'regress') {
    throw new SiftError(
      'E_UNSUPPORTED',
      `${info.file} was trained for task ${info.task} (a ${info.head?.architecture ?? 'classification'} head); generate needs a causal-lm or instruct increment. Use 'sift-ft eval --delta' to score it`,
    );
  }
  const device = resolveDevice(f.device);
  const loaded = loadWithDelta(modelDir, delta, { task: 'causal-lm', device, info });
  try {
    const tok = loaded.tokenizer;
    if (!tok) throw new SiftError('E_IO', `${modelDir}: no tokenizer files (tokenizer.json); generate needs one to read the prompt`);
    // The increment applies to the unquantized base; quantization comes after it.
    quantizeModel(loaded.model, f.quantize, false);
    loaded.model.eval();
    const ids = tok.encode(prompt).inputIds;
    if (ids.length === 0) throw new SiftError('E_ARG', '--prompt encodes to no tokens');
    const out: number[] = [];
    let printed = '';
    const eos = tok.eosTokenIds;
    for await (const step of generateStream(loaded.model, [ids], {
      maxNewTokens: f['max-new-tokens'] as number,
      temperature: f.temperature as number,
      topK: f['top-k'] as number,
      topP: f['top-p'] as number,
      seed: f.seed as number,
      eosTokenId: eos.length ? eos : null,
    })) {
      out.push(step[0]);
      if (f.json) continue;
      // Decode the whole continuation each time: a multi-byte character may span tokens.
      const text = tok.decode(out, { skipSpecialTokens: true });
      if (text.startsWith(printed) && !text.endsWith('\uFFFD')) {
        process.stdout.write(text.slice(printed.length));
        printed = text;
      }
    }
    const completion = tok.decode(out, { skipSpecialTokens: true });
    if (f.json) writeJson({ prompt, completion, tokens: out });
    else process.stdout.write(completion.slice(printed.length) + '\n');
    return 0;
  } finally {
    loaded.model.dispose();
  }
}
