/**
 * The CLI's flag parser, over node:util's parseArgs (tokens mode): each command declares its
 * flags in a FlagSpec table, and this module turns argv (and an optional `--config FILE`) into
 * typed values.
 *
 * - `--name value` and `--name=value`; every flag also answers to its snake_case spelling
 *   (`--batch_size`), and to the Hugging Face Trainer / PEFT names in HF_ALIASES, in both spellings.
 * - Booleans: `--flag`, `--flag true|false`, `--flag=false`, `--no-flag` (also 1/0, yes/no).
 * - Numbers are checked (finite, integers where the spec says so, minimums); choices are checked.
 * - Unknown flags and stray positional words are E_ARG errors naming them (with a suggestion).
 * - `--config FILE.yaml|.yml|.json` reads a run configuration: an object whose keys are flag
 *   names (kebab-case or snake_case, or the aliases); flags on the command line override it;
 *   unknown keys are errors naming them.
 */
import * as fs from 'fs';
import * as path from 'path';
import { parseArgs } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { SiftError } from '../engine/errors';

export interface FlagSpec {
  type: 'string' | 'number' | 'boolean';
  help: string;
  default?: string | number | boolean;
  choices?: string[];
  /** number: must be an integer. */
  integer?: boolean;
  /** number: the smallest value allowed. */
  min?: number;
}

export interface Parsed {
  _: string[];
  [flag: string]: string | number | boolean | string[] | undefined;
}

/** Where each value of a parse came from. */
export type FlagSource = 'default' | 'config' | 'command line';

export interface ParseResult {
  flags: Parsed;
  sources: Record<string, FlagSource>;
  /** The --config file read, if any. */
  configFile?: string;
}

export interface ParseOptions {
  /** Positional words allowed (default 0: any is an error). */
  positionals?: number;
  /** Accept `--config FILE` (default: when the spec has no flag named config). */
  configFile?: boolean;
}

/**
 * Hugging Face Trainer (TrainingArguments) and PEFT (LoraConfig) names and the flag each stands
 * for; `value` converts the alias's own value where the meaning differs (bf16: a boolean).
 */
export interface Alias {
  flag: string;
  type?: FlagSpec['type'];
  value?: (v: string | number | boolean) => string | number | boolean;
  /** The alias's own spelling of "not set" (max_steps -1, TrainingArguments' default): the flag is left unset. */
  unset?: (v: unknown) => boolean;
}

/** lr_scheduler_type values of transformers that our schedules implement. */
const HF_SCHEDULERS: Record<string, string> = {
  linear: 'linear',
  cosine: 'cosine',
  constant: 'constant',
  constant_with_warmup: 'constant',
};

export const HF_ALIASES: Record<string, Alias> = {
  learning_rate: { flag: 'lr' },
  per_device_train_batch_size: { flag: 'batch-size' },
  gradient_accumulation_steps: { flag: 'grad-accum' },
  num_train_epochs: { flag: 'epochs' },
  max_steps: { flag: 'steps', unset: (v) => Number(v) === -1 },
  warmup_ratio: { flag: 'warmup-ratio' },
  warmup_steps: { flag: 'warmup-steps' },
  weight_decay: { flag: 'weight-decay' },
  lr_scheduler_type: {
    flag: 'lr-schedule',
    value: (v) => {
      const s = HF_SCHEDULERS[String(v)];
      if (!s)
        throw new SiftError('E_ARG', `lr_scheduler_type '${v}' is not supported (supported: ${Object.keys(HF_SCHEDULERS).join(', ')})`);
      return s;
    },
  },
  max_grad_norm: { flag: 'max-grad-norm' },
  seed: { flag: 'seed' },
  target_modules: { flag: 'target-modules' },
  lora_r: { flag: 'lora-rank' },
  lora_alpha: { flag: 'lora-alpha' },
  lora_dropout: { flag: 'lora-dropout' },
  output_dir: { flag: 'out' },
  gradient_checkpointing: { flag: 'activation-checkpointing' },
  bf16: { flag: 'mixed-precision', type: 'boolean', value: (v) => (v ? 'bf16' : 'none') },
  per_device_eval_batch_size: { flag: 'eval-batch-size' },
  eval_steps: { flag: 'eval-every' },
  save_steps: { flag: 'checkpoint-every' },
  logging_steps: { flag: 'log-every' },
  save_total_limit: { flag: 'save-total-limit' },
  metric_for_best_model: { flag: 'metric-for-best' },
  greater_is_better: { flag: 'greater-is-better' },
  early_stopping_patience: { flag: 'early-stopping-patience' },
  ddp_timeout: { flag: 'dist-timeout' },
  ddp_bucket_cap_mb: { flag: 'dist-bucket-mb' },
};

