/**
 * Hugging Face PEFT adapter folders (adapter_config.json + adapter_model.safetensors), written and
 * read in PEFT's own on-disk format:
 *
 * - SUPERTUNING (peft/tuners/supertuning): per adapted nn.Linear, `base_model.model.<module>.supertuning_indices`
 *   (1-D int32 flat positions into the [out, in] weight) and `.supertuning_values` (1-D f32, added to
 *   the weight at those positions). PEFT sizes both to int(numel * (1 - sparsity)) for every layer
 *   from the one `sparsity` of the config before loading the file into them, so each layer holds
 *   exactly that many entries (SIFT's trained ones, padded with -0 values). Only nn.Linear is
 *   supported by PEFT's method (not GPT-2's Conv1D), and only weights (not biases).
 * - LORA: `base_model.model.<module>.lora_A.weight` [r, in] and `.lora_B.weight` [out, r];
 *   W += (lora_alpha / r) * B @ A (transposed for fan_in_fan_out layers such as Conv1D).
 * - modules_to_save (a trained head): its parameters as `base_model.model.<module>.<param>`.
 *
 * save_pretrained strips PEFT's adapter name ("default") from every key; the loader puts it back.
 */
import * as fs from 'fs';
import * as path from 'path';
import { Tensor } from '../engine/tensor';
import { SiftError } from '../engine/errors';
import { native } from '../engine/native';
import { noGrad } from '../autograd/tape';
import { tidy } from '../engine/scope';
import { matmul } from '../autograd/matmul';
import { mul } from '../autograd/elementwise';
import { cast, contiguous, transpose } from '../autograd/shape';
import { SafetensorsReader, saveSafetensors } from './safetensors';
import { writeFileAtomic } from './atomic';
import { fingerprint, sameFingerprint } from '../sift/fingerprint';
import type { Increment } from '../sift/increment';

export const PEFT_CONFIG_FILE = 'adapter_config.json';
export const PEFT_WEIGHTS_FILE = 'adapter_model.safetensors';
const PREFIX = 'base_model.model.';

/** PEFT's TaskType for one of sift-ft's tasks. */
export function peftTaskType(task: string | undefined): string | null {
  switch (task) {
    case 'classify':
    case 'regress':
      return 'SEQ_CLS';
    case 'causal-lm':
    case 'instruct':
    case 'chat':
      return 'CAUSAL_LM';
    default:
      return null;
  }
}

/** What the exporters need of a model: its parameters and its modules with their kinds. */
export interface PeftModelView {
  namedParameters(): [string, Tensor][];
  namedModules(): [string, { kind: string }][];
}

/**
 * `target_modules` for PEFT: the short module names (PEFT matches a list entry against the end of a
 * module path) when they pick exactly `targets` among the model's modules of those kinds, else the full paths.
 */
export function peftTargetModules(targets: string[], modules: [string, { kind: string }][]): string[] {
  const leaf = (p: string) => p.slice(p.lastIndexOf('.') + 1);
  const short = [...new Set(targets.map(leaf))].sort();
  const want = new Set(targets);
  const picked = modules.filter(([p]) => p && short.includes(leaf(p))).map(([p]) => p);
  const exact = picked.length === want.size && picked.every((p) => want.has(p));
  return exact ? short : [...targets].sort();
}

/**
 * PEFT's count of entries for a layer: int(numel * (1 - sparsity)), in the same double arithmetic
 * as Python's (an int times a float is a float; int() truncates).
 */
export function supertuningCount(numel: number, sparsity: number): number {
  return Math.trunc(numel * (1 - sparsity));
}

/**
 * The `sparsity` to write for layers of `k` trained entries out of `numel`: PEFT gives every layer
 * int(numel * (1 - sparsity)) entries, so it must give each layer at least its k; the rest of a
 * layer's count is padding (entries whose value is -0, which leaves every weight bit-identical).
 * SIFT's own count, floor(rate * numel) + 1 per tensor, is not of PEFT's form for every size at
 * once, so some padding is usual: for layers of millions of entries a handful of entries each. The
 * largest sparsity (least padding) with a short decimal form is chosen.
 */
