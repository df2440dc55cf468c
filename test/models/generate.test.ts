/**
 * Generation: the KV-cache path gives the full forward's logits (GPT-2 and LLaMA with GQA, with
 * and without padding), greedy and seeded sampling are reproducible, EOS and length stop, tokens
 * stream, and the sampler's top-k / top-p filtering.
 */
import { tidy, Tensor } from '../../lib';
import {
  createModel,
  generate,
  generateStream,
  sampleToken,
  SeededRandom,
  disposeCache,
  PreTrainedModel,
  KVCache,
  HFConfig,
  loadStateDictInto,
  stateDict,
} from '../../lib/models';
import { describeCuda } from '../helpers/gradcheck';
import { relError } from './fixtures';

// initializer_range 0.3: logits far from uniform, so greedy decoding is not decided by rounding.
const gpt2: HFConfig = { model_type: 'gpt2', vocab_size: 40, n_positions: 32, n_embd: 32, n_layer: 2, n_head: 4, initializer_range: 0.3 };
const llama: HFConfig = {
  model_type: 'llama',
  vocab_size: 40,
  hidden_size: 32,
  intermediate_size: 48,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 64,
  initializer_range: 0.3,
  rope_theta: 1000,
};

const models: [string, PreTrainedModel][] = [];
beforeAll(() => {
  models.push(['gpt2', createModel(gpt2, { seed: 5 }).eval()], ['llama', createModel(llama, { seed: 6 }).eval()]);
});
afterAll(() => models.forEach(([, m]) => m.dispose()));

function rows3(t: Tensor): number[][][] {
  return t.tolist() as number[][][];
}

