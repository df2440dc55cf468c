/** Classification rows small models learn in a few steps. */
import type { Row } from '../../lib/train/types';

/**
 * A learnable toy for tinyGpt2Classifier: `minLength` to `minLength + 3` noise tokens (4..11), then
 * the class's token (2 or 3, the label 0 or 1), from a seeded linear congruential generator.
 */
export function toyClassRows(n: number, seed: number, minLength = 2): Row[] {
  let s = seed;
  const r = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
  return Array.from({ length: n }, () => {
    const ids = Array.from({ length: minLength + Math.floor(r() * 4) }, () => 4 + Math.floor(r() * 8));
    const label = r() < 0.5 ? 0 : 1;
    return { input_ids: [...ids, label ? 3 : 2], label };
  });
}

/** A causal-LM batch for tinyLlama: 3 rows of 7 tokens (3..42, varying with `seed`), the last 2 masked. */
export function toyLmBatch(seed: number): { inputIds: number[][]; attentionMask: number[][]; labels: number[][] } {
  const ids = [0, 1, 2].map((r) => Array.from({ length: 7 }, (_, i) => 3 + ((seed * 7 + r * 5 + i * 3) % 40)));
  return { inputIds: ids, attentionMask: ids.map((row) => row.map((_, i) => (i < 5 ? 1 : 0))), labels: ids };
}