const kebab = (s: string) => s.replace(/_/g, '-');
const snake = (s: string) => s.replace(/-/g, '_');

/** Every name a flag answers to -> [flag, alias or null]. */
function nameTable(spec: Record<string, FlagSpec>): Map<string, [string, Alias | null]> {
  const names = new Map<string, [string, Alias | null]>();
  for (const k of Object.keys(spec)) {
    names.set(k, [k, null]);
    names.set(snake(k), [k, null]);
  }
  for (const [a, alias] of Object.entries(HF_ALIASES)) {
    if (!spec[alias.flag]) continue;
    for (const n of [a, kebab(a)]) if (!names.has(n)) names.set(n, [alias.flag, alias]);
  }
  return names;
}

/** Levenshtein distance, for suggestions. */
function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++)
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
  }
  return d[a.length][b.length];
}

/** ' (did you mean --x?)' for the closest name, or ''. */
export function suggest(name: string, candidates: string[], prefix = '--'): string {
  const n = kebab(name.toLowerCase());
  let best = '';
  let bestD = Infinity;
  for (const c of candidates) {
    const d = distance(n, kebab(c));
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  const close = best && (bestD <= Math.max(2, Math.floor(n.length / 3)) || kebab(best).includes(n) || n.includes(kebab(best)));
  // In the user's spelling: dashes on the command line, as typed in a file.
  const shown = prefix === '--' && !name.includes('_') ? kebab(best) : best;
  return close ? ` (did you mean ${prefix}${shown}?)` : '';
}

const TRUE = new Set(['true', '1', 'yes', 'on']);
const FALSE = new Set(['false', '0', 'no', 'off']);

function toBoolean(v: unknown, what: string): boolean {
  if (typeof v === 'boolean') return v;
  const s = String(v).toLowerCase();
  if (TRUE.has(s)) return true;
  if (FALSE.has(s)) return false;
  throw new SiftError('E_ARG', `${what} expects true or false, got '${v}'`);
}

/** A value of a flag, typed and checked. `what` names it in errors ('flag --lr', 'lr in run.yaml'). */
function coerce(s: FlagSpec, v: unknown, what: string): string | number | boolean {
  if (s.type === 'boolean') return toBoolean(v, what);
  if (s.type === 'number') {
    const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
    if (!Number.isFinite(n)) throw new SiftError('E_ARG', `${what} expects a number, got '${v}'`);
    if (s.integer && !Number.isInteger(n)) throw new SiftError('E_ARG', `${what} expects an integer, got ${v}`);
    if (s.min !== undefined && n < s.min) throw new SiftError('E_ARG', `${what} must be >= ${s.min}, got ${v}`);
    return n;
  }
  let str: string;
  if (Array.isArray(v)) str = v.map(String).join(',');
  else if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') str = String(v);
  else throw new SiftError('E_ARG', `${what} expects a string, got ${JSON.stringify(v)}`);
  if (s.choices && !s.choices.includes(str)) {
    throw new SiftError('E_ARG', `${what} must be one of ${s.choices.join(', ')}; got '${str}'${suggest(str, s.choices, '')}`);
  }
  return str;
}

/** Reads a run configuration file (.yaml, .yml or .json) as a plain object. */
export function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new SiftError('E_IO', `--config ${file}: ${(e as Error).message}`);
  }
  const ext = path.extname(file).toLowerCase();
  let obj: unknown;
  try {
    if (ext === '.json') obj = JSON.parse(text);
    else if (ext === '.yaml' || ext === '.yml') obj = parseYaml(text);
    else throw new SiftError('E_ARG', `--config ${file}: expected a .yaml, .yml or .json file`);
  } catch (e) {
    if (e instanceof SiftError) throw e;
    throw new SiftError('E_FORMAT', `--config ${file}: ${(e as Error).message.split('\n')[0]}`);
  }
  if (obj === null || obj === undefined) return {};
  if (typeof obj !== 'object' || Array.isArray(obj))
    throw new SiftError('E_FORMAT', `--config ${file}: expected a mapping of flag names to values`);
  return obj as Record<string, unknown>;
}