describe.each([['gpt2'], ['llama']])('%s', (name) => {
  const model = () => models.find(([n]) => n === name)![1];

  test('KV cache: incremental logits equal the full forward', () => {
    const seq = [
      [3, 9, 14, 2, 7, 21, 5, 11],
      [8, 1, 30, 4, 4, 17, 6, 2],
    ];
    const m = model();
    const full = tidy(() => rows3(m.forward({ inputIds: seq }).logits));
    let cache: KVCache | undefined;
    const steps: number[][][] = [];
    // A 3-token prompt, then 2 tokens, then one at a time (Tq != Tk with bottom-right causal alignment).
    const chunks = [
      [0, 3],
      [3, 5],
      [5, 6],
      [6, 7],
      [7, 8],
    ];
    for (const [a, b] of chunks) {
      const prev = cache;
      const r = tidy(() => {
        const out = m.forward({ inputIds: seq.map((s) => s.slice(a, b)), cache: prev, useCache: true });
        return { logits: rows3(out.logits), cache: out.cache! };
      });
      disposeCache(prev);
      cache = r.cache;
      expect(cache.length).toBe(b);
      for (let t = 0; t < b - a; t++) steps.push(r.logits.map((row) => row[t]));
    }
    disposeCache(cache);
    for (let t = 0; t < 8; t++) {
      const err = relError(steps[t].flat(), full.map((row) => row[t]).flat());
      expect(err).toBeLessThan(1e-5);
    }
  });

  test('KV cache with a padding mask: equals the full forward on the attended positions', () => {
    const m = model();
    const seq = [
      [5, 6, 7, 8, 9, 10],
      [0, 0, 11, 12, 13, 14],
    ];
    const mask = [
      [1, 1, 1, 1, 1, 1],
      [0, 0, 1, 1, 1, 1],
    ];
    const pos = [
      [0, 1, 2, 3, 4, 5],
      [1, 1, 0, 1, 2, 3],
    ];
    const full = tidy(() => rows3(m.forward({ inputIds: seq, attentionMask: mask, positionIds: pos }).logits));
    const r1 = tidy(() => {
      const o = m.forward({
        inputIds: seq.map((s) => s.slice(0, 4)),
        attentionMask: mask.map((s) => s.slice(0, 4)),
        positionIds: pos.map((s) => s.slice(0, 4)),
        useCache: true,
      });
      return o.cache!;
    });
    const r2 = tidy(() => {
      const o = m.forward({
        inputIds: seq.map((s) => s.slice(4)),
        attentionMask: mask,
        positionIds: pos.map((s) => s.slice(4)),
        cache: r1,
      });
      return { logits: rows3(o.logits), cache: o.cache! };
    });
    disposeCache(r1);
    disposeCache(r2.cache);
    for (let t = 0; t < 2; t++) {
      expect(relError(r2.logits.map((row) => row[t]).flat(), full.map((row) => row[4 + t]).flat())).toBeLessThan(1e-5);
    }
  });

  test('greedy: cache and no-cache give the same tokens; matches argmax of the full forward', async () => {
    const m = model();
    const a = await generate(m, [[3, 9, 14]], { maxNewTokens: 6 });
    const b = await generate(m, [[3, 9, 14]], { maxNewTokens: 6, useCache: false });
    expect(a).toEqual(b);
    expect(a[0].length).toBe(9);
    const seq = a[0];
    const lg = tidy(() => rows3(m.forward({ inputIds: [seq] }).logits))[0];
    for (let t = 2; t < seq.length - 1; t++) {
      const row = lg[t];
      expect(seq[t + 1]).toBe(row.indexOf(Math.max(...row)));
    }
  });

  test('a left-padded batch generates what each prompt generates alone', async () => {
    const m = model();
    const prompts = [
      [3, 9, 14, 20, 1],
      [7, 2],
    ];
    const batch = await generate(m, prompts, { maxNewTokens: 4 });
    const alone = [await generate(m, [prompts[0]], { maxNewTokens: 4 }), await generate(m, [prompts[1]], { maxNewTokens: 4 })];
    expect(batch).toEqual([alone[0][0], alone[1][0]]);
  });

  test('seeded sampling reproduces; EOS stops a row; tokens stream', async () => {
    const m = model();
    const opts = { maxNewTokens: 8, temperature: 1.3, topK: 20, topP: 0.95, seed: 123 };
    const a = await generate(
      m,
      [
        [1, 2, 3],
        [4, 5, 6],
      ],
      opts,
    );
    const b = await generate(
      m,
      [
        [1, 2, 3],
        [4, 5, 6],
      ],
      opts,
    );
    expect(a).toEqual(b);
    const others = await Promise.all(
      [7, 8, 9].map((seed) =>
        generate(
          m,
          [
            [1, 2, 3],
            [4, 5, 6],
          ],
          { ...opts, seed },
        ),
      ),
    );
    expect(others.some((o) => JSON.stringify(o) !== JSON.stringify(a))).toBe(true);
    // EOS: the first greedy token of row 0 ends row 0 at once; row 1 runs on.
    const g = await generate(m, [[1, 2, 3]], { maxNewTokens: 1 });
    const eos = g[0][3];
    const stopped = await generate(m, [[1, 2, 3]], { maxNewTokens: 5, eosTokenId: eos });
    expect(stopped[0]).toEqual([1, 2, 3, eos]);
    const seen: number[][] = [];
    for await (const toks of generateStream(
      m,
      [
        [1, 2, 3],
        [4, 5, 6],
      ],
      { maxNewTokens: 3 },
    ))
      seen.push(toks);
    expect(seen.length).toBe(3);
    const steps: number[] = [];
    await generate(m, [[1, 2, 3]], {
      maxNewTokens: 5,
      onToken: (_t, s) => {
        steps.push(s);
        return s < 1;
      },
    });
    expect(steps).toEqual([0, 1]);
  });

  test('generation leaves the training flags as they were and no tensors behind', async () => {
    const m = model();
    m.train();
    const { liveTensors } = await import('../../lib');
    const before = liveTensors().cpu.count;
    await generate(m, [[1, 2, 3]], { maxNewTokens: 3, temperature: 0.8, seed: 1 });
    expect(liveTensors().cpu.count).toBeLessThanOrEqual(before); // (the GC may free stray tensors meanwhile)
    expect(m.namedModules().every(([, x]) => x.training)).toBe(true);
    m.eval();
  });
});

