/**
 * A small flag parser for the CLI: --name value, --name=value, boolean --flag / --no-flag. Unknown
 * flags are errors that name the flag and list the allowed ones.
 */
import { SiftError } from '../engine/errors';

export interface FlagSpec {
  type: 'string' | 'number' | 'boolean';
  help: string;
  default?: string | number | boolean;
  choices?: string[];
}

export interface Parsed {
  _: string[];
  [flag: string]: string | number | boolean | string[] | undefined;
}

export function parseFlags(argv: string[], spec: Record<string, FlagSpec>): Parsed {
  const out: Parsed = { _: [] };
  for (const [k, s] of Object.entries(spec)) if (s.default !== undefined) out[k] = s.default;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) {
      out._.push(a);
      continue;
    }
    let name = a.slice(2);
    let value: string | undefined;
    const eq = name.indexOf('=');
    if (eq >= 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    }
    const s = spec[name];
    if (!s && name.startsWith('no-') && spec[name.slice(3)]?.type === 'boolean') {
      out[name.slice(3)] = false;
      continue;
    }
    if (!s) {
      throw new SiftError('E_ARG', `unknown flag --${name} (allowed: ${Object.keys(spec).map((k) => `--${k}`).join(', ') || 'none'})`);
    }
    if (s.type === 'boolean') {
      out[name] = value === undefined ? true : value !== 'false' && value !== '0';
      continue;
    }
    if (value === undefined) {
      value = argv[++i];
      if (value === undefined) throw new SiftError('E_ARG', `flag --${name} needs a value (${s.help})`);
    }
    if (s.type === 'number') {
      const n = Number(value);
      if (!Number.isFinite(n)) throw new SiftError('E_ARG', `flag --${name} expects a number, got '${value}'`);
      out[name] = n;
    } else {
      if (s.choices && !s.choices.includes(value)) {
        throw new SiftError('E_ARG', `flag --${name} must be one of ${s.choices.join(', ')}; got '${value}'`);
      }
      out[name] = value;
    }
  }
  return out;
}

export function flagHelp(spec: Record<string, FlagSpec>): string {
  const rows = Object.entries(spec).map(([k, s]) => {
    const left = `  --${k}${s.type === 'boolean' ? '' : ` <${s.type === 'number' ? 'n' : s.choices ? s.choices.join('|') : 'value'}>`}`;
    const def = s.default !== undefined ? ` (default: ${s.default})` : '';
    return `${left.padEnd(34)} ${s.help}${def}`;
  });
  return rows.join('\n');
}
