/**
 * The sparse increment file: safetensors with, per SIFT target, `<name>.sift_idx` (i32, or i64 for
 * tensors of 2^31 entries or more; sorted flat indices) and `<name>.sift_val` (f32: trained minus
 * base at those indices, chosen so that base + value reproduces the trained weight exactly in the
 * weight's arithmetic), and `<name>.sift_base` (f32 base values at the indices, for an exact unmerge);
 * dense modules as `<name>` in full (and `<name>.sift_base`); in `__metadata__` the SIFT config and a
 * fingerprint of the base (per-tensor shape, dtype and sha256), plus one of the trained weights.
 * Applying onto a base whose fingerprint differs is E_MISMATCH; a malformed file is E_FORMAT.
 * A target trained on a quantized base has no `sift_base` and no trained fingerprint (its trained
 * dense weight never existed): it applies like any other, but cannot be unmerged.
 */
import { Tensor } from '../engine/tensor';
import { SiftError, check } from '../engine/errors';
import { native } from '../engine/native';
import { noGrad } from '../autograd/tape';
import { SafetensorsReader, saveSafetensors } from '../io/safetensors';
import { Sift, paramIndices } from './sift';
import { NamedModel } from './targets';
import { TensorFingerprint, fingerprint, sameFingerprint } from './fingerprint';

export const INCREMENT_FORMAT = 'sift-increment';
export const INCREMENT_VERSION = '1';

const f32buf = new Float32Array(1);
const i32buf = new Int32Array(f32buf.buffer);

/** The f32 neighbour of x toward +inf (dir 1) or -inf (dir -1). */
function nextF32(x: number, dir: 1 | -1): number {
  if (x === 0) return dir * 1.401298464324817e-45;
  f32buf[0] = x;
  i32buf[0] += x > 0 === dir > 0 ? 1 : -1;
  return f32buf[0];
}

/** An f32 d with fl32(base + d) === trained (both f32 values); see the file comment. */
export function exactDelta(base: number, trained: number): number {
  let d = Math.fround(trained - base);
  for (let i = 0; i < 64; i++) {
    const got = Math.fround(base + d);
    if (got === trained || Number.isNaN(got)) break;
    d = nextF32(d, got < trained ? 1 : -1);
  }
  return d;
}

export interface IncrementTarget {
  idx: Tensor;
  val: Tensor;
  base: Tensor | null;
}

export interface Increment {
  targets: Map<string, IncrementTarget>;
  dense: Map<string, { value: Tensor; base: Tensor | null }>;
  config: Record<string, unknown>;
  baseFingerprint: Record<string, TensorFingerprint>;
  trainedFingerprint: Record<string, TensorFingerprint>;
  metadata: Record<string, string>;
  dispose(): void;
}

