/**
 * The SST-2 experiment's verdict: computed from the numbers against the two criteria (SIFT at or
 * above random-sparse, within 1.5 points of full fine-tuning; a higher top-1% gradient share on the
 * pre-trained base than on a random initialisation), and silent on the criteria when no method
 * beat the majority class.
 */
import { experimentVerdict } from '../../bench/experiment';
import { spreadOf, MethodSummary } from '../../lib/cli/demo';
import { quasiSparsity } from '../../lib/sift/quasi';
import type { MethodName } from '../../lib/train/types';

function summary(method: MethodName, tests: number[]): MethodSummary {
  return {
    method,
    lr: 1e-3,
    search: [],
    seeds: tests.map((t, i) => ({ seed: i + 1, test: t, dev: t })),
    ...spreadOf(tests),
    trainable: 1,
    total: 1,
    peakMemoryBytes: 1,
    tokensPerSec: 1,
    seconds: 1,
    run: {} as never,
  };
}

const sparse = new Float32Array(1000);
sparse[3] = 5;
const even = new Float32Array(1000).fill(1);
const qsSparse = quasiSparsity([['w', sparse]]);
const qsEven = quasiSparsity([['w', even]]);

test('criteria met: SIFT above random-sparse and within 1.5 points of full; the base more concentrated', () => {
  const v = experimentVerdict(
    [summary('sift', [0.85, 0.86, 0.84]), summary('random-sparse', [0.8, 0.81, 0.79]), summary('full', [0.86, 0.86, 0.85])],
    { base: qsSparse, random: qsEven },
    0.55,
  );
  expect(v.join('\n')).toMatch(/SIFT is at or above random-sparse at the same count by 5\.0%\./);
  expect(v.join('\n')).toMatch(/Full fine-tuning leads SIFT by 0\.7 points \(the criterion is within 1\.5 points\): met\./);
  expect(v.join('\n')).toMatch(
    /carry 100\.0% of its squared norm on the pre-trained base and 1\.0% on a random initialisation.*: higher on the pre-trained base\./,
  );
});

test('criteria missed are said so; runs at the majority class say they test the path only', () => {
  const missed = experimentVerdict(
    [summary('sift', [0.7, 0.71, 0.72]), summary('random-sparse', [0.75, 0.76, 0.74]), summary('full', [0.8, 0.81, 0.79])],
    { base: qsEven, random: qsSparse },
    0.55,
  );
  expect(missed.join('\n')).toMatch(/SIFT is below random-sparse at the same count by 4\.0%\./);
  expect(missed.join('\n')).toMatch(/leads SIFT by 9\.0 points .*: not met\./);
  expect(missed.join('\n')).toMatch(/not higher on the pre-trained base/);
  const chance = experimentVerdict([summary('sift', [0.58, 0.57, 0.57]), summary('full', [0.58, 0.58, 0.58])], null, 0.582);
  expect(chance.join('\n')).toMatch(/No method got more than 2 points above the majority class of the test split \(58\.2%\)/);
  expect(chance.join('\n')).not.toMatch(/criterion/);
});
