/**
 * `sift-ft plan` against what the same run measures: a short training run on the CPU backend with
 * SIFT_FT_CPU_QUEUE=1 (tensors live as on a CUDA stream) reports peakMemoryBytes; the plan must be
 * within 15% of it for GPT-2 and LLaMA, sift / full / lora, with and without activation
 * checkpointing and bf16. The shape-only module tree has the real shapes and costs a few bytes.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { liveTensors, HFConfig, SiftError, kForRate, supportedModelTypes } from '../../lib';
import { planMemory, shapeOnlyModel } from '../../lib/plan/plan';
import { quantizedBytes } from '../../lib/autograd/quant';
import { planWarning } from '../../lib/cli/plan';
import { CONFIGS, FAMILIES, measureCase, planCases } from '../../bench/plan';

const root = path.join(__dirname, '..', '..');
const built = fs.existsSync(path.join(root, 'dist', 'lib', 'train', 'trainer.js'));

// The table of docs/memory.md is printed by `npm run bench -- plan` (the same cases and runs).
describe('plan agrees with the measured peak within 15%', () => {
  const have = new Set(supportedModelTypes());
  const cases = planCases(have);
  const missing = Object.keys(FAMILIES).filter((f) => !have.has(f));
  (missing.length ? test.skip : test)(`families not in this build: ${missing.join(', ') || 'none'}`, () => undefined);
  (built ? test.each(cases) : test.skip.each(cases))('%s %s checkpointing=%s precision=%s (needs dist/: npx tsc)', (...c) => {
    const r = measureCase(c);
    expect(r.stderr).toBe('');
    expect(r.peak).toBeGreaterThan(0);
    expect(r.ratio).toBeGreaterThan(0.85);
    expect(r.ratio).toBeLessThan(1.15);
  });
});

describe('plan agrees with the measured peak within 15%: SIFT on a quantized base (targets quantized)', () => {
  const cases: [string, 'int8' | 'nf4', boolean, 'bf16' | 'none'][] = [];
  for (const fam of ['llama', 'llama-wide'])
    for (const qf of ['nf4', 'int8'] as const) for (const ck of [false, true]) cases.push([fam, qf, ck, fam === 'llama' ? 'none' : 'bf16']);
  (built ? test.each(cases) : test.skip.each(cases))(
    '%s --quantize %s checkpointing=%s precision=%s (needs dist/: npx tsc)',
    (fam, quantize, ck, mp) => {
      const plan = planMemory(CONFIGS[fam], {
        task: 'causal-lm',
        method: 'sift',
        batchSize: 2,
        maxLength: fam.endsWith('wide') ? 128 : 32,
        activationCheckpointing: ck,
        mixedPrecision: mp,
        quantize,
      });
      expect(plan.parts.quantizedWeights).toBeGreaterThan(0);
      const r = measureCase([fam, 'sift', ck, mp], quantize);
      expect(r.stderr).toBe('');
      expect(r.plan).toBe(plan.peakBytes);
      expect(r.peak).toBeGreaterThan(0);
      expect(r.ratio).toBeGreaterThan(0.85);
      expect(r.ratio).toBeLessThan(1.15);
    },
  );
});

describe('shape-only module tree', () => {
  test('real parameter shapes of a Llama-3.2-1B config in a few bytes each', () => {
    const cfg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'bench', 'configs', 'llama-3.2-1b.json'), 'utf8')) as HFConfig;
    const before = liveTensors().cpu.bytes;
    const m = shapeOnlyModel(cfg, 'causal-lm');
    try {
      const params = m.namedParameters();
      // The published count of Llama-3.2-1B (tied embeddings counted once).
      expect(params.reduce((a, [, t]) => a + t.size, 0)).toBe(1235814400);
      expect(params.find(([n]) => n === 'model.embed_tokens.weight')![1].shape).toEqual([128256, 2048]);
      expect(params.find(([n]) => n === 'model.layers.15.self_attn.k_proj.weight')![1].shape).toEqual([512, 2048]);
      expect(params.find(([n]) => n === 'model.layers.0.mlp.down_proj.weight')![1].shape).toEqual([2048, 8192]);
      expect(liveTensors().cpu.bytes - before).toBeLessThan(params.length * 16);
    } finally {
      m.dispose();
    }
  });

  test('plan of the 1B shape: parts add up, SIFT k per target, bf16 weights', () => {
    const cfg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'bench', 'configs', 'llama-3.2-1b.json'), 'utf8')) as HFConfig;
    const p = planMemory(cfg, { method: 'sift', sparseRate: 0.01, batchSize: 1, maxLength: 128, mixedPrecision: 'bf16' });
    expect(p.parameters).toBe(1235814400);
    expect(p.parts.weights).toBe(2 * 1235814400);
    // Targets: the 7 projections of 16 blocks (not the tied embedding / lm_head).
    const perBlock = [
      [2048, 2048],
      [512, 2048],
      [512, 2048],
      [2048, 2048],
      [8192, 2048],
      [8192, 2048],
      [2048, 8192],
    ];
    const k = 16 * perBlock.reduce((a, [o, i]) => a + kForRate(0.01, o * i), 0);
    expect(p.trainable).toBe(k);
    expect(p.parts.moments).toBe(8 * k);
    expect(p.parts.indices).toBe(4 * k);
    const sum =
      p.parts.weights + p.parts.quantizedWeights + p.parts.trainableState + p.parts.gradients + p.parts.activations + p.parts.workspace;
    expect(p.peakBytes).toBe(sum);
    // A run quantizes what does not train densely: LoRA's whole base; SIFT's linear layers, targets
    // included (their trained entries are f32 values beside the codes).
    const lora = planMemory(cfg, { method: 'lora', batchSize: 1, maxLength: 128, mixedPrecision: 'bf16' });
    const loraNf4 = planMemory(cfg, { method: 'lora', batchSize: 1, maxLength: 128, mixedPrecision: 'bf16', quantize: 'nf4' });
    expect(loraNf4.parts.quantizedWeights).toBeGreaterThan(0);
    expect(loraNf4.peakBytes).toBeLessThan(0.6 * lora.peakBytes);
    const siftAll = planMemory(cfg, {
      method: 'sift',
      sparseRate: 0.01,
      batchSize: 1,
      maxLength: 128,
      mixedPrecision: 'bf16',
      quantize: 'nf4',
    });
    expect(siftAll.parts.quantizedWeights).toBe(16 * perBlock.reduce((acc, [o, i]) => acc + quantizedBytes('nf4', o, i), 0));
    // The values (f32) and positions (i32) of the entries beside the dense run's SIFT state.
    expect(siftAll.parts.trainableState).toBe(p.parts.trainableState + 8 * k);
    expect(siftAll.peakBytes).toBeLessThan(0.6 * p.peakBytes);
    const siftQV = planMemory(cfg, {
      method: 'sift',
      sparseRate: 0.01,
      batchSize: 1,
      maxLength: 128,
      mixedPrecision: 'bf16',
      quantize: 'nf4',
      targetModules: ['q_proj', 'v_proj'],
    });
    expect(siftQV.parts.quantizedWeights).toBeGreaterThan(0);
    expect(siftQV.peakBytes).toBeLessThan(p.peakBytes);
  });

  test('tensors of 2^31 entries and more: 64-bit indices, exact k and sizes (shape-only, no memory)', () => {
    // One MLP weight of 65536 x 32768 = 2^31 entries: its SIFT indices are i64 (8 bytes), the
    // others' i32; k and the quantized bytes are exact integers past 2^31.
    const cfg = {
      ...CONFIGS.llama,
      hidden_size: 65536,
      intermediate_size: 32768,
      num_hidden_layers: 1,
      num_attention_heads: 512,
      num_key_value_heads: 512,
      head_dim: 128,
    };
    const n = 65536 * 32768;
    expect(n).toBe(2 ** 31);
    expect(kForRate(0.01, n)).toBe(21474837);
    expect(quantizedBytes('nf4', 65536, 32768)).toBe(n / 2 + n / 64 + 4 * (n / 64 / 256) + 4);
    const p = planMemory(cfg, { method: 'sift', sparseRate: 0.01, batchSize: 1, maxLength: 4, targetModules: ['gate_proj', 'q_proj'] });
    const kBig = kForRate(0.01, n);
    const kQ = kForRate(0.01, 65536 * 65536);
    expect(p.parts.indices).toBe(8 * kBig + 8 * kQ);
    const small = planMemory(cfg, { method: 'sift', sparseRate: 0.01, batchSize: 1, maxLength: 4, targetModules: ['k_proj'] });
    expect(small.parts.indices).toBe(8 * kForRate(0.01, 65536 * 65536));
    // The embedding of a Llama-3 vocabulary: 128256 x 4096 = 525M entries, under 2^31: i32 indices.
    const v = planMemory(
      {
        ...CONFIGS.llama,
        vocab_size: 128256,
        hidden_size: 4096,
        intermediate_size: 64,
        num_hidden_layers: 1,
        num_attention_heads: 32,
        num_key_value_heads: 8,
      },
      { method: 'sift', sparseRate: 0.01, batchSize: 1, maxLength: 4, targetModules: ['lm_head'] },
    );
    expect(v.parts.indices).toBe(4 * kForRate(0.01, 128256 * 4096));
  });

  test('quantized sizes: int8 one byte and a row scale; NF4 half a byte, an 8-bit absmax per 64, an f32 per 256 blocks', () => {
    expect(quantizedBytes('int8', 4096, 4096)).toBe(4096 * 4096 + 4 * 4096);
    const n = 4096 * 4096;
    expect(quantizedBytes('nf4', 4096, 4096)).toBe(n / 2 + n / 64 + 4 * (n / 64 / 256) + 4);
  });

  test('bad input is a typed error', () => {
    expect(() => planMemory(CONFIGS.llama, { method: 'nope' as never })).toThrow(SiftError);
    expect(() => planMemory(CONFIGS.llama, { sparseRate: 2 })).toThrow(/sparse rate/);
    expect(() =>
      planMemory(
        { model_type: 'bert', vocab_size: 10, hidden_size: 8, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 8 },
        { task: 'classify' },
      ),
    ).toThrow(/no activation formula/);
  });
});

describe('sift-ft plan (CLI)', () => {
  const cli = path.join(__dirname, '..', '..', 'dist', 'lib', 'cli', 'main.js');
  const run = (args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
  const have = fs.existsSync(cli);
  (have ? test : test.skip)('--json prints peakBytes and the parts; a folder or a config.json', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-plan-'));
    try {
      fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(CONFIGS.llama));
      for (const target of [dir, path.join(dir, 'config.json')]) {
        const r = run(['plan', '--model', target, '--method', 'lora', '--batch-size', '2', '--max-length', '32', '--json']);
        expect(r.status).toBe(0);
        const j = JSON.parse(r.stdout);
        expect(j.peakBytes).toBe(planMemory(CONFIGS.llama, { method: 'lora', batchSize: 2, maxLength: 32 }).peakBytes);
        for (const k of [
          'weights',
          'quantizedWeights',
          'trainableState',
          'masters',
          'moments',
          'indices',
          'gradients',
          'activations',
          'workspace',
        ])
          expect(typeof j.parts[k]).toBe('number');
        expect(j.fits).toBe(true);
      }
      const text = run(['plan', '--model', dir, '--device', 'cuda']);
      expect(text.status).toBe(0);
      expect(text.stdout).toMatch(/peak/);
      const bad = run(['plan', '--model', path.join(dir, 'missing.json')]);
      expect(bad.status).not.toBe(0);
      expect(bad.stderr).toMatch(/E_IO/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('finetune warns before a run that will not fit', () => {
  test('a 70B-shaped full fine-tuning plan is over this machine; a tiny one is not', () => {
    const big: HFConfig = {
      model_type: 'llama',
      vocab_size: 128256,
      hidden_size: 8192,
      intermediate_size: 28672,
      num_hidden_layers: 80,
      num_attention_heads: 64,
      num_key_value_heads: 8,
      max_position_embeddings: 8192,
    };
    const line = planWarning(big, { method: 'full', batchSize: 8, maxLength: 4096, device: 'cpu' });
    expect(line).toMatch(/^warning: plan predicts a peak of .* more than the .* free on/);
    expect(planWarning(CONFIGS.llama, { method: 'sift', batchSize: 2, maxLength: 32, device: 'cpu' })).toBeNull();
    // A model the planner has no formula for gives no warning (and no error): the run goes on.
    expect(
      planWarning(
        { model_type: 'bert', vocab_size: 10, hidden_size: 8, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 8 },
        { task: 'classify' },
      ),
    ).toBeNull();
  });
});