/** Writes the increment of a trained Sift (atomically). */
export function saveIncrement(sift: Sift, path: string, opts: { extraMetadata?: Record<string, string> } = {}): void {
  check(sift.selected, 'E_ARG', 'saveIncrement: the SIFT indices have not been chosen yet');
  const unknown = sift.targets.find((t) => !t.baseFingerprint);
  check(
    !unknown,
    'E_UNSUPPORTED',
    () =>
      `saveIncrement: '${unknown!.name}' was quantized before SIFT saw its weight, so the increment could not name its base; load the model unquantized and let SIFT quantize it (the quantize option)`,
  );
  const N = native();
  const entries: [string, Tensor][] = [];
  const owned: Tensor[] = [];
  const baseFp: Record<string, TensorFingerprint> = {};
  const trainedFp: Record<string, TensorFingerprint> = {};
  try {
    noGrad(() => {
      for (const t of sift.targets) {
        const trained = new Tensor(N.full([t.k], 0, 'f32', 'cpu'));
        owned.push(trained);
        const idxCpu = new Tensor(N.to(t.idx!.handle, 'cpu'));
        owned.push(idxCpu);
        if (t.k > 0) {
          const onDev = new Tensor(N.full([t.k], 0, 'f32', t.param.device));
          N.gatherInto(onDev.handle, t.param.handle, paramIndices(t)!.handle, false);
          const cpu = new Tensor(N.to(onDev.handle, 'cpu'));
          N.copy_(trained.handle, cpu.handle);
          cpu.dispose();
          onDev.dispose();
        }
        const baseCpu = new Tensor(N.to(t.base!.handle, 'cpu'));
        owned.push(baseCpu);
        const b = baseCpu.toArray() as Float32Array;
        const m = trained.toArray() as Float32Array;
        const d = new Float32Array(t.k);
        for (let i = 0; i < t.k; i++) d[i] = exactDelta(b[i], m[i]);
        const val = new Tensor(N.fromBuffer(d, [t.k], 'f32', 'cpu'));
        owned.push(val);
        const idxOut = t.numel < 2 ** 31 ? new Tensor(N.cast(idxCpu.handle, 'i32')) : new Tensor(N.cast(idxCpu.handle, 'i64'));
        owned.push(idxOut);
        entries.push([`${t.name}.sift_idx`, idxOut], [`${t.name}.sift_val`, val]);
        // A quantized target's base values are the dequantized ones, not the original weight's:
        // they would not restore it, so they are not written.
        if (!t.quant) entries.push([`${t.name}.sift_base`, baseCpu]);
        baseFp[t.name] = t.baseFingerprint!;
        // A quantized target's trained weight never existed densely: no fingerprint of it (it
        // cannot be unmerged without base values either; see unmergeIncrement).
        if (!t.quant) trainedFp[t.name] = fingerprint(t.param);
      }
      for (const [name, p] of sift.dense) {
        const v = new Tensor(N.to(p.handle, 'cpu'));
        const base = new Tensor(N.to(sift.denseBase.get(name)!.handle, 'cpu'));
        owned.push(v, base);
        entries.push([name, v], [`${name}.sift_base`, base]);
        baseFp[name] = sift.denseFingerprints.get(name)!;
        trainedFp[name] = fingerprint(p);
      }
    });
    const o = sift.options;
    const config = {
      method: 'sift',
      sparseRate: o.sparseRate,
      targetModules: o.targetModules ?? 'all-linear',
      denseModules: o.denseModules ?? null,
      selection: sift.selectionOptions,
      seed: o.seed,
      trainable: sift.summary().trainable,
    };
    saveSafetensors(path, entries, {
      format: INCREMENT_FORMAT,
      format_version: INCREMENT_VERSION,
      sift_config: JSON.stringify(config),
      base_fingerprint: JSON.stringify(baseFp),
      trained_fingerprint: JSON.stringify(trainedFp),
      ...(opts.extraMetadata ?? {}),
    });
  } finally {
    for (const t of owned) t.dispose();
  }
}

function parseJsonMeta<T>(file: string, meta: Record<string, string>, key: string): T {
  const raw = meta[key];
  if (raw === undefined) throw new SiftError('E_FORMAT', `${file}: metadata has no '${key}' (not a sift-ft increment file?)`);
  try {
    return JSON.parse(raw) as T;
  } catch {
    throw new SiftError('E_FORMAT', `${file}: metadata '${key}' is not valid JSON`);
  }
}