export function supertuningSparsity(layers: { name: string; numel: number; k: number }[]): { sparsity: number; padding: number } {
  if (!layers.length) throw new SiftError('E_ARG', 'no sparse layers to export');
  const total = layers.reduce((a, l) => a + l.k, 0);
  const padding = (s: number) => layers.reduce((a, l) => a + supertuningCount(l.numel, s) - l.k, 0);
  const fits = (s: number) =>
    s >= 0 && s < 1 && layers.every((l) => supertuningCount(l.numel, s) >= l.k && supertuningCount(l.numel, s) <= l.numel);
  // Every layer needs 1 - sparsity >= k / numel.
  const q = Math.max(...layers.map((l) => l.k / l.numel));
  let best: number | null = null;
  for (let digits = 1; digits <= 17; digits++) {
    const f = 10 ** digits;
    // Rounded down: a smaller sparsity keeps more entries, so the candidate still fits.
    let s = Math.floor((1 - q) * f) / f;
    for (let i = 0; i < 4 && !fits(s) && s > 0; i++) s = Math.max(0, s - 1 / f);
    if (!fits(s)) continue;
    if (best === null || padding(s) < padding(best)) best = s;
    // Short enough and within a thousandth of the trained entries (or as tight as doubles allow).
    if (padding(best) <= Math.max(1e-3 * total, layers.length)) break;
  }
  if (best === null) {
    if (fits(0)) best = 0;
    else throw new SiftError('E_INTERNAL', 'no SUPERTUNING sparsity fits the layers');
  }
  return { sparsity: best, padding: padding(best) };
}

/**
 * Indices and values of one layer padded to `count` entries: the trained ones plus the lowest
 * unused positions with value -0 (x + -0 === x for every float, -0 included), in ascending order.
 */
function padLayer(idx: Int32Array, val: Float32Array, count: number): { idx: Int32Array; val: Float32Array } {
  if (count === idx.length) return { idx, val };
  const oi = new Int32Array(count);
  const ov = new Float32Array(count);
  let need = count - idx.length;
  let i = 0;
  let o = 0;
  for (let pos = 0; o < count; pos++) {
    if (i < idx.length && idx[i] === pos) {
      oi[o] = pos;
      ov[o++] = val[i++];
    } else if (need > 0) {
      oi[o] = pos;
      ov[o++] = -0;
      need--;
    } else {
      oi[o] = idx[i];
      ov[o++] = val[i++];
    }
  }
  return { idx: oi, val: ov };
}

export interface PeftAdapterFiles {
  dir: string;
  config: Record<string, unknown>;
  tensors: number;
  files: string[];
}

function sortKeys(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(
    Object.keys(o)
      .sort()
      .map((k) => [k, o[k]]),
  );
}

/** Writes adapter_model.safetensors and adapter_config.json (as PEFT's save_pretrained does: keys sorted, indent 2). */
export function writePeftAdapter(dir: string, config: Record<string, unknown>, entries: [string, Tensor][]): PeftAdapterFiles {
  fs.mkdirSync(dir, { recursive: true });
  saveSafetensors(path.join(dir, PEFT_WEIGHTS_FILE), entries, { format: 'pt' });
  writeFileAtomic(path.join(dir, PEFT_CONFIG_FILE), [JSON.stringify(sortKeys(config), null, 2) + '\n']);
  return { dir, config, tensors: entries.length, files: [PEFT_WEIGHTS_FILE, PEFT_CONFIG_FILE] };
}

/** Fields of PeftConfig itself (peft/config.py) that every adapter_config.json carries. */
function baseConfig(peftType: string, taskType: string | null, baseModel: string | null): Record<string, unknown> {
  return {
    peft_type: peftType,
    task_type: taskType,
    base_model_name_or_path: baseModel,
    revision: null,
    inference_mode: true,
    auto_mapping: null,
  };
}