/** Parses argv (and the --config file it names) against a command's flags. */
export function parseCommand(argv: string[], spec: Record<string, FlagSpec>, opts: ParseOptions = {}): ParseResult {
  const withConfig = opts.configFile ?? !spec.config;
  const names = nameTable(spec);
  const options: Record<string, { type: 'string' | 'boolean' }> = {};
  for (const [n, [flag, alias]] of names) options[n] = { type: (alias?.type ?? spec[flag].type) === 'boolean' ? 'boolean' : 'string' };
  if (withConfig) options.config = { type: 'string' };
  let tokens: ReturnType<typeof parseArgs>['tokens'];
  try {
    ({ tokens } = parseArgs({ args: argv, options, strict: false, allowPositionals: true, tokens: true }));
  } catch (e) {
    throw new SiftError('E_ARG', (e as Error).message);
  }
  const cli: Record<string, [string | number | boolean, string]> = {};
  const positionals: string[] = [];
  let configFile: string | undefined;
  const allNames = [...new Set([...Object.keys(spec), ...[...names.keys()].filter((n) => names.get(n)![1])])];
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (t.kind === 'positional') {
      positionals.push(t.value);
      continue;
    }
    if (t.kind === 'option-terminator') continue;
    const raw = t.rawName;
    if (!raw.startsWith('--')) throw new SiftError('E_ARG', `unknown flag ${raw} (flags are spelled --name)`);
    let name = t.name;
    let value: string | boolean | undefined = t.value;
    if (name === 'config' && withConfig) {
      if (value === undefined) {
        const next = tokens[i + 1];
        if (next?.kind !== 'positional') throw new SiftError('E_ARG', 'flag --config needs a file (.yaml or .json)');
        value = next.value;
        i++;
      }
      configFile = String(value);
      continue;
    }
    let entry = names.get(name);
    let negated = false;
    if (!entry && name.startsWith('no-')) {
      const e = names.get(name.slice(3));
      if (e && (e[1]?.type ?? spec[e[0]].type) === 'boolean') {
        entry = e;
        negated = true;
        name = name.slice(3);
      }
    }
    if (!entry) {
      throw new SiftError(
        'E_ARG',
        `unknown flag --${name}${
          suggest(name, allNames) ||
          ` (allowed: ${
            Object.keys(spec)
              .map((k) => `--${k}`)
              .join(', ') || 'none'
          })`
        }`,
      );
    }
    const [flag, alias] = entry;
    const type = alias?.type ?? spec[flag].type;
    const what = `flag --${name}`;
    if (alias?.unset && value !== undefined && alias.unset(value)) {
      if (cli[flag] && cli[flag][1] !== name)
        throw new SiftError('E_ARG', `flag --${flag} given twice (as --${cli[flag][1]} and --${name})`);
      continue;
    }
    let v: string | number | boolean;
    if (type === 'boolean') {
      if (negated) {
        if (value !== undefined) throw new SiftError('E_ARG', `flag --no-${name} takes no value`);
        v = false;
      } else if (value !== undefined) {
        v = toBoolean(value, what);
      } else {
        const next = tokens[i + 1];
        if (next?.kind === 'positional' && (TRUE.has(next.value.toLowerCase()) || FALSE.has(next.value.toLowerCase()))) {
          v = toBoolean(next.value, what);
          i++;
        } else {
          v = true;
        }
      }
    } else {
      // parseArgs takes the next word as the value, even '--steps' of `--out --steps 3`: a missing value.
      if (value === undefined || (!t.inlineValue && String(value).startsWith('--'))) {
        throw new SiftError('E_ARG', `${what} needs a value (${spec[flag].help})`);
      }
      v = type === 'number' ? coerce({ ...spec[flag], type: 'number' }, value, what) : String(value);
    }
    if (alias?.value) v = alias.value(v);
    v = coerce(spec[flag], v, what);
    if (cli[flag] && cli[flag][1] !== name) throw new SiftError('E_ARG', `flag --${flag} given twice (as --${cli[flag][1]} and --${name})`);
    cli[flag] = [v, name];
  }
  const max = opts.positionals ?? 0;
  if (positionals.length > max) {
    const stray = positionals.slice(max);
    throw new SiftError(
      'E_ARG',
      `unexpected argument${stray.length > 1 ? 's' : ''} ${stray.map((s) => `'${s}'`).join(', ')}${max ? '' : ' (this command takes only --flags)'}`,
    );
  }
  const flags: Parsed = { _: positionals };
  const sources: Record<string, FlagSource> = {};
  for (const [k, s] of Object.entries(spec)) {
    if (s.default !== undefined) {
      flags[k] = s.default;
      sources[k] = 'default';
    }
  }
  if (configFile !== undefined) {
    const obj = readConfigFile(configFile);
    const lookup = (key: string) => names.get(key) ?? names.get(kebab(key));
    const unknown = Object.keys(obj)
      .filter((k) => !lookup(k))
      .map((k) => `'${k}'${suggest(k, allNames, '')}`);
    if (unknown.length) throw new SiftError('E_ARG', `${configFile}: unknown key${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')}`);
    const seen: Record<string, string> = {};
    for (const [key, raw] of Object.entries(obj)) {
      const entry = lookup(key)!;
      const [flag, alias] = entry;
      if (seen[flag]) throw new SiftError('E_ARG', `${configFile}: '${flag}' is set twice (as '${seen[flag]}' and '${key}')`);
      seen[flag] = key;
      if (raw === null || raw === undefined || alias?.unset?.(raw)) continue;
      const what = `'${key}' in ${configFile}`;
      let v: string | number | boolean =
        (alias?.type ?? spec[flag].type) === 'boolean'
          ? toBoolean(raw, what)
          : coerce({ ...spec[flag], choices: alias?.value ? undefined : spec[flag].choices }, raw, what);
      if (alias?.value) v = alias.value(v);
      flags[flag] = coerce(spec[flag], v, what);
      sources[flag] = 'config';
    }
  }
  for (const [flag, [v]] of Object.entries(cli)) {
    flags[flag] = v;
    sources[flag] = 'command line';
  }
  return { flags, sources, configFile };
}