/** Reads and validates an increment file (indices in range, sorted, unique; lengths equal). */
export function loadIncrement(path: string, opts: { device?: string } = {}): Increment {
  const r = SafetensorsReader.open(path);
  const all: Tensor[] = [];
  try {
    const meta = r.metadata;
    if (meta.format !== INCREMENT_FORMAT)
      throw new SiftError('E_FORMAT', `${path}: not a sift-ft increment file (metadata format is ${JSON.stringify(meta.format)})`);
    if (meta.format_version !== INCREMENT_VERSION)
      throw new SiftError(
        'E_FORMAT',
        `${path}: increment format version ${meta.format_version} is not supported (expected ${INCREMENT_VERSION})`,
      );
    const config = parseJsonMeta<Record<string, unknown>>(path, meta, 'sift_config');
    const baseFingerprint = parseJsonMeta<Record<string, TensorFingerprint>>(path, meta, 'base_fingerprint');
    const trainedFingerprint = parseJsonMeta<Record<string, TensorFingerprint>>(path, meta, 'trained_fingerprint');
    const targets = new Map<string, IncrementTarget>();
    const dense = new Map<string, { value: Tensor; base: Tensor | null }>();
    const names = new Set(r.names());
    const device = opts.device ?? 'cpu';
    for (const name of names) {
      if (name.endsWith('.sift_idx')) {
        const base = name.slice(0, -'.sift_idx'.length);
        const fp = baseFingerprint[base];
        if (!fp) throw new SiftError('E_FORMAT', `${path}: '${base}' has indices but no base fingerprint`);
        if (!names.has(`${base}.sift_val`))
          throw new SiftError('E_FORMAT', `${path}: '${base}.sift_idx' has no matching '${base}.sift_val'`);
        const ii = r.info(name);
        const vi = r.info(`${base}.sift_val`);
        if (ii.dtype !== 'i32' && ii.dtype !== 'i64')
          throw new SiftError('E_FORMAT', `${path}: '${name}' must be I32 or I64, got ${ii.fileDType}`);
        if (vi.dtype !== 'f32') throw new SiftError('E_FORMAT', `${path}: '${base}.sift_val' must be F32, got ${vi.fileDType}`);
        if (ii.shape.length !== 1 || vi.shape.length !== 1 || ii.shape[0] !== vi.shape[0]) {
          throw new SiftError('E_FORMAT', `${path}: '${base}' has ${ii.shape} indices and ${vi.shape} values`);
        }
        const numel = fp.shape.reduce((a, b) => a * b, 1);
        const idxCpu = r.tensor(name);
        all.push(idxCpu);
        const idxArr = idxCpu.toArray() as Int32Array | BigInt64Array;
        let prev = -1;
        for (let i = 0; i < idxArr.length; i++) {
          const v = Number(idxArr[i]);
          if (!(v > prev) || v >= numel)
            throw new SiftError('E_FORMAT', `${path}: '${name}' entry ${i} (${v}) is out of range [0, ${numel}) or not in ascending order`);
          prev = v;
        }
        const idx = device === 'cpu' ? idxCpu : new Tensor(native().to(idxCpu.handle, device));
        const val = r.tensor(`${base}.sift_val`, { device });
        const b = names.has(`${base}.sift_base`) ? r.tensor(`${base}.sift_base`, { device }) : null;
        if (b && (b.dtype !== 'f32' || b.shape[0] !== ii.shape[0]))
          throw new SiftError('E_FORMAT', `${path}: '${base}.sift_base' must be F32 [${ii.shape[0]}]`);
        all.push(idx, val, ...(b ? [b] : []));
        targets.set(base, { idx, val, base: b });
      } else if (name.endsWith('.sift_val') || name.endsWith('.sift_base')) {
        const base = name.slice(0, name.lastIndexOf('.'));
        if (!names.has(`${base}.sift_idx`) && !(name.endsWith('.sift_base') && names.has(base))) {
          throw new SiftError('E_FORMAT', `${path}: '${name}' has no matching tensor`);
        }
      } else {
        const fp = baseFingerprint[name];
        if (!fp) throw new SiftError('E_FORMAT', `${path}: dense tensor '${name}' has no base fingerprint`);
        const info = r.info(name);
        if (info.shape.join() !== fp.shape.join())
          throw new SiftError(
            'E_FORMAT',
            `${path}: dense tensor '${name}' has shape [${info.shape}] but its fingerprint says [${fp.shape}]`,
          );
        const value = r.tensor(name, { device });
        const base = names.has(`${name}.sift_base`) ? r.tensor(`${name}.sift_base`, { device }) : null;
        all.push(value, ...(base ? [base] : []));
        dense.set(name, { value, base });
      }
    }
    return {
      targets,
      dense,
      config,
      baseFingerprint,
      trainedFingerprint,
      metadata: meta,
      dispose: () => {
        for (const t of all) t.dispose();
      },
    };
  } catch (e) {
    for (const t of all) t.dispose();
    throw e;
  } finally {
    r.close();
  }
}

function paramMap(model: NamedModel): Map<string, Tensor> {
  return new Map(model.namedParameters());
}