/** The module that owns a parameter, among the head modules, else its parent path. */
function ownerModule(param: string, heads: string[]): string {
  const h = heads.find((m) => param === m || param.startsWith(`${m}.`));
  return h ?? param.slice(0, Math.max(0, param.lastIndexOf('.')));
}

export interface SupertuningExportOptions {
  /** base_model_name_or_path in the config (a hub id or a folder). */
  baseModel: string | null;
  /** PEFT task type (CAUSAL_LM, SEQ_CLS, ...). */
  taskType: string | null;
  /** Module paths of task heads (their parameters go to modules_to_save by module). */
  headModules?: string[];
}

/**
 * PEFT SUPERTUNING adapter tensors and config of a sparse increment for `model` (its base weights:
 * every sparse target's fingerprint is checked, as applyIncrement does).
 */
export function supertuningFromIncrement(
  model: PeftModelView,
  inc: Increment,
  opts: SupertuningExportOptions,
): { config: Record<string, unknown>; entries: [string, Tensor][]; owned: Tensor[]; padding: number } {
  const params = new Map(model.namedParameters());
  const kinds = new Map(model.namedModules());
  const conv = new Set<string>();
  const other: string[] = [];
  const layers: { name: string; mod: string; numel: number; k: number; idx: Int32Array; val: Float32Array }[] = [];
  for (const [name, t] of inc.targets) {
    const mod = name.slice(0, name.lastIndexOf('.'));
    const kind = kinds.get(mod)?.kind;
    if (kind === 'Conv1D') {
      conv.add(mod);
      continue;
    }
    if (kind !== 'Linear' || !name.endsWith('.weight')) {
      other.push(name);
      continue;
    }
    const p = params.get(name);
    const fp = inc.baseFingerprint[name];
    if (!p || !fp || !sameFingerprint(fingerprint(p), fp)) {
      throw new SiftError(
        'E_MISMATCH',
        `'${name}' differs from the weights the increment was trained from (fingerprint mismatch): wrong base model`,
      );
    }
    if (p.size >= 2 ** 31) throw new SiftError('E_UNSUPPORTED', `'${name}' has ${p.size} entries: PEFT's SuperTuning stores int32 indices`);
    const ia = t.idx.toArray() as Int32Array | BigInt64Array;
    layers.push({
      name,
      mod,
      numel: p.size,
      k: t.idx.size,
      idx: ia instanceof Int32Array ? ia : Int32Array.from(ia, Number),
      val: t.val.toArray() as Float32Array,
    });
  }
  if (conv.size) {
    const c = [...conv];
    throw new SiftError(
      'E_UNSUPPORTED',
      `PEFT's SuperTuning supports torch.nn.Linear only, and ${c.length} of this increment's layers are GPT-2 Conv1D modules ` +
        `(${c.slice(0, 3).join(', ')}${c.length > 3 ? ', ...' : ''}); use the increment with sift-ft (merge, eval, export-onnx), or train LoRA, which PEFT holds for Conv1D`,
    );
  }
  if (other.length) {
    throw new SiftError(
      'E_UNSUPPORTED',
      `PEFT's SuperTuning holds sparse entries of Linear weights only, and the increment trains ${other.length} other tensor(s) sparsely ` +
        `(${other.slice(0, 3).join(', ')}${other.length > 3 ? ', ...' : ''}); train with --target-modules naming modules without biases to export it`,
    );
  }
  if (!layers.length) throw new SiftError('E_ARG', 'the increment has no sparse targets to export');
  const { sparsity, padding } = supertuningSparsity(layers);
  const entries: [string, Tensor][] = [];
  const N = native();
  for (const l of layers) {
    const { idx, val } = padLayer(l.idx, l.val, supertuningCount(l.numel, sparsity));
    entries.push(
      [`${PREFIX}${l.mod}.supertuning_indices`, new Tensor(N.fromBuffer(idx, [idx.length], 'i32', 'cpu'))],
      [`${PREFIX}${l.mod}.supertuning_values`, new Tensor(N.fromBuffer(val, [val.length], 'f32', 'cpu'))],
    );
  }
  const targets = layers.map((l) => l.mod);
  const heads = opts.headModules ?? [];
  const toSave = new Set<string>();
  for (const [name, d] of inc.dense) {
    toSave.add(ownerModule(name, heads));
    entries.push([`${PREFIX}${name}`, d.value]);
  }
  const config = {
    ...baseConfig('SUPERTUNING', opts.taskType, opts.baseModel),
    target_modules: peftTargetModules(targets, model.namedModules()),
    modules_to_save: toSave.size ? [...toSave].sort() : null,
    sparsity,
    select_top: true,
    r: null,
    lora_alpha: null,
    lora_dropout: 0,
    init_weights: true,
    save_precomputed_indices: true,
  };
  return { config, entries, owned: entries.slice(0, 2 * layers.length).map(([, t]) => t), padding };
}

