import { accuracy, f1, mcc, pearson, spearman, ranks, perplexity } from '../../lib/train/metrics';

describe('metrics against hand-computed values', () => {
  const pred = [1, 0, 1, 1, 0, 1];
  const gold = [1, 0, 0, 1, 1, 1];
  // tp = 3, fp = 1, fn = 1, tn = 1
  test('accuracy', () => expect(accuracy(pred, gold)).toBeCloseTo(4 / 6, 12));
  test('binary F1 of class 1', () => expect(f1(pred, gold)).toBeCloseTo((2 * 3) / (2 * 3 + 1 + 1), 12));
  test('binary MCC', () => {
    const v = (3 * 1 - 1 * 1) / Math.sqrt((3 + 1) * (3 + 1) * (1 + 1) * (1 + 1));
    expect(mcc(pred, gold)).toBeCloseTo(v, 12);
  });
  test('macro F1 for three classes', () => {
    const p = [0, 1, 2, 2, 1, 0];
    const g = [0, 1, 1, 2, 2, 0];
    // class 0: tp2 -> 1; class 1: tp1 fp1 fn1 -> 0.5; class 2: tp1 fp1 fn1 -> 0.5
    expect(f1(p, g)).toBeCloseTo((1 + 0.5 + 0.5) / 3, 12);
    // sklearn: matthews_corrcoef([0,1,1,2,2,0],[0,1,2,2,1,0]) = 0.5
    expect(mcc(p, g)).toBeCloseTo(0.5, 12);
  });
  test('degenerate cases are 0, not NaN', () => {
    expect(mcc([1, 1, 1], [1, 1, 1])).toBe(0);
    expect(f1([0, 0], [0, 0])).toBe(0);
    expect(pearson([1, 1, 1], [1, 2, 3])).toBe(0);
  });
  test('pearson and spearman', () => {
    expect(pearson([1, 2, 3, 4], [2, 4, 6, 8])).toBeCloseTo(1, 12);
    expect(pearson([1, 2, 3], [1, 3, 2])).toBeCloseTo(0.5, 12);
    expect(ranks([10, 20, 20, 5])).toEqual([2, 3.5, 3.5, 1]);
    // scipy.stats.spearmanr([1,2,3,4,5],[5,6,7,8,7]) = 0.8207826816681233
    expect(spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7])).toBeCloseTo(0.8207826816681233, 12);
    expect(spearman([1, 2, 3], [1, 4, 9])).toBeCloseTo(1, 12);
  });
  test('perplexity', () => expect(perplexity(Math.log(7))).toBeCloseTo(7, 12));
});
