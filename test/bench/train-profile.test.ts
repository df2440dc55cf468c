/**
 * bench/train.ts and bench/profile.ts on the CPU with a tiny configuration: every method runs a
 * real training step, reports throughput and memory, and the profiler counts native calls.
 */
import { liveTensors } from '../../lib';
import { native } from '../../lib/engine/native';
import type { Addon } from '../../lib/engine/addon-types';
import { benchOne, modelSpec, setupRun, randomTokens, loadApplyLora, trainTable, parseArgs, ModelSpec } from '../../bench/train';
import { instrument } from '../../bench/profile';

/** Smaller than the CPU bench's small config, for a fast test. */
function tiny(key: 'gpt2' | 'llama'): ModelSpec {
  const s = modelSpec(key, true);
  return key === 'gpt2'
    ? { ...s, config: { ...s.config, vocab_size: 256, n_embd: 32, n_head: 2, n_layer: 1, n_positions: 64 } }
    : {
        ...s,
        config: {
          ...s.config,
          vocab_size: 256,
          hidden_size: 32,
          intermediate_size: 64,
          num_attention_heads: 2,
          num_key_value_heads: 2,
          num_hidden_layers: 1,
        },
      };
}

const opts = { batch: 2, seq: 16, warmup: 1, steps: 2, budgetMs: 100, dtype: 'f32' as const, quick: true };

describe('bench/train (CPU, tiny)', () => {
  test('model specs follow the issue: GPT-2 124M defaults and the LLaMA-style 220M', () => {
    const g = modelSpec('gpt2', false);
    expect(g.config).toMatchObject({ n_embd: 768, n_layer: 12, n_head: 12, vocab_size: 50257 });
    const l = modelSpec('llama', false);
    expect(l.config).toMatchObject({
      hidden_size: 1024,
      intermediate_size: 2816,
      num_hidden_layers: 12,
      num_attention_heads: 16,
      vocab_size: 32000,
    });
    expect(l.targets).toHaveLength(7);
  });

  test('random tokens are deterministic and in range', () => {
    const a = randomTokens(2, 50, 100, 7);
    expect(a).toEqual(randomTokens(2, 50, 100, 7));
    expect(a.flat().every((x) => x >= 0 && x < 100 && Number.isInteger(x))).toBe(true);
    expect(new Set(a.flat()).size).toBeGreaterThan(20);
  });

  test.each(['gpt2', 'llama'] as const)('%s: sift, full and lora steps report throughput and memory', (key) => {
    const before = liveTensors().cpu.count;
    const spec = tiny(key);
    const sift = benchOne('cpu', spec, 'sift', 0.01, opts);
    const full = benchOne('cpu', spec, 'full', null, opts);
    const lora = benchOne('cpu', spec, 'lora', null, opts);
    for (const r of [sift, full]) {
      expect(r.status).toBe('ok');
      expect(r.tokensPerSec).toBeGreaterThan(0);
      expect(r.steps).toBe(2);
      expect(r.peakBytes).toBeGreaterThanOrEqual(r.steadyBytes);
      expect(r.steadyBytes).toBeGreaterThan(0);
      expect(Number.isFinite(r.loss)).toBe(true);
    }
    expect(sift.trainable).toBeGreaterThan(0);
    expect(sift.trainable).toBeLessThan(full.trainable / 20);
    // Full fine-tuning holds f32 moments for every weight: more than SIFT's steady state.
    expect(full.steadyBytes).toBeGreaterThan(sift.steadyBytes);
    if (loadApplyLora()) {
      expect(lora.status).toBe('ok');
      expect(lora.trainable).toBeGreaterThan(0);
      expect(lora.trainable).toBeLessThan(full.trainable);
    } else {
      expect(lora.status).toBe('skipped');
    }
    expect(trainTable([sift, full, lora])).toContain(spec.name);
    expect(liveTensors().cpu.count).toBeLessThanOrEqual(before);
  });

  test('a failing run becomes an error row instead of throwing', () => {
    const spec = tiny('gpt2');
    const r = benchOne('cpu', { ...spec, targets: ['no_such_module'] }, 'sift', 0.01, opts);
    expect(r.status).toBe('error');
    expect(r.error).toBeTruthy();
  });

  test('parses flags', () => {
    const a = parseArgs(['--cpu-only', '--models=gpt2', '--methods=sift', '--rates=0.02', '--batch=2', '--seq=8', '--dtype=f32']);
    expect(a).toMatchObject({ devices: ['cpu'], models: ['gpt2'], methods: ['sift'], rates: [0.02], batch: 2, seq: 8, dtype: 'f32' });
  });
});

