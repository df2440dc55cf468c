/** bench/attention.ts: runs on the CPU (a smoke test of the script) and reports sane rows. */
import { run } from '../../bench/attention';
import { native } from '../../lib/engine/native';

describe('attention bench', () => {
  test('--cpu-only --quick: one row with timings and FLOP rates, the CUDA kernel mode restored', async () => {
    const log = jest.spyOn(console, 'log').mockImplementation(() => undefined);
    const err = jest.spyOn(console, 'error').mockImplementation(() => undefined);
    try {
      const before = native().setCudaAttention('auto');
      const rows = await run(['--cpu-only', '--quick']);
      expect(rows).toHaveLength(1);
      const r = rows[0];
      expect(r).toMatchObject({ bench: 'attention', device: 'cpu', dtype: 'f32', B: 1, H: 4, T: 64, D: 64, causal: true });
      expect(r.fwdMs).toBeGreaterThan(0);
      expect(r.bwdMs).toBeGreaterThan(0);
      expect(r.fwdTflops).toBeGreaterThanOrEqual(0);
      // One JSON line per row, then the table.
      const printed = log.mock.calls.map((c) => String(c[0]));
      expect(printed.some((l) => l.startsWith('{') && JSON.parse(l).bench === 'attention')).toBe(true);
      expect(printed.some((l) => l.includes('| device | shape | kernels |'))).toBe(true);
      expect(native().setCudaAttention(before)).toBe('auto');
    } finally {
      log.mockRestore();
      err.mockRestore();
    }
  });
});
