import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { tensor, SiftError, Tensor } from '../../lib';
import { native } from '../../lib/engine/native';
import type { DType } from '../../lib/engine/dtype';
import { saveSafetensors, SafetensorsReader } from '../../lib/io/safetensors';
import {
  loadStateDict,
  loadStateDictAsync,
  loadModelFolder,
  loadConfig,
  iterStateDict,
  iterStateDictAsync,
  resolveModelPath,
  resolveModelDir,
  saveModelFolder,
  saveModelFolderAsync,
  StateDictReader,
  parseSize,
  prettyJson,
} from '../../lib/io/hf';
import { createByteTokenizer, loadTokenizer } from '../../lib/tokenizers';
import { describeCuda } from '../helpers/gradcheck';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-hf-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
let n = 0;
const fresh = (name: string): string => path.join(root, `${name}-${n++}`);

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SiftError);
    return (e as SiftError).code;
  }
  return undefined;
}

async function codeOfAsync(fn: () => Promise<unknown>): Promise<string | undefined> {
  try {
    await fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SiftError);
    return (e as SiftError).code;
  }
  return undefined;
}

const bytes = (t: Tensor): Buffer => Buffer.from(native().toBuffer(t.handle));

function allDtypes(): [string, Tensor][] {
  return [
    [
      'model.embed.weight',
      tensor(
        [
          [1.5, -2, 3e-8],
          [0.1, 0.2, 0.3],
        ],
        undefined,
        { dtype: 'f32' },
      ),
    ],
    ['model.layers.0.attn.q_proj.weight', tensor([0.1, 65504, -0.5, 1e-7, 3], [5], { dtype: 'f16' })],
    [
      'model.layers.0.mlp.up.weight',
      tensor(
        [
          [0.1, 2],
          [3, -4],
          [1e30, -1e-30],
        ],
        undefined,
        { dtype: 'bf16' },
      ),
    ],
    ['model.norm.eps', tensor([Math.PI, -1e300], [2], { dtype: 'f64' })],
    ['model.counts', tensor([1, -2, 2 ** 30], [3], { dtype: 'i32' })],
    ['model.position_ids', tensor([2 ** 40, -1, 0], [1, 3], { dtype: 'i64' })],
    ['model.mask', tensor([1, 0, 1], [3], { dtype: 'bool' })],
    ['model.empty', tensor([], [0, 4], { dtype: 'f32' })],
    ['model.scalar', tensor(7, [], { dtype: 'f32' })],
  ];
}

const config = { model_type: 'llama', hidden_size: 3, architectures: ['LlamaForCausalLM'], rope_theta: 10000 };

function expectSame(got: Map<string, Tensor>, want: [string, Tensor][]): void {
  expect([...got.keys()].sort()).toEqual(want.map(([k]) => k).sort());
  for (const [name, t] of want) {
    const u = got.get(name)!;
    expect(`${name} ${u.dtype} [${u.shape}]`).toBe(`${name} ${t.dtype} [${t.shape}]`);
    expect(bytes(u).equals(bytes(t))).toBe(true);
  }
}

