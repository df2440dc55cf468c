/**
 * Hugging Face model folders: find the weights of a model path (a folder with config.json and
 * model.safetensors or shards plus model.safetensors.index.json, a local hub cache folder, or a
 * single file), read them tensor by tensor (sync or over fs.promises), and write folders that
 * transformers loads unchanged. PyTorch pickle checkpoints are refused, never unpickled:
 * unpickling runs arbitrary code.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Tensor } from '../engine/tensor';
import { DType, dtypeSize, isFloat } from '../engine/dtype';
import { SiftError } from '../engine/errors';
import { native } from '../engine/native';
import { writeFileAtomic, writeFileAtomicAsync } from './atomic';
import { AsyncSafetensorsReader, SafetensorsReader, TensorInfo, findDuplicateKey } from './safetensors';
import { env } from '../engine/env';

export const CONFIG_NAME = 'config.json';
export const SAFE_WEIGHTS_NAME = 'model.safetensors';
export const SAFE_WEIGHTS_INDEX_NAME = 'model.safetensors.index.json';
export const GENERATION_CONFIG_NAME = 'generation_config.json';
/** Files that make up a tokenizer in a model folder (the ones that exist are copied on save). */
export const TOKENIZER_FILE_NAMES = [
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'added_tokens.json',
  'vocab.json',
  'merges.txt',
  'vocab.txt',
  'tokenizer.model',
  'spiece.model',
  'sentencepiece.bpe.model',
  'chat_template.jinja',
];

const PICKLE_EXT = /\.(bin|pt|pth|ckpt|pkl|pickle)$/i;
const SHARD_NAME = /^model-(\d+)-of-(\d+)\.safetensors$/;
/** transformers' default max_shard_size ('5GB', decimal as huggingface_hub parses it). */
const DEFAULT_MAX_SHARD = 5e9;

const ST_DTYPE: Record<DType, string> = { f32: 'F32', f16: 'F16', bf16: 'BF16', f64: 'F64', i32: 'I32', i64: 'I64', bool: 'BOOL' };
const TORCH_DTYPE: Partial<Record<DType, string>> = { f32: 'float32', f16: 'float16', bf16: 'bfloat16', f64: 'float64' };

function formatError(msg: string): SiftError {
  return new SiftError('E_FORMAT', msg);
}

function pickleRefusal(file: string): SiftError {
  const dir = path.dirname(file);
  return formatError(
    `${file} is a PyTorch pickle checkpoint; sift-ft does not load pickles (unpickling can run arbitrary code). ` +
      'Convert it to safetensors first, e.g. in Python: from transformers import AutoModel; ' +
      `AutoModel.from_pretrained('${dir}').save_pretrained('${dir}-safetensors', safe_serialization=True)`,
  );
}