describe('bench/profile', () => {
  test('counts calls and time per op, excludes metadata from launches, and restores', () => {
    const calls: string[] = [];
    const fake = {
      NativeTensor: function NativeTensor() {},
      setErrorClass: () => undefined,
      matmul: (x: number) => {
        calls.push('matmul');
        return x * 2;
      },
      shape: () => [1],
      synchronize: (d: string) => {
        calls.push(`sync ${d}`);
      },
    };
    const orig = fake.matmul;
    const p = instrument(fake as unknown as Addon, 'cuda:0');
    expect((fake.matmul as (x: number) => number)(3)).toBe(6);
    fake.shape();
    fake.shape();
    expect(calls).toEqual(['matmul', 'sync cuda:0']); // synchronised after the launch only
    const st = p.stats();
    expect(st.find((s) => s.op === 'matmul')!.calls).toBe(1);
    expect(st.find((s) => s.op === 'shape')!.calls).toBe(2);
    expect(p.launches()).toBe(1);
    p.restore();
    expect(fake.matmul).toBe(orig);
  });

  test('events mode brackets each launching op with two events and sums their device times', () => {
    let next = 0;
    const times = new Map<number, number>();
    const fake = {
      NativeTensor: function NativeTensor() {},
      setErrorClass: () => undefined,
      matmul: () => 1,
      softmax: () => 2,
      shape: () => [1],
      synchronize: () => undefined,
      cudaEventRecord: (d: number) => {
        expect(d).toBe(0);
        const id = next++;
        times.set(id, id * 1.5);
        return id;
      },
      cudaEventElapsed: (_d: number, a: number, b: number) => times.get(b)! - times.get(a)!,
      cudaEventsReset: () => {
        next = 0;
      },
    };
    const p = instrument(fake as unknown as Addon, null, 0);
    (fake.matmul as () => number)();
    (fake.softmax as () => number)();
    (fake.matmul as () => number)();
    fake.shape(); // metadata: not bracketed
    expect(next).toBe(6);
    expect(p.collectDeviceTimes()).toBeCloseTo(4.5, 9); // three ops of 1.5 ms each
    const st = new Map(p.stats().map((s) => [s.op, s]));
    expect(st.get('matmul')!.deviceMs).toBeCloseTo(3, 9);
    expect(st.get('softmax')!.deviceMs).toBeCloseTo(1.5, 9);
    expect(st.get('shape')!.deviceMs).toBeNull();
    p.restore();
  });

  test('CUDA timing events need CUDA', () => {
    if (native().backends().cuda.usable) return; // covered by the profile stage of the GPU check
    expect(() => native().cudaEventRecord(0)).toThrow(/CUDA|cuda/);
  });

  test('profiles a real training step through the library', () => {
    const setup = setupRun(tiny('gpt2'), 'sift', { device: 'cpu', dtype: 'f32', batch: 2, seq: 8, rate: 0.05 });
    try {
      const p = instrument(native());
      try {
        setup.step();
        native().synchronize('cpu');
      } finally {
        p.restore();
      }
      const ops = new Map(p.stats().map((s) => [s.op, s.calls]));
      expect(ops.get('matmul')).toBeGreaterThan(4);
      expect(ops.get('sparseAdamW')).toBe(1);
      expect(ops.get('gatherInto')).toBeGreaterThan(0);
      expect(p.launches()).toBeGreaterThan(20);
      expect(native().matmul.name).not.toBe('wrapped');
    } finally {
      setup.dispose();
    }
  });
});