function checkFingerprints(model: Map<string, Tensor>, expected: Record<string, TensorFingerprint>, names: string[], what: string): void {
  for (const name of names) {
    const p = model.get(name);
    if (!p) throw new SiftError('E_MISMATCH', `the model has no parameter '${name}' that the increment ${what}`);
    const fp = expected[name];
    if (!fp)
      throw new SiftError(
        'E_UNSUPPORTED',
        `'${name}' was trained on a quantized base: the increment records neither its trained fingerprint nor its base values, so it cannot be unmerged (reload the base model instead)`,
      );
    if (p.shape.join() !== fp.shape.join())
      throw new SiftError('E_MISMATCH', `'${name}' has shape [${p.shape}], the increment expects [${fp.shape}]`);
    if (!sameFingerprint(fingerprint(p), fp)) {
      throw new SiftError(
        'E_MISMATCH',
        `'${name}' differs from the weights the increment ${what} (fingerprint mismatch): wrong base model, or the increment is already applied`,
      );
    }
  }
}

/** Adds an increment to a base model in place (checks every fingerprint before changing anything). */
export function applyIncrement(model: NamedModel, inc: Increment | string): void {
  const own = typeof inc === 'string';
  const incr = typeof inc === 'string' ? loadIncrement(inc) : inc;
  try {
    const params = paramMap(model);
    const names = [...incr.targets.keys(), ...incr.dense.keys()];
    checkFingerprints(params, incr.baseFingerprint, names, 'was trained from');
    const N = native();
    noGrad(() => {
      for (const [name, t] of incr.targets) {
        const p = params.get(name)!;
        const idx = onDevice(t.idx, p.device);
        const val = onDevice(t.val, p.device);
        if (idx.size > 0) N.scatterInto(p.handle, idx.handle, val.handle, 'add');
        if (idx !== t.idx) idx.dispose();
        if (val !== t.val) val.dispose();
      }
      for (const [name, d] of incr.dense) {
        const p = params.get(name)!;
        const v = d.value.dtype === p.dtype ? d.value : new Tensor(N.cast(d.value.handle, p.dtype));
        const vd = onDevice(v, p.device);
        N.copy_(p.handle, vd.handle);
        if (vd !== v) vd.dispose();
        if (v !== d.value) v.dispose();
      }
    });
  } finally {
    if (own) incr.dispose();
  }
}

/** Removes an applied increment, restoring the base weights exactly (from the stored base values). */
export function unmergeIncrement(model: NamedModel, inc: Increment | string): void {
  const own = typeof inc === 'string';
  const incr = typeof inc === 'string' ? loadIncrement(inc) : inc;
  try {
    const params = paramMap(model);
    const names = [...incr.targets.keys(), ...incr.dense.keys()];
    checkFingerprints(params, incr.trainedFingerprint, names, 'produced');
    const N = native();
    noGrad(() => {
      for (const [name, t] of incr.targets) {
        const p = params.get(name)!;
        if (t.idx.size === 0) continue;
        const idx = onDevice(t.idx, p.device);
        let vals: Tensor;
        let mode: 'set' | 'add';
        if (t.base) {
          vals = onDevice(t.base, p.device);
          mode = 'set';
        } else {
          const v = onDevice(t.val, p.device);
          vals = new Tensor(N.scalarOp('mul', v.handle, -1));
          if (v !== t.val) v.dispose();
          mode = 'add';
        }
        N.scatterInto(p.handle, idx.handle, vals.handle, mode);
        if (idx !== t.idx) idx.dispose();
        if (vals !== t.base) vals.dispose();
      }
      for (const [name, d] of incr.dense) {
        if (!d.base) throw new SiftError('E_FORMAT', `the increment has no base values for dense tensor '${name}': cannot unmerge it`);
        const p = params.get(name)!;
        const b = d.base.dtype === p.dtype ? d.base : new Tensor(N.cast(d.base.handle, p.dtype));
        const bd = onDevice(b, p.device);
        N.copy_(p.handle, bd.handle);
        if (bd !== b) bd.dispose();
        if (b !== d.base) b.dispose();
      }
    });
  } finally {
    if (own) incr.dispose();
  }
}

function onDevice(t: Tensor, device: string): Tensor {
  return t.device === device ? t : new Tensor(native().to(t.handle, device));
}