export interface LoraConfigFields {
  r: number;
  lora_alpha: number;
  lora_dropout?: number;
  target_modules: string[];
  fan_in_fan_out: boolean;
  modules_to_save?: string[] | null;
}

/** adapter_config.json of a LORA adapter with every field of PEFT's LoraConfig that this product sets. */
export function loraPeftConfig(fields: LoraConfigFields, taskType: string | null, baseModel: string | null): Record<string, unknown> {
  return {
    ...baseConfig('LORA', taskType, baseModel),
    r: fields.r,
    lora_alpha: fields.lora_alpha,
    lora_dropout: fields.lora_dropout ?? 0,
    target_modules: [...fields.target_modules].sort(),
    fan_in_fan_out: fields.fan_in_fan_out,
    bias: 'none',
    modules_to_save: fields.modules_to_save && fields.modules_to_save.length ? [...fields.modules_to_save].sort() : null,
    init_lora_weights: true,
    layers_to_transform: null,
    layers_pattern: null,
    rank_pattern: {},
    alpha_pattern: {},
    use_rslora: false,
    use_dora: false,
  };
}

export interface PeftAdapter {
  config: Record<string, unknown>;
  tensors: Map<string, Tensor>;
  dispose(): void;
}

/** Reads a PEFT adapter folder (or its adapter_model.safetensors) with keys as PEFT saves them. */
export function readPeftAdapter(p: string): PeftAdapter {
  const dir = fs.existsSync(p) && fs.statSync(p).isDirectory() ? p : path.dirname(p);
  const weights = fs.existsSync(p) && fs.statSync(p).isFile() ? p : path.join(dir, PEFT_WEIGHTS_FILE);
  const cfgFile = path.join(dir, PEFT_CONFIG_FILE);
  if (!fs.existsSync(cfgFile)) throw new SiftError('E_IO', `${dir}: no ${PEFT_CONFIG_FILE}`);
  if (!fs.existsSync(weights)) throw new SiftError('E_IO', `${dir}: no ${PEFT_WEIGHTS_FILE}`);
  let config: Record<string, unknown>;
  try {
    config = JSON.parse(fs.readFileSync(cfgFile, 'utf8'));
  } catch (e) {
    throw new SiftError('E_FORMAT', `${cfgFile}: not valid JSON (${(e as Error).message})`);
  }
  if (!config || typeof config !== 'object' || typeof config.peft_type !== 'string')
    throw new SiftError('E_FORMAT', `${cfgFile}: no peft_type`);
  const r = SafetensorsReader.open(weights);
  const tensors = new Map<string, Tensor>();
  try {
    for (const name of r.names()) {
      // An adapter saved without PEFT's stripping still carries the adapter name: drop it the same way.
      const key = name.replace('.modules_to_save.default.', '.').replace(/\.default(?=\.weight$|$)/, '');
      tensors.set(key.startsWith(PREFIX) ? key.slice(PREFIX.length) : key, r.tensor(name));
    }
  } catch (e) {
    for (const t of tensors.values()) t.dispose();
    throw e;
  } finally {
    r.close();
  }
  return { config, tensors, dispose: () => tensors.forEach((t) => t.dispose()) };
}

