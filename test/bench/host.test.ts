/**
 * bench/host.ts: the host-floor bench keeps the train bench's model structure at tiny widths and
 * reports ms/step, native calls and launches per step for every method.
 */
import { liveTensors } from '../../lib';
import { hostOne, hostSpec, hostTable } from '../../bench/host';
import { modelSpec } from '../../bench/train';

describe('bench/host', () => {
  test('specs keep the full-size depth and targets with tiny widths', () => {
    const g = hostSpec('gpt2');
    expect(g.config).toMatchObject({ n_layer: 12, n_embd: 64, n_head: 4, vocab_size: 256 });
    expect(g.targets).toEqual(modelSpec('gpt2', false).targets);
    const l = hostSpec('llama', 2);
    expect(l.config).toMatchObject({ num_hidden_layers: 2, hidden_size: 64, intermediate_size: 176, num_attention_heads: 4 });
  });

  test.each(['gpt2', 'llama'] as const)('%s: every method reports a row with calls and launches', (key) => {
    const before = liveTensors().cpu.count;
    const rows = (['sift', 'full', 'lora'] as const).map((m) =>
      hostOne(key, m, { rate: 0.01, steps: 2, reps: 2, warmup: 1, layers: 1, top: 4 }),
    );
    for (const r of rows) {
      if (r.status === 'skipped') continue;
      expect(r.status).toBe('ok');
      expect(r.msPerStep).toBeGreaterThan(0);
      expect(r.minMsPerStep).toBeLessThanOrEqual(r.msPerStep);
      expect(r.launchesPerStep).toBeGreaterThan(10);
      expect(r.callsPerStep).toBeGreaterThan(r.launchesPerStep);
      expect(r.topCalls.length).toBeGreaterThan(0);
      expect(r.layers).toBe(1);
    }
    expect(hostTable(rows)).toContain('launches/step');
    expect(liveTensors().cpu.count).toBeLessThanOrEqual(before);
  });
});
