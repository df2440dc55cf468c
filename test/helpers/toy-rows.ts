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