describe('saving and loading model folders', () => {
  test('round trip is bit-exact for every dtype; files are what transformers writes', async () => {
    const sd = allDtypes();
    const dir = fresh('single');
    const saved = saveModelFolder(dir, { config, stateDict: sd });
    expect(saved.weightFiles).toEqual(['model.safetensors']);
    expect(fs.readdirSync(dir).sort()).toEqual(['config.json', 'model.safetensors']);
    // config.json: pretty, sorted keys, trailing newline, torch_dtype filled in from the weights.
    const cfgText = fs.readFileSync(path.join(dir, 'config.json'), 'utf8');
    expect(cfgText).toBe(prettyJson({ ...config, torch_dtype: 'float32' }));
    expect(cfgText.indexOf('"architectures"')).toBeLessThan(cfgText.indexOf('"model_type"'));
    // safetensors: {"format": "pt"} metadata, 8-byte aligned header, each tensor aligned to its element size.
    const r = SafetensorsReader.open(path.join(dir, 'model.safetensors'));
    expect(r.metadata).toEqual({ format: 'pt' });
    const sizes: Record<string, number> = { f64: 8, i64: 8, f32: 4, i32: 4, f16: 2, bf16: 2, bool: 1 };
    for (const t of r.tensors.values()) expect(t.begin % sizes[t.dtype]).toBe(0);
    r.close();
    expect(Number(fs.readFileSync(path.join(dir, 'model.safetensors')).readBigUInt64LE(0)) % 8).toBe(0);

    expectSame(loadStateDict(dir), sd);
    expectSame(await loadStateDictAsync(dir), sd);
    const { config: cfg, stateDict, model } = loadModelFolder(dir);
    expect(cfg.rope_theta).toBe(10000);
    expect(model.indexPath).toBeNull();
    expectSame(stateDict, sd);
    // A file path works too; tensors carry their state-dict names.
    const viaFile = loadStateDict(path.join(dir, 'model.safetensors'));
    expect(viaFile.get('model.mask')!.name).toBe('model.mask');
    expect(loadConfig(path.join(dir, 'config.json')).model_type).toBe('llama');
  });

  test('async save gives identical files', async () => {
    const sd = allDtypes();
    const a = fresh('sync');
    const b = fresh('async');
    saveModelFolder(a, { config, stateDict: sd, maxShardSize: 40 });
    await saveModelFolderAsync(b, { config, stateDict: sd, maxShardSize: 40 });
    const files = fs.readdirSync(a).sort();
    expect(fs.readdirSync(b).sort()).toEqual(files);
    for (const f of files) expect(fs.readFileSync(path.join(b, f)).equals(fs.readFileSync(path.join(a, f)))).toBe(true);
  });

  test('dtype conversion on load applies to floating-point tensors only', () => {
    const dir = fresh('conv');
    saveModelFolder(dir, { config, stateDict: allDtypes() });
    for (const dtype of ['bf16', 'f16', 'f64'] as DType[]) {
      const sd = loadStateDict(dir, { dtype });
      expect(sd.get('model.embed.weight')!.dtype).toBe(dtype);
      expect(sd.get('model.norm.eps')!.dtype).toBe(dtype);
      expect(sd.get('model.position_ids')!.dtype).toBe('i64');
      expect(sd.get('model.mask')!.dtype).toBe('bool');
      expect(Array.from(sd.get('model.embed.weight')!.cast('f32').toArray() as Float32Array)[0]).toBe(1.5);
    }
    // Saving can cast too; torch_dtype follows.
    const half = fresh('half');
    saveModelFolder(half, { config, stateDict: allDtypes(), dtype: 'bf16' });
    expect(JSON.parse(fs.readFileSync(path.join(half, 'config.json'), 'utf8')).torch_dtype).toBe('bfloat16');
    const sd = loadStateDict(half);
    expect(sd.get('model.embed.weight')!.dtype).toBe('bf16');
    expect(sd.get('model.counts')!.dtype).toBe('i32');
    // A filter loads a subset.
    expect([...loadStateDict(dir, { filter: (k) => k.includes('layers') }).keys()].sort()).toEqual([
      'model.layers.0.attn.q_proj.weight',
      'model.layers.0.mlp.up.weight',
    ]);
  });

  test('tied weights are written once', () => {
    const wte = tensor(
      [
        [1, 2],
        [3, 4],
      ],
      undefined,
      { dtype: 'f32' },
    );
    const dir = fresh('tied');
    const saved = saveModelFolder(dir, {
      config,
      stateDict: [
        ['transformer.wte.weight', wte],
        ['lm_head.weight', wte],
        ['b', tensor([1], [1])],
      ],
    });
    expect(saved.tied).toEqual([['lm_head.weight', 'transformer.wte.weight']]);
    expect([...loadStateDict(dir).keys()].sort()).toEqual(['b', 'transformer.wte.weight']);
    const both = fresh('tied-kept');
    saveModelFolder(both, {
      config,
      stateDict: [
        ['transformer.wte.weight', wte],
        ['lm_head.weight', wte],
      ],
      dedupeTied: false,
    });
    expect(loadStateDict(both).size).toBe(2);
  });

  test('tokenizer files are copied along and load back', () => {
    const tok = createByteTokenizer([], { addEosToken: true });
    const tokDir = fresh('tok');
    tok.save(tokDir);
    const a = fresh('with-tok-dir');
    saveModelFolder(a, {
      config,
      stateDict: allDtypes(),
      tokenizerFiles: tokDir,
      extraFiles: { 'generation_config.json': { eos_token_id: 256 } },
    });
    expect(fs.readdirSync(a).sort()).toEqual([
      'config.json',
      'generation_config.json',
      'model.safetensors',
      'tokenizer.json',
      'tokenizer_config.json',
    ]);
    expect(loadTokenizer(a).encode('hi').inputIds).toEqual(tok.encode('hi').inputIds);
    expect(resolveModelPath(a).tokenizerFiles.map((f) => path.basename(f))).toEqual(['tokenizer.json', 'tokenizer_config.json']);
    expect(resolveModelPath(a).generationConfigPath).toBe(path.join(a, 'generation_config.json'));
    const b = fresh('with-tok-map');
    saveModelFolder(b, { config, stateDict: allDtypes(), tokenizerFiles: tok.toFiles() });
    expect(loadTokenizer(b).encode('hi').inputIds).toEqual(tok.encode('hi').inputIds);
    const c = fresh('with-tok-list');
    saveModelFolder(c, { config, stateDict: allDtypes(), tokenizerFiles: [path.join(tokDir, 'tokenizer.json')] });
    expect(fs.existsSync(path.join(c, 'tokenizer.json'))).toBe(true);
    expect(codeOf(() => saveModelFolder(fresh('bad'), { config, stateDict: allDtypes(), tokenizerFiles: { '../evil.json': '{}' } }))).toBe(
      'E_ARG',
    );
    expect(
      codeOf(() => saveModelFolder(fresh('bad'), { config, stateDict: allDtypes(), tokenizerFiles: [path.join(root, 'nope.json')] })),
    ).toBe('E_IO');
  });

  test('invalid save arguments', () => {
    const t = tensor([1], [1]);
    expect(
      codeOf(() =>
        saveModelFolder(fresh('x'), {
          config,
          stateDict: [
            ['a', t],
            ['a', t],
          ],
          dedupeTied: false,
        }),
      ),
    ).toBe('E_ARG');
    expect(codeOf(() => saveModelFolder(fresh('x'), { config, stateDict: [['__metadata__', t]] }))).toBe('E_ARG');
    expect(codeOf(() => saveModelFolder(fresh('x'), { config: null as never, stateDict: [] }))).toBe('E_ARG');
    const gone = tensor([1], [1]);
    gone.dispose();
    expect(codeOf(() => saveModelFolder(fresh('x'), { config, stateDict: { gone } }))).toBe('E_DISPOSED');
    expect(parseSize('5GB')).toBe(5e9);
    expect(parseSize('200MB')).toBe(2e8);
    expect(parseSize('1GiB')).toBe(2 ** 30);
    expect(parseSize('10kB')).toBe(1e4);
    expect(parseSize(123)).toBe(123);
    expect(codeOf(() => parseSize('lots'))).toBe('E_ARG');
    expect(codeOf(() => parseSize(0))).toBe('E_ARG');
  });
});

