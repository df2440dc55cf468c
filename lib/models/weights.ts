/**
 * State dicts of models: copying checkpoint tensors into a model's parameters by transformers'
 * keys (tolerating what transformers tolerates: a base-model prefix present or absent, legacy
 * LayerNorm gamma/beta names, tied keys, buffers), and listing a model's tensors for saving.
 */
import { Tensor } from '../engine/tensor';
import { SiftError } from '../engine/errors';
import { native } from '../engine/native';
import { noGrad } from '../autograd/tape';
import type { Module } from '../nn/module';
import type { PreTrainedModel } from './common';

export interface WeightLoadReport {
  /** Model keys that got a tensor. */
  loaded: string[];
  /** Model keys that no checkpoint entry filled (kept their initial values). */
  missing: string[];
  /** Checkpoint keys the model has no use for (buffers and tied keys excluded). */
  unexpected: string[];
}

export interface WeightLoadOptions {
  /** Throw E_FORMAT when keys are missing or unexpected (default true). */
  strict?: boolean;
  /** Model keys allowed to be missing even when strict (e.g. a fresh classification head): regexps or exact keys. */
  allowMissing?: (RegExp | string)[];
}

type Slot = { module: Module; name: string; tensor: Tensor };

function slotsOf(model: Module): Map<string, Slot> {
  const slots = new Map<string, Slot>();
  const seen = new Set<Tensor>();
  for (const [path, m] of model.namedModules()) {
    for (const [n, t] of m.ownParameters()) {
      if (seen.has(t)) continue;
      seen.add(t);
      slots.set(path ? `${path}.${n}` : n, { module: m, name: n, tensor: t });
    }
  }
  return slots;
}

/** The model key a checkpoint key stands for, or null. */
export function resolveKey(model: PreTrainedModel, keys: Set<string>, key: string): string | null {
  const candidates = [key];
  const legacy = key.replace(/\.gamma$/, '.weight').replace(/\.beta$/, '.bias');
  if (legacy !== key) candidates.push(legacy);
  const prefix = model.baseModelPrefix;
  for (const k of [...candidates]) {
    if (k.startsWith(`${prefix}.`)) candidates.push(k.slice(prefix.length + 1));
    else candidates.push(`${prefix}.${k}`);
  }
  for (const k of candidates) if (keys.has(k)) return k;
  return null;
}

/** Copies one tensor into a parameter, converting dtype and device on the way (the source is not consumed). */
export function assignInto(param: Tensor, src: Tensor, key: string): void {
  if (param.shape.length !== src.shape.length || param.shape.some((d, i) => d !== src.shape[i])) {
    throw new SiftError('E_SHAPE', `checkpoint tensor '${key}' has shape [${src.shape}], the model expects [${param.shape}]`);
  }
  noGrad(() => {
    const N = native();
    let h = src.handle;
    const temps = [];
    if (src.dtype !== param.dtype) {
      h = N.cast(h, param.dtype);
      temps.push(h);
    }
    if (src.device !== param.device) {
      h = N.to(h, param.device);
      temps.push(h);
    }
    N.copy_(param.handle, h);
    for (const t of temps) N.dispose(t);
  });
}

/**
 * Loads checkpoint tensors into the model by copying (dtype and device converted on the way).
 * `source` is a Map or an array of entries (the caller keeps and disposes those tensors), a
 * streaming iterable such as lib/io/hf.ts's iterStateDict (each tensor is disposed once copied,
 * so host memory stays near one tensor beyond the model), or a lazy reader `{ keys, get(key) }`
 * (likewise disposed). `disposeSource` overrides that choice.
 */
export function loadStateDictInto(
  model: PreTrainedModel,
  source: Map<string, Tensor> | Iterable<[string, Tensor]> | { keys: string[]; get(key: string): Tensor },
  opts: WeightLoadOptions & { disposeSource?: boolean } = {},
): WeightLoadReport {
  const slots = slotsOf(model);
  const keys = new Set(slots.keys());
  const tied = new Set(Object.keys(model.tiedParameters()));
  const ignored = model.ignoredCheckpointKeys();
  const loaded = new Set<string>();
  const unexpected: string[] = [];
  const isReader =
    !(source instanceof Map) &&
    !Array.isArray(source) &&
    typeof (source as { get?: unknown }).get === 'function' &&
    Array.isArray((source as { keys?: unknown }).keys);
  const owned = opts.disposeSource ?? !(source instanceof Map || Array.isArray(source));
  const take = (ckey: string, get: () => Tensor | null) => {
    const mkey = resolveKey(model, keys, ckey);
    if (!mkey) {
      const bare = ckey.startsWith(`${model.baseModelPrefix}.`) ? ckey.slice(model.baseModelPrefix.length + 1) : ckey;
      const skip = tied.has(ckey) || tied.has(bare) || ignored.some((re) => re.test(ckey) || re.test(bare));
      if (!skip) unexpected.push(ckey);
      return;
    }
    const t = get();
    if (!t) return;
    assignInto(slots.get(mkey)!.tensor, t, ckey);
    loaded.add(mkey);
  };
  if (isReader) {
    const r = source as { keys: string[]; get(k: string): Tensor };
    for (const k of r.keys) {
      let t: Tensor | null = null;
      try {
        take(k, () => (t = r.get(k)));
      } finally {
        if (owned && t) (t as Tensor).dispose();
      }
    }
  } else {
    for (const [k, t] of source as Iterable<[string, Tensor]>) {
      try {
        take(k, () => t);
      } finally {
        if (owned) t.dispose();
      }
    }
  }
  const allow = opts.allowMissing ?? [];
  const missing = [...keys].filter((k) => !loaded.has(k));
  if (opts.strict !== false) {
    const bad = missing.filter((k) => !allow.some((a) => (typeof a === 'string' ? a === k : a.test(k))));
    if (bad.length || unexpected.length) {
      const parts: string[] = [];
      if (bad.length) parts.push(`missing ${bad.length} key(s): ${bad.slice(0, 8).join(', ')}${bad.length > 8 ? ', ...' : ''}`);
      if (unexpected.length)
        parts.push(`unexpected ${unexpected.length} key(s): ${unexpected.slice(0, 8).join(', ')}${unexpected.length > 8 ? ', ...' : ''}`);
      throw new SiftError('E_FORMAT', `checkpoint does not match ${model.architecture}: ${parts.join('; ')}`);
    }
  }
  return { loaded: [...loaded], missing, unexpected };
}

/** The model's tensors by transformers' keys, tied ones once (what save_pretrained writes). */
export function stateDict(model: Module): Map<string, Tensor> {
  return new Map(model.namedParameters());
}
