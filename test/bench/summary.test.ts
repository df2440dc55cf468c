/** bench/summary.ts: pairing our rows with the PyTorch peers and judging the end-to-end goals. */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { summarize, parseTests, readJsonl, markdown, main, Row } from '../../bench/summary';

const GiB = 2 ** 30;
const train = (
  model: string,
  method: string,
  rate: number | null,
  tokensPerSec: number,
  peakBytes: number,
  extra: Partial<Row> = {},
): Row => ({
  bench: 'train',
  status: 'ok',
  device: 'cuda:0',
  deviceName: 'NVIDIA H100',
  model,
  method,
  rate,
  tokensPerSec,
  peakBytes,
  ...extra,
});
const peer = (
  model: string,
  method: string,
  rate: number | null,
  tokensPerSec: number,
  peakBytes: number,
  extra: Partial<Row> = {},
): Row => ({
  bench: 'peer-train',
  status: 'ok',
  device: 'cuda',
  deviceName: 'NVIDIA H100',
  model,
  method,
  rate,
  tokensPerSec,
  peakBytes,
  ...extra,
});

describe('summary of the GPU check', () => {
  const ours: Row[] = [
    train('gpt2-124m', 'sift', 0.001, 95000, 3.0 * GiB),
    train('gpt2-124m', 'sift', 0.01, 90000, 3.1 * GiB),
    train('gpt2-124m', 'sift', 0.05, 85000, 3.4 * GiB),
    train('gpt2-124m', 'full', null, 80000, 6.0 * GiB),
    train('gpt2-124m', 'lora', null, 70000, 3.2 * GiB),
    train('llama-220m', 'sift', 0.01, 0, 0, { status: 'error', error: 'E_OOM: out of memory' }),
    { bench: 'select', device: 'cuda:0', dtype: 'f32', shape: '4096x11008', rate: 0.01, k: 450888, ms: 0.2, ratio: 1.5 },
    { bench: 'select', device: 'cuda:0', dtype: 'bf16', shape: '4096x11008', rate: 0.01, k: 450888, ms: 0.2, ratio: 2 },
    { bench: 'adamw', device: 'cuda:0', weightDtype: 'bf16', layers: 32, rate: 0.01, k: 1000, ms: 1.0, floorMs: 0.6, ratio: 1.67 },
    { bench: 'stage', stage: 'train', rc: 0, seconds: 80, status: 'ok' },
  ];
  const peers: Row[] = [
    peer('gpt2-124m', 'full', null, 100000, 7.2 * GiB),
    peer('gpt2-124m', 'lora', null, 53000, 6.3 * GiB),
    peer('gpt2-124m', 'sift', 0.01, 60000, 6.5 * GiB),
    peer('llama-220m', 'full', null, 70000, 9 * GiB),
    { bench: 'peer-topk', op: 'topk', device: 'cuda', dtype: 'f32', shape: '4096x11008', rate: 0.01, ms: 1.02 },
    { bench: 'peer-topk', op: 'topk_abs', device: 'cuda', dtype: 'f32', shape: '4096x11008', rate: 0.01, ms: 1.2 },
    { bench: 'peer-topk', op: 'topk', device: 'cuda', dtype: 'bf16', shape: '4096x11008', rate: 0.01, ms: 0.6 },
    { bench: 'peer-adamw', device: 'cuda', weightDtype: 'bf16', layers: 32, rate: 0.01, ms: 3.0 },
    // A CPU peer must never be paired with a CUDA row.
    peer('gpt2-124m', 'full', null, 10, 1, { device: 'cpu' }),
  ];
  const s = summarize(ours, peers, 'blah\n120 passed, 1 failed, 3 skipped\n');

  test('pairs the end-to-end rows by model, method and rate on the same device kind', () => {
    const sift = s.train.find((t) => t.model === 'gpt2-124m' && t.method === 'sift' && t.rate === 0.01)!;
    expect(sift.tokensRatio).toBeCloseTo(90000 / 60000, 3);
    expect(sift.peakRatio).toBeCloseTo(3.1 / 6.5, 3);
    const full = s.train.find((t) => t.method === 'full' && t.model === 'gpt2-124m')!;
    expect(full.peerTokensPerSec).toBe(100000);
    // The LLaMA peer rows without a row of ours still show, as missing on our side.
    expect(s.train.some((t) => t.model === 'llama-220m' && t.method === 'full' && t.status === 'missing')).toBe(true);
  });

  test('judges the goals', () => {
    const g = (goal: string, subject: string) => s.goals.find((x) => x.goal.startsWith(goal) && x.subject.startsWith(subject))!;
    const tok = g('sift 1% tokens/s', 'gpt2-124m');
    expect(tok.ratio).toBeCloseTo(0.9, 3);
    expect(tok.met).toBe(false);
    const mem = g('sift 1% peak memory', 'gpt2-124m');
    expect(mem.ratio).toBeCloseTo(3.1 / 6.3, 3);
    expect(mem.met).toBe(true);
    expect(g('peak memory by sparse rate', 'gpt2-124m').met).toBe(true);
    // The failed LLaMA sift run gives no ratio rather than a wrong one.
    expect(g('sift 1% tokens/s', 'llama-220m').met).toBeNull();
    const sel = g('selection', '4096x11008');
    expect(sel.subject).toContain('bf16'); // the worst case: 0.6 / 0.2 = 3x
    expect(sel.ratio).toBeCloseTo(3, 3);
    expect(sel.met).toBe(false);
    const adam = g('sparse AdamW', '32 layers');
    expect(adam.met).toBe(true);
    expect(s.adamw[0].speedup).toBeCloseTo(3, 3);
    expect(g('test suite', 'jest').met).toBe(false);
    expect(s.errors.map((e) => e.error)).toEqual(['E_OOM: out of memory']);
  });

  test('judges the billion-parameter shapes: plan against measured, SIFT on 8B against LoRA, 70B NF4 on one card', () => {
    const shape = (label: string, extra: Partial<Row>): Row => ({ bench: 'shapes', device: 'cuda', label, batch: 4, seq: 2048, ...extra });
    const ours = [
      shape('llama-3-8b bf16', { plannedPeakBytes: 60 * GiB }), // the plan row alone is not judged
      shape('llama-3-8b bf16', { status: 'ok', measuredPeakBytes: 50 * GiB, plannedPeakBytes: 60 * GiB, tokensPerSec: 12000 }),
      shape('llama-3-70b nf4', { batch: 1, seq: 512, status: 'error', plannedPeakBytes: 72 * GiB, error: 'E_OOM: out of memory' }),
    ];
    const lora = peer('llama-3-8b', 'lora', null, 10000, 70 * GiB, { batch: 4, seq: 2048, weights: 'bf16' });
    const sm = summarize(ours, [lora, peer('llama-3-8b', 'lora', null, 99999, GiB, { batch: 1, seq: 2048, weights: 'bf16' })], '');
    const g = (goal: string, subject: string) => sm.goals.filter((x) => x.goal.startsWith(goal) && x.subject.startsWith(subject));
    const plan8 = g('plan within 15%', 'llama-3-8b');
    expect(plan8).toHaveLength(1);
    expect(plan8[0].ratio).toBeCloseTo(1.2, 3);
    expect(plan8[0].met).toBe(false);
    const vsLora = g('sift 1% tokens/s >= torch LoRA', 'llama-3-8b')[0];
    expect(vsLora.ratio).toBeCloseTo(1.2, 3); // the peer at the same batch and length
    expect(vsLora.met).toBe(true);
    expect(g('trains with --quantize nf4', 'llama-3-70b')[0].met).toBe(false);
    expect(g('plan within 15%', 'llama-3-70b')[0].met).toBeNull();
    // The shape peers are not listed as end-to-end rows without ours.
    expect(sm.train).toHaveLength(0);
  });

  test('parses test totals from the summary reporter or from jest', () => {
    expect(parseTests('x\n5 passed, 0 failed, 2 skipped\n')).toEqual({ passed: 5, failed: 0, skipped: 2 });
    expect(parseTests('Tests:       1 failed, 2 skipped, 40 passed, 43 total')).toEqual({ passed: 40, failed: 1, skipped: 2 });
    expect(parseTests('')).toBeNull();
    // tests.txt holds several runs (attention check, CUDA suites, whole suite): the last one counts.
    expect(parseTests('3 passed, 0 failed, 0 skipped\n==== whole suite\n700 passed, 2 failed, 1 skipped\n')).toEqual({
      passed: 700,
      failed: 2,
      skipped: 1,
    });
  });

  test('pairs the attention kernels with torch scaled_dot_product_attention by shape', () => {
    const a = summarize(
      [
        {
          bench: 'attention',
          device: 'cuda:0',
          deviceName: 'NVIDIA H200',
          shape: 'gpt2-124m layer',
          mode: 'auto',
          dtype: 'bf16',
          fwdMs: 0.5,
          bwdMs: 1.5,
          fwdTflops: 100,
          bwdTflops: 80,
        },
        {
          bench: 'attention',
          device: 'cuda:0',
          deviceName: 'NVIDIA H200',
          shape: 'gpt2-124m layer',
          mode: 'simt',
          dtype: 'bf16',
          fwdMs: 2,
          bwdMs: 6,
          fwdTflops: 25,
          bwdTflops: 20,
        },
      ],
      [
        { bench: 'peer-attention', device: 'cuda', shape: 'gpt2-124m layer', fwdMs: 0.25, bwdMs: 0.75 },
        { bench: 'peer-attention', device: 'cpu', shape: 'gpt2-124m layer', fwdMs: 99, bwdMs: 99 },
      ],
      '',
    );
    expect(a.attention.map((x) => [x.mode, x.fwdRatio, x.bwdRatio])).toEqual([
      ['auto', 0.5, 0.5],
      ['simt', 0.125, 0.125],
    ]);
    expect(markdown(a, '')).toContain('## Fused attention vs torch scaled_dot_product_attention');
  });

  test('reports the PEFT check: a goal met only when every compared adapter matched, skipped ones aside', () => {
    const row = (c: string, status: string) => ({
      bench: 'peft',
      case: c,
      peft_type: c.startsWith('lora') ? 'LORA' : 'SUPERTUNING',
      peft: '0.19.0',
      status,
      max_abs_diff: 1e-7,
      max_abs_diff_merged: 2e-7,
      max_abs_change: 0.3,
    });
    const good = summarize([], [row('sift-causal-lm', 'ok'), row('lora-causal-lm', 'ok')], '');
    expect(good.goals.find((g) => g.goal.startsWith('PEFT'))!.met).toBe(true);
    expect(markdown(good, '')).toContain('## PEFT (export-peft adapters loaded with Hugging Face PEFT)');
    const bad = summarize([], [row('sift-causal-lm', 'mismatch (tolerance 1.00e-4)'), row('lora-causal-lm', 'ok')], '');
    expect(bad.goals.find((g) => g.goal.startsWith('PEFT'))!.met).toBe(false);
    const skipped = summarize([], [row('sift-causal-lm', 'skipped: this PEFT has no SupertuningConfig')], '');
    expect(skipped.goals.find((g) => g.goal.startsWith('PEFT'))!.met).toBeNull();
  });

  test('writes results.json and summary.md from a folder, skipping broken lines', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-summary-'));
    try {
      fs.writeFileSync(path.join(dir, 'bench.jsonl'), ours.map((r) => JSON.stringify(r)).join('\n') + '\n{"bench":"train","cut sho');
      fs.writeFileSync(path.join(dir, 'peers.jsonl'), peers.map((r) => JSON.stringify(r)).join('\n') + '\n| a table |\n');
      fs.writeFileSync(path.join(dir, 'env.txt'), 'device: test\n');
      expect(readJsonl(path.join(dir, 'bench.jsonl'))).toHaveLength(ours.length);
      const r = main(dir);
      expect(r.goals.length).toBe(s.goals.length - 1); // no tests.txt
      const md = fs.readFileSync(path.join(dir, 'summary.md'), 'utf8');
      expect(md).toContain('## Goals (end to end)');
      expect(md).toContain('| gpt2-124m (cuda) |');
      expect(md).toContain('device: test');
      expect(JSON.parse(fs.readFileSync(path.join(dir, 'results.json'), 'utf8')).ours).toHaveLength(ours.length);
      expect(markdown(s, '')).toContain('E_OOM');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