function isFile(p: string): boolean {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

function isDir(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function listDir(dir: string): string[] {
  try {
    return fs.readdirSync(dir).sort();
  } catch (e) {
    throw new SiftError('E_IO', `cannot list ${dir}: ${(e as Error).message}`);
  }
}

/** Reads and parses a JSON file that must hold an object, with duplicate keys refused. */
export function readJsonObject(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new SiftError('E_IO', `cannot read ${file}: ${(e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw formatError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw formatError(`${file}: expected a JSON object`);
  const dup = findDuplicateKey(text);
  if (dup !== null) throw formatError(`${file}: key '${dup}' appears twice`);
  return json as Record<string, unknown>;
}

/** The first bytes of a zip (torch.save since 1.6) or a raw pickle (protocol 2 to 5). */
function looksLikePickle(file: string): boolean {
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, 'r');
    const b = Buffer.alloc(9);
    const n = fs.readSync(fd, b, 0, 9, 0);
    if (n >= 4 && b[0] === 0x50 && b[1] === 0x4b && b[2] === 0x03 && b[3] === 0x04) return true;
    // A safetensors header length such as 0x0280 starts with the same two bytes as a pickle: a
    // JSON header right after the length says safetensors.
    if (n === 9 && b[8] === 0x7b && Number(b.readBigUInt64LE(0)) < fs.fstatSync(fd).size) return false;
    return n >= 2 && b[0] === 0x80 && b[1] >= 2 && b[1] <= 5;
  } catch {
    return false;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

// ---------------------------------------------------------------------------------------------
// Resolving a model path

export interface ResolveOptions {
  /** Branch, tag (a file in refs/) or commit hash (a folder in snapshots/) of a hub cache folder; default 'main'. */
  revision?: string;
  /** Hub cache folder searched for 'org/name' ids (default: $HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub). */
  cacheDir?: string;
}

function hubCacheDirs(opts: ResolveOptions): string[] {
  const dirs: string[] = [];
  if (opts.cacheDir) dirs.push(opts.cacheDir);
  const hubCache = env('HF_HUB_CACHE');
  const hfHome = env('HF_HOME');
  const xdgCache = env('XDG_CACHE_HOME');
  if (hubCache) dirs.push(hubCache);
  if (hfHome) dirs.push(path.join(hfHome, 'hub'));
  if (xdgCache) dirs.push(path.join(xdgCache, 'huggingface', 'hub'));
  dirs.push(path.join(os.homedir(), '.cache', 'huggingface', 'hub'));
  return dirs;
}

/** A hub cache repository folder: models--org--name with refs/ and snapshots/. */
function isCacheRepo(dir: string): boolean {
  return isDir(path.join(dir, 'snapshots')) && (isDir(path.join(dir, 'refs')) || path.basename(dir).startsWith('models--'));
}

function resolveSnapshot(repo: string, revision: string | undefined): string {
  const snapshots = path.join(repo, 'snapshots');
  const rev = revision ?? 'main';
  const ref = path.join(repo, 'refs', rev);
  if (!rev.includes('..') && isFile(ref)) {
    const hash = fs.readFileSync(ref, 'utf8').trim();
    const snap = path.join(snapshots, hash);
    if (!/^[0-9a-zA-Z]+$/.test(hash) || !isDir(snap)) {
      throw new SiftError('E_IO', `${ref} points to snapshot '${hash}', which is not in ${snapshots} (incomplete download?)`);
    }
    return snap;
  }
  if (/^[0-9a-zA-Z._-]+$/.test(rev) && isDir(path.join(snapshots, rev))) return path.join(snapshots, rev);
  const all = listDir(snapshots).filter((s) => isDir(path.join(snapshots, s)));
  if (revision === undefined && all.length === 1) return path.join(snapshots, all[0]);
  throw new SiftError('E_IO', `${repo}: no snapshot for revision '${rev}' (refs/${rev} missing; snapshots: ${all.join(', ') || 'none'})`);
}

/**
 * The folder holding a model's files: the path itself, the folder of a file, the snapshot of a
 * hub cache folder (models--org--name), or an 'org/name' id looked up in the local hub cache.
 * Nothing is downloaded.
 */
export function resolveModelDir(p: string, opts: ResolveOptions = {}): string {
  if (!fs.existsSync(p)) {
    if (/^[\w.-]+\/[\w.-]+$/.test(p) && !p.startsWith('.')) {
      const repoName = `models--${p.replace('/', '--')}`;
      for (const cache of hubCacheDirs(opts)) {
        const repo = path.join(cache, repoName);
        if (isDir(repo)) return resolveSnapshot(repo, opts.revision);
      }
      throw new SiftError(
        'E_IO',
        `model '${p}' is not a local path and is not in the hub cache (${hubCacheDirs(opts).join(', ')}); sift-ft downloads nothing`,
      );
    }
    throw new SiftError('E_IO', `model path ${p} does not exist`);
  }
  const abs = path.resolve(p);
  if (isFile(abs)) return path.dirname(abs);
  if (isCacheRepo(abs)) return resolveSnapshot(abs, opts.revision);
  if (opts.revision !== undefined && path.basename(path.dirname(abs)) !== 'snapshots') {
    throw new SiftError('E_ARG', `revision '${opts.revision}' given, but ${abs} is not a hub cache folder`);
  }
  return abs;
}

export interface ResolvedModel {
  /** The folder holding the model's files (a snapshot folder for hub caches). */
  dir: string;
  /** config.json, when present. */
  configPath: string | null;
  /** The safetensors files, in shard order. */
  weightFiles: string[];
  /** model.safetensors.index.json for sharded checkpoints. */
  indexPath: string | null;
  /** Tokenizer files present in the folder. */
  tokenizerFiles: string[];
  generationConfigPath: string | null;
}

function shardsOfIndex(indexPath: string): { files: string[]; weightMap: Map<string, string> } {
  const index = readJsonObject(indexPath);
  const wm = index.weight_map;
  if (wm === null || typeof wm !== 'object' || Array.isArray(wm)) throw formatError(`${indexPath}: missing 'weight_map' object`);
  const dir = path.dirname(indexPath);
  const weightMap = new Map<string, string>();
  const files: string[] = [];
  for (const [name, file] of Object.entries(wm as Record<string, unknown>)) {
    if (typeof file !== 'string') throw formatError(`${indexPath}: weight_map['${name}'] is not a file name`);
    // Shard names are plain names in the same folder: anything else could read outside it.
    if (file !== path.basename(file) || file === '.' || file === '..' || file.includes('\\') || !file.endsWith('.safetensors')) {
      throw formatError(`${indexPath}: weight_map['${name}'] = '${file}' is not a .safetensors file name in the same folder`);
    }
    const full = path.join(dir, file);
    if (!files.includes(full)) {
      if (!isFile(full)) throw formatError(`${indexPath}: shard ${file} (holding '${name}') does not exist (incomplete download?)`);
      files.push(full);
    }
    weightMap.set(name, full);
  }
  if (weightMap.size === 0) throw formatError(`${indexPath}: weight_map is empty`);
  const meta = index.metadata;
  if (meta !== undefined && (meta === null || typeof meta !== 'object' || Array.isArray(meta)))
    throw formatError(`${indexPath}: 'metadata' is not an object`);
  files.sort();
  return { files, weightMap };
}

/**
 * Finds the weights, config and tokenizer files of a model path (see resolveModelDir). Prefers
 * model.safetensors, then the sharded index, then a single *.safetensors file, as transformers does.
 * A folder (or file) with only PyTorch pickles is an E_FORMAT error that says to convert.
 */
export function resolveModelPath(p: string, opts: ResolveOptions = {}): ResolvedModel {
  const dir = resolveModelDir(p, opts);
  const abs = fs.existsSync(p) ? path.resolve(p) : null;
  const present = (name: string): string | null => (isFile(path.join(dir, name)) ? path.join(dir, name) : null);
  const base: Omit<ResolvedModel, 'weightFiles' | 'indexPath'> = {
    dir,
    configPath: present(CONFIG_NAME),
    tokenizerFiles: TOKENIZER_FILE_NAMES.map(present).filter((f): f is string => f !== null),
    generationConfigPath: present(GENERATION_CONFIG_NAME),
  };
  if (abs !== null && isFile(abs)) {
    const name = path.basename(abs);
    if (PICKLE_EXT.test(name) || name === 'pytorch_model.bin.index.json') throw pickleRefusal(abs);
    if (name.endsWith('.safetensors')) return { ...base, weightFiles: [abs], indexPath: null };
    if (name === SAFE_WEIGHTS_INDEX_NAME) return { ...base, weightFiles: shardsOfIndex(abs).files, indexPath: abs };
    if (name !== CONFIG_NAME)
      throw formatError(`${abs}: not a model file (expected a folder, config.json, *.safetensors or ${SAFE_WEIGHTS_INDEX_NAME})`);
  }
  const single = present(SAFE_WEIGHTS_NAME);
  if (single) return { ...base, weightFiles: [single], indexPath: null };
  const index = present(SAFE_WEIGHTS_INDEX_NAME);
  if (index) return { ...base, weightFiles: shardsOfIndex(index).files, indexPath: index };
  const entries = listDir(dir);
  const st = entries.filter((f) => f.endsWith('.safetensors') && !f.startsWith('.') && isFile(path.join(dir, f)));
  if (st.length === 1) return { ...base, weightFiles: [path.join(dir, st[0])], indexPath: null };
  if (st.length > 1) {
    throw formatError(
      `${dir}: several safetensors files (${st.join(', ')}) and no ${SAFE_WEIGHTS_INDEX_NAME} to say how they form one model`,
    );
  }
  const pickle = entries.find((f) => PICKLE_EXT.test(f) || f === 'pytorch_model.bin.index.json');
  if (pickle) throw pickleRefusal(path.join(dir, pickle));
  const other = entries.find((f) => /\.(h5|msgpack|onnx|gguf)$/i.test(f));
  if (other) throw formatError(`${path.join(dir, other)}: only safetensors weights are supported; convert the model to safetensors`);
  throw new SiftError('E_IO', `${dir}: no model weights (${SAFE_WEIGHTS_NAME} or ${SAFE_WEIGHTS_INDEX_NAME})`);
}

/** The parsed config.json of a model path (E_IO when there is none). */
export function loadConfig(p: string, opts: ResolveOptions = {}): Record<string, unknown> {
  const dir = resolveModelDir(p, opts);
  const file = path.join(dir, CONFIG_NAME);
  if (!isFile(file)) throw new SiftError('E_IO', `${dir}: no ${CONFIG_NAME}`);
  return readJsonObject(file);
}

// ---------------------------------------------------------------------------------------------
// Reading state dicts

export interface LoadOptions extends ResolveOptions {
  device?: string;
  /** Convert floating-point tensors to this dtype on load (integer and bool buffers keep theirs). */
  dtype?: DType;
  /** Load only the tensors for which this returns true. */
  filter?: (name: string) => boolean;
}

export interface StateDictEntryInfo extends TensorInfo {
  file: string;
}

function targetDType(info: TensorInfo, dtype: DType | undefined): DType | undefined {
  return dtype && isFloat(info.dtype) && isFloat(dtype) && dtype !== info.dtype ? dtype : undefined;
}

/**
 * Checks the headers of all weight files against each other and the index: each tensor in one
 * file only, and for sharded checkpoints the weight_map naming exactly the tensors each shard holds.
 * Returns the tensor names in reading order (file by file, by offset) with their file.
 */
function crossCheck(
  model: ResolvedModel,
  headers: { path: string; tensors: Map<string, TensorInfo> }[],
): { order: string[]; where: Map<string, number> } {
  const where = new Map<string, number>();
  const order: string[] = [];
  headers.forEach((h, i) => {
    const infos = [...h.tensors.values()].sort((a, b) => a.begin - b.begin);
    for (const t of infos) {
      const prev = where.get(t.name);
      if (prev !== undefined) throw formatError(`tensor '${t.name}' is in both ${headers[prev].path} and ${h.path}`);
      where.set(t.name, i);
      order.push(t.name);
    }
  });
  if (model.indexPath) {
    const { weightMap } = shardsOfIndex(model.indexPath);
    for (const [name, file] of weightMap) {
      const i = where.get(name);
      if (i === undefined)
        throw formatError(`${model.indexPath}: tensor '${name}' is mapped to ${path.basename(file)}, which does not hold it`);
      if (headers[i].path !== file)
        throw formatError(
          `${model.indexPath}: tensor '${name}' is mapped to ${path.basename(file)} but is in ${path.basename(headers[i].path)}`,
        );
    }
    for (const name of order) {
      if (!weightMap.has(name))
        throw formatError(
          `${model.indexPath}: tensor '${name}' of ${path.basename(headers[where.get(name)!].path)} is missing from weight_map`,
        );
    }
  }
  return { order, where };
}

/** What both readers need of a per-file reader. */
interface FileReader {
  readonly path: string;
  readonly tensors: Map<string, TensorInfo>;
  info(name: string): TensorInfo;
}

/** The cross-checked index over a model's weight files, shared by the sync and async readers. */
abstract class StateDictIndex<R extends FileReader> {
  readonly model: ResolvedModel;
  protected readonly readers: R[];
  protected readonly where: Map<string, number>;
  protected readonly order: string[];

  protected constructor(model: ResolvedModel, readers: R[]) {
    this.model = model;
    this.readers = readers;
    const { order, where } = crossCheck(model, readers);
    this.order = order;
    this.where = where;
  }

  /** Tensor names in reading order (file by file, by offset). */
  names(): string[] {
    return [...this.order];
  }

  has(name: string): boolean {
    return this.where.has(name);
  }

  info(name: string): StateDictEntryInfo {
    return { ...this.readerOf(name).info(name), file: this.readerOf(name).path };
  }

  /** Total bytes of tensor data as stored. */
  get totalBytes(): number {
    let n = 0;
    for (const r of this.readers) for (const t of r.tensors.values()) n += t.end - t.begin;
    return n;
  }

  protected readerOf(name: string): R {
    const i = this.where.get(name);
    if (i === undefined) throw new SiftError('E_ARG', `${this.model.dir}: no tensor named '${name}'`);
    return this.readers[i];
  }
}

/** Lazy, validated access to every tensor of a model path. Close it when done. */
export class StateDictReader extends StateDictIndex<SafetensorsReader> {
  static open(p: string | ResolvedModel, opts: ResolveOptions = {}): StateDictReader {
    const model = typeof p === 'string' ? resolveModelPath(p, opts) : p;
    const readers: SafetensorsReader[] = [];
    try {
      for (const f of model.weightFiles) {
        if (looksLikePickle(f)) throw pickleRefusal(f);
        readers.push(SafetensorsReader.open(f));
      }
      return new StateDictReader(model, readers);
    } catch (e) {
      for (const r of readers) r.close();
      throw e;
    }
  }

  tensor(name: string, opts: { device?: string; dtype?: DType } = {}): Tensor {
    const info = this.info(name);
    const t = this.readerOf(name).tensor(name, { device: opts.device, dtype: targetDType(info, opts.dtype) });
    t.name = name;
    return t;
  }

  /** Yields [name, tensor] one at a time; the caller owns (and disposes) each tensor. */
  *entries(opts: { device?: string; dtype?: DType; filter?: (name: string) => boolean } = {}): Generator<[string, Tensor]> {
    for (const name of this.order) {
      if (opts.filter && !opts.filter(name)) continue;
      yield [name, this.tensor(name, opts)];
    }
  }

  close(): void {
    for (const r of this.readers) r.close();
  }
}

/** The async twin of StateDictReader: file reads go through fs.promises. */
export class AsyncStateDictReader extends StateDictIndex<AsyncSafetensorsReader> {
  static async open(p: string | ResolvedModel, opts: ResolveOptions = {}): Promise<AsyncStateDictReader> {
    const model = typeof p === 'string' ? resolveModelPath(p, opts) : p;
    const readers: AsyncSafetensorsReader[] = [];
    try {
      for (const f of model.weightFiles) {
        if (looksLikePickle(f)) throw pickleRefusal(f);
        readers.push(await AsyncSafetensorsReader.open(f));
      }
      return new AsyncStateDictReader(model, readers);
    } catch (e) {
      await Promise.all(readers.map((r) => r.close()));
      throw e;
    }
  }

  async tensor(name: string, opts: { device?: string; dtype?: DType } = {}): Promise<Tensor> {
    const info = this.info(name);
    const t = await this.readerOf(name).tensor(name, { device: opts.device, dtype: targetDType(info, opts.dtype) });
    t.name = name;
    return t;
  }

  async *entries(opts: { device?: string; dtype?: DType; filter?: (name: string) => boolean } = {}): AsyncGenerator<[string, Tensor]> {
    for (const name of this.order) {
      if (opts.filter && !opts.filter(name)) continue;
      yield [name, await this.tensor(name, opts)];
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.readers.map((r) => r.close()));
  }
}

/** Yields every tensor of a model path one at a time (files are closed when the loop ends). */
export function* iterStateDict(p: string, opts: LoadOptions = {}): Generator<[string, Tensor]> {
  const r = StateDictReader.open(p, opts);
  try {
    yield* r.entries(opts);
  } finally {
    r.close();
  }
}

export async function* iterStateDictAsync(p: string, opts: LoadOptions = {}): AsyncGenerator<[string, Tensor]> {
  const r = await AsyncStateDictReader.open(p, opts);
  try {
    yield* r.entries(opts);
  } finally {
    await r.close();
  }
}

/** Every tensor of a model path, keyed by its state-dict name; on failure nothing is leaked. */
export function loadStateDict(p: string, opts: LoadOptions = {}): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  try {
    for (const [name, t] of iterStateDict(p, opts)) out.set(name, t);
    return out;
  } catch (e) {
    for (const t of out.values()) t.dispose();
    throw e;
  }
}

export async function loadStateDictAsync(p: string, opts: LoadOptions = {}): Promise<Map<string, Tensor>> {
  const out = new Map<string, Tensor>();
  try {
    for await (const [name, t] of iterStateDictAsync(p, opts)) out.set(name, t);
    return out;
  } catch (e) {
    for (const t of out.values()) t.dispose();
    throw e;
  }
}

/** config.json, the state dict and the resolved files of a model path together. */
export function loadModelFolder(
  p: string,
  opts: LoadOptions = {},
): { config: Record<string, unknown>; stateDict: Map<string, Tensor>; model: ResolvedModel } {
  const model = resolveModelPath(p, opts);
  if (!model.configPath) throw new SiftError('E_IO', `${model.dir}: no ${CONFIG_NAME}`);
  const config = readJsonObject(model.configPath);
  const stateDict = new Map<string, Tensor>();
  const r = StateDictReader.open(model);
  try {
    for (const [name, t] of r.entries(opts)) stateDict.set(name, t);
  } catch (e) {
    for (const t of stateDict.values()) t.dispose();
    throw e;
  } finally {
    r.close();
  }
  return { config, stateDict, model };
}

// ---------------------------------------------------------------------------------------------
// Saving

export type StateDictInput = Map<string, Tensor> | Iterable<[string, Tensor]> | Record<string, Tensor>;

export interface SaveModelOptions {
  /** Written as config.json (pretty, sorted keys, as transformers does); torch_dtype is filled in when missing. */
  config: Record<string, unknown>;
  stateDict: StateDictInput;
  /**
   * Tokenizer (or other) files to put beside the weights: paths to copy (a folder copies the
   * tokenizer files it holds), or a map from file name to contents.
   */
  tokenizerFiles?: string[] | string | Record<string, string | Uint8Array>;
  /** Extra files by name (e.g. generation_config.json as an object, written as JSON). */
  extraFiles?: Record<string, string | Uint8Array | Record<string, unknown>>;
  /** Shard above this many bytes (number or '5GB', '200MB', '1GiB'...); default '5GB' as transformers. */
  maxShardSize?: number | string;
  /** Cast floating-point tensors to this dtype as they are written. */
  dtype?: DType;
  /** Extra safetensors __metadata__ entries (format: 'pt' is always written: transformers requires it). */
  metadata?: Record<string, string>;
  /** Write a tensor that appears under several names (tied weights) once, under its first name (default true). */
  dedupeTied?: boolean;
}

export interface SavedModel {
  dir: string;
  /** Files written, by name. */
  files: string[];
  weightFiles: string[];
  /** Bytes of tensor data written. */
  totalSize: number;
  /** Names left out as duplicates of a tied tensor: [dropped, kept]. */
  tied: [string, string][];
}

/** Parses '5GB', '500MB', '1GiB', '100kB' or a plain number of bytes. */
export function parseSize(s: number | string): number {
  if (typeof s === 'number') {
    if (!(s > 0) || !Number.isFinite(s)) throw new SiftError('E_ARG', `invalid size ${s}`);
    return Math.floor(s);
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$/i.exec(s);
  if (!m) throw new SiftError('E_ARG', `invalid size '${s}' (expected e.g. '5GB', '200MB')`);
  const unit = m[2].toLowerCase().replace(/b$/, '');
  const pow = { '': 0, k: 1, m: 2, g: 3, t: 4, ki: 1, mi: 2, gi: 3, ti: 4 }[unit];
  if (pow === undefined) throw new SiftError('E_ARG', `invalid size unit in '${s}'`);
  const n = Number(m[1]) * (unit.endsWith('i') ? 1024 : 1000) ** pow;
  return parseSize(n);
}

/** JSON with sorted keys and 2-space indent plus a newline, as transformers writes configs and indexes. */
export function prettyJson(obj: unknown): string {
  const sort = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sort);
    if (v !== null && typeof v === 'object') {
      const o: Record<string, unknown> = {};
      for (const k of Object.keys(v as object).sort()) o[k] = sort((v as Record<string, unknown>)[k]);
      return o;
    }
    return v;
  };
  return JSON.stringify(sort(obj), null, 2) + '\n';
}

interface PlannedTensor {
  name: string;
  tensor: Tensor;
  dtype: DType;
  shape: number[];
  bytes: number;
}

interface PlannedShard {
  name: string;
  header: Uint8Array[];
  tensors: PlannedTensor[];
}

type PlannedFile = { name: string; shard: PlannedShard } | { name: string; data: string | Uint8Array } | { name: string; copyFrom: string };

function entriesOf(sd: StateDictInput): [string, Tensor][] {
  if (sd instanceof Map) return [...sd.entries()];
  if (typeof (sd as Iterable<[string, Tensor]>)[Symbol.iterator] === 'function') return [...(sd as Iterable<[string, Tensor]>)];
  return Object.entries(sd as Record<string, Tensor>);
}

/**
 * The safetensors header for tensors laid out in the given order, padded with spaces to 8 bytes
 * so that data starts aligned.
 */
function shardHeader(tensors: PlannedTensor[], metadata: Record<string, string>): Uint8Array[] {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let off = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: ST_DTYPE[t.dtype], shape: t.shape, data_offsets: [off, off + t.bytes] };
    off += t.bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const body = Buffer.from(json, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(body.length), 0);
  return [len, body];
}

function planSave(opts: SaveModelOptions): { files: PlannedFile[]; weightFiles: string[]; totalSize: number; tied: [string, string][] } {
  if (opts.config === null || typeof opts.config !== 'object' || Array.isArray(opts.config))
    throw new SiftError('E_ARG', 'saveModelFolder: config must be an object');
  const seen = new Set<string>();
  const byHandle = new Map<unknown, string>();
  const tied: [string, string][] = [];
  const planned: PlannedTensor[] = [];
  for (const [name, t] of entriesOf(opts.stateDict)) {
    if (typeof name !== 'string' || name.length === 0 || name === '__metadata__')
      throw new SiftError('E_ARG', `saveModelFolder: invalid tensor name '${name}'`);
    if (seen.has(name)) throw new SiftError('E_ARG', `saveModelFolder: tensor name '${name}' appears twice`);
    if (!(t instanceof Tensor)) throw new SiftError('E_ARG', `saveModelFolder: '${name}' is not a Tensor`);
    seen.add(name);
    const handle = t.handle; // throws E_DISPOSED early rather than halfway through a write
    if (opts.dedupeTied !== false) {
      const kept = byHandle.get(handle) ?? byHandle.get(t);
      if (kept !== undefined) {
        tied.push([name, kept]);
        continue;
      }
      byHandle.set(handle, name);
      byHandle.set(t, name);
    }
    const dtype = opts.dtype && isFloat(t.dtype) && isFloat(opts.dtype) ? opts.dtype : t.dtype;
    const shape = t.shape;
    planned.push({ name, tensor: t, dtype, shape, bytes: shape.reduce((a, b) => a * b, 1) * dtypeSize(dtype) });
  }
  // Largest element size first keeps every tensor's data aligned to its element size.
  const ordered = planned
    .map((p, i) => ({ p, i }))
    .sort((a, b) => dtypeSize(b.p.dtype) - dtypeSize(a.p.dtype) || a.i - b.i)
    .map((x) => x.p);
  const maxShard = parseSize(opts.maxShardSize ?? DEFAULT_MAX_SHARD);
  const groups: PlannedTensor[][] = [];
  let cur: PlannedTensor[] = [];
  let curSize = 0;
  for (const t of ordered) {
    if (cur.length > 0 && curSize + t.bytes > maxShard) {
      groups.push(cur);
      cur = [];
      curSize = 0;
    }
    cur.push(t);
    curSize += t.bytes;
  }
  groups.push(cur);
  const metadata = { ...(opts.metadata ?? {}), format: 'pt' };
  const totalSize = planned.reduce((a, t) => a + t.bytes, 0);
  const files: PlannedFile[] = [];
  const weightFiles: string[] = [];
  if (groups.length === 1) {
    files.push({
      name: SAFE_WEIGHTS_NAME,
      shard: { name: SAFE_WEIGHTS_NAME, header: shardHeader(groups[0], metadata), tensors: groups[0] },
    });
    weightFiles.push(SAFE_WEIGHTS_NAME);
  } else {
    const n = groups.length;
    const pad = (k: number): string => String(k).padStart(5, '0');
    const weightMap: Record<string, string> = {};
    groups.forEach((g, k) => {
      const name = `model-${pad(k + 1)}-of-${pad(n)}.safetensors`;
      for (const t of g) weightMap[t.name] = name;
      files.push({ name, shard: { name, header: shardHeader(g, metadata), tensors: g } });
      weightFiles.push(name);
    });
    // The index goes after the shards: it is the entry point, so it appears only once they exist.
    files.push({ name: SAFE_WEIGHTS_INDEX_NAME, data: prettyJson({ metadata: { total_size: totalSize }, weight_map: weightMap }) });
  }
  const names = new Set(files.map((f) => f.name));
  const add = (f: PlannedFile): void => {
    if (f.name !== path.basename(f.name) || f.name.startsWith('.') || f.name.includes('\\'))
      throw new SiftError('E_ARG', `saveModelFolder: '${f.name}' is not a plain file name`);
    if (names.has(f.name) || f.name === CONFIG_NAME)
      throw new SiftError('E_ARG', `saveModelFolder: file '${f.name}' would be written twice`);
    names.add(f.name);
    files.push(f);
  };
  const tf = opts.tokenizerFiles;
  if (typeof tf === 'string' || Array.isArray(tf)) {
    for (const src of typeof tf === 'string' ? [tf] : tf) {
      if (isDir(src)) {
        for (const name of TOKENIZER_FILE_NAMES) if (isFile(path.join(src, name))) add({ name, copyFrom: path.join(src, name) });
      } else if (isFile(src)) {
        add({ name: path.basename(src), copyFrom: src });
      } else {
        throw new SiftError('E_IO', `saveModelFolder: tokenizer file ${src} does not exist`);
      }
    }
  } else if (tf) {
    for (const [name, data] of Object.entries(tf)) add({ name, data });
  }
  for (const [name, data] of Object.entries(opts.extraFiles ?? {})) {
    add({ name, data: typeof data === 'string' || data instanceof Uint8Array ? data : prettyJson(data) });
  }
  const config = { ...opts.config };
  if (config.torch_dtype === undefined) {
    const first = planned.find((t) => isFloat(t.dtype));
    if (first && TORCH_DTYPE[first.dtype]) config.torch_dtype = TORCH_DTYPE[first.dtype];
  }
  // config.json last: in an existing folder, a complete config marks a complete save.
  files.push({ name: CONFIG_NAME, data: prettyJson(config) });
  return { files, weightFiles, totalSize, tied };
}

function tensorBytes(t: PlannedTensor): Uint8Array {
  if (t.dtype === t.tensor.dtype) return new Uint8Array(native().toBuffer(t.tensor.handle));
  const c = native().cast(t.tensor.handle, t.dtype);
  try {
    return new Uint8Array(native().toBuffer(c));
  } finally {
    native().dispose(c);
  }
}

async function tensorBytesAsync(t: PlannedTensor): Promise<Uint8Array> {
  if (t.dtype === t.tensor.dtype) return new Uint8Array(await native().toBufferAsync(t.tensor.handle));
  const c = native().cast(t.tensor.handle, t.dtype);
  try {
    return new Uint8Array(await native().toBufferAsync(c));
  } finally {
    native().dispose(c);
  }
}

function checkSize(t: PlannedTensor, b: Uint8Array): Uint8Array {
  if (b.byteLength !== t.bytes)
    throw new SiftError('E_INTERNAL', `saveModelFolder: '${t.name}' gave ${b.byteLength} bytes, expected ${t.bytes}`);
  return b;
}

/** Streams a shard: header, then one tensor's bytes at a time (never the whole shard in memory). */
function* shardChunks(s: PlannedShard): Generator<Uint8Array> {
  yield* s.header;
  for (const t of s.tensors) yield checkSize(t, tensorBytes(t));
}

async function* shardChunksAsync(s: PlannedShard): AsyncGenerator<Uint8Array> {
  yield* s.header;
  for (const t of s.tensors) yield checkSize(t, await tensorBytesAsync(t));
}

/** Weight files of an earlier save that the new one does not replace (they would shadow or confuse it). */
function staleWeightFiles(dir: string, written: Set<string>): string[] {
  let entries: string[];
  try {
    entries = fs.readdirSync(dir);
  } catch {
    return [];
  }
  return entries.filter((f) => !written.has(f) && (f === SAFE_WEIGHTS_NAME || f === SAFE_WEIGHTS_INDEX_NAME || SHARD_NAME.test(f)));
}

function tmpDirFor(dir: string): string {
  return path.join(path.dirname(dir), `.${path.basename(dir)}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 10)}`);
}

/**
 * Writes a model folder that transformers' from_pretrained loads unchanged: config.json,
 * model.safetensors (or model-0000k-of-0000n.safetensors shards and the index above maxShardSize)
 * with the {"format": "pt"} metadata, and the tokenizer files. A new folder is built under a
 * temporary name and renamed into place whole; in an existing folder every file is replaced
 * atomically (shards before their index, config.json last) and stale weight files are removed.
 */
export function saveModelFolder(dir: string, opts: SaveModelOptions): SavedModel {
  const plan = planSave(opts);
  const target = path.resolve(dir);
  const fresh = !fs.existsSync(target);
  const work = fresh ? tmpDirFor(target) : target;
  try {
    if (fresh) fs.mkdirSync(work, { recursive: true });
    for (const f of plan.files) {
      const dest = path.join(work, f.name);
      if ('shard' in f) writeFileAtomic(dest, shardChunks(f.shard));
      else if ('data' in f) writeFileAtomic(dest, [f.data]);
      else writeFileAtomic(dest, [fs.readFileSync(f.copyFrom)]);
    }
    if (fresh) fs.renameSync(work, target);
  } catch (e) {
    if (fresh) fs.rmSync(work, { recursive: true, force: true });
    if (e instanceof SiftError) throw e;
    throw new SiftError('E_IO', `cannot save model to ${target}: ${(e as Error).message}`);
  }
  const written = new Set(plan.files.map((f) => f.name));
  for (const f of staleWeightFiles(target, written)) fs.rmSync(path.join(target, f), { force: true });
  return { dir: target, files: [...written], weightFiles: plan.weightFiles, totalSize: plan.totalSize, tied: plan.tied };
}

/** saveModelFolder over fs.promises and asynchronous device-to-host copies. */
export async function saveModelFolderAsync(dir: string, opts: SaveModelOptions): Promise<SavedModel> {
  const plan = planSave(opts);
  const target = path.resolve(dir);
  const fresh = !fs.existsSync(target);
  const work = fresh ? tmpDirFor(target) : target;
  try {
    if (fresh) await fs.promises.mkdir(work, { recursive: true });
    for (const f of plan.files) {
      const dest = path.join(work, f.name);
      if ('shard' in f) await writeFileAtomicAsync(dest, shardChunksAsync(f.shard));
      else if ('data' in f) await writeFileAtomicAsync(dest, [f.data]);
      else await writeFileAtomicAsync(dest, [await fs.promises.readFile(f.copyFrom)]);
    }
    if (fresh) await fs.promises.rename(work, target);
  } catch (e) {
    if (fresh) await fs.promises.rm(work, { recursive: true, force: true });
    if (e instanceof SiftError) throw e;
    throw new SiftError('E_IO', `cannot save model to ${target}: ${(e as Error).message}`);
  }
  const written = new Set(plan.files.map((f) => f.name));
  for (const f of staleWeightFiles(target, written)) await fs.promises.rm(path.join(target, f), { force: true });
  return { dir: target, files: [...written], weightFiles: plan.weightFiles, totalSize: plan.totalSize, tied: plan.tied };
}