/** parseCommand's flags only. */
export function parseFlags(argv: string[], spec: Record<string, FlagSpec>, opts: ParseOptions = {}): Parsed {
  return parseCommand(argv, spec, opts).flags;
}

/** The resolved flags as a plain object (kebab-case keys, defaults included), for run_config.json. */
export function resolvedConfig(r: ParseResult): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(r.flags)) if (k !== '_' && v !== undefined) out[k] = v;
  return out;
}

export function flagHelp(spec: Record<string, FlagSpec>): string {
  const rows = Object.entries(spec).map(([k, s]) => {
    const left = `  --${k}${s.type === 'boolean' ? ' [true|false]' : ` <${s.type === 'number' ? 'n' : s.choices ? s.choices.join('|') : 'value'}>`}`;
    const def = s.default !== undefined ? ` (default: ${s.default})` : '';
    return `${left.padEnd(34)} ${s.help}${def}`;
  });
  const aliases = Object.entries(HF_ALIASES)
    .filter(([, a]) => spec[a.flag])
    .map(([n, a]) => `${n} -> --${a.flag}`);
  if (aliases.length) rows.push('', `  Hugging Face names (also with dashes): ${aliases.join(', ')}`);
  if (!spec.config) rows.push(`  --config <file.yaml|file.json>    read flags from a run configuration (command-line flags override it)`);
  return rows.join('\n');
}