describe('sampler', () => {
  const logits = [0.1, 2.0, -1, 1.9, 0.5];
  test('temperature 0 and top-k 1 are argmax; a tiny top-p keeps the best token', () => {
    const rng = new SeededRandom(1);
    expect(sampleToken(logits, { temperature: 0 }, rng)).toBe(1);
    for (let i = 0; i < 20; i++) expect(sampleToken(logits, { temperature: 1, topK: 1 }, rng)).toBe(1);
    for (let i = 0; i < 20; i++) expect(sampleToken(logits, { temperature: 1, topP: 0.01 }, rng)).toBe(1);
  });
  test('top-k 2 only draws the two best; frequencies follow the softmax', () => {
    const rng = new SeededRandom(7);
    const counts = new Map<number, number>();
    for (let i = 0; i < 4000; i++) {
      const t = sampleToken(logits, { temperature: 1, topK: 2 }, rng);
      counts.set(t, (counts.get(t) ?? 0) + 1);
    }
    expect([...counts.keys()].sort()).toEqual([1, 3]);
    const p1 = Math.exp(2) / (Math.exp(2) + Math.exp(1.9));
    expect(Math.abs(counts.get(1)! / 4000 - p1)).toBeLessThan(0.03);
  });
  test('top-p keeps the smallest set reaching p', () => {
    const rng = new SeededRandom(3);
    const seen = new Set<number>();
    for (let i = 0; i < 2000; i++) seen.add(sampleToken([3, 2, 1, -5], { temperature: 1, topP: 0.8 }, rng));
    // softmax: 0.665, 0.245, 0.090, ...: 0.665 < 0.8, 0.910 >= 0.8: two tokens.
    expect([...seen].sort()).toEqual([0, 1]);
  });
});

describeCuda('generation', () => {
  test.each([['gpt2'], ['llama']])('%s on CUDA: cache logits equal the full forward; greedy tokens equal the CPU ones', async (name) => {
    const cpu = models.find(([n]) => n === name)![1];
    const gpu = createModel(name === 'gpt2' ? gpt2 : llama, { device: 'cuda' }).eval();
    try {
      loadStateDictInto(gpu, stateDict(cpu));
      const seq = [
        [3, 9, 14, 2, 7, 21],
        [8, 1, 30, 4, 4, 17],
      ];
      const full = tidy(() => rows3(gpu.forward({ inputIds: seq }).logits));
      const fullCpu = tidy(() => rows3(cpu.forward({ inputIds: seq }).logits));
      expect(relError(full.flat(2), fullCpu.flat(2))).toBeLessThan(1e-5);
      const c1 = tidy(() => gpu.forward({ inputIds: seq.map((s) => s.slice(0, 4)), useCache: true }).cache!);
      const r2 = tidy(() => {
        const o = gpu.forward({ inputIds: seq.map((s) => s.slice(4)), cache: c1 });
        return { logits: rows3(o.logits), cache: o.cache! };
      });
      disposeCache(c1);
      disposeCache(r2.cache);
      for (let t = 0; t < 2; t++) expect(relError(r2.logits.map((r) => r[t]).flat(), full.map((r) => r[4 + t]).flat())).toBeLessThan(1e-5);
      const opts = { maxNewTokens: 5 };
      expect(
        await generate(
          gpu,
          [
            [3, 9, 14],
            [7, 2],
          ],
          opts,
        ),
      ).toEqual(
        await generate(
          cpu,
          [
            [3, 9, 14],
            [7, 2],
          ],
          opts,
        ),
      );
      const s = { maxNewTokens: 5, temperature: 1, topK: 10, seed: 9 };
      expect(await generate(gpu, [[3, 9, 14]], s)).toEqual(await generate(gpu, [[3, 9, 14]], s));
    } finally {
      gpu.dispose();
    }
  });
});