describe('sharded checkpoints', () => {
  test('shards above maxShardSize with the index transformers writes', async () => {
    const sd = allDtypes();
    const dir = fresh('sharded');
    const saved = saveModelFolder(dir, { config, stateDict: sd, maxShardSize: 32 });
    const shards = saved.weightFiles;
    expect(shards.length).toBeGreaterThan(2);
    shards.forEach((f, i) =>
      expect(f).toBe(`model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`),
    );
    const index = JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8'));
    expect(index.metadata.total_size).toBe(saved.totalSize);
    expect(Object.keys(index.weight_map)).toEqual(sd.map(([k]) => k).sort());
    expect(new Set(Object.values(index.weight_map))).toEqual(new Set(shards));
    // Each shard holds at most the limit unless a single tensor is bigger.
    for (const f of shards) {
      const r = SafetensorsReader.open(path.join(dir, f));
      const size = [...r.tensors.values()].reduce((a, t) => a + t.end - t.begin, 0);
      expect(size <= 32 || r.tensors.size === 1).toBe(true);
      expect(r.metadata.format).toBe('pt');
      r.close();
    }
    expectSame(loadStateDict(dir), sd);
    expectSame(await loadStateDictAsync(dir), sd);
    expectSame(loadStateDict(path.join(dir, 'model.safetensors.index.json')), sd);
    // Streaming: one tensor at a time, in file order.
    const names: string[] = [];
    for (const [name, t] of iterStateDict(dir)) {
      names.push(name);
      t.dispose();
    }
    for await (const [name, t] of iterStateDictAsync(dir)) {
      expect(name).toBe(names.shift());
      t.dispose();
    }
    const r = StateDictReader.open(dir);
    expect(r.totalBytes).toBe(saved.totalSize);
    expect(r.info('model.mask').file).toBe(path.join(dir, index.weight_map['model.mask']));
    expect(codeOf(() => r.info('nope'))).toBe('E_ARG');
    r.close();
  });

  test('the index is validated against the shards', () => {
    const make = (): { dir: string; index: { metadata: unknown; weight_map: Record<string, string> } } => {
      const dir = fresh('badindex');
      saveModelFolder(dir, { config, stateDict: allDtypes(), maxShardSize: 32 });
      return { dir, index: JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8')) };
    };
    const write = (dir: string, index: unknown): void =>
      fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), typeof index === 'string' ? index : JSON.stringify(index));
    const expectFormat = (dir: string, what: RegExp): void => {
      try {
        loadStateDict(dir);
        throw new Error('expected a failure');
      } catch (e) {
        expect((e as SiftError).code).toBe('E_FORMAT');
        expect((e as Error).message).toMatch(what);
      }
    };
    {
      const { dir, index } = make();
      fs.rmSync(path.join(dir, Object.values(index.weight_map)[0]));
      expectFormat(dir, /does not exist/);
    }
    {
      const { dir, index } = make();
      const files = [...new Set(Object.values(index.weight_map))];
      const name = Object.keys(index.weight_map).find((k) => index.weight_map[k] === files[0])!;
      index.weight_map[name] = files[1];
      write(dir, index);
      expectFormat(dir, new RegExp(`'${name.replace(/\./g, '\\.')}'`));
    }
    {
      const { dir, index } = make();
      delete index.weight_map['model.mask'];
      write(dir, index);
      expectFormat(dir, /missing from weight_map/);
    }
    {
      const { dir, index } = make();
      index.weight_map['model.ghost'] = Object.values(index.weight_map)[0];
      write(dir, index);
      expectFormat(dir, /does not hold it/);
    }
    {
      const { dir, index } = make();
      index.weight_map['model.mask'] = '../other/model.safetensors';
      write(dir, index);
      expectFormat(dir, /same folder/);
    }
    {
      const { dir, index } = make();
      const text = JSON.stringify(index);
      write(dir, text.replace('"weight_map":{', `"weight_map":{"model.mask":${JSON.stringify(index.weight_map['model.mask'])},`));
      expectFormat(dir, /twice/);
    }
    {
      const { dir } = make();
      write(dir, { metadata: {}, weight_map: [] });
      expectFormat(dir, /weight_map/);
      write(dir, '{"weight_map": ');
      expectFormat(dir, /JSON/);
    }
    {
      // The same tensor in two shards.
      const { dir, index } = make();
      const files = [...new Set(Object.values(index.weight_map))];
      saveSafetensors(path.join(dir, files[1]), [
        ['model.mask', tensor([1, 0, 1], [3], { dtype: 'bool' })],
        ...[...loadStateDict(path.join(dir, files[1]))],
      ]);
      expectFormat(dir, /in both/);
    }
  });

  test('several safetensors files without an index are refused', () => {
    const dir = fresh('loose');
    fs.mkdirSync(dir);
    saveSafetensors(path.join(dir, 'a.safetensors'), { x: tensor([1], [1]) });
    expect(loadStateDict(dir).size).toBe(1);
    saveSafetensors(path.join(dir, 'b.safetensors'), { y: tensor([1], [1]) });
    expect(codeOf(() => loadStateDict(dir))).toBe('E_FORMAT');
  });
});