/**
 * Applies a PEFT SUPERTUNING or LORA adapter to a model's weights in place, as PEFT's merge does
 * (sparse values scatter-added, B @ A scaled and added, modules_to_save copied). Everything is
 * checked before any weight changes.
 */
export function applyPeftAdapter(model: PeftModelView, adapter: PeftAdapter | string): void {
  const own = typeof adapter === 'string';
  const a = typeof adapter === 'string' ? readPeftAdapter(adapter) : adapter;
  try {
    const params = new Map(model.namedParameters());
    const kinds = new Map(model.namedModules());
    const type = a.config.peft_type;
    const toSave = (a.config.modules_to_save as string[] | null | undefined) ?? [];
    const plan: (() => void)[] = [];
    const used = new Set<string>();
    const param = (name: string, what: string): Tensor => {
      const p = params.get(name);
      if (!p) throw new SiftError('E_MISMATCH', `the adapter ${what} '${name}', which this model does not have`);
      return p;
    };
    if (type === 'SUPERTUNING') {
      const sparsity = a.config.sparsity;
      if (typeof sparsity !== 'number' || !(sparsity >= 0 && sparsity < 1))
        throw new SiftError('E_FORMAT', `SUPERTUNING adapter: sparsity must be in [0, 1), got ${JSON.stringify(sparsity)}`);
      if (a.config.r !== null && a.config.r !== undefined)
        throw new SiftError('E_UNSUPPORTED', 'SUPERTUNING adapters with a LoRA part (r set) are not supported');
      for (const [key, val] of a.tensors) {
        if (!key.endsWith('.supertuning_values')) continue;
        const mod = key.slice(0, -'.supertuning_values'.length);
        const idx = a.tensors.get(`${mod}.supertuning_indices`);
        if (!idx) throw new SiftError('E_FORMAT', `SUPERTUNING adapter: '${key}' has no supertuning_indices`);
        if (idx.dtype !== 'i32' && idx.dtype !== 'i64')
          throw new SiftError('E_FORMAT', `SUPERTUNING adapter: '${mod}.supertuning_indices' must be integer, got ${idx.dtype}`);
        if (idx.shape.length !== 1 || val.shape.length !== 1 || idx.size !== val.size)
          throw new SiftError('E_FORMAT', `SUPERTUNING adapter: '${mod}' has indices [${idx.shape}] and values [${val.shape}]`);
        if (kinds.get(mod)?.kind !== 'Linear')
          throw new SiftError('E_UNSUPPORTED', `SUPERTUNING adapter: '${mod}' is not a Linear module of this model`);
        const w = param(`${mod}.weight`, 'adapts');
        const k = supertuningCount(w.size, sparsity);
        if (k !== idx.size)
          throw new SiftError(
            'E_FORMAT',
            `SUPERTUNING adapter: '${mod}' has ${idx.size} entries, but sparsity ${sparsity} gives int(${w.size} * (1 - sparsity)) = ${k}`,
          );
        const ia = idx.toArray() as Int32Array | BigInt64Array;
        for (let i = 0; i < ia.length; i++) {
          const v = Number(ia[i]);
          if (!(v >= 0 && v < w.size))
            throw new SiftError(
              'E_FORMAT',
              `SUPERTUNING adapter: '${mod}.supertuning_indices' entry ${i} (${v}) is outside [0, ${w.size})`,
            );
        }
        used.add(key).add(`${mod}.supertuning_indices`);
        plan.push(() => {
          const i32 = idx.dtype === 'i32' ? idx : new Tensor(native().cast(idx.handle, 'i32'));
          const onDev = (t: Tensor) => (t.device === w.device ? t : new Tensor(native().to(t.handle, w.device)));
          const id = onDev(i32);
          const vd = onDev(val.dtype === 'f32' ? val : new Tensor(native().cast(val.handle, 'f32')));
          native().scatterInto(w.handle, id.handle, vd.handle, 'add');
          for (const t of [id, vd, i32]) if (t !== idx && t !== val) t.dispose();
        });
      }
    } else if (type === 'LORA') {
      const r = a.config.r;
      const alpha = a.config.lora_alpha;
      if (typeof r !== 'number' || !(r > 0) || typeof alpha !== 'number')
        throw new SiftError('E_FORMAT', 'LORA adapter: r and lora_alpha must be numbers');
      if (a.config.use_dora) throw new SiftError('E_UNSUPPORTED', 'LORA adapter: DoRA (use_dora) is not supported');
      for (const f of ['rank_pattern', 'alpha_pattern'] as const) {
        const v = a.config[f];
        if (v && typeof v === 'object' && Object.keys(v).length)
          throw new SiftError('E_UNSUPPORTED', `LORA adapter: ${f} is not supported`);
      }
      const scale = a.config.use_rslora ? alpha / Math.sqrt(r) : alpha / r;
      for (const [key, A] of a.tensors) {
        if (!key.endsWith('.lora_A.weight')) continue;
        const mod = key.slice(0, -'.lora_A.weight'.length);
        const B = a.tensors.get(`${mod}.lora_B.weight`);
        if (!B) throw new SiftError('E_FORMAT', `LORA adapter: '${key}' has no lora_B`);
        const w = param(`${mod}.weight`, 'adapts');
        const conv = kinds.get(mod)?.kind === 'Conv1D';
        const [outF, inF] = conv ? [w.shape[1], w.shape[0]] : [w.shape[0], w.shape[1]];
        if (A.shape.join() !== `${A.shape[0]},${inF}` || B.shape.join() !== `${outF},${A.shape[0]}`) {
          throw new SiftError('E_MISMATCH', `LORA adapter: '${mod}' has A [${A.shape}] and B [${B.shape}] for a weight [${w.shape}]`);
        }
        used.add(key).add(`${mod}.lora_B.weight`);
        plan.push(() => {
          const d = tidy(() => {
            const f32 = (t: Tensor) => (t.dtype === 'f32' ? t : cast(t, 'f32'));
            const s = mul(matmul(f32(B), f32(A)), scale);
            const o = conv ? contiguous(transpose(s, 0, 1)) : s;
            return w.dtype === 'f32' ? o : cast(o, w.dtype);
          });
          const dd = d.device === w.device ? d : new Tensor(native().to(d.handle, w.device));
          w.addInplace(dd, 1);
          if (dd !== d) dd.dispose();
          d.dispose();
        });
      }
    } else {
      throw new SiftError('E_UNSUPPORTED', `PEFT adapter type ${JSON.stringify(type)} is not supported (SUPERTUNING and LORA are)`);
    }
    for (const [key, t] of a.tensors) {
      if (used.has(key)) continue;
      if (!toSave.some((m) => key.startsWith(`${m}.`)))
        throw new SiftError('E_FORMAT', `the adapter holds '${key}', which is neither an adapter weight nor under modules_to_save`);
      const p = param(key, 'replaces');
      if (p.shape.join() !== t.shape.join())
        throw new SiftError('E_MISMATCH', `the adapter's '${key}' has shape [${t.shape}], the model's [${p.shape}]`);
      plan.push(() => {
        const v = t.dtype === p.dtype ? t : new Tensor(native().cast(t.handle, p.dtype));
        const vd = v.device === p.device ? v : new Tensor(native().to(v.handle, p.device));
        native().copy_(p.handle, vd.handle);
        if (vd !== v) vd.dispose();
        if (v !== t) v.dispose();
      });
    }
    if (!used.size) throw new SiftError('E_FORMAT', `the ${type} adapter has no adapter weights`);
    noGrad(() => plan.forEach((f) => f()));
  } finally {
    if (own) a.dispose();
  }
}
