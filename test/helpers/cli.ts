/** Runs the sift-ft CLI in this process (as `sift-ft <argv>`), capturing what it writes; the finetune -> eval steps the CLI tests share. */
import * as fs from 'fs';
import * as path from 'path';
import { main } from '../../lib/cli/main';
import { createModel, stateDict, HFConfig } from '../../lib/models';
import { saveModelFolder } from '../../lib/io/hf';

export interface CliRun {
  code: number;
  out: string;
  err: string;
}

export async function runCli(...argv: string[]): Promise<CliRun> {
  let out = '';
  let err = '';
  const o = jest.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => {
    out += String(c);
    return true;
  });
  const e = jest.spyOn(process.stderr, 'write').mockImplementation((c: string | Uint8Array) => {
    err += String(c);
    return true;
  });
  try {
    return { code: await main(argv), out, err };
  } finally {
    o.mockRestore();
    e.mockRestore();
  }
}

/** Flags of a command: `{ 'max-length': 16, merge: true }` is `--max-length 16 --merge`; false and undefined are left out. */
export type Flags = Record<string, string | number | boolean | undefined>;

export function flagArgs(flags: Flags): string[] {
  const argv: string[] = [];
  for (const [name, v] of Object.entries(flags)) {
    if (v === undefined || v === false) continue;
    argv.push(`--${name}`);
    if (v !== true) argv.push(String(v));
  }
  return argv;
}

/** `sift-ft <command> <flags> --json`, which must exit 0 (its stderr in the failure message); stdout parsed. */
export async function cliJson<T = Record<string, unknown>>(command: string, flags: Flags): Promise<{ run: CliRun; json: T }> {
  const run = await runCli(command, ...flagArgs({ ...flags, json: true }));
  expect([command, run.code, run.code === 0 ? '' : run.err]).toEqual([command, 0, '']);
  return { run, json: JSON.parse(run.out) as T };
}

/** What `finetune --json` prints (the fields the tests read). */
export interface FinetuneResult {
  steps: number;
  trainable: number;
  total: number;
  metrics: Record<string, number>;
}

/**
 * `sift-ft finetune <flags> --json --quiet`: it must exit 0 and write nothing to stderr. The run's
 * JSON result, and its increment (out/delta.safetensors; the out folder itself for LoRA).
 */
export async function finetuneRun(flags: Flags & { out: string }): Promise<{ result: FinetuneResult; delta: string }> {
  const { run, json } = await cliJson<FinetuneResult>('finetune', { ...flags, quiet: true });
  expect(run.err).toBe('');
  return { result: json, delta: flags.method === 'lora' ? flags.out : path.join(flags.out, 'delta.safetensors') };
}

/** The metrics of `sift-ft eval <flags> --json` (which must exit 0). */
export async function evalMetrics(flags: Flags): Promise<Record<string, number>> {
  return (await cliJson<{ metrics: Record<string, number> }>('eval', flags)).json.metrics;
}

/**
 * A Hugging Face folder at `dir`: a causal LM of `config` with random weights (seed 3) and the
 * tokenizer's files. Returns dir.
 */
export function saveRandomModel(dir: string, config: HFConfig, tokenizerFiles: Record<string, string>, dtype?: 'bf16'): string {
  const model = createModel(config, { task: 'causal-lm', seed: 3 });
  saveModelFolder(dir, { config: model.config, stateDict: stateDict(model), tokenizerFiles, ...(dtype ? { dtype } : {}) });
  model.dispose();
  return dir;
}

/** Rows as JSON lines at `file`; returns file. */
export function writeJsonl(file: string, rows: unknown[]): string {
  fs.writeFileSync(file, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return file;
}