describe('model path resolution', () => {
  /** A hub cache repo: blobs, snapshots of symlinks, refs/main. */
  function makeCache(): { cache: string; repo: string; hash: string; old: string } {
    const cache = fresh('hub');
    const repo = path.join(cache, 'models--tiny-org--tiny-model');
    const src = fresh('src');
    saveModelFolder(src, { config, stateDict: allDtypes(), tokenizerFiles: createByteTokenizer().toFiles() });
    const hash = 'a'.repeat(40);
    const old = 'b'.repeat(40);
    fs.mkdirSync(path.join(repo, 'blobs'), { recursive: true });
    for (const rev of [hash, old]) {
      const snap = path.join(repo, 'snapshots', rev);
      fs.mkdirSync(snap, { recursive: true });
      for (const f of fs.readdirSync(src)) {
        const blob = path.join(repo, 'blobs', `${rev}-${f}`);
        fs.copyFileSync(path.join(src, f), blob);
        fs.symlinkSync(path.relative(snap, blob), path.join(snap, f));
      }
    }
    fs.mkdirSync(path.join(repo, 'refs'));
    fs.writeFileSync(path.join(repo, 'refs', 'main'), hash);
    fs.writeFileSync(path.join(repo, 'refs', 'v1'), `${old}\n`);
    return { cache, repo, hash, old };
  }

  test('hub cache folders: repo folder, snapshot folder, org/name id, revisions', () => {
    const { cache, repo, hash, old } = makeCache();
    const snap = path.join(repo, 'snapshots', hash);
    expect(resolveModelDir(repo)).toBe(snap);
    expect(resolveModelDir(snap)).toBe(snap);
    expect(resolveModelDir('tiny-org/tiny-model', { cacheDir: cache })).toBe(snap);
    expect(resolveModelDir(repo, { revision: 'v1' })).toBe(path.join(repo, 'snapshots', old));
    expect(resolveModelDir(repo, { revision: old })).toBe(path.join(repo, 'snapshots', old));
    expectSame(loadStateDict(repo), allDtypes());
    expectSame(loadStateDict('tiny-org/tiny-model', { cacheDir: cache, revision: 'v1' }), allDtypes());
    expect(loadConfig(repo).model_type).toBe('llama');
    expect(loadTokenizer(repo).vocabSize).toBe(258);
    expect(codeOf(() => resolveModelDir(repo, { revision: 'nope' }))).toBe('E_IO');
    expect(codeOf(() => resolveModelDir('tiny-org/missing', { cacheDir: cache }))).toBe('E_IO');
    expect(codeOf(() => resolveModelDir(fresh('plain-missing')))).toBe('E_IO');
    // refs/main pointing to a snapshot that was never downloaded.
    fs.writeFileSync(path.join(repo, 'refs', 'main'), 'c'.repeat(40));
    expect(codeOf(() => resolveModelDir(repo))).toBe('E_IO');
    // No refs: a single snapshot is taken.
    fs.rmSync(path.join(repo, 'refs'), { recursive: true });
    fs.rmSync(path.join(repo, 'snapshots', old), { recursive: true });
    expect(resolveModelDir(repo)).toBe(snap);
  });

  test('a snapshot with a missing blob (interrupted download) is an error, not a crash', () => {
    const { repo, hash } = makeCache();
    const snap = path.join(repo, 'snapshots', hash);
    fs.rmSync(path.join(repo, 'blobs', `${hash}-model.safetensors`));
    expect(['E_IO', 'E_FORMAT']).toContain(codeOf(() => loadStateDict(snap)));
  });

  test('PyTorch pickles are refused with a message to convert', () => {
    const dir = fresh('pickle');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'config.json'), '{}');
    fs.writeFileSync(path.join(dir, 'pytorch_model.bin'), Buffer.from([0x80, 0x02, 0x7d, 0x71, 0x00]));
    for (const p of [dir, path.join(dir, 'pytorch_model.bin')]) {
      try {
        loadStateDict(p);
        throw new Error('expected a refusal');
      } catch (e) {
        expect((e as SiftError).code).toBe('E_FORMAT');
        expect((e as Error).message).toMatch(/pickle/);
        expect((e as Error).message).toMatch(/safetensors/);
      }
    }
    for (const ext of ['pt', 'pth', 'ckpt']) {
      const f = path.join(dir, `weights.${ext}`);
      fs.writeFileSync(f, 'PK\x03\x04');
      expect(codeOf(() => resolveModelPath(f))).toBe('E_FORMAT');
    }
    // A zip renamed to .safetensors is recognised as a torch.save file.
    const disguised = fresh('disguised');
    fs.mkdirSync(disguised);
    fs.writeFileSync(path.join(disguised, 'model.safetensors'), Buffer.concat([Buffer.from('PK\x03\x04'), Buffer.alloc(64)]));
    try {
      loadStateDict(disguised);
      throw new Error('expected a refusal');
    } catch (e) {
      expect((e as SiftError).code).toBe('E_FORMAT');
      expect((e as Error).message).toMatch(/pickle/);
    }
    // A safetensors file whose header length (0x0280) begins like a pickle is still safetensors.
    const lookalike = fresh('pickle-lookalike');
    fs.mkdirSync(lookalike);
    const head = JSON.stringify({ w: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } });
    const header = Buffer.from(head + ' '.repeat(0x280 - head.length));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(header.length));
    fs.writeFileSync(path.join(lookalike, 'model.safetensors'), Buffer.concat([len, header, Buffer.from(new Float32Array([1.5]).buffer)]));
    const sd = loadStateDict(lookalike);
    expect(Array.from(sd.get('w')!.toArray() as Float32Array)).toEqual([1.5]);
    for (const t of sd.values()) t.dispose();
    // Only pickles and an index of pickles.
    const idx = fresh('pickle-index');
    fs.mkdirSync(idx);
    fs.writeFileSync(path.join(idx, 'pytorch_model.bin.index.json'), '{}');
    expect(codeOf(() => resolveModelPath(idx))).toBe('E_FORMAT');
  });

  test('folders without weights and unknown files', () => {
    const dir = fresh('noweights');
    fs.mkdirSync(dir);
    expect(codeOf(() => resolveModelPath(dir))).toBe('E_IO');
    expect(codeOf(() => loadConfig(dir))).toBe('E_IO');
    fs.writeFileSync(path.join(dir, 'tf_model.h5'), 'x');
    expect(codeOf(() => resolveModelPath(dir))).toBe('E_FORMAT');
    fs.writeFileSync(path.join(dir, 'notes.txt'), 'x');
    expect(codeOf(() => resolveModelPath(path.join(dir, 'notes.txt')))).toBe('E_FORMAT');
    fs.writeFileSync(path.join(dir, 'config.json'), '{"a": 1, "a": 2}');
    expect(codeOf(() => loadConfig(dir))).toBe('E_FORMAT');
    fs.writeFileSync(path.join(dir, 'config.json'), '[1]');
    expect(codeOf(() => loadConfig(dir))).toBe('E_FORMAT');
  });
});

describe('atomic saves', () => {
  const leftovers = (parent: string): string[] => fs.readdirSync(parent).filter((f) => f.includes('.tmp-'));

  test('a new folder appears whole or not at all', async () => {
    const parent = fresh('atomic-parent');
    fs.mkdirSync(parent);
    const dir = path.join(parent, 'model');
    const sd = allDtypes();
    const victim = tensor([1, 2, 3], [3]);
    const p = saveModelFolderAsync(dir, { config, stateDict: [...sd, ['zz.victim', victim]] });
    victim.dispose(); // fails the write of the last tensor, after the first files are written
    expect(await codeOfAsync(() => p)).toBe('E_DISPOSED');
    expect(fs.existsSync(dir)).toBe(false);
    expect(leftovers(parent)).toEqual([]);
    saveModelFolder(dir, { config, stateDict: sd });
    expect(leftovers(parent)).toEqual([]);
    expect(leftovers(dir)).toEqual([]);
  });

  test('an existing folder keeps its old model when a save fails, and loses stale weights when one succeeds', async () => {
    const dir = fresh('atomic-existing');
    const sd = allDtypes();
    saveModelFolder(dir, { config, stateDict: sd });
    const before = fs.readFileSync(path.join(dir, 'model.safetensors'));
    const victim = tensor([1, 2, 3], [3]);
    const p = saveModelFolderAsync(dir, {
      config: { ...config, hidden_size: 99 },
      stateDict: [
        ['a', tensor([5], [1])],
        ['victim', victim],
      ],
    });
    victim.dispose();
    expect(await codeOfAsync(() => p)).toBe('E_DISPOSED');
    expect(fs.readFileSync(path.join(dir, 'model.safetensors')).equals(before)).toBe(true);
    expect(loadConfig(dir).hidden_size).toBe(3);
    expect(leftovers(dir)).toEqual([]);
    // Single -> sharded: the old model.safetensors must go (transformers would prefer it).
    saveModelFolder(dir, { config, stateDict: sd, maxShardSize: 32 });
    expect(fs.existsSync(path.join(dir, 'model.safetensors'))).toBe(false);
    expectSame(loadStateDict(dir), sd);
    // Sharded -> single: shards and index go.
    saveModelFolder(dir, { config, stateDict: sd.slice(0, 2) });
    expect(fs.readdirSync(dir).sort()).toEqual(['config.json', 'model.safetensors']);
    expectSame(loadStateDict(dir), sd.slice(0, 2));
  });
});

describeCuda('model folders on the GPU', () => {
  test('load onto cuda (with conversion) matches the CPU load; save from cuda is bit-exact', async () => {
    const dir = fresh('cuda');
    const sd = allDtypes();
    saveModelFolder(dir, { config, stateDict: sd, maxShardSize: 32 });
    const cpu = loadStateDict(dir, { dtype: 'bf16' });
    const gpu = await loadStateDictAsync(dir, { device: 'cuda', dtype: 'bf16' });
    for (const [name, t] of cpu) {
      const g = gpu.get(name)!;
      expect(g.device).toBe('cuda:0');
      expect(g.dtype).toBe(t.dtype);
      expect(bytes(g).equals(bytes(t))).toBe(true);
    }
    const back = fresh('from-cuda');
    saveModelFolder(back, { config, stateDict: loadStateDict(dir, { device: 'cuda' }) });
    expectSame(loadStateDict(back), sd);
  });
});
